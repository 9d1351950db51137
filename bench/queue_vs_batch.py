"""The paper's claim, measured: small batch + big queue vs big batch without a queue.

At an equal number of samples seen, train brivl-tiny (a) with batch 32 and a momentum-key
queue of 4096 (the BriVL recipe: negatives from the queue) and (b) with batch 256 and no
queue (negatives: the other 255 momentum keys of the batch, ``in_batch_negatives``), then
compare validation retrieval R@1 on held-out demo-like pairs. Also (c) batch 32 without a
queue (in-batch negatives only), which shows what the queue buys a small batch, and (d)
batch 32 with a smaller queue of 1024 (keys at most 32 steps old instead of 128), and (e)
the same with the batch's own momentum keys as negatives too (MoCo v3 / ALBEF style).
Same initial weights, data order, augmentation, learning-rate schedule shape and peak lr.

    .venv/bin/python bench/queue_vs_batch.py [--epochs 6] [--seeds 0] [--no-record]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from brivl.env import apply_defaults  # noqa: E402

apply_defaults()

import torch  # noqa: E402

from bench.train_ray import record as _record  # noqa: E402
from bench.train_ray import table  # noqa: E402

SUBSECTION = "### Queue vs batch at equal samples seen (bench/queue_vs_batch.py)"

VARIANTS = {
    "batch 32 + queue 4096": {"batch_size": 32, "use_queue": True,
                              "model_overrides": {"queue_size": 4096}},
    "batch 256, no queue": {"batch_size": 256, "use_queue": False,
                            "model_overrides": {"queue_size": 256, "in_batch_negatives": True}},
    "batch 32, no queue": {"batch_size": 32, "use_queue": False,
                           "model_overrides": {"queue_size": 32, "in_batch_negatives": True}},
    "batch 32 + queue 1024": {"batch_size": 32, "use_queue": True,
                              "model_overrides": {"queue_size": 1024}},
    "batch 32 + in-batch + queue 1024": {"batch_size": 32, "use_queue": True,
                                         "model_overrides": {"queue_size": 1024,
                                                             "in_batch_negatives": True}},
}


def run(name: str, shard_dir: str, samples: int, image_size: int, lr: float, seed: int) -> dict:
    from brivl.train import ShardBatches, TrainConfig, read_captions, retrieval_metrics, train

    v = VARIANTS[name]
    steps = samples // v["batch_size"]
    overrides = dict(v["model_overrides"], image_size=image_size)
    cfg = TrainConfig(model="brivl-tiny", model_overrides=overrides, batch_size=v["batch_size"],
                      use_queue=v["use_queue"], steps=steps, warmup_steps=max(1, steps // 20),
                      lr=lr, seed=seed, report_every=max(1, steps // 5))
    batches = ShardBatches(shard_dir, batch_size=cfg.batch_size, image_size=image_size,
                           augment=cfg.augment, seed=seed)
    t0 = time.perf_counter()
    result = train(cfg, batches, None, None, captions=read_captions(shard_dir))
    seconds = time.perf_counter() - t0
    val = retrieval_metrics(result["model"], shard_dir, "val")
    return {"variant": name, "seed": seed, "steps": steps, "samples seen": result["samples_seen"],
            "train s": round(seconds), "final loss": result["metrics"]["loss"],
            "val i2t R@1": val["i2t_r1"], "val t2i R@1": val["t2i_r1"],
            "val mean R@1": (val["i2t_r1"] + val["t2i_r1"]) / 2, "val R@10 mean":
            (val["i2t_r10"] + val["t2i_r10"]) / 2, "chance R@1": val["chance_r1"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", help="shard directory (default: demo-like, 3000 images)")
    parser.add_argument("--epochs", type=float, default=6.0, help="passes over the train split")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--no-record", action="store_true", help="do not write bench/RESULTS.md")
    args = parser.parse_args()
    from brivl.train import read_split
    from brivl.train.toydata import make_demo_shards

    shard_dir = args.shards or str(make_demo_shards(Path(tempfile.mkdtemp()) / "shards", 3000))
    n_train = len(read_split(shard_dir, "train", ["key"])["key"])
    samples = int(args.epochs * n_train) // 256 * 256  # a multiple of both batch sizes
    load0 = os.getloadavg()[0]
    rows = []
    for seed in args.seeds:
        for name in args.variants:
            rows.append(run(name, shard_dir, samples, args.image_size, args.lr, seed))
            print(table(rows), flush=True)
    header = (
        f"`python bench/queue_vs_batch.py --epochs {args.epochs:g} --seeds "
        f"{' '.join(map(str, args.seeds))}` ({time.strftime('%Y-%m-%d')}): brivl-tiny at "
        f"{args.image_size} px, {samples} samples seen per variant ({n_train} train pairs, "
        f"~{args.epochs:g} epochs), peak lr {args.lr:g} with warmup + cosine for every variant, "
        "augmentation on; validation = 200 held-out demo-like pairs with distinct captions "
        f"(chance R@1 = 1/200). torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{platform.machine()}, {os.cpu_count()} cores, load average {load0:.1f} at the start, "
        f"{os.getloadavg()[0]:.1f} at the end."
    )
    text = header + "\n\n" + table(rows)
    print(text)
    if not args.no_record:
        _record(text, SUBSECTION)
    return 0


if __name__ == "__main__":
    sys.exit(main())

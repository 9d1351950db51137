"""The paper's claim, measured: small batch + big queue vs big batch without a queue.

At an equal number of samples seen, train brivl-tiny (a) with batch 32 and a momentum-key
queue of 4096 (the BriVL recipe: negatives from the queue) and (b) with batch 256 and no
queue (negatives: the other 255 momentum keys of the batch, ``in_batch_negatives``), then
compare validation retrieval R@1 on held-out demo-like pairs. Also (c) batch 32 without a
queue (in-batch negatives only), which shows what the queue buys a small batch, and (d)
batch 32 with a smaller queue of 1024 (keys at most 32 steps old instead of 128), and (e)
the same with the batch's own momentum keys as negatives too (MoCo v3 / ALBEF style).
Same initial weights, data order, augmentation, learning-rate schedule shape and peak lr.

``--recipe pipeline`` measures the same question on what ``make run`` trains: the pipeline's
CPU recipe (``CPU_TRAIN``: pretrained brivl-lite, frozen trunks cached, in-batch negatives +
queue with false-negative masking, K capped at the corpus) on real-corpus shards, through the
real pretrain stage, at the recipe's samples seen (steps x 32), against batch 256 with no
queue, batch 32 with in-batch negatives only, and the queue without false-negative masking.
``--filter-dir`` re-shards a filter stage's output with a larger validation share (a
held-out part of the corpus; the public eval sets are not used here).

    .venv/bin/python bench/queue_vs_batch.py [--epochs 6] [--seeds 0] [--no-record]
    .venv/bin/python bench/queue_vs_batch.py --recipe pipeline --filter-dir DIR [--val-fraction 0.1]
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


PIPELINE_SUBSECTION = "### Queue vs batch on the real corpus, make run's recipe (bench/queue_vs_batch.py --recipe pipeline)"
PIPELINE_VARIANTS = {  # changes to CPU_TRAIN; batch 256 runs steps / 8
    "batch 32 + in-batch + queue (make run)": {},
    "same, queue without false-negative masking": {"mask_false_negatives": False},
    "batch 256, in-batch, no queue": {"batch_size": 256, "use_queue": False},
    "batch 32, in-batch, no queue": {"use_queue": False},
}


def run_pipeline_recipe(name: str, shard_dir: str, seed: int, work: Path) -> dict:
    """One variant of make run's recipe through the real pretrain stage (in-process)."""
    import copy

    from flows.pipeline import CPU_TRAIN
    from tasks.pretrain import pretrain

    cfg = copy.deepcopy(CPU_TRAIN)
    change = PIPELINE_VARIANTS[name]
    cfg.update(change, seed=seed, workers=0)
    cfg["steps"] = CPU_TRAIN["steps"] * CPU_TRAIN["batch_size"] // cfg["batch_size"]
    if not cfg.get("use_queue", True):
        cfg["model_overrides"] = dict(cfg["model_overrides"], queue_size=cfg["batch_size"])
    t0 = time.perf_counter()
    result = pretrain(shard_dir, cfg, str(work / f"{seed}-{len(os.listdir(work))}"))
    m = result["metrics"]
    return {"variant": name, "seed": seed, "steps": m["step"], "samples seen": m["samples_seen"],
            "train s": round(time.perf_counter() - t0), "final loss": round(m["loss"], 3),
            "val i2t R@1": m["val_i2t_r1"], "val t2i R@1": m["val_t2i_r1"],
            "val mean R@1": (m["val_i2t_r1"] + m["val_t2i_r1"]) / 2,
            "val n": m.get("val_n"), "chance R@1": m["val_chance_r1"]}


def pipeline_main(args: argparse.Namespace) -> int:
    from brivl.train import read_split
    from tasks.shard import shard_task

    shard_dir = args.shards
    if args.filter_dir:  # the real shard stage (its manifest is the pretrain stage's input)
        shard_dir = shard_task.fn(args.filter_dir, {"val_fraction": args.val_fraction},
                                  str(Path(tempfile.mkdtemp()) / "shards"))
    if not shard_dir:
        raise SystemExit("--recipe pipeline needs --shards or --filter-dir (a real-corpus run's)")
    n_train = len(read_split(shard_dir, "train", ["key"])["key"])
    n_val = len(read_split(shard_dir, "val", ["key"])["key"])
    work = Path(tempfile.mkdtemp(prefix="qvb-"))
    load0 = os.getloadavg()[0]
    rows = []
    for seed in args.seeds:
        for name in PIPELINE_VARIANTS:
            rows.append(run_pipeline_recipe(name, shard_dir, seed, work))
            print(table(rows), flush=True)
    header = (
        f"`python bench/queue_vs_batch.py --recipe pipeline --filter-dir <make run's filter "
        f"stage> --val-fraction {args.val_fraction:g} --seeds {' '.join(map(str, args.seeds))}` "
        f"({time.strftime('%Y-%m-%d')}): make run's CPU recipe (pretrained brivl-lite, cached "
        f"frozen trunks, 128 px, no augmentation), {n_train} train pairs, validation = {n_val} "
        "held-out pairs of the same corpus (by key hash), every variant at the same samples "
        "seen."
    )
    return _report(header, rows, load0, None if args.no_record else PIPELINE_SUBSECTION)


def _report(header: str, rows: list[dict], load0: float, subsection: str | None) -> int:
    """Print the header (plus the machine and load) and the table; record it in RESULTS.md."""
    text = (
        f"{header} torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{platform.machine()}, {os.cpu_count()} cores, load average {load0:.1f} at the start, "
        f"{os.getloadavg()[0]:.1f} at the end.\n\n{table(rows)}"
    )
    print(text)
    if subsection:
        _record(text, subsection)
    return 0


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
    parser.add_argument("--recipe", choices=("tiny", "pipeline"), default="tiny",
                        help="tiny: brivl-tiny from scratch on demo-like pairs; pipeline: make "
                        "run's CPU recipe on real-corpus shards")
    parser.add_argument("--filter-dir", help="--recipe pipeline: re-shard this filter output")
    parser.add_argument("--val-fraction", type=float, default=0.1)
    args = parser.parse_args()
    if args.recipe == "pipeline":
        return pipeline_main(args)
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
        "(chance R@1 = 1/200)."
    )
    return _report(header, rows, load0, None if args.no_record else SUBSECTION)


if __name__ == "__main__":
    sys.exit(main())

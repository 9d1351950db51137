"""Pretraining throughput and data wait: in-process vs Ray Train with 1 and 2 workers.

Each variant runs the real pretrain stage (``tasks.pretrain.pretrain``: Ray Data read +
decode/augment in ``map_batches`` feeding ``TorchTrainer`` workers, or the in-process
``ShardBatches`` path) on demo-like shards and reads the per-interval metrics the loop
reports: samples/s and the fraction of wall time the (slowest) worker spent waiting for its
next batch. The first report interval (start-up, first epoch's pipeline spin-up) is left
out. Baseline in the same run: the same model's training step on ready tensors (no data
path at all), as samples/s. Goal: data wait <= 5 %.

    .venv/bin/python bench/train_ray.py [--steps 60] [--workers 0 1 2] [--no-record]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from brivl.env import apply_defaults  # noqa: E402

apply_defaults()

import torch  # noqa: E402

SECTION = "## Training (issue 5)"
SUBSECTION = "### Data path: samples/s and data wait (bench/train_ray.py)"


def step_baseline(config: dict, shard_dir: str, steps: int) -> float:
    """Samples/s of bare training steps on one ready batch (no decode, no Ray)."""
    from brivl.train import TrainConfig, build_model, make_optimizer, read_captions

    names = {f for f in TrainConfig.__dataclass_fields__}
    cfg = TrainConfig(**{k: v for k, v in config.items() if k in names})
    model = build_model(cfg, read_captions(shard_dir))
    opt = make_optimizer(model, cfg)
    size = model.config.image_size
    pixels = torch.rand(cfg.batch_size, 3, size, size)
    tokens = model.tokenize(read_captions(shard_dir)[: cfg.batch_size])
    times = []
    for i in range(steps + 2):
        t0 = time.perf_counter()
        out = model(pixels, tokens["input_ids"], tokens["attention_mask"], momentum=0.99)
        out["loss"].backward()
        opt.step()
        opt.zero_grad()
        if i >= 2:
            times.append(time.perf_counter() - t0)
    return cfg.batch_size / statistics.median(times)


def run_variant(workers: int, config: dict, shard_dir: str, home: Path) -> dict:
    from brivl.train import read_metrics_log
    from tasks.pretrain import pretrain

    cfg = dict(config, workers=workers, val_limit=0)  # Ray CPUs per worker: leaves 1 for data
    out = home / f"w{workers}"
    t0 = time.perf_counter()
    result = pretrain(shard_dir, cfg, str(out))
    wall = time.perf_counter() - t0
    rows = read_metrics_log(out)  # the finished stage keeps metrics.jsonl
    steady = rows[1:] or rows  # the first interval holds start-up
    spans = [b["elapsed_s"] - a["elapsed_s"] for a, b in zip(rows, rows[1:], strict=False)]
    waited = sum(r["data_wait_frac"] * span for r, span in zip(steady, spans, strict=True))
    return {
        "workers": workers or "in-process",
        "samples/s": statistics.median(r["samples_per_s"] for r in steady),
        "data wait (median)": statistics.median(r["data_wait_frac"] for r in steady),
        "data wait (overall)": waited / max(1e-9, sum(spans)),
        "data wait (worst interval)": max(r["data_wait_frac"] for r in steady),
        "steps": result["metrics"]["step"],
        "torch threads": rows[-1].get("torch_threads", ""),
        "stage wall s": round(wall, 1),
    }


def record(text: str, subsection: str = SUBSECTION) -> None:
    """Replace one subsection of the training section of bench/RESULTS.md (others untouched)."""
    path = ROOT / "bench" / "RESULTS.md"
    body = path.read_text() if path.exists() else "# Benchmark results\n"
    if SECTION not in body:
        body = body.rstrip("\n") + f"\n\n{SECTION}\n"
    head, rest = body.split(SECTION, 1)
    end = rest.find("\n## ")
    section, tail = (rest[:end], rest[end:]) if end >= 0 else (rest, "")
    block = f"{subsection}\n\n{text}\n"
    if subsection in section:
        before, after = section.split(subsection, 1)
        nxt = after.find("\n### ")
        section = before + block + (after[nxt:] if nxt >= 0 else "\n")
    else:
        section = section.rstrip("\n") + "\n\n" + block
    path.write_text(head + SECTION + section.rstrip("\n") + "\n" + tail)


def table(rows: list[dict]) -> str:
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---:" for _ in cols) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(f"{v:.3g}" if isinstance(v, float) else str(v)
                                       for v in r.values()) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", help="shard directory (default: demo-like shards, 3000 images)")
    parser.add_argument("--model", default="brivl-tiny")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--no-record", action="store_true", help="do not write bench/RESULTS.md")
    args = parser.parse_args()
    from brivl.train.toydata import make_demo_shards
    from tasks.ray_runtime import ensure_ray, shutdown_ray

    home = Path(tempfile.mkdtemp(prefix="bench-train-ray-"))
    shard_dir = args.shards or str(make_demo_shards(home / "shards", 3000))
    config = {"model": args.model, "model_overrides": {"image_size": args.image_size,
                                                        "queue_size": args.batch_size * 32},
              "batch_size": args.batch_size, "steps": args.steps, "report_every": 10,
              "checkpoint_every": args.steps, "warmup_steps": 5}
    load0 = os.getloadavg()[0]
    before = step_baseline(config, shard_dir, 20)
    rows = []
    for workers in args.workers:
        if workers:
            ensure_ray()
        rows.append(run_variant(workers, config, shard_dir, home))
        print(table(rows), flush=True)
    shutdown_ray()
    baseline = (before + step_baseline(config, shard_dir, 20)) / 2
    rows.insert(0, {"workers": "bare step (baseline)", "samples/s": baseline,
                    "data wait (median)": 0.0, "data wait (overall)": 0.0,
                    "data wait (worst interval)": 0.0, "steps": 20,
                    "torch threads": torch.get_num_threads(), "stage wall s": ""})
    for r in rows:
        r["vs bare step"] = f"{r['samples/s'] / baseline:.2f}x"
    header = (
        f"`python bench/train_ray.py --steps {args.steps} --workers "
        f"{' '.join(map(str, args.workers))}` ({time.strftime('%Y-%m-%d')}): {args.model} at "
        f"{args.image_size} px, batch {args.batch_size} per worker, demo-like shards "
        f"(2200 train pairs), augmentation on; torch {torch.__version__}, "
        "OMP_WAIT_POLICY=" + os.environ.get("OMP_WAIT_POLICY", "(unset)") + "; "
        f"{platform.machine()}, {os.cpu_count()} cores, load average {load0:.1f} at the start, "
        f"{os.getloadavg()[0]:.1f} at the end. samples/s and data wait = medians over report "
        "intervals after the first; data wait = the slowest worker's share of wall time spent "
        "waiting for its next batch (overall: time-weighted over those intervals). Bare step: "
        "the same model's step on one ready batch in this process, mean of a measurement "
        "before and after the variants. Goal: data wait <= 5 %."
    )
    text = header + "\n\n" + table(rows)
    print(text)
    if not args.no_record:
        record(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The training step on a GPU: samples/s, step time, peak memory and MFU, and one Ray Train run.

One prepared script for a lent GPU (runs in minutes; ``--budget-s`` caps it):

1. the trainer's own optimiser step (``brivl.train.loop._Runner``: EMA update, momentum keys,
   queue, false-negative masks, AdamW; fused on CUDA) on a ready batch already on the device,
   for ``brivl-lite`` and ``brivl-paper`` (EfficientNet-B7 at 600 px + a RoBERTa-large-size
   text encoder), random init; bf16 autocast on and off (off: fp32 with TF32 matmuls),
   ``torch.compile`` on and off (on: the largest batch that fitted, bf16); batch sizes
   doubling until one does not fit (out of memory is a row, not a crash);
2. FLOPs of one step counted by ``torch.utils.flop_counter.FlopCounterMode`` (eager, forward
   and backward), MFU = FLOPs / step time / the device's dense peak (table below, by device
   name; ``--peak-tflops`` overrides);
3. one Ray Train run with 1 worker through the real ``brivl pretrain --workers 1 --gpu``
   path on demo shards, its samples/s and data wait (the share of time the worker waited for
   its next batch).

``--cpu-smoke`` runs the same code on the CPU on a tiny config in well under a minute (CI),
without the compile and Ray parts. ``--flops-only`` counts each model's FLOPs per sample (on
any device, batch 2) and prints the samples/s a GPU of the table would reach at 35 % and
50 % MFU: the arithmetic behind docs/SCALE.md where no GPU was measured. Nothing here needs
the network.

    python bench/gpu.py [--models brivl-lite brivl-paper] [--steps 10] [--out gpu.json]
    python bench/gpu.py --cpu-smoke
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from brivl.env import apply_defaults  # noqa: E402

apply_defaults()

import torch  # noqa: E402

# dense peak TFLOP/s (no sparsity) by a substring of torch.cuda.get_device_name(): bf16, tf32
PEAK_TFLOPS = {
    "H200": (989.0, 494.0), "H100": (989.0, 494.0), "H800": (989.0, 494.0),
    "A100": (312.0, 156.0), "A800": (312.0, 156.0), "L40S": (362.0, 183.0),
    "L4": (121.0, 60.0), "A10": (125.0, 62.5), "RTX 4090": (165.0, 82.6),
}
COLUMNS = ("model", "image px", "precision", "compile", "batch", "step ms", "samples/s",
           "peak mem GiB", "GFLOP/sample", "TFLOP/s", "MFU")


def flop_counter():
    """``FlopCounterMode`` with a grouped-convolution backward that counts its groups.

    torch 2.13's formula for ``convolution_backward`` drops ``groups``, so a depthwise
    convolution's weight gradient is counted ``channels`` times over (EfficientNet's
    backward came out 20x its forward). Here each gradient it computes costs one forward.
    """
    from torch.utils.flop_counter import FlopCounterMode, conv_flop_count

    def conv_backward(grad_out_shape, x_shape, w_shape, _bias, _stride, _padding, _dilation,
                      transposed, _output_padding, _groups, output_mask, out_shape=None,
                      **kwargs) -> int:
        forward = conv_flop_count(x_shape, w_shape, grad_out_shape, transposed=transposed)
        return forward * (int(bool(output_mask[0])) + int(bool(output_mask[1])))

    return FlopCounterMode(display=False,
                           custom_mapping={torch.ops.aten.convolution_backward: conv_backward})


def peak_tflops(device: torch.device, bf16: bool, override: float | None) -> float | None:
    if override:
        return override
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, (b, t) in PEAK_TFLOPS.items():
        if key in name:
            return b if bf16 else t
    return None


def build(name: str, batch: int, device: torch.device, overrides: dict, captions: list[str]):
    """A random-init model (pretrained weights not loaded), its queue a multiple of the batch."""
    from brivl.model import build_config, create_model
    from brivl.model.tokenizer import train_tokenizer

    cfg = build_config(name, overrides)
    k = cfg.queue_size
    queue = k if k % batch == 0 else batch * math.ceil(k / batch)
    torch.manual_seed(0)
    tokenizer = (train_tokenizer(captions, vocab_size=300)
                 if cfg.text.encoder == "scratch" and cfg.text.tokenizer is None else None)
    model = create_model(name, tokenizer=tokenizer, pretrained=False,
                         **{**overrides, "queue_size": queue})
    return model.to(device)


def measure(name: str, batch: int, bf16: bool, compiled: bool, device: torch.device,
            args: argparse.Namespace, overrides: dict) -> dict:
    """One row: the mean step time over ``args.steps`` steps after warm-up, FLOPs, memory."""
    from brivl.train import TrainConfig, make_optimizer
    from brivl.train.loop import _prepare_model, _Runner

    captions = [f"a photo of a {c} thing number {i} near the tall tree in the park"
                for i, c in enumerate(["red", "blue", "green", "grey"] * (batch // 4 + 1))][:batch]
    model = build(name, batch, device, overrides, captions)
    cfg = TrainConfig(model=name, model_overrides=overrides, batch_size=batch, steps=1000,
                      bf16=bf16, cpu_bf16=bf16, compile=compiled,
                      compile_backend=args.compile_backend)
    optimizer = make_optimizer(model, cfg)
    _prepare_model(model, cfg, device)
    model.train()
    runner = _Runner(cfg, model, optimizer, device, 1, 1000)
    size = model.config.image_size
    pixels = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8)
    prepared = runner.prepare({"pixels": pixels, "caption": captions,
                               "key": [str(i) for i in range(batch)]})
    flops = None
    if not compiled:  # FLOPs of one eager step (counted once; compile does not change them)
        counter = flop_counter()
        with counter:
            runner.backward(0, [prepared])
        optimizer.zero_grad(set_to_none=True)
        flops = counter.get_total_flops()
    for step in range(args.warmup):
        runner.step(step, [prepared])
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    for step in range(args.steps):
        runner.step(args.warmup + step, [prepared])
    _sync(device)
    step_s = (time.perf_counter() - t0) / args.steps
    peak_mem = (torch.cuda.max_memory_allocated(device) if device.type == "cuda"
                else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"model": name, "image px": size, "precision": "bf16" if bf16 else "fp32",
            "compile": compiled, "batch": batch, "step ms": step_s * 1e3,
            "samples/s": batch / step_s, "peak mem GiB": peak_mem / 2**30,
            "flops_per_step": flops}


def finish_row(row: dict, device: torch.device, override: float | None,
               flops_by_key: dict) -> dict:
    key = (row["model"], row["batch"], row["precision"])
    flops = row.get("flops_per_step") or flops_by_key.get(key)
    if row.get("flops_per_step"):
        flops_by_key[key] = flops
    if flops:
        achieved = flops / (row["step ms"] / 1e3) / 1e12
        row["GFLOP/sample"] = flops / row["batch"] / 1e9
        row["TFLOP/s"] = achieved
        peak = peak_tflops(device, row["precision"] == "bf16", override)
        row["MFU"] = achieved / peak if peak else None
    return row


def sweep(args: argparse.Namespace, device: torch.device) -> list[dict]:
    rows: list[dict] = []
    flops: dict = {}
    start = time.perf_counter()
    for name in args.models:
        overrides = dict(args.overrides.get(name, {}))
        best = None
        for bf16 in args.precisions:
            for batch in args.batches.get(name, args.default_batches):
                if time.perf_counter() - start > args.budget_s:
                    rows.append({"model": name, "batch": batch, "precision": "bf16" if bf16 else "fp32",
                                 "error": "skipped: --budget-s spent"})
                    break
                try:
                    row = finish_row(measure(name, batch, bf16, False, device, args, overrides),
                                     device, args.peak_tflops, flops)
                except torch.OutOfMemoryError:
                    rows.append({"model": name, "batch": batch, "precision": "bf16" if bf16 else "fp32",
                                 "error": "out of memory"})
                    _free(device)
                    break  # larger batches will not fit either
                rows.append(row)
                _emit(row, args)
                if bf16:
                    best = batch
                _free(device)
        if (args.compile and name in args.compile_models and best is not None
                and time.perf_counter() - start < args.budget_s):
            try:
                row = finish_row(measure(name, best, True, True, device, args, overrides),
                                 device, args.peak_tflops, flops)
            except Exception as exc:  # noqa: BLE001 - a failed compile is a row, with why
                row = {"model": name, "batch": best, "precision": "bf16", "compile": True,
                       "error": f"{type(exc).__name__}: {str(exc)[:200]}"}
            rows.append(row)
            _emit(row, args)
            _free(device)
    return rows


def flops_only(args: argparse.Namespace, device: torch.device) -> list[dict]:
    """GFLOP per sample of one training step (eager, bf16 off) and what it implies."""
    from brivl.train import TrainConfig, make_optimizer
    from brivl.train.loop import _Runner

    out = []
    for name in args.models:
        captions = ["a photo of a red thing near the tall tree in the park, seen from afar"] * 2
        model = build(name, 2, device, dict(args.overrides.get(name, {})), captions)
        cfg = TrainConfig(model=name, batch_size=2, steps=10, bf16=False)
        runner = _Runner(cfg, model.train(), make_optimizer(model, cfg), device, 1, 10)
        size = model.config.image_size
        prepared = runner.prepare({"pixels": torch.randint(0, 256, (2, 3, size, size),
                                                           dtype=torch.uint8),
                                   "caption": captions, "key": ["a", "b"]})
        counter = flop_counter()
        with counter:
            runner.backward(0, [prepared])
        gflop = counter.get_total_flops() / 2 / 1e9
        row = {"model": name, "image px": size, "GFLOP/sample": gflop}
        for gpu, (bf16, _) in PEAK_TFLOPS.items():
            if gpu in ("H200", "A100"):
                for mfu in (0.35, 0.5):
                    row[f"{gpu} samples/s at {mfu:.0%} MFU"] = bf16 * 1e12 * mfu / (gflop * 1e9)
        print(json.dumps(row), flush=True)
        out.append(row)
        del model, runner
        _free(device)
    return out


def ray_run(args: argparse.Namespace) -> dict:
    """``brivl pretrain --workers 1 --gpu`` on demo shards: samples/s and data wait."""
    from brivl.train.toydata import make_demo_shards

    home = Path(tempfile.mkdtemp(prefix="brivl-gpu-bench-"))
    shards = make_demo_shards(home / "shards", args.ray_images)
    command = [sys.executable, "-m", "flows.cli", "pretrain", "--shards", str(shards),
               "--model", args.ray_model, "--workers", "1", "--steps", str(args.ray_steps),
               "--batch-size", str(args.ray_batch), "--out", str(home / "pretrain"),
               "--set", "report_every=10", "--set", "val_limit=0"]
    if torch.cuda.is_available():
        command.append("--gpu")
    env = dict(os.environ, BRIVL_HOME=str(home / "home"), PYTHONPATH=str(ROOT))
    t0 = time.perf_counter()
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=args.ray_timeout_s)
    wall = time.perf_counter() - t0
    metrics_file = home / "pretrain" / "metrics.json"
    if proc.returncode != 0 or not metrics_file.is_file():
        return {"error": f"exit {proc.returncode}: {proc.stderr[-800:]}", "wall_s": wall}
    metrics = json.loads(metrics_file.read_text())
    history = [json.loads(x) for x in (home / "pretrain" / "metrics.jsonl").read_text().splitlines()]
    later = history[1:] or history  # the first interval holds the pipeline's start-up
    return {"model": args.ray_model, "batch": args.ray_batch, "steps": metrics.get("step"),
            "samples_per_s": sorted(r["samples_per_s"] for r in later)[len(later) // 2],
            "data_wait_frac": sorted(r["data_wait_frac"] for r in later)[len(later) // 2],
            "data_wait_frac_worst": max(r["data_wait_frac"] for r in later),
            "stage_wall_s": wall}


def table(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | | {r.get('precision', '')} | {r.get('compile', False)} | "
                         f"{r['batch']} | {r['error']} | | | | | |")
            continue
        cells = [r["model"], r["image px"], r["precision"], r["compile"], r["batch"],
                 f"{r['step ms']:.1f}", f"{r['samples/s']:.1f}", f"{r['peak mem GiB']:.2f}",
                 _fmt(r.get("GFLOP/sample"), ".2f"), _fmt(r.get("TFLOP/s"), ".3f"),
                 _fmt(r.get("MFU"), ".1%")]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _emit(row: dict, args: argparse.Namespace) -> None:
    print(json.dumps({k: v for k, v in row.items()}, default=str), flush=True)
    if args.out:
        with open(args.out, "a") as handle:
            handle.write(json.dumps(row, default=str) + "\n")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _free(device: torch.device) -> None:
    import gc

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny config on the CPU (CI)")
    parser.add_argument("--flops-only", action="store_true",
                        help="count FLOPs per sample and what they imply at 35/50 %% MFU")
    parser.add_argument("--models", nargs="*", default=["brivl-lite", "brivl-paper"])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--no-compile", dest="compile", action="store_false")
    parser.add_argument("--compile-backend", default="inductor")
    parser.add_argument("--compile-models", nargs="*", default=["brivl-lite"],
                        help="models whose best bf16 batch is also run compiled (B7's inductor "
                             "compile alone takes minutes)")
    parser.add_argument("--no-ray", dest="ray", action="store_false")
    parser.add_argument("--ray-model", default="brivl-lite")
    parser.add_argument("--ray-batch", type=int, default=128)
    parser.add_argument("--ray-steps", type=int, default=60)
    parser.add_argument("--ray-images", type=int, default=3000)
    parser.add_argument("--ray-timeout-s", type=float, default=240)
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="the device's dense peak (default: from the device name)")
    parser.add_argument("--budget-s", type=float, default=300,
                        help="stop starting new sweep rows after this many seconds")
    parser.add_argument("--out", help="append every row as JSON to this file")
    args = parser.parse_args(argv)
    args.precisions = (True, False)
    args.overrides = {}
    args.default_batches = [8, 16, 32, 64, 128, 256, 512, 1024]
    args.batches = {"brivl-paper": [2, 4, 8, 16, 32, 64, 128]}
    if args.cpu_smoke:
        args.models, args.steps, args.warmup = ["brivl-tiny"], 2, 1
        args.compile = args.ray = False
        args.overrides = {"brivl-tiny": {"image_size": 32}}
        args.batches = {"brivl-tiny": [2, 4]}
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    torch.backends.cuda.matmul.allow_tf32 = True  # fp32 rows: TF32 tensor cores (MFU vs TF32)
    torch.backends.cudnn.allow_tf32 = True
    device = torch.device("cuda" if torch.cuda.is_available() and not args.cpu_smoke else "cpu")
    if device.type == "cpu":
        torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    print(f"device: {name}; torch {torch.__version__}", flush=True)
    if args.flops_only:
        flops_only(args, device)
        return
    rows = sweep(args, device)
    print("\n" + table(rows), flush=True)
    if args.ray:
        ray = ray_run(args)
        print("\nRay Train, 1 worker (brivl pretrain --workers 1):", json.dumps(ray), flush=True)
        if args.out:
            with open(args.out, "a") as handle:
                handle.write(json.dumps({"ray_train": ray}) + "\n")


if __name__ == "__main__":
    main()

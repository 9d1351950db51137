"""Training-step costs of the BriVL model on CPU, measured against baselines in the same run.

1. Momentum + queue bookkeeping: a full training step (forward with EMA update, momentum
   keys, loss against the queues, all-gather + enqueue, backward, AdamW) against the same
   step with the bookkeeping switched off (``momentum=None, enqueue=False``: the momentum
   towers still run, the EMA and the queue writes do not). The bookkeeping is also timed in
   isolation (EMA update + enqueue + the queue snapshot backward needs), which is far less
   noisy than a difference of two step times on a shared box. For context, a step whose
   keys are the detached query embeddings shows what the momentum forward itself costs.
   Goal: bookkeeping <= 3 % of the step beyond the momentum forward.
2. Multi-scale patch pooling (whole image + 6x6 grid = 37 patches), feature map -> per-patch
   vectors: one batched matrix product with the (H*W, 37) pooling matrix (the bins of
   ``adaptive_avg_pool2d``) and then the per-patch linear, against the released BriVL code's stage (a per-sample loop: ``affine_grid`` +
   ``grid_sample`` of 4x4 points in each of the 37 boxes, its 1x1 conv on every point, then the
   mean). The pooling alone is timed too: ours, ``adaptive_avg_pool2d`` per scale, the released
   loop without its conv, and a per-sample, per-box slicing loop. Goal: >= 20x.

Variants run interleaved, the median of each is reported. Results replace this benchmark's
section of bench/RESULTS.md.

    .venv/bin/python bench/train.py [--reps 15] [--threads 1] [--no-lite] [--no-record]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.results import replace_section  # noqa: E402
from brivl.env import apply_defaults  # noqa: E402

apply_defaults()

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from brivl.model import create_model, info_nce  # noqa: E402
from brivl.model.pooling import (  # noqa: E402
    grid_boxes,
    grid_patch_pool,
    grid_patch_pool_adaptive,
    grid_patch_pool_loop,
)
from brivl.model.tokenizer import train_tokenizer  # noqa: E402

SECTION = "## Model (issue 4)"
WORDS = "a red blue green cat dog car tree on the grass street beach river house bird".split()


def captions(n: int) -> list[str]:
    g = torch.Generator().manual_seed(0)
    return [" ".join(WORDS[int(i)] for i in torch.randint(len(WORDS), (8,), generator=g)) for _ in range(n)]


def median_times(fns: dict[str, Callable[[], None]], reps: int, warmup: int = 2) -> dict[str, float]:
    """Run the variants interleaved (A B C A B C ...) and return each one's median seconds."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in times.items()}


# -- 1. momentum + queue bookkeeping -------------------------------------------------------


def bookkeeping(name: str, batch: int, reps: int) -> dict[str, object]:
    torch.manual_seed(0)
    texts = captions(batch)
    if name == "brivl-tiny":
        model = create_model(name, tokenizer=train_tokenizer(captions(500), vocab_size=200, min_frequency=1))
    else:
        model = create_model(name, pretrained=False)
    size = model.config.image_size
    pixels = torch.rand(batch, 3, size, size)
    tokens = model.tokenize(texts)
    opt = torch.optim.AdamW(model.trainable_parameters(), lr=1e-5)
    model.train()
    keys = (F.normalize(torch.randn(batch, model.config.embed_dim), dim=-1),) * 2
    for _ in range(model.config.queue_size // batch):  # fill the queue: every slot holds a key
        model.enqueue(*keys)

    def step(**kw) -> None:
        out = model(pixels, **tokens, **kw)
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        opt.step()

    def step_no_momentum_towers() -> None:
        q_img = model.image_tower(pixels)
        q_txt = model.text_tower(**tokens)
        t, valid = model.config.temperature, model.queue_filled
        loss = (info_nce(q_img, q_txt.detach(), model.text_queue, t, valid)[0]
                + info_nce(q_txt, q_img.detach(), model.image_queue, t, valid)[0])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    steps = median_times({
        "full": lambda: step(momentum=0.99, enqueue=True),
        "no_bookkeeping": lambda: step(momentum=None, enqueue=False),
        "no_momentum_towers": step_no_momentum_towers,
    }, reps)

    def isolated() -> None:
        model.momentum_update(0.99)
        model.image_queue.clone(), model.text_queue.clone()  # the snapshot forward takes
        model.enqueue(*keys)

    book = median_times({"bookkeeping": isolated}, reps * 4)["bookkeeping"]
    print(f"  bookkeeping {name}: done", file=sys.stderr, flush=True)
    return {
        "model": name, "batch": batch, "size": size, "queue": model.config.queue_size,
        "trainable": sum(p.numel() for p in model.trainable_parameters()),
        **steps, "isolated": book,
    }


# -- 2. patch pooling -----------------------------------------------------------------------


def released_roi_grid_pool(fmap: torch.Tensor, boxes: torch.Tensor, image_size: int,
                           proj: torch.nn.Conv2d | None = None, grid: int = 4) -> torch.Tensor:
    """The released BriVL code's pooling stage: per sample, ``affine_grid`` + ``grid_sample``
    of grid x grid points in each box (pixel coordinates x1, y1, x2, y2), its 1x1 conv on every
    sampled point (``proj``; None skips it), then the mean over the points."""
    b, c, h, w = fmap.shape
    ratio = image_size / h
    out = []
    for i in range(b):
        x1, y1, x2, y2 = (boxes[i, :, j] / ratio for j in range(4))
        zero = torch.zeros_like(x1)
        theta = torch.stack((
            (x2 - x1) / (w - 1), zero, (x1 + x2 - w + 1) / (w - 1),
            zero, (y2 - y1) / (h - 1), (y1 + y2 - h + 1) / (h - 1),
        ), dim=1).view(-1, 2, 3)
        sample_grid = F.affine_grid(theta, [boxes.shape[1], c, grid, grid], align_corners=False)
        pooled = F.grid_sample(fmap[i].unsqueeze(0).expand(boxes.shape[1], c, h, w), sample_grid,
                               align_corners=False)  # (P, C, grid, grid)
        if proj is not None:
            pooled = proj(pooled)  # (P, D, grid, grid)
        out.append(pooled.mean(dim=(2, 3)))
    return torch.stack(out)  # (B, P, C or D)


def pixel_boxes(image_size: int, scales: list[int], batch: int) -> torch.Tensor:
    cells = grid_boxes(image_size, image_size, scales)  # (y0, y1, x0, x1)
    boxes = torch.tensor([[x0, y0, x1, y1] for y0, y1, x0, x1 in cells], dtype=torch.float32)
    return boxes.unsqueeze(0).expand(batch, -1, -1)  # (B, P, 4)


def pooling(label: str, batch: int, channels: int, side: int, image_size: int, dim: int,
            reps: int) -> dict[str, object]:
    """Feature map -> per-patch vectors of width ``dim``: ours (batched pooling, then the
    per-patch linear) against the released stage (per-sample loop, 1x1 conv per sampled point),
    forward and forward + backward; and the pooling alone (no projection)."""
    scales = [1, 6]
    torch.manual_seed(0)
    fmap = torch.randn(batch, channels, side, side, requires_grad=True)
    boxes = pixel_boxes(image_size, scales, batch)
    linear = torch.nn.Linear(channels, dim)
    conv = torch.nn.Conv2d(channels, dim, 1)
    with torch.no_grad():
        conv.weight.copy_(linear.weight[:, :, None, None])
        conv.bias.copy_(linear.bias)

    def backward(fn: Callable[[], torch.Tensor]) -> Callable[[], None]:
        def run() -> None:
            fn().sum().backward()
            fmap.grad = None
            for p in (*linear.parameters(), *conv.parameters()):
                p.grad = None
        return run

    stage = {
        "ours": lambda: linear(grid_patch_pool(fmap, scales)),
        "released": lambda: released_roi_grid_pool(fmap, boxes, image_size, conv),
    }
    pool_only = {
        "ours": lambda: grid_patch_pool(fmap, scales),
        "adaptive": lambda: grid_patch_pool_adaptive(fmap, scales),
        "released": lambda: released_roi_grid_pool(fmap, boxes, image_size),
    }
    result: dict[str, object] = {"label": label, "shape": f"{batch}x{channels}x{side}x{side}", "dim": dim}
    with torch.no_grad():
        result["stage_fwd"] = median_times(stage, reps, warmup=1)
        result["pool_fwd"] = median_times({**pool_only, "slice_loop": lambda: grid_patch_pool_loop(fmap, scales)},
                                          reps, warmup=1)
        # linear after the mean == mean after the 1x1 conv (both linear); only sampling differs
        exact = grid_patch_pool_loop(fmap, scales)
        result["max_err"] = (grid_patch_pool(fmap, scales) - exact).abs().max().item()
    result["stage_bwd"] = median_times({k: backward(f) for k, f in stage.items()}, reps, warmup=1)
    result["pool_bwd"] = median_times({k: backward(f) for k, f in pool_only.items()}, reps, warmup=1)
    print(f"  pooling {label}: done", file=sys.stderr, flush=True)
    return result


# -- report -----------------------------------------------------------------------------------


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f}"


def report(book: list[dict[str, object]], pools: list[dict[str, object]], env: str) -> str:
    lines = [env, "", "Momentum + queue bookkeeping (goal: <= 3 % beyond the momentum forward):", "",
             "| model | batch x px | queue K | full step ms | without bookkeeping ms | difference | "
             "bookkeeping alone ms | bookkeeping / step | step without momentum towers ms |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in book:
        base = r["no_bookkeeping"]
        lines.append(
            f"| {r['model']} | {r['batch']} x {r['size']} | {r['queue']} | {ms(r['full'])} | {ms(base)} | "
            f"{(r['full'] - base) / base * 100:+.1f} % | {ms(r['isolated'])} | {r['isolated'] / base * 100:.2f} % | "
            f"{ms(r['no_momentum_towers'])} |")
    lines += ["", "Multi-scale patch pooling, scales (1, 6) = 37 patches, feature map -> per-patch vectors "
              "(goal: >= 20x). Stage = pooling + per-patch projection: ours = one batched matrix product "
              "with the (H*W, 37) pooling matrix, then a linear on the 37 vectors; released = per-sample "
              "loop, grid_sample of 4x4 points per box, 1x1 conv on every point, mean. Pool = pooling "
              "alone: ours (matrix), adaptive_avg_pool2d per scale, released loop without its conv, and a "
              "per-sample per-box slicing loop.", "",
              "| feature map -> dim | stage fwd ours / released ms | speed-up | stage fwd+bwd ours / released ms | "
              "speed-up | pool fwd ours / adaptive / released / slicing ms | pool fwd+bwd ours / adaptive / released ms |",
              "|---|---|---:|---|---:|---|---|"]
    for p in pools:
        sf, sb, pf, pb = p["stage_fwd"], p["stage_bwd"], p["pool_fwd"], p["pool_bwd"]
        lines.append(
            f"| {p['label']} {p['shape']} -> {p['dim']} | {ms(sf['ours'])} / {ms(sf['released'])} | "
            f"**{sf['released'] / sf['ours']:.0f}x** | {ms(sb['ours'])} / {ms(sb['released'])} | "
            f"**{sb['released'] / sb['ours']:.0f}x** | {ms(pf['ours'])} / {ms(pf['adaptive'])} / "
            f"{ms(pf['released'])} ({pf['released'] / pf['ours']:.0f}x) / {ms(pf['slice_loop'])} "
            f"({pf['slice_loop'] / pf['ours']:.0f}x) | {ms(pb['ours'])} / {ms(pb['adaptive'])} / "
            f"{ms(pb['released'])} ({pb['released'] / pb['ours']:.0f}x) |")
    lines.append("")
    lines.append(f"Batched pooling equals the per-box slicing loop to {max(p['max_err'] for p in pools):.1e} "
                 "(the released code samples 4x4 bilinear points per box instead of averaging every cell).")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=15, help="timed repetitions per variant")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--no-lite", action="store_true", help="skip brivl-lite (slow on 2 cores)")
    parser.add_argument("--no-record", action="store_true", help="do not write bench/RESULTS.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load0 = os.getloadavg()[0]

    book = [bookkeeping("brivl-tiny", 32, args.reps)]
    if not args.no_lite:
        book.append(bookkeeping("brivl-lite", 16, max(3, args.reps // 3)))
    pools = [
        pooling("brivl-tiny 64 px", 32, 128, 8, 64, 128, args.reps),
        pooling("brivl-lite 224 px", 32, 1280, 7, 224, 256, args.reps),
        pooling("released B5 456 px", 8, 2048, 15, 456, 2048, max(3, args.reps // 3)),
    ]
    env = (f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {args.threads} thread(s); "
           f"load average {load0:.1f} at the start, {os.getloadavg()[0]:.1f} at the end (other jobs share the box). "
           f"Medians of {args.reps} interleaved repetitions (brivl-lite: {max(3, args.reps // 3)}).")
    text = report(book, pools, env)
    print(text)
    if not args.no_record:
        replace_section(SECTION, "python bench/train.py", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

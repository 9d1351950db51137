"""brivl-lite training-step cost on CPU: before and after the frozen-trunk work (issue 13).

Same model, batch and image size, in one run, on real JPEGs of the demo corpus when a shard
directory is given (random pixels otherwise):

- before: what a step cost until now: decode the batch, then each tower runs its frozen
  prefix twice (once in the query tower, once in its momentum copy);
- shared trunk: decode, the frozen prefix once per step, both branches from its output;
- cached trunk: the prefix's outputs looked up by sample key (later epochs: no decode, no
  prefix); the one-off cost of filling the cache is reported per sample;
- cached trunk + bf16 autocast on CPU.

Each variant trains its own copy of the same seeded model for ``--steps`` steps on the same
batches; the losses of every step are compared with the "before" losses (fp32 variants:
goal equal to 1e-4). Goal: cached trunk >= 2x faster than before.

    .venv/bin/python bench/train_step.py [--shards DIR] [--batch 32] [--steps 6] [--no-record]
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.results import replace_section  # noqa: E402
from brivl.env import apply_defaults  # noqa: E402

apply_defaults()

import numpy as np  # noqa: E402
import torch  # noqa: E402

from brivl.model import create_model, info_nce  # noqa: E402
from brivl.train.augment import decode_augment_batch  # noqa: E402
from brivl.train.trunk_cache import TrunkCache  # noqa: E402
from flows.pipeline import CPU_TRAIN  # noqa: E402

SECTION = "## Training step: shared and cached frozen trunk (issue 13)"


def batches(shards: str | None, n: int, batch: int, size: int) -> list[dict]:
    """``n`` batches of encoded JPEGs + captions + keys (demo shards, or synthetic pictures)."""
    if shards:
        from brivl.train import read_split

        data = read_split(shards, "train", limit=n * batch)
        rows = list(zip(data["image"], data["caption"], data["key"], strict=True))
    else:
        import io

        from PIL import Image

        rng = np.random.default_rng(0)
        rows = []
        for i in range(n * batch):
            img = Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8))
            buf = io.BytesIO()
            img.save(buf, "JPEG")
            rows.append((buf.getvalue(), f"a drawing of thing number {i} on a white page", str(i)))
    if len(rows) < n * batch:
        raise SystemExit(f"need {n * batch} training rows, the shards hold {len(rows)}")
    return [{"image": [r[0] for r in rows[b * batch:(b + 1) * batch]],
             "caption": [r[1] for r in rows[b * batch:(b + 1) * batch]],
             "key": [r[2] for r in rows[b * batch:(b + 1) * batch]]} for b in range(n)]


def decode(raw: dict, size: int) -> torch.Tensor:
    out = decode_augment_batch(raw, image_size=size, augment=None)
    return torch.as_tensor(out["pixels"]).float().div_(255.0)


def old_forward(model, pixels, ids, mask, momentum: float) -> torch.Tensor:
    """The step as it was: every tower from pixels, the frozen prefix run per tower."""
    q_img, q_txt = model.image_tower(pixels), model.text_tower(ids, mask)
    with torch.no_grad():
        model.momentum_update(momentum)
        k_img, k_txt = model.image_tower_m(pixels), model.text_tower_m(ids, mask)
    t, valid = model.config.temperature, model.queue_filled
    image_queue, text_queue = model.image_queue.clone(), model.text_queue.clone()
    labels = torch.arange(len(ids)) if model.config.in_batch_negatives else None
    loss = (info_nce(q_img, k_txt, text_queue, t, valid, labels)[0]
            + info_nce(q_txt, k_img, image_queue, t, valid, labels)[0])
    model.enqueue(k_img, k_txt)
    return loss


def run_variant(name: str, model, data: list[dict], size: int, cache: TrunkCache | None,
                bf16: bool) -> tuple[list[float], list[float]]:
    """Train ``model`` on ``data`` (one step a batch); return (step seconds, losses)."""
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    model.train()
    times, losses = [], []
    for raw in data:
        start = time.perf_counter()
        tokens = model.tokenize(raw["caption"])
        ids, mask = tokens["input_ids"], tokens["attention_mask"]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            if name == "before":
                loss = old_forward(model, decode(raw, size), ids, mask, 0.99)
            elif cache is None:
                loss = model(decode(raw, size), ids, mask, momentum=0.99)["loss"]
            else:
                image, text, _ = cache.lookup(model, raw["key"], raw["caption"], raw["image"], tokens,
                                              lambda imgs, keys: _decode_valid(imgs, keys, size),
                                              torch.device("cpu"))
                loss = model(None, ids, mask, momentum=0.99, image_trunk=image, text_trunk=text)["loss"]
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
        losses.append(float(loss))
    return times, losses


def _decode_valid(images, keys, size):
    out = decode_augment_batch({"image": images, "caption": [""] * len(images), "key": keys},
                               image_size=size, augment=None)
    return out["pixels"], out["valid"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", help="a shard directory (default: synthetic JPEGs)")
    parser.add_argument("--batch", type=int, default=CPU_TRAIN["batch_size"])
    parser.add_argument("--steps", type=int, default=6, help="timed steps per variant")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    load0 = os.getloadavg()[0]
    overrides = copy.deepcopy(CPU_TRAIN["model_overrides"])
    torch.manual_seed(0)
    base = create_model(CPU_TRAIN["model"], **overrides)
    size = base.config.image_size
    data = batches(args.shards, args.steps, args.batch, size)
    results = {}
    for name, cached, bf16 in (("before", False, False), ("shared trunk", False, False),
                               ("cached trunk", True, False), ("cached trunk + bf16", True, True)):
        model = copy.deepcopy(base).train()  # as the trainer does: frozen BatchNorms in eval mode
        cache = TrunkCache(bf16=bf16) if cached else None
        if cache is not None:  # epoch 0 fills the cache; the timed steps are a later epoch
            t0 = time.perf_counter()
            for raw in data:
                tokens = model.tokenize(raw["caption"])
                cache.lookup(model, raw["key"], raw["caption"], raw["image"], tokens,
                             lambda imgs, keys: _decode_valid(imgs, keys, size), torch.device("cpu"))
            fill = (time.perf_counter() - t0) / (len(data) * args.batch)
        times, losses = run_variant(name, model, data, size, cache, bf16)
        results[name] = {"step": statistics.median(times[1:] or times), "losses": losses,
                         "fill": fill if cache is not None else None}
        print(f"  {name}: {results[name]['step'] * 1e3:.0f} ms/step, losses {[round(x, 4) for x in losses]}",
              file=sys.stderr, flush=True)
    text = report(results, args, size, load0)
    print(text)
    if not args.no_record:
        replace_section(SECTION, "python bench/train_step.py" + (" --shards <demo shards>" if args.shards else ""),
                        text)
    return 0


def report(results: dict, args: argparse.Namespace, size: int, load0: float) -> str:
    before = results["before"]
    lines = [
        f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; load average {load0:.1f} at the start, "
        f"{os.getloadavg()[0]:.1f} at the end. Model: {CPU_TRAIN['model']} {CPU_TRAIN['model_overrides']}, "
        f"batch {args.batch}, {size} px, {'demo shards' if args.shards else 'synthetic JPEGs'}; "
        f"median of {args.steps - 1} steps after the first.", "",
        "| variant | ms per step | speed-up vs before | max abs loss difference vs before | cache fill ms per sample |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        diff = max(abs(a - b) for a, b in zip(r["losses"], before["losses"], strict=True))
        fill = f"{r['fill'] * 1e3:.1f}" if r["fill"] is not None else "-"
        lines.append(f"| {name} | {r['step'] * 1e3:.0f} | {before['step'] / r['step']:.2f}x | "
                     f"{diff:.1e} | {fill} |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())

"""The frozen-trunk store: embedding a corpus with and without it (issue 13).

What the evaluations of the step-0 model and the frozen-towers baseline, and the index, do
after pretrain has filled the store: encode images and captions whose frozen-trunk outputs
are already on disk. In one run, on the same rows, with ``make run``'s model:

- no store: every image and caption through the whole towers (the baseline);
- store, cold: the same, plus keying and writing the records (the first stage to see them);
- store, warm: a new encoder on the same store (the next stage): only BriVL's own layers run.

Each variant's embeddings are compared with the baseline's (goal: equal to 1e-5).

    .venv/bin/python bench/trunk_store.py [--shards DIR] [--checkpoint DIR] [--rows 512] [--no-record]
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

from bench.results import replace_section  # noqa: E402
from brivl.env import apply_defaults  # noqa: E402

apply_defaults()

import numpy as np  # noqa: E402
import torch  # noqa: E402

SECTION = "## Frozen-trunk store: embedding with stored trunk outputs (issue 13)"


def encoder(checkpoint: str | None, store: Path | None):
    """An encoder of ``checkpoint`` (default: make run's brivl-lite at step 0)."""
    from brivl.inference import Encoder, load

    if checkpoint:
        return load(checkpoint, device="cpu", trunk_store=store)
    from brivl.model import create_model
    from flows.pipeline import CPU_TRAIN

    torch.manual_seed(0)
    model = create_model(CPU_TRAIN["model"], **CPU_TRAIN["model_overrides"])
    return Encoder(model, "cpu", trunk_store=store)


def rows_of(shards: str | None, n: int) -> tuple[list[bytes], list[str]]:
    """``n`` (JPEG bytes, caption) rows: the shards' training split, or synthetic pictures."""
    if shards:
        from brivl.train import read_split

        data = read_split(shards, "train", limit=n)
        return list(data["image"]), [str(c) for c in data["caption"]]
    import io

    from PIL import Image

    rng = np.random.default_rng(0)
    images = []
    for _ in range(n):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (160, 200, 3), dtype=np.uint8)).save(buf, "JPEG")
        images.append(buf.getvalue())
    words = ["red", "apple", "star", "tree", "blue", "car", "black", "cat", "clip", "art"]
    return images, [" ".join(rng.choice(words, size=int(rng.integers(3, 24)))) for _ in range(n)]


def timed(enc, images: list[bytes], captions: list[str]) -> tuple[float, np.ndarray, np.ndarray]:
    start = time.perf_counter()
    img, txt = enc.encode_images(images, batch_size=64), enc.encode_texts(captions, batch_size=64)
    return time.perf_counter() - start, img, txt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", default=None,
                        help="a shard directory (make run's; default: synthetic JPEGs)")
    parser.add_argument("--checkpoint", default=None, help="default: brivl-lite at step 0")
    parser.add_argument("--rows", type=int, default=512)
    parser.add_argument("--no-record", action="store_true", help="do not write RESULTS.md")
    args = parser.parse_args(argv)
    images, captions = rows_of(args.shards, args.rows)
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp)
        base_s, base_img, base_txt = timed(encoder(args.checkpoint, None), images, captions)
        rows = [("no store (baseline)", base_s, 0.0)]
        for label in ("store, cold", "store, warm"):
            seconds, img, txt = timed(encoder(args.checkpoint, store), images, captions)
            diff = max(float(np.abs(img - base_img).max()), float(np.abs(txt - base_txt).max()))
            rows.append((label, seconds, diff))
        size = sum(p.stat().st_size for p in store.rglob("*.npz"))
    n = len(images)
    lines = [f"{n} shard rows (image + caption each), batch 64, torch {torch.__version__}, "
             f"{torch.get_num_threads()} threads, {platform.machine()}, {os.cpu_count()} cores; "
             f"records on disk: {size / 2**20:.0f} MiB.", "",
             "| variant | seconds | ms a row | vs baseline | max embedding difference |",
             "|---|---:|---:|---:|---:|"]
    for label, seconds, diff in rows:
        lines.append(f"| {label} | {seconds:.2f} | {1000 * seconds / n:.1f} | "
                     f"{base_s / seconds:.2f}x | {diff:.1e} |")
    text = "\n".join(lines)
    print(text)
    if not args.no_record:
        command = "python bench/trunk_store.py " + " ".join(argv if argv is not None else sys.argv[1:])
        replace_section(SECTION, command, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

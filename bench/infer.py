"""Throughput of the inference API (brivl.inference): images/s and texts/s, batch 1 and 64.

Each row is timed against a baseline measured in the same run: the model's own
``encode_image`` / ``encode_text`` on already-prepared tensors (no decoding, no resizing,
no tokenising). The ratio API/baseline shows what the API's input handling costs.

    python bench/infer.py                      # brivl-tiny, CPU
    python bench/infer.py --models brivl-tiny brivl-lite --device cuda
    python bench/infer.py --no-record          # print only, leave bench/RESULTS.md alone

On a shared CPU box, run it also with ``OMP_WAIT_POLICY=PASSIVE``: with more runnable
processes than cores, OpenMP's default spin-waiting made torch's 2-thread kernels 25-70x
slower here (batch 1: 1.5 vs 61 images/s), and the passive policy removes that.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

HEADING = "## Inference (issue 6)"
RESULTS = Path(__file__).with_name("RESULTS.md")
WORDS = (
    "red blue green yellow square circle triangle star striped dotted large small on white".split()
)


def make_images(n: int, side: int = 256, seed: int = 0) -> list[bytes]:
    """JPEG bytes of random smooth pictures (decoding cost like real photos of this size)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        small = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
        img = Image.fromarray(small).resize((side, side), Image.BICUBIC)
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def make_texts(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=rng.integers(4, 14))) for _ in range(n)]


def timed(fn, n_items: int, min_seconds: float) -> tuple[float, float]:
    """(items per wall second, items per CPU second of this process) of ``fn``: one
    warm-up call, then repeated until ``min_seconds``. The CPU-second rate is the steadier
    one on a shared box (it does not count time spent waiting for a core)."""
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    calls, start, cpu = 0, time.perf_counter(), time.process_time()
    while True:
        fn()
        calls += 1
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return calls * n_items / elapsed, calls * n_items / (time.process_time() - cpu)


def build_checkpoint(name: str, directory: Path, texts: list[str]) -> float:
    """Create model ``name`` (random heads, shipped pretrained parts) and save it; seconds."""
    from brivl.model import create_model, save_checkpoint
    from brivl.model.tokenizer import train_tokenizer

    start = time.perf_counter()
    try:
        model = create_model(
            name, tokenizer=train_tokenizer(texts, vocab_size=500, min_frequency=1)
        )
    except Exception:  # noqa: BLE001 - configs with their own tokenizer (e.g. MiniLM)
        model = create_model(name)
    save_checkpoint(model, directory)
    return time.perf_counter() - start


def bench_model(name: str, device: str, n: int, min_seconds: float) -> list[dict]:
    from brivl.inference import load
    from brivl.model.preprocess import load_images

    images, texts = make_images(n), make_texts(max(n, 256))
    with tempfile.TemporaryDirectory() as tmp:
        build_s = build_checkpoint(name, Path(tmp), texts)
        start = time.perf_counter()
        enc = load(tmp, device=device)
        load_s = time.perf_counter() - start
    model, size = enc.model, enc.image_size
    rows = []
    for batch in (1, 64):
        k = batch if batch > 1 else 1
        imgs, txts = images[:k], texts[:k]
        pixels = load_images(imgs, size).to(enc.device)
        tokens = {key: v.to(enc.device) for key, v in model.tokenize(txts).items()}

        def raw_images(pixels=pixels) -> None:
            with torch.inference_mode():
                model.encode_image(pixels)

        def raw_texts(tokens=tokens) -> None:
            with torch.inference_mode():
                model.encode_text(**tokens)

        api_i, api_i_cpu = timed(
            lambda imgs=imgs, b=batch: enc.encode_images(imgs, batch_size=b), k, min_seconds
        )
        base_i, base_i_cpu = timed(raw_images, k, min_seconds)
        api_t, api_t_cpu = timed(
            lambda txts=txts, b=batch: enc.encode_texts(txts, batch_size=b), k, min_seconds
        )
        base_t, base_t_cpu = timed(raw_texts, k, min_seconds)
        rows.append(
            {
                "model": name,
                "batch": batch,
                "images/s": api_i,
                "images/cpu-s": api_i_cpu,
                "images/s raw": base_i,
                "img api/raw": api_i_cpu / base_i_cpu,
                "texts/s": api_t,
                "texts/cpu-s": api_t_cpu,
                "texts/s raw": base_t,
                "txt api/raw": api_t_cpu / base_t_cpu,
                "build s": build_s,
                "load s": load_s,
            }
        )
        print(
            f"{name} batch {batch:>2}: {api_i:8.1f} images/s ({api_i_cpu:8.1f}/cpu-s, "
            f"API/raw {api_i_cpu / base_i_cpu:.2f})  {api_t:8.1f} texts/s ({api_t_cpu:8.1f}/cpu-s, "
            f"API/raw {api_t_cpu / base_t_cpu:.2f})",
            flush=True,
        )
    return rows


def markdown(rows: list[dict], device: str, argv: list[str]) -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = [
        f"`python bench/infer.py {' '.join(argv)}` ({time.strftime('%Y-%m-%d')}): device {device}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}, {platform.machine()}, "
        f"{os.cpu_count()} cores, load average {load:.1f} at the end. 256x256 JPEG inputs, "
        "4-14 word captions. /CPU-s = items per CPU-second of the process (steadier on a "
        "shared box). API/raw = CPU-second throughput of the API over the model's own "
        "encode_image/encode_text on ready tensors (no decode/resize/tokenise), same run.",
        "",
        "| model | batch | images/s | images/CPU-s | API/raw | texts/s | texts/CPU-s | API/raw "
        "| load s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['batch']} | {r['images/s']:.1f} | {r['images/cpu-s']:.1f} | "
            f"{r['img api/raw']:.2f} | {r['texts/s']:.1f} | {r['texts/cpu-s']:.1f} | "
            f"{r['txt api/raw']:.2f} | {r['load s']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def record(block: str) -> None:
    """Append ``block`` under this benchmark's heading in RESULTS.md (heading added once)."""
    text = RESULTS.read_text() if RESULTS.is_file() else "# Benchmark results\n"
    if HEADING not in text:
        text = text.rstrip("\n") + f"\n\n{HEADING}\n"
    start = text.index(HEADING) + len(HEADING)
    nxt = text.find("\n## ", start)
    end = len(text) if nxt == -1 else nxt
    section = text[start:end].rstrip("\n") + "\n\n" + block
    RESULTS.write_text(
        text[:start] + section + ("\n" + text[end:].lstrip("\n") if nxt != -1 else "")
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["brivl-tiny"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--n", type=int, default=64, help="distinct inputs prepared")
    parser.add_argument("--min-seconds", type=float, default=2.0, help="timing window per row")
    parser.add_argument("--no-record", action="store_true", help="do not write RESULTS.md")
    args = parser.parse_args(argv)
    rows = []
    for name in args.models:
        rows += bench_model(name, args.device, args.n, args.min_seconds)
    block = markdown(rows, args.device, argv)
    print(block)
    if not args.no_record:
        record(block)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Samples per second per CPU core of the training data path: decode + augment + tokenise.

Variants, all on the same JPEGs in one process with one thread (CPU seconds, so the figure is
per core even on a busy box; wall seconds are printed beside them):

- ``bare``: the baseline, a plain PIL loop: decode the whole JPEG, resize it to S x S;
- ``decode_augment_batch``: the trainer's path (``brivl.train.augment``: seeded random resized
  crop decoded at a reduced DCT scale with ``Image.draft``, crop and resize fused in one
  ``Image.resize(box=...)``, flip, colour jitter and greyscale per image), augmentation on;
- the same without ``Image.draft`` (full decode), to show what the DCT scaling buys;
- the same with ``jitter_on_device`` (colour jitter left to the trainer's device: what the
  CPU still does per sample when training on a GPU);
- the same with augmentation off (evaluation centre crop);
- ``tokenise``: the captions through the model's tokenizer, batched (one ``encode_batch``
  per batch) and one call per caption;
- ``ray``: with ``--ray``, ``decode_augment_batch`` as Ray Data ``map_batches`` on one CPU
  (as ``tasks/pretrain_ray.py`` runs it), samples per wall second.

Images: the real OpenClipArt corpus when it is cached under ``$BRIVL_HOME/cache/openclipart``
(``--source openclipart``; drawings composited on white), else generated photo-like images
(``--source synthetic``: smooth colour fields, edges and sensor noise). Either way they are
stored as the download stage stores them (img2dataset ``keep_ratio``: shortest side
``--stored-side``, default 384 for 224 px training and 512 for 456 px), JPEG quality 90.

    .venv/bin/python bench/data_path.py [--n 128] [--sizes 224 456] [--ray] [--no-record]
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

SECTION = "## Data path: decode + augment + tokenise per CPU core (issue 17)"
STORED = {224: 384, 456: 512}  # shortest side the shards hold for each training size


def synthetic_images(n: int, seed: int = 0) -> list[Image.Image]:
    """Photo-like RGB images: smooth colour fields, a few hard edges, sensor noise (4:3)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        w, h = 800, 600
        y, x = np.mgrid[0:h, 0:w].astype(np.float32)
        field = np.stack([np.sin(x / rng.uniform(30, 120) + rng.uniform(0, 6)),
                          np.cos(y / rng.uniform(30, 120) + rng.uniform(0, 6)),
                          np.sin((x + y) / rng.uniform(40, 160))], -1) * 70 + rng.uniform(60, 190, 3)
        for _ in range(4):  # objects with edges
            cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(30, 160)
            field[(x - cx) ** 2 + (y - cy) ** 2 < r * r] = rng.uniform(0, 255, 3)
        field += rng.normal(0, 6, field.shape)
        out.append(Image.fromarray(np.clip(field, 0, 255).astype(np.uint8)))
    return out


def openclipart_images(n: int) -> list[Image.Image] | None:
    """The first ``n`` pictures (>= 256 px a side) of the cached corpus on white (None when
    the corpus is not cached)."""
    from brivl.demo.openclipart import PNG_ROOT, cache_dir, load_catalogue

    root = cache_dir()
    if not (root / "_fetched.json").is_file():
        return None
    out = []
    for item in load_catalogue(fetch=False):
        path = root / PNG_ROOT / item.file
        if not path.is_file() or min(item.width, item.height) < 256:
            continue
        with Image.open(path) as img:
            rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        out.append(Image.alpha_composite(white, rgba).convert("RGB"))
        if len(out) == n:
            break
    return out or None


def stored_jpegs(images: list[Image.Image], shortest: int) -> list[bytes]:
    """As the download stage stores them: shortest side ``shortest`` (keep ratio), JPEG q90."""
    out = []
    for img in images:
        w, h = img.size
        scale = shortest / min(w, h)
        resized = img.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.LANCZOS)
        buf = io.BytesIO()
        resized.save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def bare_loop(jpegs: list[bytes], size: int) -> None:
    for data in jpegs:
        with Image.open(io.BytesIO(data)) as img:
            np.asarray(img.convert("RGB").resize((size, size), Image.BILINEAR))


def measure(fn: Callable[[], None], samples: int, repeats: int) -> dict[str, float]:
    """Samples per CPU second (per core) and per wall second, best of ``repeats``."""
    fn()  # warm-up
    best_cpu = best_wall = float("inf")
    for _ in range(repeats):
        c0, w0 = time.process_time(), time.perf_counter()
        fn()
        best_cpu = min(best_cpu, time.process_time() - c0)
        best_wall = min(best_wall, time.perf_counter() - w0)
    return {"per_core": samples / best_cpu, "per_wall_s": samples / best_wall}


def run(args: argparse.Namespace) -> tuple[list[dict], str]:
    from brivl.train import TrainAugmentConfig, decode_augment_batch

    source = args.source
    images = openclipart_images(args.n) if source in ("auto", "openclipart") else None
    if images is None:
        if source == "openclipart":
            raise SystemExit("no OpenClipArt corpus cached under $BRIVL_HOME/cache/openclipart")
        images, source = synthetic_images(args.n), "synthetic"
    else:
        source = "openclipart"
    captions = [f"a photo of thing {i} in a red and blue room near a tall tree" for i in range(args.n)]
    keys = [f"k{i}" for i in range(args.n)]
    aug = TrainAugmentConfig()
    device_aug = TrainAugmentConfig(jitter_on_device=True)  # colour jitter left to the GPU
    rows = []
    for size in args.sizes:
        shortest = args.stored_side or STORED.get(size, size + size // 7)
        jpegs = stored_jpegs(images, shortest)
        batch = {"image": jpegs, "caption": captions, "key": keys}
        epoch = [0]

        def augmented(batch=batch, size=size, epoch=epoch) -> None:
            epoch[0] += 1  # a new crop and jitter every call, as every epoch
            decode_augment_batch(batch, image_size=size, augment=aug, seed=0, epoch=epoch[0])

        def no_draft(batch=batch, size=size) -> None:
            draft = Image.Image.draft
            Image.Image.draft = lambda self, mode, wanted: None  # noqa: ARG005 - full decode
            try:
                augmented(batch, size)
            finally:
                Image.Image.draft = draft

        variants = [
            ("bare PIL decode + resize (baseline)", lambda j=jpegs, s=size: bare_loop(j, s)),
            ("decode_augment_batch, augment on", augmented),
            ("  same, without Image.draft (full decode)", no_draft),
            ("decode_augment_batch, augment on, jitter_on_device (CPU part)",
             lambda b=batch, s=size: decode_augment_batch(b, image_size=s, augment=device_aug,
                                                          seed=0)),
            ("decode_augment_batch, augment off",
             lambda b=batch, s=size: decode_augment_batch(b, image_size=s, augment=None)),
        ]
        found = {}
        for name, fn in variants:
            found[name] = measure(fn, args.n, args.repeats)
        base = found[variants[0][0]]["per_core"]
        w, h = Image.open(io.BytesIO(jpegs[0])).size
        for name, m in found.items():
            rows.append({"size": size, "stored": f"{w}x{h}", "variant": name,
                         "per_core": m["per_core"], "per_wall_s": m["per_wall_s"],
                         "vs_bare": m["per_core"] / base})
    rows += tokenise_rows(captions, args.repeats)
    if args.ray:
        rows += ray_rows(images, args, aug)
    return rows, source


def tokenise_rows(captions: list[str], repeats: int) -> list[dict]:
    from brivl.model.tokenizer import TextTokenizer

    tok = TextTokenizer("minilm", 64)
    per_batch = measure(lambda: tok(captions), len(captions), repeats)
    one_by_one = measure(lambda: [tok([c]) for c in captions], len(captions), repeats)
    return [{"size": "", "stored": "", "variant": f"tokenise (MiniLM), {name}",
             "per_core": m["per_core"], "per_wall_s": m["per_wall_s"],
             "vs_bare": m["per_core"] / per_batch["per_core"]}
            for name, m in (("batched", per_batch), ("one call per caption", one_by_one))]


def ray_rows(images: list[Image.Image], args: argparse.Namespace, aug) -> list[dict]:
    """Ray Data map_batches(decode_augment_batch) on one CPU; samples per wall second."""
    import ray
    import ray.data

    from brivl.train import decode_augment_batch
    from tasks.ray_runtime import ensure_ray

    ensure_ray(num_cpus=1)
    rows = []
    for size in args.sizes:
        jpegs = stored_jpegs(images, args.stored_side or STORED.get(size, size))
        items = [{"image": j, "caption": "x", "key": f"k{i}"}
                 for _ in range(args.ray_repeat) for i, j in enumerate(jpegs)]
        def dataset(rows: list[dict], size: int = size):
            return ray.data.from_items(rows).map_batches(
                decode_augment_batch, batch_format="numpy", batch_size=32, num_cpus=1,
                fn_kwargs={"image_size": size, "augment": aug, "seed": 0})

        for _ in dataset(items[:64]).iter_batches(batch_size=32):  # warm-up: workers started
            pass
        t0 = time.perf_counter()
        n = sum(len(b["pixels"]) for b in dataset(items).iter_batches(batch_size=32,
                                                                      batch_format="numpy"))
        wall = time.perf_counter() - t0
        rows.append({"size": size, "stored": "", "variant": "Ray Data map_batches(decode_augment_batch), 1 CPU, augment on (wall, start-up included)",
                     "per_core": n / wall, "per_wall_s": n / wall, "vs_bare": float("nan")})
    ray.shutdown()
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| size | stored JPEG | variant | samples/s per core | samples/s (wall) | vs bare |",
             "|---:|---:|---|---:|---:|---:|"]
    for r in rows:
        ratio = "" if r["vs_bare"] != r["vs_bare"] else f"{r['vs_bare']:.2f}x"
        lines.append(f"| {r['size']} | {r['stored']} | {r['variant']} | {r['per_core']:.0f} | "
                     f"{r['per_wall_s']:.0f} | {ratio} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=128, help="images (and captions) per batch")
    parser.add_argument("--sizes", type=int, nargs="+", default=[224, 456])
    parser.add_argument("--stored-side", type=int, default=None,
                        help="shortest side of the stored JPEGs (default: 384 for 224, 512 for 456)")
    parser.add_argument("--source", choices=("auto", "openclipart", "synthetic"), default="auto")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ray", action="store_true", help="also Ray Data map_batches on 1 CPU")
    parser.add_argument("--ray-repeat", type=int, default=16, help="passes over the images (--ray)")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    rows, source = run(args)
    load = os.getloadavg()[0]
    text = (f"Images: {source}, {args.n} per size; one thread; CPU seconds (per core) and wall "
            f"seconds, best of {args.repeats}; {platform.machine()}, {os.cpu_count()} cores, "
            f"load average {load:.1f} at the end.\n\n" + table(rows))
    print(text)
    if not args.no_record:
        from bench.results import replace_section

        replace_section(SECTION, "python bench/data_path.py " + " ".join(sys.argv[1:]), text)


if __name__ == "__main__":
    main()

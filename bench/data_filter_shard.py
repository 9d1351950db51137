"""Filter and shard benchmarks (issue 3); results go to bench/RESULTS.md.

    python bench/data_filter_shard.py [--rows 2000] [--scale 10] [--no-write]

* **filter+dedup pairs/s per core**: :func:`brivl.filter.run_filter` with one worker on an
  img2dataset-shaped corpus (synthetic pictures, demo-web captions, ~15% faults incl. exact
  and near duplicates). Per core = rows / CPU seconds of the process (the box is shared, so
  wall time is reported too). Goal >= 2,000.
* **shard write vs raw pyarrow**: :func:`brivl.shard.write_shards` of the filter output vs
  a raw pyarrow job over the same rows (read the kept files, write files of the same row
  count with pyarrow defaults). Ratio = raw time / shard time, best of 3 each. Goal >= 0.9.
* **peak RSS at 1x and 10x corpus**: filter + shard in a fresh process per corpus size;
  ratio = peak RSS(10x) / peak RSS(1x), with Arrow's jemalloc pool and its default
  (mimalloc). Goal <= 1.2.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from brivl.env import apply_defaults  # noqa: E402

apply_defaults()
# Arrow's default mimalloc pool keeps freed memory, so a streaming stage's RSS grows with each
# file read; jemalloc (with brivl.shard.eager_arrow_release) does not. Must be set before
# pyarrow is imported; proposed for brivl.env.apply_defaults. The RSS table shows both.
os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "jemalloc")

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
from PIL import Image, ImageEnhance, ImageFilter  # noqa: E402

from brivl import manifest  # noqa: E402
from brivl.filter import FilterConfig, run_filter  # noqa: E402
from brivl.shard import SHARD_SCHEMA, ShardConfig, write_shards  # noqa: E402

HEADING = "## Filter and shard (issue 3)"
ROWS_PER_FILE = 1000  # input shard size, constant across corpus sizes (img2dataset-like)
SHARD_CFG = ShardConfig(rows_per_shard=512, val_fraction=0.02, row_group_rows=128)


# --- corpus -----------------------------------------------------------------------------------
def _picture(rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    cells = rng.integers(0, 256, (max(2, size[1] // 12), max(2, size[0] // 12), 3), np.uint8)
    image = Image.fromarray(cells).resize(size, Image.BICUBIC)
    return image.filter(ImageFilter.GaussianBlur(1.5))


def _jpeg(image: Image.Image, quality: int) -> bytes:
    out = io.BytesIO()
    image.save(out, "JPEG", quality=quality)
    return out.getvalue()


def _caption(rng: random.Random) -> str:
    from brivl.demo import vocab

    labels = {attr: rng.choice(choices) for attr, choices in vocab.CHOICES.items()}
    return vocab.describe(labels, rng, rng.randrange(5))


def make_corpus(folder: Path, rows: int, seed: int = 0) -> Path:
    """img2dataset-shaped Parquet files of ``rows`` pairs, ~15% of them faulty."""
    folder.mkdir(parents=True, exist_ok=True)
    rng, nrng = random.Random(seed), np.random.default_rng(seed)
    recent: list[tuple[Image.Image, bytes]] = []
    batch: list[dict] = []
    for i in range(rows):
        size = (rng.randint(96, 320), rng.randint(96, 320))
        caption = _caption(rng)
        kind = rng.random()
        if kind < 0.04:
            size = (rng.randint(12, 40), rng.randint(12, 40))  # tiny
        elif kind < 0.07:
            caption = rng.choice(["", "photo", "BUY NOW cheap best price buy now"])
        picture = _picture(nrng, size)
        data = _jpeg(picture, rng.randint(80, 92))
        if 0.07 <= kind < 0.11 and recent:
            data = rng.choice(recent)[1]  # exact duplicate of a recent picture
        elif 0.11 <= kind < 0.15 and recent:
            source = rng.choice(recent)[0]
            data = _jpeg(ImageEnhance.Brightness(source).enhance(1.12), 75)  # near duplicate
        recent = (recent + [(picture, data)])[-50:]
        width, height = Image.open(io.BytesIO(data)).size
        batch.append({
            "key": f"{i:09d}", "candidate_id": f"c{seed}-{i:08d}",
            "url": f"http://bench.test/img/{i}.jpg", "caption": caption, "status": "success",
            "error_message": None, "width": width, "height": height, "original_width": width,
            "original_height": height, "exif": None, "sha256": None, "jpg": data,
            "page_url": f"http://bench.test/a{i // 6}.html",
        })
        if len(batch) == ROWS_PER_FILE or i == rows - 1:
            pq.write_table(pa.Table.from_pylist(batch), folder / f"{i // ROWS_PER_FILE:05d}.parquet")
            batch = []
    manifest.write_manifest(folder, stage="download", config={"bench": rows}, inputs=[],
                            code_version="bench", row_counts={"success": rows})
    return folder


# --- measurements -----------------------------------------------------------------------------
def filter_stage(corpus: Path, out: Path) -> dict:
    """Run the filter like the stage task does (report + manifest); CPU and wall time."""
    cpu, wall = time.process_time(), time.perf_counter()
    result = run_filter(corpus, out, FilterConfig(), workers=1)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    manifest.write_manifest(out, stage="filter", config=FilterConfig().to_dict(), inputs=[],
                            code_version="bench", row_counts=result.row_counts)
    return {"rows": result.report["input_rows"], "kept": result.report["kept"], "cpu_s": cpu,
            "wall_s": wall}


def raw_pyarrow_write(filter_dir: Path, out: Path, rows_per_file: int, row_group: int) -> int:
    """The baseline: the same rows, read and written in files of the same size, plain pyarrow."""
    out.mkdir(parents=True, exist_ok=True)
    names = ["candidate_id", "jpg", "caption", "width", "height", "sha256", "url"]
    pending: list[pa.Table] = []
    count = index = 0
    for path in sorted((filter_dir / "kept").glob("*.parquet")):
        pending.append(pq.read_table(path, columns=names).rename_columns(SHARD_SCHEMA.names))
        count += pending[-1].num_rows
        while count >= rows_per_file:
            table = pa.concat_tables(pending)
            pq.write_table(table.slice(0, rows_per_file), out / f"part-{index:05d}.parquet",
                           row_group_size=row_group)
            index += 1
            pending, count = [table.slice(rows_per_file)], count - rows_per_file
    if count:
        pq.write_table(pa.concat_tables(pending), out / f"part-{index:05d}.parquet",
                       row_group_size=row_group)
    return index + (1 if count else 0)


def shard_vs_raw(filter_dir: Path, scratch: Path, repeats: int = 3) -> dict:
    shard_s, raw_s, manifest_s = [], [], []
    for r in range(repeats):
        for which in ("shard", "raw"):
            target = scratch / f"{which}-{r}"
            shutil.rmtree(target, ignore_errors=True)
            start = time.perf_counter()
            if which == "shard":
                result = write_shards(filter_dir, target, SHARD_CFG)
                shard_s.append(time.perf_counter() - start)
                start = time.perf_counter()
                manifest.write_manifest(target, stage="shard", config=SHARD_CFG.to_dict(),
                                        inputs=[], code_version="bench",
                                        row_counts=result.row_counts)
                manifest_s.append(time.perf_counter() - start)
            else:
                raw_pyarrow_write(filter_dir, target, SHARD_CFG.rows_per_shard,
                                  SHARD_CFG.row_group_rows)
                raw_s.append(time.perf_counter() - start)
    shard, raw, man = min(shard_s), min(raw_s), min(manifest_s)
    return {"shard_s": shard, "raw_s": raw, "ratio": raw / shard, "manifest_s": man,
            "ratio_with_manifest": raw / (shard + man), "rows": result.row_counts["total"]}


def child_peak_rss(corpus: Path, scratch: Path, pool: str = "jemalloc") -> dict:
    """Filter + shard in a fresh process with Arrow's ``pool``; its peak RSS in MiB."""
    code = (
        "import json, resource, sys; sys.path.insert(0, sys.argv[3]); "
        "from bench.data_filter_shard import filter_stage, SHARD_CFG; "
        "from brivl.shard import write_shards; from pathlib import Path; "
        "f = filter_stage(Path(sys.argv[1]), Path(sys.argv[2]) / 'filter'); "
        "s = write_shards(Path(sys.argv[2]) / 'filter', Path(sys.argv[2]) / 'shard', SHARD_CFG); "
        "print(json.dumps({'rows': f['rows'], 'shard_rows': s.row_counts['total'], "
        "'peak_rss_mib': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))"
    )
    env = dict(os.environ, ARROW_DEFAULT_MEMORY_POOL=pool)
    out = subprocess.run([sys.executable, "-c", code, str(corpus), str(scratch), str(ROOT)],
                         capture_output=True, text=True, check=True, cwd=ROOT, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


# --- report -----------------------------------------------------------------------------------
def write_results(text: str, path: Path = ROOT / "bench" / "RESULTS.md") -> None:
    """Replace this benchmark's section of RESULTS.md (or append it)."""
    body = path.read_text() if path.is_file() else "# Benchmark results\n"
    start = body.find(HEADING)
    if start >= 0:
        end = body.find("\n## ", start + len(HEADING))
        body = body[:start] + text + (body[end + 1:] if end >= 0 else "")
    else:
        body = body.rstrip("\n") + "\n\n" + text
    path.write_text(body.rstrip("\n") + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2000, help="rows of the 1x corpus")
    parser.add_argument("--scale", type=int, default=10, help="the larger corpus, in x")
    parser.add_argument("--no-write", action="store_true", help="do not touch RESULTS.md")
    args = parser.parse_args(argv)
    scratch = Path(tempfile.mkdtemp(prefix="bench-filter-shard-"))
    try:
        t0 = time.perf_counter()
        small = make_corpus(scratch / "corpus-1x", args.rows, seed=1)
        large = make_corpus(scratch / f"corpus-{args.scale}x", args.rows * args.scale, seed=2)
        print(f"corpora built in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        filter_stage(small, scratch / "warm")  # imports and caches warm
        runs = [filter_stage(small, scratch / f"filter-{r}") for r in range(2)]
        best = min(runs, key=lambda r: r["cpu_s"])
        rss = {
            (pool, size): child_peak_rss(corpus, scratch / f"rss-{pool}-{size}", pool)
            for pool in ("jemalloc", "mimalloc")
            for size, corpus in (("1x", small), (f"{args.scale}x", large))
        }
        # the shard comparison runs on the larger corpus's filter output (fixed costs amortised)
        shard = shard_vs_raw(scratch / f"rss-jemalloc-{args.scale}x" / "filter", scratch / "shard")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    per_core = best["rows"] / best["cpu_s"]
    per_wall = best["rows"] / best["wall_s"]
    big = f"{args.scale}x"
    rss_rows = []
    for pool in ("jemalloc", "mimalloc"):
        one, many = rss[pool, "1x"], rss[pool, big]
        note = "" if pool == "jemalloc" else " (Arrow's default pool)"
        rss_rows += [
            f"| peak RSS filter+shard, {one['rows']:,} rows (1x), {pool}{note} | "
            f"{one['peak_rss_mib']:.0f} MiB | |",
            f"| peak RSS filter+shard, {many['rows']:,} rows ({big}), {pool} | "
            f"{many['peak_rss_mib']:.0f} MiB | |",
            f"| peak RSS {big} / 1x, {pool} | {many['peak_rss_mib'] / one['peak_rss_mib']:.2f} "
            f"| <= 1.2 |",
        ]
    load = os.getloadavg()[0]
    lines = [
        HEADING,
        "",
        f"`python bench/data_filter_shard.py --rows {args.rows} --scale {args.scale}` "
        f"({time.strftime('%Y-%m-%d')}): {platform.machine()}, {os.cpu_count()} cores, load "
        f"average {load:.1f} at the end (other jobs share the box). Corpus: img2dataset-shaped "
        "Parquet, synthetic 96-320 px JPEGs, demo-web captions, ~15% faults (tiny, bad "
        "captions, exact and near duplicates), 1,000 rows per input file.",
        "",
        "| measure | value | goal |",
        "|---|---:|---:|",
        f"| filter+dedup, pairs per CPU-second (1 worker, {best['rows']:,} rows, "
        f"{best['kept']:,} kept) | {per_core:,.0f} | >= 2,000 |",
        f"| same, pairs per wall-second | {per_wall:,.0f} | |",
        f"| shard write ({shard['shard_s']:.2f} s) vs raw pyarrow read+write of the same "
        f"{shard['rows']:,} rows ({shard['raw_s']:.2f} s): raw / shard | "
        f"{shard['ratio']:.2f} | >= 0.9 |",
        f"| same, shard + manifest checksums ({shard['manifest_s']:.2f} s) | "
        f"{shard['ratio_with_manifest']:.2f} | |",
        *rss_rows,
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        write_results(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

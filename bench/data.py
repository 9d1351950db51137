"""Data-stage benchmarks on the demo web (section "## Data (issue 2)" of bench/RESULTS.md).

Download part: the download stage (``brivl.download.run_download``: robots.txt re-check,
SSRF guard, guarded urllib opener with body deadline, image sniffer, rejected rows and
manifest) against bare ``img2dataset.download`` on the same clean image URLs with the same
settings, in one run. Runs alternate (bare, stage, bare, stage, ...) and the medians are
compared; ratio = stage throughput / bare throughput (goal >= 0.95), by wall time and by
CPU-seconds (this process and its reaped children, i.e. img2dataset's workers; steadier on
a shared machine). The demo server runs in this process for both variants alike.

Usage: ``python bench/data.py [--images 500] [--repeats 3] [--no-record]``.
Each part is a function returning result rows; :func:`main` runs them and records.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from brivl.env import apply_defaults  # noqa: E402

apply_defaults()

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from brivl import manifest  # noqa: E402
from brivl.crawl import CrawlConfig, read_candidates, run_crawl  # noqa: E402
from brivl.crawl.candidates import write_candidates, write_pages  # noqa: E402
from brivl.demo import DemoConfig, build_site, serve  # noqa: E402
from brivl.download import DownloadConfig, run_download  # noqa: E402

SECTION = "## Data (issue 2)"
LOOPBACK = ("127.0.0.1/32",)


def clean_candidates(site, server, work: Path) -> Path:
    """Crawl the demo web; keep only the allowed candidates whose image has no fault."""
    crawl_dir = work / "crawl"
    run_crawl(server.seed_urls, CrawlConfig(allow_cidrs=LOOPBACK), crawl_dir)
    truth = {server.base_url + im.path: im for im in site.images}
    rows = [
        r
        for r in read_candidates(crawl_dir).to_pylist()
        if r["decision"] == "allowed" and truth[r["image_url"]].fault is None
    ]
    for r in rows:  # draw every picture now, so neither variant pays the server's rendering
        site.image_bytes(r["image_url"][len(server.base_url) :])
    out = work / "clean"
    out.mkdir()
    write_candidates(rows, out, 100_000)
    write_pages([], out)
    manifest.write_manifest(
        out, stage="crawl", config={}, inputs=[], code_version="bench", row_counts={"n": len(rows)}
    )
    return out


def bare_img2dataset(candidates_dir: Path, out_dir: Path, config: DownloadConfig) -> int:
    """``img2dataset.download`` alone on the same URLs and settings; returns successes."""
    import img2dataset

    table = read_candidates(candidates_dir, ["image_url", "caption", "candidate_id", "page_url"])
    out_dir.mkdir(parents=True)
    url_list = out_dir.parent / f"{out_dir.name}-input.parquet"
    pq.write_table(table, url_list)
    img2dataset.download(
        url_list=str(url_list),
        input_format="parquet",
        url_col="image_url",
        caption_col="caption",
        save_additional_columns=["candidate_id", "page_url"],
        output_folder=str(out_dir),
        output_format=config.output_format,
        image_size=config.image_size,
        resize_mode=config.resize_mode,
        resize_only_if_bigger=config.resize_only_if_bigger,
        encode_format=config.encode_format,
        encode_quality=config.encode_quality,
        timeout=config.timeout_s,
        retries=config.retries,
        processes_count=config.processes_count,
        thread_count=config.thread_count,
        number_sample_per_shard=config.number_sample_per_shard,
        distributor=config.distributor,
        user_agent_token=config.user_agent_token,
        disallowed_header_directives=list(config.disallowed_header_directives),
        compute_hash=config.compute_hash,
        extract_exif=False,
        enable_wandb=False,
    )
    shards = sorted(out_dir.glob("[0-9]*.parquet"))
    status = pa.concat_tables(pq.read_table(p, columns=["status"]) for p in shards)
    return status.column("status").to_pylist().count("success")


def bench_download(n_images: int, repeats: int) -> tuple[list[dict], dict]:
    """Download stage vs bare img2dataset, alternating; returns table rows and a summary."""
    site = build_site(DemoConfig(n_images=n_images, seed=0))
    config = DownloadConfig(allow_cidrs=LOOPBACK, processes_count=2, thread_count=16)
    times: dict[str, list[float]] = {"bare img2dataset": [], "download stage": []}
    cpu: dict[str, list[float]] = {name: [] for name in times}
    counts: dict[str, int] = {}
    work = Path(tempfile.mkdtemp(prefix="brivl-bench-data-"))
    try:
        with serve(site) as server:
            candidates = clean_candidates(site, server, work)
            n = read_candidates(candidates, ["candidate_id"]).num_rows
            import img2dataset  # noqa: F401  (import cost paid once, outside the timings)

            for i in range(repeats):
                for name in times:
                    out = work / f"{name.split()[0]}-{i}"
                    start, cpu_start = time.perf_counter(), cpu_seconds()
                    if name == "bare img2dataset":
                        counts[name] = bare_img2dataset(candidates, out, config)
                    else:
                        body = run_download(candidates, config, out)
                        counts[name] = body["row_counts"]["downloaded"]
                    times[name].append(time.perf_counter() - start)
                    cpu[name].append(cpu_seconds() - cpu_start)
                    print(
                        f"{name} run {i}: {times[name][-1]:.2f} s wall, {cpu[name][-1]:.2f} "
                        f"CPU-s, {counts[name]}/{n} images"
                    )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rows = [
        {
            "variant": name,
            "images": n,
            "downloaded": counts[name],
            "runs_s": " ".join(f"{t:.1f}" for t in ts),
            "median_s": statistics.median(ts),
            "images_per_s": n / statistics.median(ts),
            "median_cpu_s": statistics.median(cpu[name]),
            "images_per_cpu_s": n / statistics.median(cpu[name]),
        }
        for name, ts in times.items()
    ]
    ratio = rows[1]["images_per_s"] / rows[0]["images_per_s"]
    cpu_ratio = rows[1]["images_per_cpu_s"] / rows[0]["images_per_cpu_s"]
    return rows, {"images": n, "ratio": ratio, "cpu_ratio": cpu_ratio, "repeats": repeats}


def cpu_seconds() -> float:
    """User + system CPU time of this process and its reaped children."""
    own, children = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def markdown(rows: list[dict]) -> str:
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in rows:
        cells = [f"{v:.3g}" if isinstance(v, float) else str(v) for v in row.values()]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def record(text: str) -> None:
    """Replace this benchmark's section of bench/RESULTS.md (other sections untouched)."""
    path = ROOT / "bench" / "RESULTS.md"
    body = path.read_text() if path.exists() else "# Benchmark results\n"
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    section = f"{SECTION}\n\n`python bench/data.py` ({stamp}, {platform.node()}):\n\n{text}\n"
    if SECTION in body:
        head, rest = body.split(SECTION, 1)
        nxt = rest.find("\n## ")
        tail = rest[nxt + 1 :] if nxt >= 0 else ""
        body = head + section + ("\n" + tail if tail else "")
    else:
        body = body.rstrip("\n") + "\n\n" + section
    path.write_text(body)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=500, help="images on the demo web")
    parser.add_argument("--repeats", type=int, default=3, help="alternating runs per variant")
    parser.add_argument("--no-record", action="store_true", help="do not write bench/RESULTS.md")
    args = parser.parse_args(argv)

    load_before = os.getloadavg()[0]
    rows, summary = bench_download(args.images, args.repeats)
    goal = "met" if min(summary["ratio"], summary["cpu_ratio"]) >= 0.95 else "NOT met"
    text = (
        "### Download stage vs bare img2dataset (same clean URLs, same settings)\n\n"
        f"{markdown(rows)}\n\n"
        f"throughput ratio stage/bare = **{summary['ratio']:.3f}** by wall time, "
        f"**{summary['cpu_ratio']:.3f}** by CPU-seconds, over {summary['images']} images, "
        f"median of {summary['repeats']} alternating runs (goal >= 0.95: {goal}). The stage "
        "includes the robots.txt re-check, SSRF guard, guarded opener, sniffer, rejected rows "
        f"and manifest. {os.cpu_count()} cores; load average {load_before:.1f} before, "
        f"{os.getloadavg()[0]:.1f} after (a shared machine: wall times are noisy)."
    )
    print(text)
    if not args.no_record:
        record(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

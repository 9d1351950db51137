"""``brivl download``: download a crawl's allowed candidates with img2dataset."""

from __future__ import annotations

import argparse
from pathlib import Path

from flows.commands import checked

ORCHESTRATED = "served"  # a Prefect task only with a server configured (tasks.standalone)
HELP = "download a crawl's allowed image candidates with img2dataset (shards + rejected + manifest)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--input",
        required=True,
        type=Path,
        metavar="CANDIDATES_DIR",
        help="a crawl output directory (or its _manifest.json)",
    )
    parser.add_argument(
        "--out", help="output directory (default: $BRIVL_HOME/data/download/<stage key>)"
    )
    parser.add_argument(
        "--allow-cidr",
        action="append",
        default=[],
        metavar="CIDR",
        help="non-public network the SSRF guard lets through, e.g. 127.0.0.1/32 (repeatable)",
    )
    parser.add_argument(
        "--output-format",
        choices=["parquet", "webdataset", "files"],
        help="img2dataset writer (default parquet)",
    )
    parser.add_argument("--image-size", type=int, help="resize target in pixels (default 384)")
    parser.add_argument(
        "--resize-mode",
        choices=["no", "keep_ratio", "keep_ratio_largest", "center_crop", "border"],
        help="img2dataset resize mode (default keep_ratio)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        dest="timeout_s",
        help="per-image timeout in seconds, whole body included (default 10)",
    )
    parser.add_argument("--retries", type=int, help="extra attempts per failed image (default 0)")
    parser.add_argument(
        "--processes", type=int, dest="processes_count", help="img2dataset processes (default 2)"
    )
    parser.add_argument(
        "--threads", type=int, dest="thread_count", help="threads per process (default 16)"
    )
    parser.add_argument(
        "--shard-size",
        type=int,
        dest="number_sample_per_shard",
        help="rows per shard (default 1000)",
    )
    parser.add_argument(
        "--distributor",
        choices=["multiprocessing", "ray"],
        help="img2dataset distributor (default multiprocessing)",
    )
    parser.add_argument(
        "--robots-token",
        "--user-agent-token",  # deprecated spelling
        dest="robots_token",
        help="product token matched in robots.txt and X-Robots-Tag, also sent in img2dataset's "
        "User-Agent (default brivl; the crawl's --robots-token)",
    )
    parser.add_argument(
        "--config", type=Path, help="JSON file of DownloadConfig fields (flags override it)"
    )
    parser.add_argument(
        "--retry-transient", action="store_true",
        help="then retry the rows that failed for a passing reason (timeout, connection error, "
        "429, 5xx) and only those; successes, 404s, robots and opt-outs are kept as they are",
    )


def build_config(args: argparse.Namespace) -> dict:
    """The download config dict from ``--config`` plus the flags given."""
    from brivl.config_parse import read_json_config

    config = read_json_config(args.config) if args.config else {}
    for name in (
        "output_format",
        "image_size",
        "resize_mode",
        "timeout_s",
        "retries",
        "processes_count",
        "thread_count",
        "number_sample_per_shard",
        "distributor",
        "robots_token",
    ):
        value = getattr(args, name)
        if value is not None:
            config[name] = value
    if args.allow_cidr:
        config["allow_cidrs"] = args.allow_cidr
    return config


def check(args: argparse.Namespace) -> tuple[Path, dict]:
    """``(crawl directory, normalised download config)``: the input must be a crawl output."""
    from brivl.download import DownloadConfig
    from brivl.errors import InputError
    from brivl.manifest import MANIFEST_NAME, ManifestError, read_manifest

    source = args.input.parent if args.input.name == MANIFEST_NAME else args.input
    try:
        if read_manifest(source)["stage"] != "crawl":
            raise ManifestError(f"{source} is not a crawl output (brivl crawl writes one)")
        return source, DownloadConfig.from_dict(build_config(args)).to_dict()
    except (ManifestError, ValueError, TypeError) as exc:
        raise InputError(str(exc)) from exc


def run(args: argparse.Namespace) -> int:
    from brivl.manifest import read_manifest

    source, config = checked(args, check)
    from brivl.report import print_table
    from tasks.download import download_task
    from tasks.standalone import call_stage

    out_dir = call_stage(download_task, str(source), config, out_dir=args.out)
    if args.retry_transient:
        from tasks.download import retry_download

        retried = retry_download(str(source), config, out_dir=args.out)
        done = (retried or {}).get("extra", {}).get("retried", {})
        print(f"retried {done.get('rows', 0)} transient failures: {done.get('recovered', 0)} "
              "downloaded now")
    counts = read_manifest(out_dir)["row_counts"]
    rows = [{"outcome": "downloaded", "count": counts["downloaded"]}]
    rows += [
        {"outcome": f"rejected: {k.split(':', 1)[1]}", "count": v}
        for k, v in sorted(counts.items())
        if k.startswith("rejected:")
    ]
    rows.append({"outcome": "candidates", "count": counts["candidates"]})
    print_table(f"download → {out_dir}", rows)
    print(out_dir)
    return 0

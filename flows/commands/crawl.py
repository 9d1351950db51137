"""``brivl crawl``: crawl seed URLs (or read WARC files) into a candidates directory."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from flows.commands import checked

ORCHESTRATED = "served"  # a Prefect task only with a server configured (tasks.standalone)
HELP = "crawl seed URLs (or WARC files) into image candidates (Parquet + manifest)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--seed", action="append", default=[], metavar="URL", help="seed page (repeatable)"
    )
    parser.add_argument(
        "--warc",
        action="append",
        default=[],
        metavar="FILE",
        help="WARC file to read instead of / besides crawling (repeatable)",
    )
    parser.add_argument(
        "--allow-domain",
        action="append",
        default=[],
        metavar="DOMAIN",
        help="follow links on this domain and its subdomains (repeatable; default: the seeds' hosts)",
    )
    parser.add_argument(
        "--allow-cidr",
        action="append",
        default=[],
        metavar="CIDR",
        help="non-public network the SSRF guard lets through, e.g. 127.0.0.1/32 (repeatable)",
    )
    parser.add_argument("--max-pages", type=int, help="most pages fetched (default 1000)")
    parser.add_argument("--max-depth", type=int, help="link hops from a seed (default 3)")
    parser.add_argument("--workers", type=int, help="fetch threads (default 8)")
    parser.add_argument(
        "--per-host",
        type=int,
        dest="per_host_concurrency",
        help="requests in flight per host (default 2)",
    )
    parser.add_argument(
        "--delay",
        type=float,
        dest="per_host_delay_s",
        help="seconds between requests to one host (default 0; a robots Crawl-delay wins if larger)",
    )
    parser.add_argument("--user-agent", help="User-Agent header")
    parser.add_argument(
        "--robots-token",
        help="product token matched in robots.txt and robots meta/X-Robots-Tag (default brivl; "
        "the download's --robots-token)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        dest="timeout_s",
        help="per-request timeout in seconds (default 10)",
    )
    parser.add_argument(
        "--caption-priority",
        help="comma list of the caption's fields in order, from alt,title,figcaption,sibling,"
        "cell,heading,surrounding (default: all, in that order)",
    )
    parser.add_argument(
        "--config", type=Path, help="JSON file of CrawlConfig fields (flags override it)"
    )
    parser.add_argument(
        "--refresh", default="", help="any string: a new value re-crawls an unchanged seed list"
    )
    parser.add_argument(
        "--out", help="output directory (default: $BRIVL_HOME/data/crawl/<stage key>)"
    )


def build_config(args: argparse.Namespace) -> dict:
    """The crawl config dict from ``--config`` plus the flags given."""
    from brivl.config_parse import read_json_config

    config = read_json_config(args.config) if args.config else {}
    for name in (
        "max_pages",
        "max_depth",
        "workers",
        "per_host_concurrency",
        "per_host_delay_s",
        "user_agent",
        "robots_token",
        "timeout_s",
    ):
        value = getattr(args, name)
        if value is not None:
            config[name] = value
    if args.allow_domain:
        config["allowed_domains"] = args.allow_domain
    if args.allow_cidr:
        config["allow_cidrs"] = args.allow_cidr
    if args.caption_priority:
        caption = dict(config.get("caption") or {})
        caption["priority"] = [p.strip() for p in args.caption_priority.split(",") if p.strip()]
        config["caption"] = caption
    return config


def check(args: argparse.Namespace) -> dict:
    """The normalised crawl config, once the seeds (or WARC files) and flags are checked."""
    from brivl.crawl import CrawlConfig
    from brivl.crawl.seeds import check_seeds
    from brivl.errors import InputError

    if not args.seed and not args.warc:
        raise InputError("give at least one --seed URL or --warc FILE")
    check_seeds(args.seed)
    return CrawlConfig.from_dict(build_config(args)).to_dict()


def run(args: argparse.Namespace) -> int:
    config = checked(args, check)
    from brivl.crawl.stage import no_candidates_message
    from brivl.manifest import read_manifest
    from brivl.report import print_table
    from tasks.crawl import crawl_task
    from tasks.standalone import call_stage

    out_dir = call_stage(crawl_task, args.seed, config, out_dir=args.out, warc_files=args.warc,
                         refresh=args.refresh)
    body = read_manifest(out_dir)
    extra = body["extra"]
    rows = [
        {"what": f"pages: {k}", "count": v} for k, v in sorted(extra["pages_by_outcome"].items())
    ]
    rows += [
        {"what": f"candidates: {k}", "count": v}
        for k, v in sorted(extra["candidates_by_decision"].items())
    ]
    rows.append({"what": "candidates", "count": body["row_counts"]["candidates"]})
    print_table(f"crawl → {out_dir}", rows)
    print(out_dir)
    if not body["row_counts"]["candidates"]:
        print(f"brivl crawl: {no_candidates_message(body, out_dir)}", file=sys.stderr)
        return 1
    return 0

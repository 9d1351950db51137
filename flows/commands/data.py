"""``brivl data``: crawl → download → filter → shard in one flow, with a closing summary."""

from __future__ import annotations

import argparse

from flows.commands import checked

HELP = "run the data flow (crawl → download → filter → shard) from seed URLs"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", action="append", required=True, metavar="URL",
                        help="seed URL (repeatable)")
    parser.add_argument("--allow-domain", action="append", default=[], metavar="DOMAIN",
                        help="domain the crawler may visit (default: the seeds' hosts)")
    parser.add_argument("--allow-cidr", action="append", default=[], metavar="CIDR",
                        help="private/loopback network the crawler may reach on purpose")
    parser.add_argument("--max-pages", type=int, default=None, help="crawl page limit")
    parser.add_argument("--config", default=None, metavar="JSON",
                        help='JSON file {"crawl": {...}, "download": {...}, "filter": {...}, '
                        '"shard": {...}} of stage config overrides')
    parser.add_argument("--refresh", default="", help="any new value forces a fresh crawl")
    parser.add_argument("--eval-sets", default="", metavar="DIR",
                        help="evaluation sets whose images are kept out of the shards")


def check(args: argparse.Namespace) -> tuple[dict, dict]:
    """``(overrides file, crawl section with the flags)``, the seeds and four sections checked."""
    from brivl.config_parse import read_json_config
    from brivl.crawl.seeds import check_seeds
    from flows.checks import check_data_configs

    check_seeds(args.seed)
    cfg = read_json_config(args.config) if args.config else {}
    crawl = dict(cfg.get("crawl", {}))
    if args.allow_domain:
        crawl["allowed_domains"] = args.allow_domain
    if args.allow_cidr:
        crawl["allow_cidrs"] = args.allow_cidr
    if args.max_pages is not None:
        crawl["max_pages"] = args.max_pages
    check_data_configs(crawl, cfg.get("download"), cfg.get("filter"), cfg.get("shard"))
    if getattr(args, "eval_sets", ""):
        from flows.checks import check_eval_sets

        check_eval_sets(args.eval_sets)
    return cfg, crawl


def run(args: argparse.Namespace) -> int:
    from brivl.report import print_table
    from flows.commands.pipeline import rejection_rows, stage_rows
    from flows.data import data_flow
    from tasks.prefect_server import wait_ready

    cfg, crawl = checked(args, check)
    wait_ready()
    result = data_flow(
        args.seed, crawl, cfg.get("download", {}), cfg.get("filter", {}), cfg.get("shard", {}),
        refresh=args.refresh, eval_sets=args.eval_sets or None,
    )
    print_table("Rows per stage", stage_rows(result))
    print_table("Rejected by reason", rejection_rows(result))
    print(result["shard_dir"])
    return 0

"""``brivl takedown``: remove images from the shards and the search index, tag model versions."""

from __future__ import annotations

import argparse
import json

from flows.commands import checked

HELP = ("remove images (by URL or sha256) from the shards and search indices; tag the model "
        "versions trained on them takedown_pending=<count>")
ORCHESTRATED = False  # runs no Prefect flow or task: its database is not prepared


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--urls", help="file of image or page URLs, one per line (# comments)")
    parser.add_argument("--sha256", help="file of sha256 digests (stored or downloaded bytes), "
                        "one per line")
    parser.add_argument("--shards", action="append", metavar="DIR",
                        help="a shard stage directory (repeatable; default: all in $BRIVL_HOME)")
    parser.add_argument("--index", action="append", metavar="DIR",
                        help="an index stage directory (repeatable; default: all in $BRIVL_HOME)")
    parser.add_argument("--model-name", action="append", metavar="NAME",
                        help="registered model whose versions to tag (repeatable; default: all)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")


def check(args: argparse.Namespace):
    """The request, read and checked (an InputError names the file and line)."""
    from brivl.errors import InputError
    from brivl.takedown import Request

    if not args.urls and not args.sha256:
        raise InputError("takedown: give --urls FILE and/or --sha256 FILE")
    return Request.from_files(args.urls, args.sha256)


def run(args: argparse.Namespace) -> int:
    from brivl.report import print_table
    from tasks.takedown import PENDING_TAG, run_takedown

    summary = run_takedown(checked(args, check), args.shards, args.index, args.model_name)
    if args.json:
        print(json.dumps(summary, indent=2, sort_keys=True))
        return 0
    rows = [{"what": "shards", "directory": s["dir"], "removed": s["removed"],
             "manifest": f"{s['old'][:12]} -> {s['new'][:12]}"} for s in summary["shards"]]
    rows += [{"what": "index", "directory": s["dir"], "removed": s["removed"],
              "manifest": f"{s['old'][:12]} -> {s['new'][:12]}"} for s in summary["indices"]]
    rows += [{"what": "model", "directory": f"{m['model']} v{m['version']}",
              "removed": m[PENDING_TAG], "manifest": f"{PENDING_TAG}={m[PENDING_TAG]}"}
             for m in summary["models"]]
    if summary["trunk_store"]:  # cached features of every image: recomputed by the next run
        store = summary["trunk_store"]
        rows.append({"what": "trunk store", "directory": store["dir"],
                     "removed": f"{store['packs_removed']} packs", "manifest": "cleared"})
    if not rows:
        print("takedown: no shard or index row matched; nothing changed")
        return 0
    print_table(f"takedown: {summary['removed']} shard rows removed", rows)
    return 0

"""``brivl index``: build the retrieval index of the shards with a model checkpoint."""

from __future__ import annotations

import argparse
import sys

from flows.commands import checked

ORCHESTRATED = "served"  # a Prefect task only with a server configured (tasks.standalone)
HELP = "embed the shards with a model and build the clip-retrieval index (cached stage)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="checkpoint dir or models:/ URI")
    parser.add_argument("--shards", required=True, help="shard stage directory (train/, val/)")
    parser.add_argument("--out", help="output directory (default: $BRIVL_HOME/data/index/<key>)")
    parser.add_argument("--splits", help="comma-separated splits (default: train,val)")
    parser.add_argument("--batch-size", type=int, help="rows per encoder call (default: "
                        "IndexConfig's)")
    parser.add_argument("--index-key", help="faiss index factory string (default: autofaiss picks)")


def check(args: argparse.Namespace) -> dict:
    """The index config of the flags given, checked (before any setup or model load)."""
    from brivl.retrieval.build import IndexConfig

    config = {k: v for k, v in (("batch_size", args.batch_size), ("index_key", args.index_key))
              if v is not None}
    if args.splits is not None:
        config["splits"] = [s for s in args.splits.split(",") if s]
    IndexConfig.from_dict(config)
    return config


def run(args: argparse.Namespace) -> int:
    from brivl.manifest import read_manifest
    from brivl.report import print_table
    from brivl.retrieval.service import service_hint
    from tasks.index import index_task
    from tasks.standalone import call_stage

    config = checked(args, check)
    out_dir = call_stage(index_task, args.checkpoint, args.shards, config, args.out)
    body = read_manifest(out_dir)
    print_table(
        "index",
        {
            "directory": out_dir,
            "indexed": body["row_counts"]["indexed"],
            "rejected": body["row_counts"]["rejected"],
            "dim": body["extra"].get("dim"),
            "faiss": ", ".join(f"{k}={v}" for k, v in body["extra"].get("index_keys", {}).items()),
        },
    )
    print(out_dir)
    print(service_hint(out_dir), file=sys.stderr)
    return 0

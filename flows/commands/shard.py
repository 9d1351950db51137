"""``brivl shard``: fixed-row train/val Parquet shards for streaming training."""

from __future__ import annotations

import argparse

from flows.commands import checked

ORCHESTRATED = "served"  # a Prefect task only with a server configured (tasks.standalone)
HELP = "write fixed-row train/val Parquet shards (JPEG, caption, key, size, sha256, url)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", required=True,
                        help="filter stage directory (kept/), or a folder of Parquet files with "
                        "(candidate_id or key, caption, jpg or image[, url])")
    parser.add_argument("--out", help="output directory (default: $BRIVL_HOME/data/shard/<key>)")
    parser.add_argument("--rows-per-shard", type=int, help="rows per shard file (default 2048)")
    parser.add_argument("--val-fraction", type=float, help="share of keys in val (default 0.02)")
    parser.add_argument("--row-group-rows", type=int, help="rows per Parquet row group (128)")


def check(args: argparse.Namespace) -> dict:
    """The normalised shard config from the flags given (before any setup)."""
    from brivl.shard import ShardConfig

    values = {
        field: getattr(args, field)
        for field in ("rows_per_shard", "val_fraction", "row_group_rows")
        if getattr(args, field) is not None
    }
    return ShardConfig.from_dict(values).to_dict()


def run(args: argparse.Namespace) -> int:
    from brivl.manifest import read_manifest
    from brivl.report import print_table
    from tasks.shard import shard_task
    from tasks.standalone import call_stage

    config = checked(args, check)
    out_dir = call_stage(shard_task, args.input, config, args.out)
    body = read_manifest(out_dir)
    shards = body["extra"].get("shards", {})
    print_table(
        f"shard: {out_dir}",
        [
            {"split": split, "rows": body["row_counts"].get(split, 0),
             "shards": len(shards.get(split, []))}
            for split in ("train", "val")
        ],
    )
    print(out_dir)
    return 0

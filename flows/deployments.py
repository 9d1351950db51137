"""Register the pipeline's Prefect deployments on the server at ``PREFECT_API_URL``.

- ``brivl-data/scheduled-crawl``: the data flow (crawl → download → filter → shard) on a cron
  schedule, for data engineers. Seeds come from ``--seed`` or ``$BRIVL_SEEDS``; without seeds
  the deployment is registered with its schedule paused.
- ``brivl-retrain/retrain``: pretrain → evaluate → register, run on demand by ML ops with
  ``prefect deployment run brivl-retrain/retrain -p shard_dir=... -p train_config='{...}'``.

Both run on the work pool ``$BRIVL_WORK_POOL`` (default ``brivl-local``, a process pool that
``make serve`` starts a worker for); code is loaded from this checkout.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from brivl.env import apply_defaults

ROOT = Path(__file__).resolve().parents[1]
WORK_POOL = os.environ.get("BRIVL_WORK_POOL", "brivl-local")
DEFAULT_CRON = "0 3 * * *"


def deploy_data(seeds: list[str], cron: str | None, interval: float | None, config: dict) -> str:
    """Register the scheduled data flow; returns the deployment id."""
    from prefect import flow

    schedule = {"interval": interval} if interval else {"cron": cron or DEFAULT_CRON}
    deployment = flow.from_source(str(ROOT), "flows/data.py:data_flow").deploy(
        name="scheduled-crawl",
        work_pool_name=WORK_POOL,
        parameters={"seeds": seeds, **config},
        paused=not seeds,
        print_next_steps=False,
        tags=["brivl", "data"],
        description="crawl → download → filter → shard on a schedule",
        **schedule,
    )
    return str(deployment)


def deploy_retrain() -> str:
    """Register the on-demand retrain flow; returns the deployment id."""
    from prefect import flow

    deployment = flow.from_source(str(ROOT), "flows/retrain.py:retrain_flow").deploy(
        name="retrain",
        work_pool_name=WORK_POOL,
        print_next_steps=False,
        tags=["brivl", "train"],
        description="pretrain → evaluate → register (champion gate)",
    )
    return str(deployment)


def main(argv: list[str] | None = None) -> int:
    """``python -m flows.deployments [--seed URL ...] [--cron EXPR | --interval S]``."""
    parser = argparse.ArgumentParser(prog="python -m flows.deployments", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", action="append", default=None, help="seed URL (repeatable)")
    parser.add_argument("--cron", default=None, help=f"cron schedule (default {DEFAULT_CRON!r})")
    parser.add_argument("--interval", type=float, default=None, help="schedule every N seconds")
    parser.add_argument("--allow-cidr", action="append", default=[],
                        help="private/loopback network the crawl may reach on purpose")
    args = parser.parse_args(argv)
    apply_defaults()
    if not os.environ.get("PREFECT_API_URL"):
        print("PREFECT_API_URL is not set: start the services first (make serve)", file=sys.stderr)
        return 2
    seeds = args.seed or os.environ.get("BRIVL_SEEDS", "").split()
    config = {"crawl_config": {"allow_cidrs": args.allow_cidr}} if args.allow_cidr else {}
    print(f"brivl-data/scheduled-crawl: {deploy_data(seeds, args.cron, args.interval, config)}"
          + ("" if seeds else " (paused: no seeds; pass --seed or set BRIVL_SEEDS)"))
    print(f"brivl-retrain/retrain: {deploy_retrain()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

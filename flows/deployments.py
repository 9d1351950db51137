"""Register the pipeline's Prefect deployments on the server at ``PREFECT_API_URL``.

- ``brivl-data/scheduled-crawl``: the data flow (crawl → download → filter → shard) on a cron
  (or interval) schedule, for data engineers. Seeds come from ``--seed`` or ``$BRIVL_SEEDS``;
  without seeds the deployment is registered with its schedule paused. One run at a time: a
  tick that comes while the previous crawl still runs is cancelled.
- ``brivl-retrain/retrain``: pretrain → evaluate → register, run on demand by ML ops::

      prefect deployment run brivl-retrain/retrain -p shard_dir=/data/shard/<key> \\
          --params '{"train_config": {"model": "brivl-tiny", "steps": 1000, "workers": 4}}'

Retrain runs queue (one at a time). Both run on the work pool ``$BRIVL_WORK_POOL`` (default ``brivl-local``, a process pool that
``make serve`` starts a worker for); code is loaded from this checkout. ``--ray-address`` (default
``$RAY_ADDRESS``) is put into both deployments' environment: the download stage (with
``download_config.distributor = "ray"``) and training (``train_config.workers >= 1``) then run on
that Ray cluster.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from brivl.env import apply_defaults

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CRON = "0 3 * * *"
DATA_PARAMETERS = ("crawl_config", "download_config", "filter_config", "shard_config")


def work_pool() -> str:
    """The work pool both deployments run on (``$BRIVL_WORK_POOL``, default ``brivl-local``)."""
    return os.environ.get("BRIVL_WORK_POOL", "brivl-local")


def _job_variables(ray_address: str | None) -> dict[str, Any]:
    return {"env": {"RAY_ADDRESS": ray_address}} if ray_address else {}


def deploy_data(
    seeds: list[str],
    cron: str | None = None,
    interval: float | None = None,
    parameters: dict[str, Any] | None = None,
    ray_address: str | None = None,
) -> str:
    """Register the scheduled data flow; returns the deployment id.

    ``parameters``: the data flow's stage configs (``crawl_config``, ``download_config``, ...).
    """
    from prefect import flow
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy

    unknown = sorted(set(parameters or {}) - set(DATA_PARAMETERS))
    if unknown:
        raise ValueError(f"unknown data flow parameters {unknown}; accepted: {list(DATA_PARAMETERS)}")
    schedule = {"interval": interval} if interval else {"cron": cron or DEFAULT_CRON}
    deployment = flow.from_source(str(ROOT), "flows/data.py:data_flow").deploy(
        name="scheduled-crawl",
        work_pool_name=work_pool(),
        parameters={"seeds": seeds, **(parameters or {})},
        job_variables=_job_variables(ray_address),
        # a tick while the last crawl still runs is skipped: two runs would race on one stage dir
        concurrency_limit=ConcurrencyLimitConfig(
            limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW),
        paused=not seeds,
        print_next_steps=False,
        ignore_warnings=True,
        tags=["brivl", "data"],
        description="crawl → download → filter → shard on a schedule",
        **schedule,
    )
    return str(deployment)


def deploy_retrain(ray_address: str | None = None) -> str:
    """Register the on-demand retrain flow; returns the deployment id."""
    from prefect import flow

    deployment = flow.from_source(str(ROOT), "flows/retrain.py:retrain_flow").deploy(
        name="retrain",
        work_pool_name=work_pool(),
        job_variables=_job_variables(ray_address),
        concurrency_limit=1,  # retrains queue up: one training run at a time
        print_next_steps=False,
        ignore_warnings=True,
        tags=["brivl", "train"],
        description="pretrain → evaluate → register (champion gate)",
    )
    return str(deployment)


def _parameters(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(Path(text[1:]).read_text() if text.startswith("@") else text)
    except (OSError, json.JSONDecodeError) as exc:
        raise SystemExit(f"--params: not a JSON object or @file.json ({exc})") from None
    if not isinstance(value, dict):
        raise SystemExit("--params: expected a JSON object, e.g. '{\"download_config\": {...}}'")
    return value


def main(argv: list[str] | None = None) -> int:
    """``python -m flows.deployments [--seed URL ...] [--cron EXPR | --interval S] ...``."""
    parser = argparse.ArgumentParser(prog="python -m flows.deployments", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", action="append", default=None, help="seed URL (repeatable)")
    when = parser.add_mutually_exclusive_group()
    when.add_argument("--cron", default=None, help=f"cron schedule (default {DEFAULT_CRON!r})")
    when.add_argument("--interval", type=float, default=None, help="schedule every N seconds")
    parser.add_argument("--allow-cidr", action="append", default=[],
                        help="private/loopback network the crawl may reach on purpose")
    parser.add_argument("--params", default=None, metavar="JSON|@FILE",
                        help="data flow stage configs, e.g. '{\"download_config\": {...}}'")
    parser.add_argument("--ray-address", default=os.environ.get("RAY_ADDRESS"),
                        help="Ray cluster the flow runs use (default $RAY_ADDRESS)")
    args = parser.parse_args(argv)
    apply_defaults()
    if not os.environ.get("PREFECT_API_URL"):
        print("PREFECT_API_URL is not set: start the services first (make serve)", file=sys.stderr)
        return 2
    seeds = args.seed or os.environ.get("BRIVL_SEEDS", "").split()
    params = _parameters(args.params)
    if args.allow_cidr:
        crawl = params.setdefault("crawl_config", {})
        crawl["allow_cidrs"] = [*crawl.get("allow_cidrs", []), *args.allow_cidr]
    data_id = deploy_data(seeds, args.cron, args.interval, params, args.ray_address)
    print(f"brivl-data/scheduled-crawl: {data_id}"
          + ("" if seeds else " (paused: no seeds; pass --seed or set BRIVL_SEEDS)"))
    print(f"brivl-retrain/retrain: {deploy_retrain(args.ray_address)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

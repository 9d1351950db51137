"""img2dataset's Ray distributor, with the shard retries it lacks and shard placement recorded.

img2dataset 1.47's ``ray_distributor`` submits every shard as a Ray task and ``ray.get``s them
all: a shard whose downloader returns ``(False, row)`` (an exception inside the shard) is
dropped, ``max_shard_retry`` is ignored, and one task lost with its worker fails the whole call.
:func:`ray_distributor` keeps img2dataset's distributor signature and

- runs each shard as a Ray task spread over the cluster's nodes (``SPREAD``), which Ray itself
  reruns when its worker process or node dies (``max_retries``);
- resubmits the shards that still failed, up to ``max_shard_retry`` rounds, like img2dataset's
  multiprocessing distributor does;
- records which node ran each shard (:data:`LAST_RUN`, also printed as a table).

:func:`use_ray_distributor` installs it in ``img2dataset.main`` for the duration of a block
(img2dataset looks its distributors up by name at call time). Needs a running Ray
(:func:`tasks.ray_runtime.ensure_ray`).
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

import ray

from brivl.compat.img2dataset import patched_main
from brivl.report import print_table

LAST_RUN: list[dict[str, Any]] = []
"""The last :func:`ray_distributor` call's shard attempts: ``{shard_id, attempt, node_id,
ok, error}`` in completion order."""
TASK_RETRIES = 3  # Ray reruns a shard task whose worker or node died this often


@ray.remote(max_retries=TASK_RETRIES, scheduling_strategy="SPREAD")
def _download_shard(downloader: Callable[[Any], tuple[bool, Any]], shard: Any) -> tuple:
    status, row = downloader(shard)
    return bool(status), row, ray.get_runtime_context().get_node_id()


def ray_distributor(
    processes_count: int,
    downloader: Callable[[Any], tuple[bool, Any]],
    reader: Iterable[Any],
    _subjob_size: int | None,
    max_shard_retry: int,
) -> list[Any]:
    """Download every shard of ``reader`` as Ray tasks; retry failed shards; return the ones
    that still failed after ``max_shard_retry`` extra rounds (their rows are missing from the
    output and img2dataset's incremental mode retries them on the next run)."""
    LAST_RUN.clear()

    def run(shards: Iterable[Any], attempt: int) -> list[Any]:
        pending = {_download_shard.remote(downloader, shard): shard for shard in shards}
        failed = []
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            shard = pending.pop(done[0])
            record = {"shard_id": shard[0], "attempt": attempt, "node_id": None, "ok": False,
                      "error": None}
            try:
                record["ok"], _, record["node_id"] = ray.get(done[0])
            except ray.exceptions.RayError as exc:  # the task was lost even after Ray's retries
                record["error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
            LAST_RUN.append(record)
            if not record["ok"]:
                failed.append(shard)
        return failed

    failed = run(reader, 0)
    for attempt in range(1, max_shard_retry + 1):
        if not failed:
            break
        print(f"retrying {len(failed)} failed shards (round {attempt} of {max_shard_retry})")
        failed = run(failed, attempt)
    _print_summary(failed)
    return failed


def _print_summary(failed: list[Any]) -> None:
    ok = Counter(r["node_id"][:12] for r in LAST_RUN if r["ok"])
    rows = {f"node {node}": f"{count} shards" for node, count in sorted(ok.items())}
    rows["retried shard attempts"] = sum(r["attempt"] > 0 for r in LAST_RUN)
    rows["shards failed"] = len(failed)
    print_table("img2dataset on Ray", rows)


def use_ray_distributor() -> contextlib.AbstractContextManager[None]:
    """Within the block, ``img2dataset.download(distributor="ray")`` uses :func:`ray_distributor`."""
    return patched_main(ray_distributor=ray_distributor)

"""MLflow run scoping for flows: one parent run per pipeline run, reused by subflows."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from tasks import tracking


@contextlib.contextmanager
def pipeline_run(name: str, tags: dict[str, Any] | None = None) -> Iterator[str]:
    """Open the parent MLflow run unless one is already open (a subflow of the pipeline).

    Yields the parent run id.
    """
    existing = tracking.parent_run_id()
    if existing:
        yield existing
        return
    with tracking.start_pipeline_run(name, tags) as run:
        yield run.info.run_id


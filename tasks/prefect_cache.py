"""Prefect's task result records: where they live, whether one is safe to read, and which
serializer a task run persists with.

Prefect 3.9 keeps a cached task result as a JSON record (``metadata.serializer`` + the
serialised ``result``) in ``PREFECT_LOCAL_STORAGE_PATH/<cache key>``, and a task run's
context carries the ``result_store`` its transaction writes with. :mod:`tasks.stage` relies
on both to keep stage results plain JSON (never pickles) and to drop stale records.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from brivl.compat import require

PREFECT_VERSION = require("prefect", ("3.9",), "tasks/prefect_cache.py")

from prefect.serializers import JSONSerializer  # noqa: E402

STAGE_SERIALIZER = JSONSerializer(object_encoder=None, object_decoder=None)
"""Stage results are small JSON values (paths as strings, dicts of numbers)."""
MAX_RECORD_BYTES = 1_000_000


def record_path(cache_key: str) -> Path:
    """Where Prefect keeps the result record of ``cache_key`` (its local storage)."""
    return Path(os.environ.get("PREFECT_LOCAL_STORAGE_PATH", "")) / cache_key


def untrusted_record(path: Path) -> str | None:
    """Why the result record at ``path`` must not be read, or ``None`` when it is a JSON
    record written with :data:`STAGE_SERIALIZER` holding a JSON value."""
    try:
        if path.stat().st_size > MAX_RECORD_BYTES:
            return f"over {MAX_RECORD_BYTES} bytes"
        record = json.loads(path.read_bytes())
        serializer = record["metadata"]["serializer"]
        if serializer != STAGE_SERIALIZER.model_dump(mode="json"):
            return f"serializer {serializer!r} is not the stage JSON serializer"
        json.loads(record["result"])
    except (OSError, ValueError, TypeError, KeyError) as exc:
        return f"unreadable ({type(exc).__name__}: {exc})"
    return None


def pin_results(context: Any) -> None:
    """Make this task run persist its result with :data:`STAGE_SERIALIZER` (whatever the
    task's decorator says): the run's result store, which Prefect's transaction then uses."""
    store = getattr(context, "result_store", None)
    if store is not None and store.serializer != STAGE_SERIALIZER:
        context.result_store = store.model_copy(update={"serializer": STAGE_SERIALIZER})

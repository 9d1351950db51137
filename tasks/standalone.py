"""One-stage commands without a Prefect server: the stage body runs in the process.

A ``brivl <stage>`` command called with no Prefect server configured (no
``PREFECT_API_URL``) would start an ephemeral server of its own, which costs about 12 s on a
2-core machine for a few milliseconds of bookkeeping. Here such a command calls the task's
function directly (``task.fn``): the stage contract (:class:`tasks.stage.Stage`) still
resolves the key, skips a finished output ("reused its finished output"), writes the
manifest and logs the MLflow child run, and the task's retries are kept. With a server
configured (``make serve``, a Prefect Cloud/self-hosted URL), or ``BRIVL_PREFECT=always``,
the command runs as a Prefect task as before and shows up in the Prefect UI.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from brivl.errors import USER_ERRORS


def orchestrated() -> bool:
    """True when a one-stage command should run as a Prefect task (a server is configured,
    or ``BRIVL_PREFECT=always``)."""
    return bool(os.environ.get("PREFECT_API_URL")) or os.environ.get("BRIVL_PREFECT") == "always"


def call_stage(task: Any, *args: Any, **kwargs: Any) -> Any:
    """``task(*args, **kwargs)`` under Prefect when :func:`orchestrated`, else its function
    in-process with the task's retries (an input error a user must fix is not retried)."""
    if orchestrated():
        return task(*args, **kwargs)
    retries = int(getattr(task, "retries", 0) or 0)
    delay = getattr(task, "retry_delay_seconds", 0) or 0
    for attempt in range(retries + 1):
        try:
            return task.fn(*args, **kwargs)
        except USER_ERRORS:
            raise
        except Exception as exc:
            if attempt == retries:
                raise
            wait = delay[attempt] if isinstance(delay, (list, tuple)) else delay
            print(f"{task.name}: attempt {attempt + 1} failed ({type(exc).__name__}: {exc}); "
                  f"retrying in {wait} s", file=sys.stderr, flush=True)
            time.sleep(float(wait))
    raise AssertionError("unreachable")

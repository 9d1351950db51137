"""Create the local stores (MLflow's SQLite schema, Prefect's database) once per project home.

Two runs started together on a fresh ``BRIVL_HOME`` both found no schema and both created
it: MLflow failed with ``table registered_models already exists`` / ``duplicate column``,
and two ephemeral Prefect servers migrated one SQLite file at once. Here the first process
creates each store under a file lock; the others wait for it, then find the store ready.

- MLflow (local SQLite URI): the first client call creates and upgrades the schema; it is
  made once per process under ``$BRIVL_HOME/.locks/mlflow-store.lock``.
- Prefect (no ``PREFECT_API_URL``: the ephemeral server on ``$PREFECT_HOME/prefect.db``):
  the first process starts its ephemeral server under ``.locks/prefect-store.lock`` (the
  server migrates the database and registers block types at start-up, and stays up for the
  process's flows), then leaves a marker naming the Prefect version; later processes see the
  marker and start their own server only when their first flow needs it.
"""

from __future__ import annotations

import os
import threading
from importlib import metadata
from pathlib import Path

from brivl.env import apply_defaults
from tasks.locking import file_lock

_ready: set[str] = set()
_guard = threading.Lock()


def locks_dir() -> Path:
    """Where the home's lock files live."""
    return apply_defaults() / ".locks"


def prepare_tracking_store() -> None:
    """Create (or upgrade) MLflow's local SQLite schema once, under the home's lock."""
    uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    if not uri.startswith("sqlite:") or uri in _ready:
        return
    with _guard:
        if uri in _ready:
            return
        import mlflow

        with file_lock(locks_dir() / "mlflow-store.lock", "the MLflow store"):
            mlflow.MlflowClient(tracking_uri=uri).search_experiments(max_results=1)
        _ready.add(uri)


def prefect_marker() -> Path:
    """The file saying this home's Prefect database is migrated for this Prefect version."""
    home = Path(os.environ.get("PREFECT_HOME") or apply_defaults() / "prefect")
    return home / f".brivl-db-ready-{metadata.version('prefect')}"


def prepare_orchestration_store() -> None:
    """Migrate this home's Prefect database once, under the home's lock (ephemeral mode)."""
    if os.environ.get("PREFECT_API_URL") or "prefect" in _ready:
        return
    with _guard:
        marker = prefect_marker()
        if not marker.is_file():
            with file_lock(locks_dir() / "prefect-store.lock", "the Prefect database"):
                if not marker.is_file():
                    from prefect.client.orchestration import get_client

                    with get_client(sync_client=True) as client:
                        client.hello()
                    marker.parent.mkdir(parents=True, exist_ok=True)
                    marker.write_text("migrated\n")
        _ready.add("prefect")


def prepare_stores() -> None:
    """Both stores (before the first flow of a process runs; the CLI prepares Prefect's and
    :mod:`tasks.tracking` MLflow's on first use)."""
    prepare_orchestration_store()
    prepare_tracking_store()

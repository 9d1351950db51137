"""One way to start (or join) Ray for every task: project temp dir, no dashboard, loopback."""

from __future__ import annotations

import os
from typing import Any

from brivl.env import apply_defaults

apply_defaults()


def ensure_ray(num_cpus: int | None = None, **kwargs: Any) -> Any:
    """Connect to ``$RAY_ADDRESS`` if set, else start a local Ray; no-op when already up.

    ``num_cpus`` caps a *local* Ray's CPU count (ignored when joining a cluster). Returns
    Ray's context object. Extra keyword arguments go to :func:`ray.init`.
    """
    import ray

    if ray.is_initialized():
        return ray.get_runtime_context()
    address = os.environ.get("RAY_ADDRESS") or None
    options: dict[str, Any] = {
        "address": address,
        "include_dashboard": False,
        "ignore_reinit_error": True,
        "log_to_driver": True,
        "configure_logging": False,
    }
    if address is None:
        options["_temp_dir"] = os.environ["RAY_TMPDIR"]
        options["num_cpus"] = num_cpus
        options["_node_ip_address"] = "127.0.0.1"
        options["runtime_env"] = {"env_vars": _propagated_env()}
    options.update(kwargs)
    return ray.init(**options)


def shutdown_ray() -> None:
    """Stop the local Ray started by :func:`ensure_ray` (no-op when none is running)."""
    import ray

    if ray.is_initialized():
        ray.shutdown()


def _propagated_env() -> dict[str, str]:
    """The project's state/telemetry settings, so Ray workers see the same home."""
    keys = ["BRIVL_HOME", "PYTHONPATH", "MLFLOW_TRACKING_URI", "HF_HOME", "HF_HUB_OFFLINE",
            "TRANSFORMERS_OFFLINE", "TOKENIZERS_PARALLELISM", "DO_NOT_TRACK"]
    return {k: os.environ[k] for k in keys if k in os.environ}

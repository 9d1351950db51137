"""One place for process-wide defaults: project home, telemetry off, offline model hubs.

Every entry point (CLI, tasks, flows, tests) calls :func:`apply_defaults` before importing
Prefect, MLflow or Ray, because those read their settings at import time. Values already in
the environment win, so a user can point any service elsewhere.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

TELEMETRY_OFF = {
    "DO_NOT_TRACK": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "RAY_USAGE_STATS_ENABLED": "0",
    "WANDB_MODE": "disabled",
    "WANDB_SILENT": "true",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    "NO_ALBUMENTATIONS_UPDATE": "1",
    # OpenMP threads that spin while idle starve each other when processes outnumber cores
    # (Ray workers, img2dataset, tests): measured 25-70x slower torch kernels here.
    "OMP_WAIT_POLICY": "PASSIVE",
    # jemalloc (with brivl.shard.eager_arrow_release) holds filter+shard peak RSS ~10% below
    # Arrow's default mimalloc (196 vs 221 MiB, bench/data.py --parts filter-shard)
    "ARROW_DEFAULT_MEMORY_POOL": "jemalloc",
    "RAY_AUTH_MODE": "disabled",
}


def project_home() -> Path:
    """The directory holding all pipeline state (``$BRIVL_HOME``, default ``~/.brivl``)."""
    return Path(os.environ.get("BRIVL_HOME", Path.home() / ".brivl")).expanduser().resolve()


def ray_temp_dir(home: Path | None = None) -> Path:
    """Ray's session directory; short, because Ray's unix socket paths must fit 107 bytes."""
    home = home or project_home()
    candidate = home / "ray"
    # Ray appends "/session_<date>_<time>_<usec>_<pid>/sockets/plasma_store" (~65 bytes)
    if len(str(candidate)) <= 36:
        return candidate
    digest = hashlib.sha256(str(home).encode()).hexdigest()[:10]
    return Path(tempfile.gettempdir()) / f"brivl-ray-{digest}"


def home_locations(home: Path) -> dict[str, str]:
    """Where each tool keeps its state under the project home (environment defaults)."""
    return {
        "PREFECT_HOME": str(home / "prefect"),
        "PREFECT_LOCAL_STORAGE_PATH": str(home / "prefect" / "storage"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}",
        "MLFLOW_ARTIFACTS_DESTINATION": str(home / "mlartifacts"),
        "RAY_TMPDIR": str(ray_temp_dir(home)),
        "HF_HOME": str(home / "hf"),
        "WANDB_DIR": str(home / "wandb"),
    }


# Keys a process with another project home must not inherit: the locations derived from this
# home, and the addresses of this session's running services.
HOME_BOUND_KEYS = (*home_locations(Path("/")), "PREFECT_API_URL", "RAY_ADDRESS")


def apply_defaults(home: Path | None = None) -> Path:
    """Set telemetry-off and state-location defaults; return the project home."""
    home = (home or project_home()).resolve()
    os.environ.setdefault("BRIVL_HOME", str(home))
    for key, value in {**TELEMETRY_OFF, **home_locations(home)}.items():
        os.environ.setdefault(key, value)
    os.environ.setdefault("PREFECT_RESULTS_PERSIST_BY_DEFAULT", "true")
    # run logs at INFO reach the Prefect API (the UI's Logs tab: stage milestones), while the
    # terminal shows only warnings from Prefect (it has the progress bars and tables)
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO")
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_SERVER_API_HOST", "127.0.0.1")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    home.mkdir(parents=True, exist_ok=True)
    return home

"""Start and stop the local services on 127.0.0.1: Prefect server + worker, MLflow server.

``python -m infra.services start|stop|status`` (``make serve`` / ``make stop``). State, logs and
pid files live under ``$BRIVL_HOME/run``. The Prefect worker is stopped with SIGINT (it ignores
SIGTERM while polling); the servers with SIGTERM; anything still alive after a grace period
gets SIGKILL.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from brivl.env import apply_defaults, project_home

HOST = "127.0.0.1"
PREFECT_PORT = int(os.environ.get("BRIVL_PREFECT_PORT", "4200"))
MLFLOW_PORT = int(os.environ.get("BRIVL_MLFLOW_PORT", "5000"))
WORK_POOL = os.environ.get("BRIVL_WORK_POOL", "brivl-local")
PREFECT_API_URL = f"http://{HOST}:{PREFECT_PORT}/api"
MLFLOW_URL = f"http://{HOST}:{MLFLOW_PORT}"


@dataclass
class Service:
    """A long-running local process with a health URL and the signal that stops it."""

    name: str
    argv: list[str]
    health_url: str | None
    stop_signal: int = signal.SIGTERM
    env: dict[str, str] = field(default_factory=dict)


def _bin(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


def services(home: Path) -> list[Service]:
    """The services ``make serve`` starts, in start order."""
    return [
        Service(
            "prefect-server",
            [_bin("prefect"), "server", "start", "--host", HOST, "--port", str(PREFECT_PORT)],
            f"{PREFECT_API_URL}/health",
        ),
        Service(
            "prefect-worker",
            [_bin("prefect"), "worker", "start", "--pool", WORK_POOL, "--type", "process"],
            None,
            signal.SIGINT,
            {"PREFECT_API_URL": PREFECT_API_URL},
        ),
        Service(
            "mlflow",
            [
                _bin("mlflow"), "server",
                "--backend-store-uri", f"sqlite:///{home / 'mlflow.db'}",
                "--artifacts-destination", str(home / "mlartifacts"),
                "--host", HOST, "--port", str(MLFLOW_PORT), "--workers", "1",
            ],
            f"{MLFLOW_URL}/health",
            env={"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        ),
    ]


def _run_dir(home: Path) -> Path:
    path = home / "run"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _pid(home: Path, name: str) -> int | None:
    pidfile = _run_dir(home) / f"{name}.pid"
    if not pidfile.exists():
        return None
    pid = int(pidfile.read_text())
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        pidfile.unlink()
        return None
    return pid


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def start(home: Path, timeout: float = 120.0) -> None:
    """Start every service not already running and wait until each answers its health URL."""
    for service in services(home):
        if _pid(home, service.name):
            print(f"{service.name}: already running")
            continue
        log = open(_run_dir(home) / f"{service.name}.log", "ab")  # noqa: SIM115 - child owns it
        proc = subprocess.Popen(
            service.argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, **service.env},
        )
        (_run_dir(home) / f"{service.name}.pid").write_text(str(proc.pid))
        deadline = time.monotonic() + timeout
        while service.health_url and not _healthy(service.health_url):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"{service.name} did not come up; see {_run_dir(home) / service.name}.log"
                )
            time.sleep(1)
        print(f"{service.name}: started (pid {proc.pid})")
    print(f"Prefect UI: http://{HOST}:{PREFECT_PORT}   (export PREFECT_API_URL={PREFECT_API_URL})")
    print(f"MLflow UI:  {MLFLOW_URL}   (export MLFLOW_TRACKING_URI={MLFLOW_URL})")


def stop(home: Path, grace: float = 20.0) -> None:
    """Stop the services in reverse order with their own signal, then SIGKILL stragglers."""
    for service in reversed(services(home)):
        pid = _pid(home, service.name)
        if pid is None:
            continue
        os.killpg(pid, service.stop_signal)
        deadline = time.monotonic() + grace
        while _pid(home, service.name) and time.monotonic() < deadline:
            time.sleep(0.5)
        if _pid(home, service.name):
            os.killpg(pid, signal.SIGKILL)
        (_run_dir(home) / f"{service.name}.pid").unlink(missing_ok=True)
        print(f"{service.name}: stopped")


def status(home: Path) -> int:
    """Print each service's pid (or 'stopped'); exit 0 when all run."""
    down = 0
    for service in services(home):
        pid = _pid(home, service.name)
        print(f"{service.name}: " + (f"running (pid {pid})" if pid else "stopped"))
        down += pid is None
    return int(down > 0)


def main(argv: list[str] | None = None) -> int:
    """``python -m infra.services start|stop|status``."""
    parser = argparse.ArgumentParser(prog="python -m infra.services", description=__doc__)
    parser.add_argument("action", choices=["start", "stop", "status"])
    args = parser.parse_args(argv)
    home = apply_defaults(project_home())
    if args.action == "start":
        start(home)
    elif args.action == "stop":
        stop(home)
    else:
        return status(home)
    return 0


if __name__ == "__main__":
    sys.exit(main())

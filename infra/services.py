"""Start and stop the local services on 127.0.0.1: Prefect server + worker, MLflow server.

``python -m infra.services start|stop|status`` (``make serve`` / ``make stop``). State, logs and
pid files live under ``$BRIVL_HOME/run``.

- The Prefect server and the MLflow server (SQLite backend, artifacts under
  ``$BRIVL_HOME/mlartifacts``, its job runner off) start together; once the Prefect server
  answers, the work pool is created or updated from ``infra/prefect/work-pool.json`` and a
  process worker for it starts.
- Flow runs started by the worker log to the MLflow *server* (``MLFLOW_TRACKING_URI`` is set to
  it in the worker's environment) and inherit ``RAY_ADDRESS`` when it is set, so ``RAY_ADDRESS=…
  make serve`` sends download and training to that Ray cluster.
- Stop: the worker gets SIGINT (a Prefect worker ignores SIGTERM while polling), the servers
  SIGTERM; a process still alive after a grace period, and any process a service left behind
  (e.g. a flow run the worker started), gets SIGKILL.

Ports: ``BRIVL_PREFECT_PORT`` (4200), ``BRIVL_MLFLOW_PORT`` (5000); pool: ``BRIVL_WORK_POOL``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from brivl.env import apply_defaults, project_home

HOST = "127.0.0.1"
PREFECT_PORT = int(os.environ.get("BRIVL_PREFECT_PORT", "4200"))
MLFLOW_PORT = int(os.environ.get("BRIVL_MLFLOW_PORT", "5000"))
WORK_POOL = os.environ.get("BRIVL_WORK_POOL", "brivl-local")
PREFECT_API_URL = f"http://{HOST}:{PREFECT_PORT}/api"
MLFLOW_URL = f"http://{HOST}:{MLFLOW_PORT}"
WORK_POOL_FILE = Path(__file__).resolve().parent / "prefect" / "work-pool.json"


@dataclass
class Service:
    """A long-running local process with a health URL and the signal that stops it.

    Services of a lower ``stage`` are started (and healthy) before the next stage starts.
    """

    name: str
    argv: list[str]
    health_url: str | None
    stop_signal: int = signal.SIGTERM
    env: dict[str, str] = field(default_factory=dict)
    stage: int = 0


def _bin(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


def services(home: Path) -> list[Service]:
    """The services ``make serve`` starts, in start order."""
    return [
        Service(
            "prefect-server",
            [_bin("prefect"), "server", "start", "--host", HOST, "--port", str(PREFECT_PORT)],
            f"{PREFECT_API_URL}/health",
            # the UI in the browser asks this API (Prefect's default names port 4200 even
            # when the server listens elsewhere)
            env={"PREFECT_UI_API_URL": PREFECT_API_URL},
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
        Service(
            "prefect-worker",
            [_bin("prefect"), "worker", "start", "--pool", WORK_POOL, "--type", "process"],
            None,
            signal.SIGINT,
            {"PREFECT_API_URL": PREFECT_API_URL, "MLFLOW_TRACKING_URI": MLFLOW_URL},
            stage=1,
        ),
    ]


def _run_dir(home: Path) -> Path:
    path = home / "run"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _alive(pid: int) -> bool:
    """True when ``pid`` exists and is not a zombie (an exited child nobody reaped yet)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return state not in ("Z", "X")


def _pid(home: Path, name: str) -> int | None:
    pidfile = _run_dir(home) / f"{name}.pid"
    if not pidfile.exists():
        return None
    pid = int(pidfile.read_text())
    if not _alive(pid):
        pidfile.unlink(missing_ok=True)
        return None
    return pid


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (children, grandchildren, ...), from ``/proc``."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], list(children.get(pid, []))
    while todo:
        child = todo.pop()
        found.append(child)
        todo.extend(children.get(child, []))
    return [p for p in found if _alive(p)]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def _launch(home: Path, service: Service) -> subprocess.Popen | None:
    if _pid(home, service.name):
        print(f"{service.name}: already running")
        return None
    log = open(_run_dir(home) / f"{service.name}.log", "ab")  # noqa: SIM115 - child owns it
    proc = subprocess.Popen(
        service.argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        env={**os.environ, **service.env},
    )
    (_run_dir(home) / f"{service.name}.pid").write_text(str(proc.pid))
    return proc


def _wait_healthy(home: Path, service: Service, proc: subprocess.Popen | None,
                  deadline: float) -> None:
    while service.health_url and not _healthy(service.health_url):
        if (proc is not None and proc.poll() is not None) or time.monotonic() > deadline:
            raise RuntimeError(
                f"{service.name} did not come up; see {_run_dir(home) / service.name}.log"
            )
        time.sleep(0.5)
    if proc is not None:
        print(f"{service.name}: started (pid {proc.pid})")


def work_pool_spec(spec_file: Path = WORK_POOL_FILE, name: str = WORK_POOL) -> Any:
    """The work pool described by ``infra/prefect/work-pool.json`` as a Prefect ``WorkPoolCreate``:
    the process worker's default job template with the file's ``job_variables`` as defaults
    (its ``env`` becomes the default environment of every flow run)."""
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.workers.process import ProcessWorker

    spec = json.loads(spec_file.read_text())
    if spec.get("type", "process") != "process":
        raise ValueError(f"{spec_file}: type {spec['type']!r}; the local worker runs 'process'")
    template = ProcessWorker.get_default_base_job_template()
    properties = template["variables"]["properties"]
    for key, value in spec.get("job_variables", {}).items():
        if key not in properties:
            raise ValueError(f"{spec_file}: unknown job variable {key!r}; known: {sorted(properties)}")
        properties[key]["default"] = value
    return WorkPoolCreate(
        name=name, type="process", base_job_template=template,
        description=spec.get("description"), concurrency_limit=spec.get("concurrency_limit"),
    )


def ensure_work_pool(spec_file: Path = WORK_POOL_FILE, name: str = WORK_POOL) -> None:
    """Create (or update) the work pool on the local Prefect server from ``spec_file``."""
    os.environ["PREFECT_API_URL"] = PREFECT_API_URL
    from prefect.client.orchestration import get_client

    pool = work_pool_spec(spec_file, name)
    with get_client(sync_client=True) as client:
        client.create_work_pool(pool, overwrite=True)
    print(f"work pool {name}: {spec_file.name} applied")


def start(home: Path, timeout: float = 180.0) -> None:
    """Start every service not already running, stage by stage, each healthy before the next."""
    deadline = time.monotonic() + timeout
    by_stage: dict[int, list[Service]] = {}
    for service in services(home):
        by_stage.setdefault(service.stage, []).append(service)
    for stage in sorted(by_stage):
        if stage == 1:
            ensure_work_pool()
        launched = [(service, _launch(home, service)) for service in by_stage[stage]]
        for service, proc in launched:
            _wait_healthy(home, service, proc, deadline)
    print(f"Prefect UI: http://{HOST}:{PREFECT_PORT}   (export PREFECT_API_URL={PREFECT_API_URL})")
    print(f"MLflow UI:  {MLFLOW_URL}   (export MLFLOW_TRACKING_URI={MLFLOW_URL})")


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass


def stop(home: Path, grace: float = 20.0) -> None:
    """Stop the services in reverse order with their own signal, then SIGKILL stragglers
    (the service itself and anything it started that outlived it)."""
    for service in reversed(services(home)):
        pid = _pid(home, service.name)
        if pid is None:
            continue
        below = descendants(pid)
        _signal_group(pid, service.stop_signal)
        deadline = time.monotonic() + grace
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if _alive(pid):
            _signal_group(pid, signal.SIGKILL)
        left = [p for p in below if _alive(p)]
        for child in left:
            try:
                os.kill(child, signal.SIGKILL)
            except ProcessLookupError:
                pass
        (_run_dir(home) / f"{service.name}.pid").unlink(missing_ok=True)
        print(f"{service.name}: stopped" + (f" ({len(left)} leftover processes killed)" if left else ""))


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
    parser = argparse.ArgumentParser(prog="python -m infra.services", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["start", "stop", "status"])
    parser.add_argument("--timeout", type=float, default=300.0,
                        help="seconds to wait for the services to answer (start)")
    args = parser.parse_args(argv)
    home = apply_defaults(project_home())
    if args.action == "start":
        start(home, args.timeout)
    elif args.action == "stop":
        stop(home)
    else:
        return status(home)
    return 0


if __name__ == "__main__":
    sys.exit(main())

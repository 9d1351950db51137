"""One-stage commands without a Prefect server (tasks/standalone.py) and the background boot
of a flow command's ephemeral server (tasks/prefect_server.py), each in a fresh process and a
fresh project home, as a user runs them."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from prefect import task

from brivl.demo import DemoConfig, build_site, serve
from brivl.env import HOME_BOUND_KEYS
from brivl.errors import InputError
from tasks.standalone import call_stage

ROOT = Path(__file__).resolve().parents[2]


def _fresh_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in HOME_BOUND_KEYS
           and not k.startswith(("PREFECT_", "MLFLOW_", "BRIVL_"))}
    env.update(BRIVL_HOME=str(home), **extra)
    return env


def _brivl(env: dict[str, str], *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flows.cli", *argv], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def test_stage_command_without_a_server_runs_in_process_and_still_caches(tmp_path):
    site = build_site(DemoConfig(n_images=40, seed=3, slow_seconds=1.0))
    home = tmp_path / "home"
    env = _fresh_env(home)
    with serve(site) as server:
        argv = ["crawl", "--seed", server.seed_urls[0], "--allow-cidr", "127.0.0.1/32"]
        first = _brivl(env, *argv)
        assert first.returncode == 0, first.stderr[-2000:]
        out = Path(first.stdout.strip().splitlines()[-1])
        manifest_text = (out / "_manifest.json").read_text()
        requests = len(server.access_log)
        second = _brivl(env, *argv)
    assert second.returncode == 0, second.stderr[-2000:]
    assert Path(second.stdout.strip().splitlines()[-1]) == out
    assert (out / "_manifest.json").read_text() == manifest_text  # reused, not rewritten
    assert len(server.access_log) == requests  # the finished crawl fetched nothing again
    # no Prefect server ran: its database was never created
    assert not list(home.rglob("prefect.db")), sorted(p.name for p in home.rglob("*.db"))
    # the stage contract still logged both MLflow child runs (fresh, then cached)
    db = next(home.rglob("mlflow.db"))
    with sqlite3.connect(db) as conn:
        cached = conn.execute(
            "SELECT t.value FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid "
            "WHERE r.name = 'crawl' AND t.key = 'brivl.cached' ORDER BY r.start_time").fetchall()
        params = {k for (k,) in conn.execute("SELECT key FROM params")}
    assert [v for (v,) in cached] == ["False", "True"]
    assert "config.max_pages" in params


def test_call_stage_keeps_the_task_retries_but_not_for_input_errors(monkeypatch):
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.delenv("BRIVL_PREFECT", raising=False)
    calls: list[str] = []

    @task(retries=2, retry_delay_seconds=0)
    def flaky(kind: str) -> str:
        calls.append(kind)
        if kind == "input":
            raise InputError("bad row 3: field 'caption' is empty")
        if len(calls) < 3:
            raise ConnectionError("reset by peer")
        return "done"

    assert call_stage(flaky, "transient") == "done"
    assert calls == ["transient"] * 3
    calls.clear()
    with pytest.raises(InputError, match="row 3"):
        call_stage(flaky, "input")
    assert calls == ["input"]  # a user's error is raised at once, not retried


BOOT = r"""
import json, threading
from tasks.prefect_server import start_in_background, wait_ready
start_in_background()
booting = any(t.name == "prefect-server-boot" and t.is_alive() for t in threading.enumerate())
wait_ready()
from prefect.client.orchestration import get_client
with get_client(sync_client=True) as client:
    status = client.hello().status_code
print(json.dumps({"booting": booting, "status": status}))
"""


def test_flow_command_boots_the_ephemeral_server_in_the_background(tmp_path):
    done = subprocess.run([sys.executable, "-c", BOOT], cwd=ROOT, env=_fresh_env(tmp_path),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["booting"]  # still starting when start_in_background had returned
    assert result["status"] == 200  # and answering after wait_ready
    assert list(tmp_path.rglob("prefect.db"))

"""The Prefect UI under ``make serve``, rendered by Debian's headless Chromium.

``infra.services start`` (what ``make serve`` runs) starts the Prefect server, worker and
MLflow on loopback ports in a home of its own; ``brivl data`` runs twice against it on the
synthetic demo web. The browser checks the first flow run's task graph and its stage
milestones in the Logs tab, and that the rerun's stage tasks show as cache hits there.
(Prefect 3.9's UI lists no task runs for these flow runs and leaves a task run's own page
blank, so the cache hits are read from the Logs tab.)
Screenshots go to ``$BRIVL_UI_SHOTS`` (default ``test-artifacts/ui/``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from brivl.demo import DemoConfig, build_site, serve
from brivl.env import HOME_BOUND_KEYS

pytestmark = [pytest.mark.ui, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
DATA_CONFIG = {"download": {"timeout_s": 1.0, "processes_count": 1, "thread_count": 8}}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, request, ui):
    """``make serve``'s services on free ports in a fresh home, and that home's environment."""
    home = tmp_path_factory.mktemp("serve")
    env = {k: v for k, v in os.environ.items()
           if k not in HOME_BOUND_KEYS and k != "BRIVL_MLFLOW_PARENT_RUN_ID"}
    env.update(BRIVL_HOME=str(home), BRIVL_PREFECT_PORT=str(ui.free_port()),
               BRIVL_MLFLOW_PORT=str(ui.free_port()), BRIVL_WORK_POOL="brivl-ui-test",
               OMP_NUM_THREADS="1")
    api = f"http://127.0.0.1:{env['BRIVL_PREFECT_PORT']}/api"

    def stop() -> None:
        subprocess.run([PYTHON, "-m", "infra.services", "stop"], env=env, cwd=ROOT,
                       capture_output=True, timeout=120)

    request.addfinalizer(stop)
    started = subprocess.run([PYTHON, "-m", "infra.services", "start"], env=env, cwd=ROOT,
                             capture_output=True, text=True, timeout=360)
    assert started.returncode == 0, started.stdout[-2000:] + started.stderr[-2000:]
    env.update(PREFECT_API_URL=api,
               MLFLOW_TRACKING_URI=f"http://127.0.0.1:{env['BRIVL_MLFLOW_PORT']}")
    return env, api.removesuffix("/api")


@pytest.fixture(scope="module")
def data_runs(served, tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """The flow-run ids of two ``brivl data`` runs on the same seeds (the second: cached)."""
    env, _ = served
    config = tmp_path_factory.mktemp("cfg") / "data.json"
    config.write_text(json.dumps(DATA_CONFIG))
    brivl = str(Path(PYTHON).with_name("brivl"))
    site = build_site(DemoConfig(n_images=40, seed=3, slow_seconds=1.0))
    with serve(site) as server:
        for _ in range(2):
            done = subprocess.run([brivl, "data", "--seed", server.seed_urls[0], "--allow-cidr",
                                   "127.0.0.1/32", "--config", str(config)],
                                  env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
            assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    listed = subprocess.run(
        [PYTHON, "-c",
         "from prefect.client.orchestration import get_client\n"
         "from prefect.client.schemas.sorting import FlowRunSort\n"
         "with get_client(sync_client=True) as c:\n"
         "    for r in c.read_flow_runs(sort=FlowRunSort.START_TIME_ASC):\n"
         "        if r.parent_task_run_id is None: print(r.id)\n"],
        env=env, capture_output=True, text=True, timeout=120)
    ids = listed.stdout.split()
    assert len(ids) == 2, listed.stdout + listed.stderr
    return ids


def test_the_flow_run_page_shows_the_task_graph_and_stage_milestones(
        browser, served, data_runs, ui) -> None:
    _, ui_url = served
    browser.goto(f"{ui_url}/runs/flow-run/{data_runs[0]}")
    browser.wait_for_text("brivl-data", "Completed", "Task Runs")
    browser.wait_for("document.querySelectorAll('canvas').length > 0", "the task graph canvas")
    text = browser.wait_for_text("filter: done in", "shard: done in", timeout=90)
    assert "Can't connect to Server API" not in text
    ui.assert_not_blank(browser.screenshot(ui.SHOTS / "prefect_flow_run.png"))


def test_the_rerun_shows_its_stage_tasks_as_cache_hits(browser, served, data_runs, ui) -> None:
    _, ui_url = served
    browser.goto("about:blank")
    browser.goto(f"{ui_url}/runs/flow-run/{data_runs[1]}")
    # the Logs tab: each stage task finished as a Prefect cache hit, and our milestone says
    # which finished output it reused
    text = browser.wait_for_text("brivl-data", "Completed", "Cached(type=COMPLETED)",
                                 "filter: reused its finished output",
                                 "shard: reused its finished output", timeout=90)
    assert "filter: done in" not in text, "the rerun ran the filter again"
    ui.assert_not_blank(browser.screenshot(ui.SHOTS / "prefect_rerun_cached.png"))

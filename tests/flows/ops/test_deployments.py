"""Deployments on a real local Prefect server started by ``python -m infra.services start``:
the data flow's schedule produces a run, and ``prefect deployment run brivl-retrain/retrain``
trains, evaluates and registers a model in the MLflow server; ``infra.services stop`` leaves
no process behind.

One server/worker/MLflow for the module (non-default ports, its own BRIVL_HOME). The data
run and the retrain run overlap on the worker to keep the module short.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from brivl import manifest
from brivl.demo import DemoConfig, build_site, serve
from brivl.train.toydata import make_toy_shards

pytestmark = [pytest.mark.slow, pytest.mark.ops]

ROOT = Path(__file__).resolve().parents[3]
PYTHON = sys.executable
PREFECT = str(Path(sys.executable).with_name("prefect"))
MODEL_NAME = "brivl-ops-retrain"
TRAIN = {
    "model": "brivl-tiny",
    "model_overrides": {"image_size": 32, "queue_size": 32},
    "vocab_size": 300,
    "batch_size": 4,
    "steps": 3,
    "warmup_steps": 1,
    "report_every": 1,
    "checkpoint_every": 3,
    "workers": 0,
    "val_limit": 16,
}
DATA_PARAMS = {
    "download_config": {"timeout_s": 1.0, "processes_count": 1, "thread_count": 8},
}
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


class Services:
    """The running services of this module and how to reach them."""

    def __init__(self, home: Path, env: dict[str, str], prefect_port: int, mlflow_port: int):
        self.home, self.env = home, env
        self.api_url = f"http://127.0.0.1:{prefect_port}/api"
        self.mlflow_url = f"http://127.0.0.1:{mlflow_port}"

    def client(self):
        """A sync Prefect client for this server (not the test session's ephemeral one)."""
        from prefect.client.orchestration import get_client
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings({PREFECT_API_URL: self.api_url}):
            return get_client(sync_client=True)

    def cli(self, *args: str, timeout: float = 300) -> str:
        proc = subprocess.run(args, env=self.env, cwd=ROOT, capture_output=True, text=True,
                              timeout=timeout)
        assert proc.returncode == 0, f"{args[:3]} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        return proc.stdout


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory, ops, request) -> Services:
    home = tmp_path_factory.mktemp("svc")
    env = ops.isolated_env(
        home,
        BRIVL_PREFECT_PORT=str(ops.free_port()),
        BRIVL_MLFLOW_PORT=str(ops.free_port()),
        BRIVL_WORK_POOL="brivl-ops-test",
        PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS="1",
        PREFECT_SERVER_SERVICES_SCHEDULER_MAX_RUNS="3",
        PREFECT_WORKER_QUERY_SECONDS="1",
        PREFECT_WORKER_PREFETCH_SECONDS="1",
        PREFECT_LOGGING_LEVEL="INFO",
        OMP_NUM_THREADS="1",
    )
    svc = Services(home, env, int(env["BRIVL_PREFECT_PORT"]), int(env["BRIVL_MLFLOW_PORT"]))
    env["PREFECT_API_URL"] = svc.api_url  # for the CLI calls below (the worker gets it anyway)

    def stop() -> None:
        svc.cli(PYTHON, "-m", "infra.services", "stop", timeout=120)
        left = ops.kill_leftovers(home)
        assert not left, f"processes left after `infra.services stop`: {left}"

    request.addfinalizer(stop)
    out = svc.cli(PYTHON, "-m", "infra.services", "start", timeout=360)
    assert "prefect-worker: started" in out and "work pool brivl-ops-test" in out
    return svc


@pytest.fixture(scope="module")
def demo():
    site = build_site(DemoConfig(n_images=60, seed=5, slow_seconds=2.0))
    with serve(site) as server:
        yield site, server


@pytest.fixture(scope="module")
def deployed(services: Services, demo, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Both deployments registered (the data flow every 5 s, paused again once its first
    scheduled run started) and one retrain run triggered from the command line."""
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    _, server = demo
    params = json.dumps(DATA_PARAMS)
    out = services.cli(PYTHON, "-m", "flows.deployments", "--seed", server.seed_urls[0],
                       "--allow-cidr", "127.0.0.1/32", "--interval", "5", "--params", params)
    assert "brivl-data/scheduled-crawl:" in out and "(paused" not in out
    with services.client() as client:
        deployment = client.read_deployment_by_name("brivl-data/scheduled-crawl")
        assert deployment.schedules and not deployment.paused
        by_deployment = DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id]))
        deadline = time.monotonic() + 120
        # a tick while the first run is active is cancelled (the deployment's concurrency limit)
        while not (started := [r for r in client.read_flow_runs(deployment_filter=by_deployment)
                               if r.state and r.state.type.value in ("PENDING", "RUNNING", *FINAL)
                               and r.state.type.value != "CANCELLED"]):
            assert time.monotonic() < deadline, "the schedule started no run within 120 s"
            time.sleep(0.5)
        # one scheduled run is all this test needs; pausing deletes the runs scheduled ahead,
        # and pausing again after a scheduler loop deletes any it inserted meanwhile
        client.pause_deployment(deployment.id)
        time.sleep(2.5)
        client.pause_deployment(deployment.id)
    shards = make_toy_shards(tmp_path_factory.mktemp("retrain") / "shards", n_train=32, n_val=16,
                             side=40)
    out = services.cli(
        PREFECT, "deployment", "run", "brivl-retrain/retrain",
        "-p", f"shard_dir={shards}", "-p", f"model_name={MODEL_NAME}",
        "-p", "primary_metric=train/val_mean_recall",
        "--params", json.dumps({"train_config": TRAIN}),
    )
    run_id = re.search(r"UUID:\s*([0-9a-f-]{36})", out)
    assert run_id, out
    first = min(started, key=lambda r: r.expected_start_time)
    return {"retrain_run": run_id.group(1), "shards": shards, "data_run": first.id}


def _wait(services: Services, find, timeout: float, what: str):
    """Poll ``find(client)`` until it returns a flow run in a final state."""
    deadline = time.monotonic() + timeout
    with services.client() as client:
        while time.monotonic() < deadline:
            run = find(client)
            if run is not None and run.state is not None and run.state.type.value in FINAL:
                return run
            time.sleep(1)
    pytest.fail(f"{what}: no finished run within {timeout} s (see {services.home}/run/*.log)")


def _logs(services: Services, run) -> str:
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    with services.client() as client:
        logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run.id])))
    return "\n".join(log.message for log in logs)[-4000:]


def test_scheduled_data_flow_produces_a_run(services: Services, deployed: dict, demo) -> None:
    site, _ = demo
    run = _wait(services, lambda c: c.read_flow_run(deployed["data_run"]), 300,
                "scheduled data flow")
    assert run.state.type.value == "COMPLETED", _logs(services, run)
    assert run.auto_scheduled and run.parameters["seeds"] == [demo[1].seed_urls[0]]
    shard_dirs = [p.parent for p in (services.home / "data" / "shard").glob("*/_manifest.json")]
    assert len(shard_dirs) == 1
    counts = manifest.read_manifest(shard_dirs[0])["row_counts"]
    assert 0 < counts["train"] + counts.get("val", 0) < len(site.images), counts


def test_retrain_deployment_run_registers_a_model(services: Services, deployed: dict) -> None:
    from mlflow import MlflowClient

    def retrain(client):
        return client.read_flow_run(deployed["retrain_run"])

    run = _wait(services, retrain, 300, "retrain deployment run")
    assert run.state.type.value == "COMPLETED", _logs(services, run)
    assert run.parameters["train_config"]["workers"] == 0
    client = MlflowClient(tracking_uri=services.mlflow_url, registry_uri=services.mlflow_url)
    versions = client.search_model_versions(f"name='{MODEL_NAME}'")
    assert len(versions) == 1
    version = versions[0]
    assert version.tags["brivl.gate"] == "champion"
    assert version.tags["brivl.primary_metric"] == "train/val_mean_recall"
    assert client.get_model_version_by_alias(MODEL_NAME, "champion").version == version.version
    metrics = client.get_run(version.run_id).data.metrics
    assert metrics["train/step"] == TRAIN["steps"]
    shards = manifest.read_manifest(deployed["shards"])["hash"]
    assert shards in json.dumps(version.tags)  # lineage: the shard manifest it was trained on

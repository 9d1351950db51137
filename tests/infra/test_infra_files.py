"""The files in ``infra/``: cluster manifests, compose file, work pool, Ray scripts, and the
service runner's stop path (a child that escaped its process group is still killed)."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path

import pytest
import yaml

import infra.services as services_module
from brivl.env import TELEMETRY_OFF
from flows.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"


def _load(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _pod_specs(doc: dict) -> list[dict]:
    spec = doc["spec"].get("rayClusterSpec", doc["spec"])
    groups = [spec["headGroupSpec"], *spec.get("workerGroupSpecs", [])]
    return [g["template"]["spec"] for g in groups]


@pytest.mark.parametrize("name", ["raycluster.yaml", "rayjob-pretrain.yaml"])
def test_kuberay_pods_share_one_home_volume_and_match_the_ray_version(name: str) -> None:
    (doc,) = _load(INFRA / "kuberay" / name)
    spec = doc["spec"].get("rayClusterSpec", doc["spec"])
    assert doc["apiVersion"] == "ray.io/v1" and spec["rayVersion"] == version("ray")
    (pvc,) = _load(INFRA / "kuberay" / "pvc.yaml")
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    for pod in _pod_specs(doc):
        claims = {v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"]}
        assert claims == {pvc["metadata"]["name"]}
        for container in pod["containers"]:
            env = {e["name"]: e["value"] for e in container["env"]}
            assert env["BRIVL_HOME"].startswith(container["volumeMounts"][0]["mountPath"])
            assert env["RAY_USAGE_STATS_ENABLED"] == "0"


def test_rayjob_entrypoint_is_a_valid_brivl_command() -> None:
    (doc,) = _load(INFRA / "kuberay" / "rayjob-pretrain.yaml")
    argv = shlex.split(doc["spec"]["entrypoint"])
    assert argv[0] == "brivl"
    args = build_parser().parse_args(argv[1:])  # exits (fails the test) on an unknown flag
    config = sys.modules[args._run.__module__].build_config(args)
    assert config["workers"] == 16 and config["use_gpu"] and config["max_failures"] == 5


def test_compose_mlflow_uses_postgres_and_s3_with_matching_credentials() -> None:
    (doc,) = _load(INFRA / "compose" / "mlflow-postgres-s3.yml")
    svc = doc["services"]
    pg, minio, server = svc["postgres"]["environment"], svc["minio"]["environment"], svc["mlflow"]
    command = " ".join(server["command"].split())
    backend = f"postgresql://{pg['POSTGRES_USER']}:{pg['POSTGRES_PASSWORD']}@postgres/{pg['POSTGRES_DB']}"
    assert f"--backend-store-uri {backend}" in command
    assert "--artifacts-destination s3://mlflow-artifacts" in command
    assert "mb --ignore-existing local/mlflow-artifacts" in svc["create-bucket"]["entrypoint"]
    env = server["environment"]
    assert (env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]) == (
        minio["MINIO_ROOT_USER"], minio["MINIO_ROOT_PASSWORD"])
    assert env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    assert server["image"].endswith(f":v{version('mlflow')}")
    ports = [p for s in svc.values() for p in s.get("ports", [])]
    assert ports and all(p.startswith("127.0.0.1:") for p in ports)  # not on every interface


def test_work_pool_file_builds_a_process_pool_with_the_telemetry_defaults() -> None:
    spec = json.loads((INFRA / "prefect" / "work-pool.json").read_text())
    pool = services_module.work_pool_spec(name="x")
    assert pool.type == "process" and pool.concurrency_limit == spec["concurrency_limit"]
    env = pool.base_job_template["variables"]["properties"]["env"]["default"]
    assert env and all(TELEMETRY_OFF[k] == v for k, v in env.items())


def test_work_pool_file_with_an_unknown_job_variable_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "pool.json"
    bad.write_text(json.dumps({"type": "process", "job_variables": {"image": "x"}}))
    with pytest.raises(ValueError, match="unknown job variable 'image'"):
        services_module.work_pool_spec(bad)


def test_services_bind_loopback_and_the_worker_stops_on_sigint(tmp_path: Path) -> None:
    by_name = {s.name: s for s in services_module.services(tmp_path)}
    assert set(by_name) == {"prefect-server", "prefect-worker", "mlflow"}
    for name in ("prefect-server", "mlflow"):
        argv = by_name[name].argv
        assert argv[argv.index("--host") + 1] == "127.0.0.1" and by_name[name].stage == 0
    worker = by_name["prefect-worker"]
    assert worker.stop_signal == signal.SIGINT and worker.stage == 1
    assert worker.env["MLFLOW_TRACKING_URI"] == services_module.MLFLOW_URL
    assert by_name["mlflow"].env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"


def test_stop_kills_a_child_that_left_the_process_group(tmp_path: Path, monkeypatch) -> None:
    """A service whose child started its own session (as a Prefect worker's flow runs do)."""
    code = ("import subprocess, sys, time\n"
            "child = subprocess.Popen(['sleep', '120'], start_new_session=True)\n"
            "print(child.pid, flush=True)\n"
            "time.sleep(120)\n")
    fake = services_module.Service("fake", [sys.executable, "-c", code], None)
    monkeypatch.setattr(services_module, "services", lambda home: [fake])
    services_module.start(tmp_path, timeout=30)
    log = tmp_path / "run" / "fake.log"
    deadline = time.monotonic() + 30
    while not log.read_text().strip():
        assert time.monotonic() < deadline, "the fake service printed no child pid"
        time.sleep(0.1)
    parent, child = int((tmp_path / "run" / "fake.pid").read_text()), int(log.read_text())
    assert os.getpgid(child) != os.getpgid(parent)
    services_module.stop(tmp_path, grace=5)
    for pid in (parent, child):
        for _ in range(50):
            if not services_module._alive(pid):
                break
            time.sleep(0.1)
        assert not services_module._alive(pid), f"pid {pid} survived stop()"
    assert services_module.status(tmp_path) == 1  # reported as stopped


@pytest.mark.parametrize("script", ["start-head.sh", "start-worker.sh", "stop.sh"])
def test_ray_scripts_parse(script: str) -> None:
    subprocess.run(["bash", "-n", str(INFRA / "ray" / script)], check=True)


def test_start_worker_refuses_without_a_head_address() -> None:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.run(["bash", str(INFRA / "ray" / "start-worker.sh")], env=env,
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode != 0 and "set RAY_ADDRESS" in proc.stderr

"""Scale-out on a two-node local Ray cluster (a head and a second ``ray start --address``
node on this machine, 2 logical CPUs each (Ray Data's file listing task needs a whole CPU
next to each node's training worker), started by ``infra/ray/start-head.sh`` / ``start-worker.sh``
with a non-default port and an isolated temp dir), reached through ``RAY_ADDRESS``:

- the download stage runs img2dataset's shards as Ray tasks on both nodes; failed shards are
  retried (img2dataset's own Ray distributor drops them);
- the pretrain stage runs two Ray Train workers, one per node; SIGKILL of one worker mid-run
  makes Ray Train restart the group, which resumes from the last checkpoint and completes.

One cluster for the module; every Ray process is stopped at the end (finalizer).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from brivl import manifest
from brivl.demo import DemoConfig, build_site, serve
from brivl.env import ray_temp_dir
from brivl.train.toydata import make_toy_shards

pytestmark = [pytest.mark.slow, pytest.mark.ops]

ROOT = Path(__file__).resolve().parents[3]
TRAIN = {
    "model": "brivl-tiny",
    "model_overrides": {"image_size": 32, "queue_size": 32},
    "vocab_size": 300,
    "batch_size": 4,
    "steps": 10,  # a kill after the first checkpoint leaves 8 steps to resume
    "warmup_steps": 1,
    "report_every": 1,
    "checkpoint_every": 2,
    "workers": 2,
    "cpus_per_worker": 1,
    "placement_strategy": "SPREAD",  # one worker per node; the other CPU runs Ray Data
    "max_failures": 2,
    "val_limit": 16,
}


class Cluster:
    """A head and a worker node started by the infra scripts, each in its own session."""

    def __init__(self, home: Path, env: dict[str, str], port: int) -> None:
        self.home, self.env, self.port = home, env, port
        self.address = f"127.0.0.1:{port}"
        self.groups: list[int] = []

    def start(self, script: str, **extra: str) -> None:
        proc = subprocess.Popen(
            ["bash", str(ROOT / "infra" / "ray" / script)], env={**self.env, **extra},
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
        )
        self.groups.append(proc.pid)  # every Ray process of this node stays in its group
        out, _ = proc.communicate(timeout=180)
        assert proc.returncode == 0, f"{script} failed:\n{out.decode()[-3000:]}"

    def stop(self, ops) -> list[tuple[int, str]]:
        for sig, wait_s in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 5.0)):
            for group in reversed(self.groups):
                try:
                    os.killpg(group, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + wait_s
            while ops.processes_of(self.home) and time.monotonic() < deadline:
                time.sleep(0.2)
        return ops.processes_of(self.home)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, ops, request) -> Cluster:
    import ray

    from tasks.ray_runtime import ensure_ray, shutdown_ray

    home = tmp_path_factory.mktemp("raycluster")
    port = ops.free_port()
    env = ops.isolated_env(home, RAY_PORT=str(port), RAY_NUM_CPUS="2", RAY_NODE_IP="127.0.0.1",
                           RAY_TMPDIR=str(ray_temp_dir(home)), OMP_NUM_THREADS="1")
    nodes = Cluster(home, env, port)
    saved_address = os.environ.get("RAY_ADDRESS")

    def finish() -> None:
        shutdown_ray()
        if saved_address is None:
            os.environ.pop("RAY_ADDRESS", None)
        else:
            os.environ["RAY_ADDRESS"] = saved_address
        left = nodes.stop(ops)
        assert not left, f"Ray processes left behind: {left}"

    request.addfinalizer(finish)
    shutdown_ray()  # a local Ray another module left running would shadow the cluster
    nodes.start("start-head.sh")
    nodes.start("start-worker.sh", RAY_ADDRESS=nodes.address)
    os.environ["RAY_ADDRESS"] = nodes.address
    ensure_ray()
    deadline = time.monotonic() + 60
    while len(alive := [n for n in ray.nodes() if n["Alive"]]) < 2:
        assert time.monotonic() < deadline, f"the worker node did not join: {alive}"
        time.sleep(0.5)
    assert sum(n["Resources"].get("CPU", 0) for n in alive) == 4
    return nodes


def node_ids() -> set[str]:
    import ray

    return {n["NodeID"] for n in ray.nodes() if n["Alive"]}


# -- download ------------------------------------------------------------------------------------
def test_download_stage_spreads_img2dataset_shards_over_both_nodes(cluster: Cluster) -> None:
    from tasks import ray_download
    from tasks.crawl import crawl_task
    from tasks.download import download_task

    site = build_site(DemoConfig(n_images=60, seed=7, slow_seconds=2.0))
    with serve(site) as server:
        candidates = crawl_task.fn(server.seed_urls, {"allow_cidrs": ["127.0.0.1/32"]})
        out = download_task.fn(candidates, {
            "distributor": "ray", "allow_cidrs": ["127.0.0.1/32"], "timeout_s": 1.0,
            "thread_count": 4, "number_sample_per_shard": 8,
        })
    counts = manifest.read_manifest(out)["row_counts"]
    assert counts["candidates"] == counts["downloaded"] + counts["rejected"]
    assert counts["downloaded"] > 20
    assert counts["rejected:http_404"] == site.fault_counts()["http_404"]
    shards = -(-counts["attempted"] // 8)
    runs = ray_download.LAST_RUN
    assert len(runs) == shards and all(r["ok"] for r in runs)
    assert {r["node_id"] for r in runs} == node_ids()  # both nodes downloaded shards


def test_failed_shards_are_retried_on_the_cluster(cluster: Cluster, tmp_path: Path) -> None:
    from tasks import ray_download

    class FailsOnce:
        """Even shards raise inside the shard the first time (img2dataset returns False)."""

        def __init__(self, marks: str) -> None:
            self.marks = marks

        def __call__(self, shard: Any) -> tuple[bool, Any]:
            mark = Path(self.marks) / f"failed-{shard[0]}"
            if shard[0] % 2 == 0 and not mark.exists():
                mark.touch()
                return False, shard
            return shard[0] != 99, shard  # shard 99 never succeeds

    shards = [(i, f"shard-{i}.arrow") for i in range(4)]
    assert ray_download.ray_distributor(1, FailsOnce(str(tmp_path)), shards, None, 1) == []
    attempts = sorted((r["shard_id"], r["attempt"], r["ok"]) for r in ray_download.LAST_RUN)
    assert attempts == [(0, 0, False), (0, 1, True), (1, 0, True), (2, 0, False), (2, 1, True),
                        (3, 0, True)]
    failed = ray_download.ray_distributor(1, FailsOnce(str(tmp_path)), [(99, "x")], None, 2)
    assert failed == [(99, "x")] and len(ray_download.LAST_RUN) == 3  # 1 try + 2 retries


# -- training ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def killed_run(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Two Ray Train workers on the cluster; one SIGKILLed once a checkpoint exists."""
    from brivl.train import latest_checkpoint
    from tasks.pretrain import pretrain
    from tasks.pretrain_ray import WORKERS_LOG

    root = tmp_path_factory.mktemp("raytrain")
    shards = make_toy_shards(root / "shards", n_train=128, n_val=16, side=40)  # 16 steps/epoch
    out = root / "stage"
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = pretrain(str(shards), TRAIN, str(out))
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    checkpoints = out / "run" / "checkpoints"
    deadline = time.monotonic() + 300
    while True:
        assert thread.is_alive(), f"training ended before a worker was killed: {outcome}"
        assert time.monotonic() < deadline, "no checkpoint within 300 s"
        latest = latest_checkpoint(checkpoints) if checkpoints.is_dir() else None
        workers = _read_jsonl(checkpoints / WORKERS_LOG)
        if latest is not None and len(workers) == 2:
            break
        time.sleep(0.05)
    victim = max(workers, key=lambda w: w["rank"])
    os.kill(victim["pid"], signal.SIGKILL)
    killed_after_step = int(latest.name.rsplit("-", 1)[1])  # step-00000004
    thread.join(timeout=400)
    assert not thread.is_alive(), "training did not finish within 400 s of the kill"
    if "error" in outcome:
        raise outcome["error"]
    return {"result": outcome["result"], "first_group": workers, "victim": victim,
            "killed_after_step": killed_after_step, "out": out}


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


def test_ray_train_workers_run_on_both_nodes(killed_run: dict[str, Any]) -> None:
    first = killed_run["first_group"]
    assert sorted(w["rank"] for w in first) == [0, 1]
    assert {w["node_id"] for w in first} == node_ids()  # one worker on each node
    assert killed_run["result"]["metrics"]["ray_nodes"] == 2


def test_killed_worker_restarts_from_its_last_checkpoint_and_completes(
    killed_run: dict[str, Any],
) -> None:
    from brivl.train import read_trainer_state

    result, victim = killed_run["result"], killed_run["victim"]
    metrics = result["metrics"]
    assert metrics["step"] == TRAIN["steps"]
    assert metrics["worker_group_starts"] == 2  # the first group, and one restart
    # the restarted group began from a checkpoint written before the kill, not from step 0
    assert 0 < metrics["resumed_from_step"]
    assert metrics["resumed_from_step"] >= killed_run["killed_after_step"]
    assert metrics["resumed_from_step"] % TRAIN["checkpoint_every"] == 0
    starts = _read_jsonl(Path(result["out_dir"]) / "ray_workers.jsonl")
    second = starts[2:]
    assert len(starts) == 4 and {w["start_step"] for w in second} == {metrics["resumed_from_step"]}
    assert victim["pid"] not in {w["pid"] for w in second}
    state = read_trainer_state(Path(result["checkpoint"]))
    assert state["step"] == TRAIN["steps"] and state["world_size"] == 2
    history = [json.loads(x) for x in (Path(result["out_dir"]) / "metrics.jsonl").read_text().splitlines()]
    assert history[-1]["step"] == TRAIN["steps"]

"""The pretrain stage: Ray Train with 2 CPU workers, cache hits, and resume after SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from brivl.train.toydata import make_toy_shards

ROOT = Path(__file__).resolve().parents[2]
TINY = {"image_size": 32, "queue_size": 32}
BASE = {
    "model_overrides": TINY,
    "vocab_size": 300,
    "batch_size": 4,
    "warmup_steps": 1,
    "report_every": 1,
    "val_limit": 32,
}


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_toy_shards(
        tmp_path_factory.mktemp("pretrain") / "shards", n_train=64, n_val=32, side=48
    )


@pytest.fixture(scope="module")
def ray_cluster():
    """One local Ray for the module (2 CPUs)."""
    from tasks.ray_runtime import ensure_ray, shutdown_ray

    ensure_ray(num_cpus=2)
    yield
    shutdown_ray()


@pytest.fixture()
def one_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.slow  # ~70 s on an idle 2-core box, most of it Ray Train's fixed start-up cost
def test_two_ray_workers_train_end_to_end_and_a_rerun_is_a_cache_hit(
    ray_cluster, shards: Path, tmp_path: Path
) -> None:
    from prefect import flow

    from brivl.model import load_checkpoint
    from brivl.train import read_trainer_state
    from tasks.pretrain import pretrain_task

    config = dict(BASE, steps=4, checkpoint_every=2, workers=2)  # 0.5 CPU each: 1 left for data

    @flow
    def run_twice() -> list[tuple[str, dict]]:
        states = [pretrain_task(str(shards), config, return_state=True) for _ in range(2)]
        return [(s.name, s.result()) for s in states]

    (first_state, first), (second_state, second) = run_twice()
    assert first_state == "Completed" and second_state == "Cached" and second == first
    checkpoint = Path(first["checkpoint"])
    trainer = read_trainer_state(checkpoint)
    assert trainer["world_size"] == 2 and trainer["step"] == 4
    assert trainer["samples_seen"] == 4 * 4 * 2  # steps x batch x workers
    metrics = first["metrics"]
    assert metrics["step"] == 4 and 0 <= metrics["val_t2i_r1"] <= 1 and metrics["val_n"] > 20
    assert {"loss", "lr", "momentum", "queue_fill", "samples_per_s", "data_wait_frac"} <= set(
        metrics
    )
    rows = [json.loads(x) for x in (checkpoint.parent / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert all(r["replica_drift"] == 0.0 for r in rows)  # averaged gradients keep replicas equal
    model = load_checkpoint(checkpoint)
    assert model.queue_fill() == 1.0  # 4 steps x 8 keys fill the 32-slot queue
    assert not (checkpoint.parent / "run").exists()  # working files removed once done


def test_a_killed_run_resumes_from_its_last_checkpoint(
    shards: Path, tmp_path: Path, one_thread, kill_when
) -> None:
    import mlflow

    from tasks.pretrain import pretrain

    out = tmp_path / "stage"
    config = dict(BASE, steps=10, checkpoint_every=2, workers=0, batch_size=8)
    # The child pauses right after writing step 4, so the kill always lands between two
    # checkpoints (a tiny model trains 10 steps faster than the parent can poll, and only the
    # last two checkpoints are kept).
    script = (
        "import time\n"
        "import brivl.train.loop as loop\n"
        "save = loop.save_training_checkpoint\n"
        "def pausing_save(root, step, *args, **kwargs):\n"
        "    path = save(root, step, *args, **kwargs)\n"
        "    if step == 4:\n"
        "        time.sleep(120)\n"
        "    return path\n"
        "loop.save_training_checkpoint = pausing_save\n"
        "from tasks.pretrain import pretrain\n"
        f"pretrain({str(shards)!r}, {config!r}, {str(out)!r})\n"
    )
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    checkpoints = out / "run" / "checkpoints"
    kill_when(proc, checkpoints / "step-00000004", 120)
    assert proc.returncode == -signal.SIGKILL and not (out / "_manifest.json").exists()
    last = max(p.name for p in checkpoints.glob("step-*"))
    mlflow.set_experiment("pretrain-test")
    with mlflow.start_run() as run:
        result = pretrain(str(shards), config, str(out))
    metrics = result["metrics"]
    assert metrics["resumed_from_step"] == int(last.split("-")[1]) >= 4
    assert metrics["step"] == 10 and (out / "_manifest.json").is_file()
    client = mlflow.tracking.MlflowClient()
    (child,) = client.search_runs(  # the curves land on the stage's own child run
        [run.info.experiment_id], f"tags.mlflow.parentRunId = '{run.info.run_id}'"
    )
    assert child.data.tags["brivl.stage"] == "pretrain" and child.info.run_name == "pretrain"
    assert client.get_metric_history(run.info.run_id, "train/loss") == []
    history = client.get_metric_history(child.info.run_id, "train/loss")
    assert sorted(m.step for m in history) == list(range(metrics["resumed_from_step"] + 1, 11))
    assert child.data.params["config.steps"] == "10"
    assert child.data.metrics["final/step"] == 10
    # a finished stage directory is returned as is
    assert pretrain(str(shards), config, str(out)) == result


def test_cli_arguments_become_a_validated_stage_config() -> None:
    import argparse

    from flows.commands import pretrain as command

    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    args = parser.parse_args(
        [
            "--shards",
            "x",
            "--steps",
            "7",
            "--workers",
            "2",
            "--queue-size",
            "64",
            "--set",
            "warmup_steps=3",
            "--set",
            'augment={"hue": 0}',
        ]
    )
    config = command.build_config(args)
    assert config["steps"] == 7 and config["workers"] == 2 and config["warmup_steps"] == 3
    assert config["model_overrides"] == {"queue_size": 64} and config["augment"]["hue"] == 0
    from brivl.errors import ConfigError

    with pytest.raises(ConfigError, match=r"train: unknown key\(s\) \['nope'\]"):
        command.run(parser.parse_args(["--shards", "x", "--set", "nope=1"]))

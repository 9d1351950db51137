"""MLflow tracking helpers on real MLflow (sqlite under the test BRIVL_HOME)."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field

import mlflow
from PIL import Image

from tasks import tracking


@dataclass
class Inner:
    lr: float = 0.1
    sizes: list[int] = field(default_factory=lambda: [1, 2])


def test_flatten_params_nests_with_dots() -> None:
    flat = tracking.flatten_params(
        {"model": {"name": "tiny", "inner": Inner()}, "steps": 3, "x": None, "e": {}}
    )
    assert flat == {
        "model.name": "tiny",
        "model.inner.lr": "0.1",
        "model.inner.sizes": "[1, 2]",
        "steps": "3",
        "x": "None",
        "e": "{}",
    }
    assert tracking.clean_key("retrieval/i2t@1") == "retrieval/i2t_1"


def test_stage_runs_nest_under_the_pipeline_run_across_threads() -> None:
    client = mlflow.MlflowClient()
    assert tracking.tracking_uri().startswith("sqlite:///" + os.environ["BRIVL_HOME"])
    children: dict[str, str] = {}

    def stage_in_worker() -> None:  # Prefect runs tasks in worker threads
        with tracking.stage_run("filter") as run:
            tracking.log_flat_params({"rules": {"min_side": 64}})
            tracking.log_table("rejected_by_rule", [{"rule": "too_small", "count": 3}])
            tracking.log_metrics({"kept": 7, "nan": float("nan")})
            children["filter"] = run.info.run_id

    with tracking.start_pipeline_run("pipeline-test", tags={"seed": "http://127.0.0.1"}) as parent:
        assert tracking.parent_run_id() == parent.info.run_id
        worker = threading.Thread(target=stage_in_worker)
        worker.start()
        worker.join()
        with tracking.stage_run("evaluate") as run:  # same thread as the parent
            tracking.log_image(Image.new("RGB", (8, 8), "red"), "retrieval_grid")
            children["evaluate"] = run.info.run_id
    assert tracking.parent_run_id() is None

    for stage, run_id in children.items():
        run = client.get_run(run_id)
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.data.tags["brivl.stage"] == stage and run.info.status == "FINISHED"
        assert run.info.experiment_id == parent.info.experiment_id
    filt = client.get_run(children["filter"])
    assert filt.data.params == {"rules.min_side": "64"} and filt.data.metrics == {"kept": 7.0}
    listed = {a.path for a in client.list_artifacts(children["filter"], "tables")}
    assert listed == {"tables/rejected_by_rule.json", "tables/rejected_by_rule.csv"}
    assert [a.path for a in client.list_artifacts(children["evaluate"], "images")] == [
        "images/retrieval_grid.png"
    ]
    exp = client.get_experiment(parent.info.experiment_id)
    assert exp.name == "brivl" and exp.artifact_location.startswith(
        "file://" + os.environ["BRIVL_HOME"]
    )


def test_failed_pipeline_run_is_marked_failed() -> None:
    try:
        with tracking.start_pipeline_run("boom") as run:
            raise RuntimeError("stage failed")
    except RuntimeError:
        pass
    assert mlflow.MlflowClient().get_run(run.info.run_id).info.status == "FAILED"


def test_the_experiment_declares_itself_a_model_training_experiment() -> None:
    """MLflow 3's UI opens such an experiment on its runs table, not the GenAI overview;
    an experiment made before (without the tag) gets it on the next run."""
    client = mlflow.MlflowClient()
    new = client.get_experiment(tracking.ensure_experiment("kind-new"))
    assert new.tags[tracking.EXPERIMENT_KIND_TAG] == "custom_model_development"
    old_id = client.create_experiment("kind-old")
    assert tracking.EXPERIMENT_KIND_TAG not in client.get_experiment(old_id).tags
    assert tracking.ensure_experiment("kind-old") == old_id
    assert client.get_experiment(old_id).tags[tracking.EXPERIMENT_KIND_TAG] == (
        "custom_model_development"
    )

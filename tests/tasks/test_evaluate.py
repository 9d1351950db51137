"""The evaluate stage: a tiny checkpoint on the demo web's held-out eval sets."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest
import torch

from brivl.manifest import read_manifest
from tasks import evaluate

CAPTIONS = ["a red square", "a blue circle on white", "green triangle", "a photo of a dog"] * 3
CONFIG = {"vqa_head": {"hidden": 16, "epochs": 20}, "batch_size": 16}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> str:
    from brivl.model import create_model, save_checkpoint
    from brivl.model.tokenizer import train_tokenizer

    torch.manual_seed(0)
    model = create_model(
        "brivl-tiny", tokenizer=train_tokenizer(CAPTIONS, vocab_size=200, min_frequency=1)
    )
    return str(save_checkpoint(model, tmp_path_factory.mktemp("ckpt")))


@pytest.fixture(scope="module")
def eval_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from brivl.demo.site import DemoConfig, build_site

    out = tmp_path_factory.mktemp("evalsets")
    build_site(DemoConfig(n_images=120)).eval_sets(
        out, n_zeroshot=12, n_retrieval=6, n_text=12, n_vqa=8
    )
    return out


def _runs(manifest_hash: str) -> list:
    """The evaluate runs that logged this stage output (other tests may add their own)."""
    return mlflow.search_runs(
        search_all_experiments=True,
        filter_string=f"tags.`brivl.evaluate.manifest_hash` = '{manifest_hash}'",
        output_format="list",
    )


def test_evaluate_stage_writes_logs_and_caches(
    checkpoint: str, eval_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "eval"
    metrics = evaluate.evaluate_task.fn(checkpoint, str(eval_dir), CONFIG, out_dir=str(out))
    for key in (
        "retrieval/i2t_r1",
        "retrieval/t2i_r10",
        "zeroshot_images/top1",
        "zeroshot_text/top1",
        "vqa/acc",
    ):
        assert 0.0 <= metrics[key] <= 1.0, key
    assert metrics["retrieval/n_captions"] == 30 and metrics["zeroshot_images/n_classes"] == 10
    assert metrics["vqa/n_train"] == 4  # the demo's split column: alternating train/test
    body = read_manifest(out)
    assert body["stage"] == "evaluate" and body["row_counts"]["retrieval"] == 6
    assert {"metrics.json", "skipped.json", "retrieval_grid.png"} <= set(body["files"])
    assert json.loads((out / "metrics.json").read_text()) == metrics

    (first,) = _runs(body["hash"])
    assert first.data.metrics["retrieval/mean_recall"] == pytest.approx(
        metrics["retrieval/mean_recall"]
    )
    assert first.data.params["config.vqa_head.epochs"] == "20"
    assert first.data.tags["brivl.cached"] == "False"
    assert first.data.tags["brivl.evaluate.manifest_hash"] == body["hash"]
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(first.info.run_id, "images")}
    assert artifacts == {"images/retrieval_grid.png", "images/retrieval_grid.sources.csv",
                         "images/retrieval_grid.sources.md"}
    _check_grid_sources(out, eval_dir)

    again = evaluate.evaluate_task.fn(checkpoint, str(eval_dir), CONFIG, out_dir=str(out))
    assert again == metrics and read_manifest(out)["created_at"] == body["created_at"]
    assert sorted(r.data.tags["brivl.cached"] for r in _runs(body["hash"])) == ["False", "True"]


def _check_grid_sources(out: Path, eval_dir: Path) -> None:
    """One sources row per grid cell, naming the eval row and the sha256 of its image."""
    import csv
    import hashlib

    import pyarrow.parquet as pq

    with open(out / "retrieval_grid.sources.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 * 4  # 4 queries, top 4 each
    images = pq.read_table(eval_dir / "retrieval.parquet", columns=["image"])["image"].to_pylist()
    for row in rows:
        index = int(row["origin"].rsplit(" row ", 1)[1])
        assert row["sha256"] == hashlib.sha256(images[index]).hexdigest()
        assert row["licence"] == row["page_url"] == "(not declared)"  # the demo set names none
    assert rows[0]["position"] == "query 1, rank 1"
    assert "| query 1, rank 1 |" in (out / "retrieval_grid.sources.md").read_text()


def test_cache_key_follows_checkpoint_eval_files_and_config(
    checkpoint: str, eval_dir: Path, tmp_path: Path
) -> None:
    sets = {"retrieval": str(eval_dir / "retrieval.parquet")}

    def key(**kw: object) -> str:
        params = {"checkpoint_dir": checkpoint, "eval_sets": sets, "config": CONFIG}
        return evaluate._cache_key(None, {**params, **kw})

    base = key()
    assert base == key() and base.startswith("evaluate-")
    assert key(config={**CONFIG, "batch_size": 8}) != base
    assert key(config=None) == key(config={})  # the body reads a missing config as {}
    copy = tmp_path / "retrieval.parquet"
    copy.write_bytes((eval_dir / "retrieval.parquet").read_bytes())
    assert key(eval_sets={"retrieval": str(copy)}) != base  # classes.json sidecar missing
    (tmp_path / "classes.json").write_bytes((eval_dir / "classes.json").read_bytes())
    assert key(eval_sets={"retrieval": str(copy)}) == base  # same content, same key
    copy.write_bytes((eval_dir / "zeroshot_text.parquet").read_bytes())
    assert key(eval_sets={"retrieval": str(copy)}) != base


def test_decontamination_follows_the_checkpoint_to_its_filter(eval_dir: Path, tmp_path: Path
                                                              ) -> None:
    """checkpoint -> pretrain manifest -> shards -> filter report: how many were found."""
    from brivl.manifest import write_manifest

    def stage(name: str, inputs: list[str], extra: dict) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        write_manifest(folder, stage=name, config={}, inputs=inputs, code_version="t",
                       row_counts={}, extra=extra)
        return folder

    overlap = {"eval_images": 9, "found": 3, "found_per_set": {"retrieval": 3}}
    filtered = stage("filter", ["download-hash", evaluate.eval_sets_identity(str(eval_dir))],
                     {"report": {"eval_overlap": overlap}})
    shards = stage("shard", ["filter-hash"], {"input_dir": str(filtered)})
    pretrain = stage("pretrain", ["shard-hash"], {"shard_dir": str(shards)})
    (pretrain / "checkpoint").mkdir()
    found = evaluate.decontamination(str(pretrain / "checkpoint"), str(eval_dir))
    assert found == {"found": 3, "eval_images": 9, "found_per_set": {"retrieval": 3},
                     "same_eval_sets": True, "filter_dir": str(filtered)}
    other = tmp_path / "other_sets"
    other.mkdir()
    (other / "retrieval.parquet").write_bytes((eval_dir / "retrieval.parquet").read_bytes()[:-8])
    assert evaluate.decontamination(str(pretrain / "checkpoint"), str(other))["same_eval_sets"] is False
    assert evaluate.decontamination(str(tmp_path), str(eval_dir))["found"] is None  # no lineage

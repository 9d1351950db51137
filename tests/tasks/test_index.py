"""The index stage as a Prefect task: cached until the model or the shards change; the CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from prefect import flow

from brivl.manifest import read_manifest
from tasks.index import index_task, model_identity

pytestmark = pytest.mark.usefixtures("patient_prefect_server")


@flow
def index_flow(checkpoint: str, shard_dir: str, config: dict) -> tuple[str, str]:
    state = index_task(checkpoint, shard_dir, config, return_state=True)
    return state.name, state.result()


@pytest.fixture(scope="module")
def corpus_dirs(corpus, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("index-stage")
    return {
        "shards": corpus.make_shards(root / "shards"),
        "ckpt": corpus.make_checkpoint(root / "ckpt", seed=0),
        "ckpt_other": corpus.make_checkpoint(root / "ckpt_other", seed=1),
    }


def test_rebuilds_only_when_model_or_shards_change(
    corpus, corpus_dirs: dict[str, Path], tmp_path: Path
) -> None:
    from tasks.register import checkpoint_identity as registry_identity

    shards, ckpt = str(corpus_dirs["shards"]), str(corpus_dirs["ckpt"])
    state, first = index_flow(ckpt, shards, {})
    assert state == "Completed"
    body = read_manifest(first)
    assert body["stage"] == "index" and body["row_counts"] == {"indexed": 20, "rejected": 1}
    assert body["inputs"] == [model_identity(ckpt), read_manifest(shards)["hash"]]
    assert body["extra"]["checkpoint_id"] == registry_identity(
        ckpt
    )  # same identity as the registry's
    assert (Path(first) / "indices_paths.json").is_file()

    # same model, same shards (also copied elsewhere), same effective config: cache hit, no work
    copied = tmp_path / "shards-copy"
    shutil.copytree(shards, copied)
    for shard_dir, config in ((shards, {}), (str(copied), {"batch_size": 64})):
        state, again = index_flow(ckpt, shard_dir, config)
        assert (state, again) == ("Cached", first)
    assert read_manifest(first)["created_at"] == body["created_at"]

    # another checkpoint: rebuild into its own directory
    state, other = index_flow(str(corpus_dirs["ckpt_other"]), shards, {})
    assert state == "Completed" and other != first

    # retrained into the same path: new weights, new identity, rebuild
    retrained = tmp_path / "retrained"
    shutil.copytree(ckpt, retrained)
    state, _ = index_flow(str(retrained), shards, {})
    assert state == "Cached"
    corpus.make_checkpoint(retrained, seed=2)
    state, moved = index_flow(str(retrained), shards, {})
    assert state == "Completed" and moved not in (first, other)

    # the shards change (a new row): rebuild
    grown = corpus.make_shards(tmp_path / "grown", n_train=17)
    state, regrown = index_flow(ckpt, str(grown), {})
    assert state == "Completed" and read_manifest(regrown)["row_counts"]["indexed"] == 21


def test_cli_index_and_search(corpus, corpus_dirs: dict[str, Path],
                              capsys: pytest.CaptureFixture) -> None:
    from flows.cli import main

    shards, ckpt = str(corpus_dirs["shards"]), str(corpus_dirs["ckpt"])
    assert main(["index", "--checkpoint", ckpt, "--shards", shards]) == 0
    index_dir = capsys.readouterr().out.strip().splitlines()[-1]
    assert read_manifest(index_dir)["extra"]["checkpoint"] == str(Path(ckpt).resolve())

    row = corpus.shard_rows(Path(shards))[5]
    assert (
        main(["search", row["caption"], "--index", index_dir, "-k", "3", "--modality", "text"]) == 0
    )
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3
    rank, score, key, *_ = lines[0].split()
    assert (rank, key) == ("1", row["key"]) and float(score) == pytest.approx(1.0, abs=1e-4)

    # without --index: the newest index built from this model; JSON output
    assert main(["search", "a blue square", "--model", ckpt, "-k", "4", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert len(hits) == 4 and all({"key", "similarity", "caption"} <= set(h) for h in hits)
    assert [h["similarity"] for h in hits] == sorted((h["similarity"] for h in hits), reverse=True)

    assert main(["search"]) == 2


def test_registry_uris_resolve_to_the_checkpoint_lineage(corpus_dirs: dict[str, Path]) -> None:
    import uuid

    import mlflow

    from tasks.index import pinned_checkpoint

    ckpt = corpus_dirs["ckpt"]
    name = f"brivl-index-test-{uuid.uuid4().hex[:8]}"
    client = mlflow.MlflowClient()
    client.create_registered_model(name)
    first = client.create_model_version(
        name, source=str(ckpt), tags={"brivl.checkpoint_id": model_identity(str(ckpt))}
    )
    client.create_model_version(name, source=str(ckpt))  # version 2: no lineage tag
    client.set_registered_model_alias(name, "champion", first.version)

    assert model_identity(f"models:/{name}@champion") == model_identity(str(ckpt))
    assert pinned_checkpoint(f"models:/{name}@champion") == f"models:/{name}/1"
    client.set_registered_model_alias(name, "champion", "2")  # the alias moves: new identity
    assert model_identity(f"models:/{name}@champion") == f"models:/{name}/2"
    assert pinned_checkpoint(str(ckpt)) == str(ckpt.resolve())

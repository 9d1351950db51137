"""Registration on real MLflow (sqlite under the test BRIVL_HOME): gate, lineage, URIs."""

from __future__ import annotations

import io
import json
import uuid
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from brivl.evaluate.gate import gate
from brivl.inference import load
from tasks import register

CAPTIONS = ["a red square", "a blue circle on white", "green triangle", "a photo of a dog"] * 3
PRIMARY = "retrieval/mean_recall"


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    from brivl.model import create_model, save_checkpoint
    from brivl.model.tokenizer import train_tokenizer

    tok = train_tokenizer(CAPTIONS, vocab_size=200, min_frequency=1)
    out = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        out.append(
            save_checkpoint(
                create_model("brivl-tiny", tokenizer=tok), tmp_path_factory.mktemp(f"ckpt{seed}")
            )
        )
    return out


def _png(colour: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (48, 40), colour).save(buf, "PNG")
    return buf.getvalue()


def test_gate_function() -> None:
    assert gate(0.5, None, has_champion=False)[0] == "champion"
    assert gate(0.5, 0.5, has_champion=True)[0] == "champion"  # ties promote (>=)
    assert gate(0.4, 0.5, has_champion=True) == ("challenger", "0.4 < champion's 0.5")
    assert gate(float("nan"), 0.1, has_champion=True)[0] == "challenger"
    assert gate(0.9, None, has_champion=True)[0] == "challenger"  # not comparable


def test_champion_gate_both_ways(checkpoints: list[Path]) -> None:
    a, b = checkpoints
    name = f"gate-{uuid.uuid4().hex[:8]}"
    client = mlflow.MlflowClient()

    first = register.register_model(a, {PRIMARY: 0.5}, PRIMARY, {"checkpoint_id": "a"}, name)
    assert (first["version"], first["alias"]) == (1, "champion")
    assert first["decision"]["reason"] == "there was no champion"

    lower = register.register_model(b, {PRIMARY: 0.4}, PRIMARY, {"checkpoint_id": "b"}, name)
    assert (lower["version"], lower["alias"]) == (2, "challenger")
    assert int(client.get_model_version_by_alias(name, "champion").version) == 1  # stays
    logged = mlflow.artifacts.load_dict(f"runs:/{lower['run_id']}/gate_decision.json")
    assert logged["outcome"] == "challenger" and logged["champion_version"] == 1
    assert (logged["new_value"], logged["champion_value"]) == (0.4, 0.5)
    v2 = client.get_model_version(name, "2")
    assert v2.tags["brivl.gate"] == "challenger" and v2.tags["brivl.checkpoint_id"] == "b"
    assert client.get_run(lower["run_id"]).data.tags["brivl.gate.outcome"] == "challenger"

    higher = register.register_model(b, {PRIMARY: 0.6}, PRIMARY, {"checkpoint_id": "b2"}, name)
    assert (higher["version"], higher["alias"]) == (3, "champion")
    assert int(client.get_model_version_by_alias(name, "champion").version) == 3  # moved
    assert int(client.get_model_version_by_alias(name, "challenger").version) == 2
    assert higher["decision"]["champion_value"] == 0.5


def test_alias_loads_the_checkpoints_embeddings(checkpoints: list[Path]) -> None:
    ckpt = checkpoints[0]
    name = f"brivl-{uuid.uuid4().hex[:8]}"  # the default name "brivl" may be taken by other tests
    tags = register.lineage_tags(ckpt, code="test")
    result = register.register_model(ckpt, {PRIMARY: 0.3}, PRIMARY, tags, model_name=name)
    assert result["alias_uri"] == f"models:/{name}@champion"
    version = mlflow.MlflowClient().get_model_version(name, str(result["version"]))
    assert version.tags["brivl.checkpoint_id"] == register.checkpoint_identity(ckpt)
    assert version.tags["brivl.git_commit"] != ""

    ref, by_alias = load(ckpt), load(f"models:/{name}@champion")
    images = [_png((200, 30, 30)), _png((20, 160, 240))]
    assert np.abs(by_alias.encode_texts(CAPTIONS[:4]) - ref.encode_texts(CAPTIONS[:4])).max() < 1e-5
    assert np.abs(by_alias.encode_images(images) - ref.encode_images(images)).max() < 1e-5
    by_run = load(f"runs:/{result['run_id']}/model")
    assert np.abs(by_run.encode_texts(CAPTIONS[:2]) - ref.encode_texts(CAPTIONS[:2])).max() < 1e-5

    pyfunc = mlflow.pyfunc.load_model(f"models:/{name}@champion")
    assert [c.name for c in pyfunc.metadata.get_input_schema().inputs] == ["text", "image"]
    out = pyfunc.predict(pd.DataFrame({"text": ["a red square", None], "image": images}))
    assert list(out.columns) == ["text_embedding", "image_embedding"]
    assert out["text_embedding"][1] is None
    assert (
        np.abs(np.array(out["text_embedding"][0]) - ref.encode_texts(["a red square"])[0]).max()
        < 1e-5
    )
    assert np.abs(np.stack(out["image_embedding"]) - ref.encode_images(images)).max() < 1e-5


def test_register_task_registers_a_checkpoint_once(checkpoints: list[Path]) -> None:
    name = f"once-{uuid.uuid4().hex[:8]}"
    first = register.register_task.fn(str(checkpoints[1]), {PRIMARY: 0.2}, PRIMARY, model_name=name)
    same = register.register_task.fn(str(checkpoints[1]), {PRIMARY: 0.2}, PRIMARY, model_name=name)
    assert same == first  # the same stage run: its recorded answer, the registry not asked
    # the same checkpoint with other metrics: another stage run, but no second version
    again = register.register_task.fn(str(checkpoints[1]), {PRIMARY: 0.3}, PRIMARY, model_name=name)
    assert first["alias"] == "champion" and again["version"] == first["version"]
    assert again["decision"]["outcome"] == "already registered" and again["alias"] == "champion"
    run = mlflow.MlflowClient().get_run(first["run_id"])
    assert run.data.params["lineage.checkpoint_id"] == register.checkpoint_identity(checkpoints[1])
    json.dumps(first)  # small and JSON-able


def test_unknown_model_uri_is_a_clear_error() -> None:
    with pytest.raises(mlflow.exceptions.MlflowException):
        load("models:/no-such-model@champion")

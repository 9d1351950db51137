"""Interpretation as pipeline stages: the cached generator stage, the MLflow prompt grid, the CLI."""

from __future__ import annotations

import io
import json
from pathlib import Path

import mlflow
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image, ImageDraw
from prefect import flow

from brivl.manifest import read_manifest, write_manifest
from flows.cli import main as cli
from tasks.interpret import GRID_ARTIFACT, prompt_grid_task, train_generator_task

pytestmark = pytest.mark.usefixtures("patient_prefect_server")

COLOURS = [(220, 30, 30), (30, 170, 40), (30, 60, 220), (235, 205, 30)]
GENERATOR = dict(
    image_size=32, channels=8, channel_mult=[1, 2], latent_dim=8, codebook_size=32,
    steps=12, batch_size=4, log_every=4,
)  # fmt: skip


def _jpeg(i: int) -> bytes:
    image = Image.new("RGB", (40, 40), (235, 235, 228))
    box = (6 + i % 5, 8, 30, 30 + i % 7)
    ImageDraw.Draw(image).ellipse(box, fill=COLOURS[i % len(COLOURS)])
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A shard directory (12 pictures + 1 broken row) and an untrained brivl-tiny checkpoint."""
    from brivl.model import create_model, save_checkpoint
    from brivl.model.tokenizer import train_tokenizer

    root = tmp_path_factory.mktemp("interpret-stage")
    shards = root / "shards"
    (shards / "train").mkdir(parents=True)
    blobs = [_jpeg(i) for i in range(12)] + [b"\xff\xd8 truncated"]
    captions = [f"a {c} circle" for c in ("red", "green", "blue", "yellow")] * 3 + ["broken"]
    table = pa.table({"key": [f"{i:04d}" for i in range(13)], "image": blobs, "caption": captions})
    pq.write_table(table, shards / "train" / "part-00000.parquet")
    write_manifest(
        shards, stage="shard", config={}, inputs=[], code_version="test", row_counts={"train": 13}
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        tokenizer = train_tokenizer(captions, vocab_size=100, min_frequency=1)
        model = create_model("brivl-tiny", tokenizer=tokenizer, image_size=48, queue_size=32)
    save_checkpoint(model, root / "ckpt")
    return {"shards": str(shards), "ckpt": str(root / "ckpt"), "root": str(root)}


@flow
def generator_flow(shard_dir: str, config: dict) -> tuple[str, str]:
    state = train_generator_task(shard_dir, config, return_state=True)
    return state.name, state.result()


@flow
def grid_flow(
    ckpt: str, generator: str, prompts: list[str], config: dict, out: str
) -> tuple[str, str]:
    with mlflow.start_run(run_name="interpret-test") as run:
        path = prompt_grid_task(ckpt, generator, prompts, config, out)
    return path, run.info.run_id


@pytest.fixture(scope="module")
def generator_dir(inputs: dict[str, str]) -> str:
    state, out = generator_flow(inputs["shards"], GENERATOR)
    assert state == "Completed"
    return out


def test_generator_stage_records_its_work_and_is_cached(inputs, generator_dir):
    from brivl.interpret.vqgan import load_generator

    body = read_manifest(generator_dir)
    assert body["stage"] == "generator"
    assert body["inputs"] == [read_manifest(inputs["shards"])["hash"]]
    assert body["row_counts"] == {"images": 12, "skipped": 1}
    assert "key=0012" in body["extra"]["skipped_examples"][0]
    assert body["extra"]["l1_last"] < body["extra"]["l1_first"]
    assert {"generator.safetensors", "generator.json", "train_log.jsonl"} <= set(body["files"])
    assert load_generator(generator_dir).latent_shape == (8, 16, 16)
    assert generator_flow(inputs["shards"], GENERATOR) == ("Cached", generator_dir)
    changed = {**GENERATOR, "steps": 2}  # another config: its own directory
    assert train_generator_task.fn(inputs["shards"], changed) != generator_dir


def test_prompt_grid_is_logged_to_the_active_mlflow_run(inputs, generator_dir, tmp_path):
    prompts = ["a red circle", "a blue circle"]
    config = {"visualize": {"steps": 3}, "generate": {"steps": 3}, "cell": 32}
    path, run_id = grid_flow(inputs["ckpt"], generator_dir, prompts, config, str(tmp_path / "grid"))
    with Image.open(path) as grid:
        assert grid.format == "PNG"
        assert grid.size == (4 + 2 * (32 + 4), 4 + 2 * (14 + 32 + 14 + 4))  # 2 prompts x 2 methods
    summary = json.loads((Path(path).parent / "prompt_grid.json").read_text())
    assert [r["prompt"] for r in summary["results"]] == prompts
    assert summary["methods"] == ["visualize", "generate"]
    assert len(summary["generate_similarity_matrix"]) == 2
    from brivl.colours import colour_names
    from brivl.interpret.grid import colour_match, grid_scores

    with Image.open(path) as grid:  # the first cell: Algorithm 1 for "a red circle"
        cell = grid.crop((4, 4 + 14, 4 + 32, 4 + 14 + 32))
    assert summary["visualize_colours"][0] == list(colour_names(cell, limit=3))
    assert summary["visualize_colour_match"][0] == ("red" in summary["visualize_colours"][0])
    assert colour_match("a dog", ["red"]) is None and colour_match("a red dog", ["grey"]) is False
    client = mlflow.MlflowClient()
    (child,) = client.search_runs(  # the grid stage's own child run of the active run
        [client.get_run(run_id).info.experiment_id], f"tags.mlflow.parentRunId = '{run_id}'"
    )
    assert child.data.tags["brivl.stage"] == "grid" and child.data.tags["brivl.cached"] == "False"
    assert child.data.params["config.prompts"] == json.dumps(prompts)
    assert child.data.params["config.visualize.steps"] == "3"
    logged = [a.path for a in client.list_artifacts(child.info.run_id, "interpretation")]
    assert GRID_ARTIFACT in logged and "interpretation/prompt_grid.json" in logged
    assert "interpretation/prompt_grid.sources.md" in logged  # its sources table: generated
    sources = (Path(path).parent / "prompt_grid.sources.csv").read_text().splitlines()[1:]
    assert len(sources) == 4 and all("none (generated),generated by " in s for s in sources)
    for name, value in grid_scores(summary).items():
        assert child.data.metrics[name] == value
    local = mlflow.artifacts.download_artifacts(
        run_id=child.info.run_id, artifact_path=GRID_ARTIFACT, dst_path=str(tmp_path)
    )
    assert Path(local).read_bytes() == Path(path).read_bytes()


def test_prompt_grid_is_a_cached_stage(inputs, generator_dir, tmp_path):
    """Issue 16 item 7: the grid was redrawn on every run; now a rerun is a cache hit."""
    prompts = ["a green circle"]
    config = {"visualize": {"steps": 2}, "generate": {"steps": 2}, "cell": 32}

    @flow
    def twice() -> list[tuple[str, str]]:
        states = [prompt_grid_task(inputs["ckpt"], generator_dir, prompts, config,
                                   return_state=True) for _ in range(2)]
        return [(s.name, s.result()) for s in states]

    (first_state, first), (second_state, second) = twice()
    assert (first_state, second_state) == ("Completed", "Cached") and first == second
    body = read_manifest(Path(first).parent)
    assert body["stage"] == "grid" and body["row_counts"] == {"prompts": 1, "methods": 2}
    assert body["config"]["visualize"]["lr"] == 0.05  # normalised: defaults filled in
    stamp = Path(first).stat().st_mtime_ns
    spelled_out = {**config, "cell": 32, "visualize": body["config"]["visualize"]}
    assert prompt_grid_task.fn(inputs["ckpt"], generator_dir, prompts, spelled_out) == first
    assert Path(first).stat().st_mtime_ns == stamp  # the same run: nothing redrawn


def test_cli_writes_pngs_of_the_requested_size(inputs, generator_dir, tmp_path, capsys):
    out = tmp_path / "vis.png"
    args = ["--model", inputs["ckpt"], "--steps", "3", "--size", "40", "--seed", "2"]
    assert cli(["visualize", "a red circle", "--out", str(out), *args]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    with Image.open(out) as image:
        assert (image.format, image.size) == ("PNG", (40, 40))
    gen_out = tmp_path / "gen.png"
    assert (
        cli(
            ["generate", "a red circle", "--generator", generator_dir, "--out", str(gen_out), *args]
        )
        == 0
    )
    with Image.open(gen_out) as image:
        assert (image.format, image.size) == ("PNG", (40, 40))
    assert cli(["visualize", "x", "--model", str(tmp_path / "nope"), "--out", str(out)]) == 2
    assert "cannot load model" in capsys.readouterr().err

"""filter -> shard as Prefect tasks: cache hits on rerun, a filter config change reruns both."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import mlflow
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image, ImageFilter

os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")

from prefect import flow  # noqa: E402

from brivl import manifest  # noqa: E402
from brivl.shard import read_shard_table  # noqa: E402
from tasks.filter import filter_task  # noqa: E402
from tasks.shard import shard_task  # noqa: E402


def jpeg(seed: int, size: tuple[int, int]) -> bytes:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (max(1, size[1] // 8), max(1, size[0] // 8), 3), dtype=np.uint8)
    image = Image.fromarray(small).resize(size, Image.BICUBIC).filter(ImageFilter.GaussianBlur(2))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90)
    return out.getvalue()


@pytest.fixture(scope="module")
def download_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A finished download stage: img2dataset-shaped shards + manifest; 4 of 16 are 72 px."""
    folder = tmp_path_factory.mktemp("download")
    rows = []
    for i in range(16):
        size = (72, 72) if i % 4 == 0 else (120, 96)
        rows.append({
            "key": f"{i:09d}", "candidate_id": f"cand{i:03d}", "url": f"http://x.test/{i}.jpg",
            "caption": f"a picture of thing number {i} in the garden", "status": "success",
            "error_message": None, "width": size[0], "height": size[1],
            "original_width": size[0], "original_height": size[1], "jpg": jpeg(i, size),
            "sha256": None, "page_url": "http://x.test/a.html",
        })
    rows.append(dict(rows[1], key="000000099", candidate_id="cand099", status="failed_to_download",
                     jpg=None))
    pq.write_table(pa.Table.from_pylist(rows[:9]), folder / "00000.parquet")
    pq.write_table(pa.Table.from_pylist(rows[9:]), folder / "00001.parquet")
    manifest.write_manifest(folder, stage="download", config={}, inputs=["seed"],
                            code_version="test", row_counts={"success": 16, "failed": 1})
    return str(folder)


@flow(name="filter-shard-test")
def chain(input_dir: str, filter_config: dict, shard_config: dict) -> dict:
    filtered = filter_task(input_dir, filter_config, return_state=True)
    sharded = shard_task(filtered.result(), shard_config, return_state=True)
    return {"filter": (filtered.name, filtered.result()), "shard": (sharded.name, sharded.result())}


def test_rerun_hits_the_cache_and_a_filter_change_reruns_filter_and_shard(download_dir: str) -> None:
    shard_cfg = {"rows_per_shard": 4, "val_fraction": 0.25}
    first = chain(download_dir, {}, shard_cfg)
    assert first["filter"][0] == first["shard"][0] == "Completed"
    filter_dir, shard_dir = Path(first["filter"][1]), Path(first["shard"][1])
    filter_body, shard_body = manifest.verify(filter_dir), manifest.verify(shard_dir)
    assert filter_body["row_counts"] == {"input": 16, "kept": 16, "rejected": 0, "not_success": 1,
                                         "bad_input_files": 0}
    assert shard_body["inputs"] == [filter_body["hash"]]  # lineage: shards name their filter
    assert shard_body["row_counts"]["total"] == 16
    stamps = {p: p.stat().st_mtime_ns for p in (filter_dir, shard_dir)}

    second = chain(download_dir, {}, shard_cfg)
    assert second["filter"] == ("Cached", str(filter_dir))
    assert second["shard"] == ("Cached", str(shard_dir))
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # no stage work at all
    for stage, out in (("filter", filter_dir), ("shard", shard_dir)):  # a child run each time
        runs = mlflow.search_runs(search_all_experiments=True, output_format="list",
                                  filter_string=f"tags.`brivl.out_dir` = '{out}'")
        assert sorted(r.data.tags["brivl.cached"] for r in runs) == ["False", "True"], stage
        assert all(r.data.tags["brivl.stage"] == stage for r in runs)

    third = chain(download_dir, {"min_image_side": 80}, shard_cfg)
    assert third["filter"][0] == third["shard"][0] == "Completed"
    assert third["filter"][1] != str(filter_dir) and third["shard"][1] != str(shard_dir)
    report = json.loads((Path(third["filter"][1]) / "filter_report.json").read_text())
    assert report["by_rule"]["image_too_small"] == 4 and report["kept"] == 12
    rows = sum(read_shard_table(third["shard"][1], s).num_rows for s in ("train", "val"))
    assert rows == 12
    _check_datasheet(Path(third["shard"][1]))

    fourth = chain(download_dir, {"min_image_side": 80}, dict(shard_cfg, rows_per_shard=5))
    assert fourth["filter"] == ("Cached", third["filter"][1])
    assert fourth["shard"][0] == "Completed"


def test_cli_filter_then_shard(download_dir: str, tmp_path: Path, capsys) -> None:
    from flows.cli import main

    assert main(["filter", "--input", download_dir, "--out", str(tmp_path / "f"),
                 "--max-identical-captions", "3", "--languages", "en"]) == 0
    assert capsys.readouterr().out.strip() == str((tmp_path / "f").resolve())
    assert manifest.read_manifest(tmp_path / "f")["config"]["max_identical_captions"] == 3
    assert main(["shard", "--input", str(tmp_path / "f"), "--out", str(tmp_path / "s"),
                 "--rows-per-shard", "6", "--val-fraction", "0"]) == 0
    assert read_shard_table(tmp_path / "s", "train").num_rows == 16
    assert manifest.verify(tmp_path / "s")["row_counts"] == {
        "train": 16, "val": 0, "total": 16, "rejected": 0, "bad_input_files": 0}


def _check_datasheet(shard_dir: Path) -> None:
    """The shard stage's datasheet: the funnel back to download, histograms, logged to MLflow."""
    sheet = json.loads((shard_dir / "datasheet.json").read_text())
    assert sheet["rows"]["total"] == 12 and sheet["domains"] == {"x.test": 12}
    assert [step["stage"] for step in sheet["funnel"]] == ["download", "filter", "shard"]
    assert sheet["funnel"][1:] == [
        {"stage": "filter", "in": 16, "out": 12, "rejected": {"image_too_small": 4}},
        {"stage": "shard", "in": 12, "out": 12, "rejected": {}}]
    assert sheet["image_shorter_side"]["64-127 px"] == 12  # all 120 x 96
    assert sheet["caption_words"]["9-16 words"] == 12 and sheet["languages"] == {"en": 12}
    assert sheet["licences"] == {"(not declared)": 12}
    assert sheet["faces"]["policy"] == "blur" and sheet["faces"]["searched"] is True
    assert "| filter | 16 | 12 | image_too_small 4 |" in (shard_dir / "datasheet.md").read_text()
    (run,) = mlflow.search_runs(search_all_experiments=True, output_format="list",
                                filter_string=f"tags.`brivl.out_dir` = '{shard_dir}'")
    logged = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id, "datasheet")}
    assert logged == {"datasheet/datasheet.json", "datasheet/datasheet.md"}

"""The model-score rule with a real brivl-tiny checkpoint: exact accounting, the top
fraction keeps the right count, the threshold cuts where it says, the column is stored,
and the stage records which model filtered the data."""

from __future__ import annotations

import io
from pathlib import Path

import mlflow
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image, ImageDraw

from brivl.errors import ConfigError
from brivl.filter import RULES, FilterConfig, run_filter
from brivl.filter.model_score import load_scorer, score_pairs

COLOURS = {"red": (220, 30, 30), "green": (30, 180, 40), "blue": (30, 60, 220)}


def _jpeg(i: int) -> bytes:
    image = Image.new("RGB", (96, 80), (200, 200 - i, 190))
    ImageDraw.Draw(image).ellipse((5 + i, 5 + 2 * i % 30, 50 + i, 60), fill=list(COLOURS.values())[i % 3])
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90)
    return out.getvalue()


def _rows(n: int) -> list[dict]:
    rows = []
    for i in range(n):
        colour = list(COLOURS)[(i * 7) % 3]
        caption = "x" if i % 11 == 5 else f"a {colour} circle picture number {i} on grey"
        rows.append({"candidate_id": f"c{i:03d}", "url": f"http://site.test/{i}.jpg",
                     "caption": caption, "status": "success",
                     "jpg": _jpeg(3 if i == 20 else i)})  # row 20 repeats row 3's image
    return rows


@pytest.fixture(scope="module")
def setup(corpus, tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("model-score")
    rows = _rows(30)
    (root / "in").mkdir()
    for i, part in enumerate((rows[:17], rows[17:])):
        pq.write_table(pa.Table.from_pylist(part), root / "in" / f"{i:05d}.parquet")
    checkpoint = corpus.make_checkpoint(root / "ckpt", seed=0)
    return {"root": root, "rows": rows, "checkpoint": checkpoint,
            "scorer": load_scorer(str(checkpoint))}


def _outputs(out: Path) -> tuple[pa.Table, pa.Table]:
    kept = pa.concat_tables(pq.read_table(p) for p in sorted((out / "kept").glob("*.parquet")))
    rej = pa.concat_tables(pq.read_table(p) for p in sorted((out / "rejected").glob("*.parquet")))
    return kept, rej


def test_top_fraction_keeps_its_share_and_accounting_is_exact(setup: dict) -> None:
    root, rows = setup["root"], setup["rows"]
    cfg = {"model_score": str(setup["checkpoint"]), "model_score_top_fraction": 0.4,
           "languages": []}
    report = run_filter(root / "in", root / "top", cfg, scorer=setup["scorer"]).report
    kept, rej = _outputs(root / "top")
    by_rule = {rule: rej["rule"].to_pylist().count(rule) for rule in RULES}
    assert by_rule == report["by_rule"] and kept.num_rows + rej.num_rows == 30 == len(rows)
    assert sorted(kept["candidate_id"].to_pylist() + rej["candidate_id"].to_pylist()) == sorted(
        r["candidate_id"] for r in rows)
    assert by_rule["caption_too_short"] == 3 and by_rule["duplicate_image"] == 1
    scored = report["model_score"]
    assert scored["scored"] == 26 and kept.num_rows == round(0.4 * 26) == scored["kept"]
    assert by_rule["model_score"] == 26 - kept.num_rows == scored["rejected"]
    assert scored["pairs_per_s"] > 0 and sum(scored["histogram"]["counts"]) == 26

    # the column holds each kept pair's score, recomputed here; the cut separates the sides
    scores = kept["brivl_score"].to_numpy()
    again = score_pairs(kept["jpg"].to_pylist(), kept["caption"].to_pylist(), setup["scorer"], 8)
    assert np.allclose(scores, again, atol=1e-4)
    below = [float(d.split()[1]) for r, d in zip(rej["rule"].to_pylist(), rej["detail"].to_pylist(),
                                                 strict=True) if r == "model_score"]
    assert min(scores) >= max(below) and min(scores) == pytest.approx(scored["cut"])
    near = scored["near_cut"]
    assert {e["kept"] for e in near} == {True, False} and all("caption" in e for e in near)


def test_threshold_cuts_at_its_value_and_off_leaves_the_column_empty(setup: dict) -> None:
    root = setup["root"]
    top = pq.read_table(root / "top" / "kept").column("brivl_score").to_numpy()
    threshold = float(np.median(top))
    cfg = {"model_score": str(setup["checkpoint"]), "model_score_threshold": threshold,
           "languages": []}
    report = run_filter(root / "in", root / "thr", cfg, scorer=setup["scorer"]).report
    kept, rej = _outputs(root / "thr")
    assert (kept["brivl_score"].to_numpy() >= threshold).all()
    assert report["by_rule"]["model_score"] == report["model_score"]["rejected"] == 26 - kept.num_rows
    assert kept.num_rows + rej.num_rows == 30

    report = run_filter(root / "in", root / "off", {"languages": []}).report
    kept, _ = _outputs(root / "off")
    assert report["model_score"] == {"model": ""} and report["by_rule"]["model_score"] == 0
    assert kept.column("brivl_score").null_count == kept.num_rows == 26


def test_the_shards_carry_the_score_and_a_null_without_the_rule(setup: dict) -> None:
    from brivl.shard import read_shard_table, write_shards

    root = setup["root"]
    for name in ("top", "off"):  # the filter outputs of the two tests above
        write_shards(root / name, root / f"shards-{name}", {"val_fraction": 0.3})
    kept = pq.read_table(root / "top" / "kept", columns=["candidate_id", "brivl_score"])
    want = dict(zip(*(kept[c].to_pylist() for c in kept.column_names), strict=True))
    got = {}
    for split in ("train", "val"):
        table = read_shard_table(root / "shards-top", split, ["key", "brivl_score"])
        assert table.schema.field("brivl_score").type == pa.float32()
        got.update(zip(*(table[c].to_pylist() for c in table.column_names), strict=True))
    assert got == want and None not in got.values()
    off = read_shard_table(root / "shards-off", "train", ["brivl_score"]).column(0)
    assert len(off) > 0 and off.null_count == len(off)  # no rule: null, same schema


def test_config_needs_one_cut_and_a_known_model() -> None:
    with pytest.raises(ConfigError, match="exactly one"):
        FilterConfig.from_dict({"model_score": "brivl-lite"})
    with pytest.raises(ConfigError, match="model_score_top_fraction"):
        FilterConfig.from_dict({"model_score_top_fraction": 0})
    with pytest.raises(FileNotFoundError, match="models:/"):
        load_scorer("no-such-model")


def test_the_stage_records_which_model_filtered(setup: dict) -> None:
    from brivl.manifest import read_manifest
    from tasks.filter import filter_task, score_model_identity

    spec = str(setup["checkpoint"])
    config = {"model_score": spec, "model_score_top_fraction": 0.5, "languages": []}
    out = filter_task.fn(str(setup["root"] / "in"), config)
    body = read_manifest(out)
    assert body["inputs"][-1] == score_model_identity(spec) == body["extra"]["model_score"]["model_id"]
    assert body["extra"]["model_score"]["model"] == spec
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list",
                              filter_string=f"tags.`brivl.key` = '{Path(out).name}'")
    history = mlflow.MlflowClient().get_metric_history(runs[0].info.run_id, "model_score.histogram")
    assert len(history) == 20 and sum(m.value for m in history) == 26
    assert runs[0].data.tags["brivl.model_score.model"] == spec

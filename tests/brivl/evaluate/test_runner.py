"""evaluate_model over Parquet eval sets; clear errors for bad files; bad rows recorded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from brivl.evaluate import EvalConfig, EvalSetError, evaluate_model, evaluate_sets, retrieval_grid

FAST = {"vqa_head": {"hidden": 8, "epochs": 20}}


def test_all_four_sets_from_a_directory(encoder, eval_dir: Path) -> None:
    got = evaluate_model(encoder, eval_dir, FAST)
    for key in ("i2t_r1", "i2t_r5", "t2i_r1", "t2i_r10", "mean_recall"):
        assert got[f"retrieval/{key}"] == 1.0
    assert got["retrieval/n"] == 3 and got["retrieval/n_captions"] == 6
    assert got["zeroshot_images/top1"] == 1.0 and got["zeroshot_images/n_classes"] == 3
    assert got["zeroshot_images/linear_probe_acc"] == 1.0
    assert got["zeroshot_text/top1"] == 1.0
    assert got["vqa/zeroshot_acc"] == 1.0 and got["vqa/chance"] == 0.25
    assert got["vqa/n_train"] == 4 and 0.0 <= got["vqa/acc"] <= 1.0
    assert all(v == 0 for k, v in got.items() if k.endswith("/skipped"))


def test_templates_are_ensembled_per_class(encoder, eval_dir: Path) -> None:
    cfg = EvalConfig(
        image_templates=("a {} thing", "{}", "photo"), **{"vqa_head": FAST["vqa_head"]}
    )
    encoder.calls.clear()
    evaluate_model(
        encoder, {"zeroshot_images": eval_dir / "zeroshot_images.parquet"}, cfg.to_dict()
    )
    assert ("texts", 3 * 3) in encoder.calls  # every class x every template, one batch


def test_user_parquet_with_other_name_and_sidecar_classes(encoder, tmp_path: Path, helpers) -> None:
    jpeg, write = helpers
    scenes = write(
        tmp_path / "scenes.parquet",
        {"image": [jpeg("red"), jpeg("blue"), b"not an image"], "label": ["red", "blue", "red"]},
    )
    (tmp_path / "scenes.classes.json").write_text(
        json.dumps({"classes": ["red", "green", "blue", "purple"], "templates": ["{}"]})
    )
    rep = evaluate_sets(encoder, {"scenes": scenes}, {"linear_probe": False})
    assert rep.metrics["scenes/n_classes"] == 4
    assert rep.metrics["scenes/top1"] == 1.0 and rep.metrics["scenes/n"] == 2
    assert rep.metrics["scenes/skipped"] == 1
    assert rep.skipped["scenes"][0]["row"] == 2
    assert "cannot identify image" in rep.skipped["scenes"][0]["reason"]
    assert {r["class"] for r in rep.tables["scenes_per_class"]} == {"red", "blue"}


def test_missing_column_names_file_and_column(encoder, tmp_path: Path, helpers) -> None:
    jpeg, write = helpers
    bad = write(tmp_path / "retrieval.parquet", {"image": [jpeg("red")], "text": ["red"]})
    with pytest.raises(EvalSetError) as err:
        evaluate_model(encoder, tmp_path)
    msg = str(err.value)
    assert str(bad) in msg and "captions" in msg and "missing column" in msg


def test_wrong_type_and_unknown_shape_are_clear(encoder, tmp_path: Path, helpers) -> None:
    jpeg, write = helpers
    vqa = write(
        tmp_path / "vqa.parquet",
        {"image": [jpeg("red")], "question": ["q"], "choices": ["red,blue"], "answer": [0]},
    )
    with pytest.raises(EvalSetError, match=r"vqa\.parquet: column 'choices' has type string"):
        evaluate_model(encoder, {"vqa": vqa})
    odd = write(tmp_path / "odd.parquet", {"foo": [1]})
    with pytest.raises(EvalSetError, match=r"odd\.parquet: columns \['foo'\] match no"):
        evaluate_model(encoder, {"odd": odd})
    junk = tmp_path / "junk.parquet"
    junk.write_bytes(b"nope")
    with pytest.raises(EvalSetError, match="not a readable Parquet"):
        evaluate_model(encoder, {"zeroshot_text": junk})


def test_unknown_config_key_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"eval: unknown key\(s\) \['templates'\]"):
        EvalConfig.from_dict({"templates": ["{}"]})


def test_retrieval_grid_draws_one_row_per_query(encoder, helpers) -> None:
    jpeg, _ = helpers
    images = [jpeg(c) for c in ("red", "green", "blue")]
    caps = ["a red square", "a green square", "a blue square"]
    grid = retrieval_grid(encoder, images, caps, queries=["a red square", "green"], k=2, thumb=64)
    assert grid.size == (220 + 2 * 70 + 6, 2 * (64 + 6 + 14) + 6)
    # the top hit of query 0 is the red image, framed green (a hit)
    assert grid.getpixel((220 + 1, 6 + 30)) == (40, 170, 60)
    assert grid.getpixel((220 + 32, 6 + 32))[0] > 150  # red tile pasted there

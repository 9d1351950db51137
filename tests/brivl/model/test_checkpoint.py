"""Checkpoints: safetensors + config JSON + tokenizer; a checkpoint alone rebuilds the model."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from brivl.errors import CheckpointError
from brivl.model import is_checkpoint, load_checkpoint, load_checkpoint_extras, save_checkpoint


def test_save_load_round_trips_bit_exactly(tiny, tmp_path):
    model = tiny(queue_size=16)
    batch = model.tokenize(["a red cat", "a blue dog", "snow", "a boat on the river"])
    for _ in range(3):  # queue wraps, momentum towers drift from the query towers
        out = model(torch.rand(4, 3, 32, 32), **batch, momentum=0.5)
        out["loss"].backward()
        with torch.no_grad():
            for p in model.trainable_parameters():
                p -= 0.1 * p.grad if p.grad is not None else 0
                p.grad = None
    path = save_checkpoint(model, tmp_path / "ckpt")
    assert sorted(f.name for f in path.iterdir()) == [
        "checkpoint.json",
        "config.json",
        "model.safetensors",
        "tokenizer.json",
    ]
    assert is_checkpoint(path)
    loaded = load_checkpoint(path)

    want, got = model.state_dict(), loaded.state_dict()
    assert want.keys() == got.keys()
    assert all(torch.equal(want[k], got[k]) and want[k].dtype == got[k].dtype for k in want)
    for key in (
        "image_queue",
        "text_queue",
        "image_queue_ptr",
        "text_queue_ptr",
        "queue_filled",
        "image_tower_m.head.0.weight",
        "text_tower_m.head.0.weight",
    ):
        assert key in got
    assert loaded.config == model.config
    assert loaded.queue_fill() == model.queue_fill()
    texts = ["a red cat", "an unseen word zebra"]
    assert torch.equal(loaded.tokenize(texts)["input_ids"], model.tokenize(texts)["input_ids"])
    x = torch.rand(4, 3, 32, 32)
    model.eval()
    loaded.eval()
    with torch.no_grad():
        assert torch.equal(loaded.encode_image(x), model.encode_image(x))
        assert torch.equal(loaded.encode_text(**batch), model.encode_text(**batch))
        a = model(x, **batch)
        b = loaded(x, **batch)
    assert torch.equal(a["loss"], b["loss"])
    assert torch.equal(loaded.image_queue, model.image_queue)  # both enqueued the same keys


def test_checkpoint_files_hold_no_pickle(tiny, tmp_path):
    path = save_checkpoint(tiny(), tmp_path / "ckpt")
    with safe_open(str(path / "model.safetensors"), "pt") as f:
        assert f.metadata()["format"] == "brivl-checkpoint"
        assert "image_queue" in f.keys()
    config = json.loads((path / "config.json").read_text())
    assert config["name"] == "brivl-tiny" and config["text"]["vocab_size"] > 0


def test_extras_live_next_to_the_model(tiny, tmp_path):
    model = tiny()
    extra = {"optimizer.step": torch.tensor(7), "optimizer.exp_avg.0": torch.randn(3, 4)}
    path = save_checkpoint(
        model, tmp_path / "ckpt", extra_tensors=extra, extra_json={"step": 7, "seed": 1}
    )
    (path / "trainer_state.txt").write_text("someone else's file")
    tensors, meta = load_checkpoint_extras(path)
    assert meta == {"step": 7, "seed": 1}
    assert tensors.keys() == extra.keys() and all(torch.equal(tensors[k], extra[k]) for k in extra)
    save_checkpoint(model, path)  # rewritten without extras: stale extras go, other files stay
    assert load_checkpoint_extras(path) == ({}, {})
    assert (path / "trainer_state.txt").read_text() == "someone else's file"
    load_checkpoint(path)


def test_incomplete_checkpoint_is_refused(tiny, tmp_path):
    path = save_checkpoint(tiny(), tmp_path / "ckpt")
    (path / "checkpoint.json").unlink()  # as if killed before the last write
    assert not is_checkpoint(path)
    with pytest.raises(CheckpointError, match="not a complete BriVL checkpoint"):
        load_checkpoint(path)

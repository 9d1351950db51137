"""The frozen-trunk store: exact embeddings from stored records, one fingerprint per set of
frozen weights, and packs that do not read back skipped, never unpickled."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from brivl.inference import Encoder
from brivl.model import create_model
from brivl.model.precision import bf16_enabled
from brivl.model.trunk_store import TrunkStore, trunk_fingerprint

CAPTIONS = ["a red apple on a table", "a yellow sun", "a black cat on a mat", "a blue car"]


def _lite(**overrides):
    torch.manual_seed(0)
    return create_model("brivl-lite", image_size=64, queue_size=64, **overrides)


def _images(n: int = 4) -> list[bytes]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        pixels = rng.integers(0, 255, (48 + 8 * i, 56, 3), dtype=np.uint8)
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, format="JPEG" if i % 2 else "PNG")
        out.append(buf.getvalue())
    return out


def _packs(root: Path) -> list[Path]:
    return sorted(root.glob("*/*.npz"))


def test_stored_trunks_give_the_embeddings_of_the_full_towers(tmp_path: Path) -> None:
    model = _lite()
    images = _images()
    plain = Encoder(model)
    want_images, want_texts = plain.encode_images(images), plain.encode_texts(CAPTIONS)

    first = Encoder(model, trunk_store=tmp_path)
    np.testing.assert_allclose(first.encode_images(images), want_images, atol=1e-6)
    np.testing.assert_allclose(first.encode_texts(CAPTIONS), want_texts, atol=1e-6)
    assert first.trunks.misses == 8 and first.trunks.hits == 0
    packs = _packs(tmp_path)
    assert len(packs) == 2  # one image pack, one text pack

    again = Encoder(model, trunk_store=tmp_path)  # a new process would read the same packs
    assert len(again.trunks) == 8
    np.testing.assert_allclose(again.encode_images(images), want_images, atol=1e-6)
    np.testing.assert_allclose(again.encode_texts(CAPTIONS), want_texts, atol=1e-6)
    assert again.trunks.hits == 8 and again.trunks.misses == 0
    assert _packs(tmp_path) == packs  # nothing new to write
    # a bad image among stored ones is named by its place in the caller's list
    with pytest.raises(ValueError, match=r"batch from 0: image 2: cannot decode"):
        again.encode_images([images[0], images[1], b"not an image"])


def test_the_fingerprint_follows_the_frozen_weights_only() -> None:
    model = _lite()
    before = trunk_fingerprint(model, bf16=False)
    with torch.no_grad():
        model.image_tower.patch_proj.weight.add_(1.0)  # trainable: not part of the trunk
    assert trunk_fingerprint(model, bf16=False) == before
    assert trunk_fingerprint(model, bf16=True) != before  # bf16 trunks are other numbers
    with torch.no_grad():
        model.image_tower.backbone._conv_stem.weight[0, 0, 0, 0] += 1e-3  # frozen
    assert trunk_fingerprint(model, bf16=False) != before
    nothing_frozen = _lite(image={"frozen_stages": 0}, text={"frozen_layers": 0})
    assert trunk_fingerprint(nothing_frozen, bf16=False) is None
    assert TrunkStore.open("/nonexistent", nothing_frozen) is None


def test_a_pack_that_does_not_read_back_is_skipped_and_recomputed(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    model = _lite()
    store = TrunkStore.open(tmp_path, model, bf16_enabled("cpu"))  # the encoder's precision
    store.dir.mkdir(parents=True)
    (store.dir / "image-garbage.npz").write_bytes(b"not a zip archive")
    with open(store.dir / "text-pickled.npz", "wb") as fh:  # an object array needs pickle
        np.savez(fh, format=np.array("brivl-trunks-1"), kind=np.array("text"),
                 keys=np.array(["k"], dtype=object), lengths=np.array([1]),
                 data=np.zeros((1, 384), dtype=np.float32))
    with caplog.at_level(logging.WARNING, logger="brivl.model.trunk_store"):
        encoder = Encoder(model, trunk_store=tmp_path)
    assert sorted(Path(p).name for p in encoder.trunks.skipped) == ["image-garbage.npz",
                                                                     "text-pickled.npz"]
    assert "image-garbage.npz" in caplog.text and "recomputed" in caplog.text
    assert len(encoder.trunks) == 0
    out = encoder.encode_texts(CAPTIONS[:2])
    np.testing.assert_allclose(out, Encoder(model).encode_texts(CAPTIONS[:2]), atol=1e-6)

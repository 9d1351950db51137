"""brivl.inference: checkpoint directories and URIs -> encoders of images and texts."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from brivl.inference import Encoder, load, resolve, uri_resolvers

CAPTIONS = ["a red square", "a blue circle on white", "green triangle", "a photo of a dog"] * 3


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from brivl.model import create_model, save_checkpoint
    from brivl.model.tokenizer import train_tokenizer

    torch.manual_seed(0)
    model = create_model(
        "brivl-tiny", tokenizer=train_tokenizer(CAPTIONS, vocab_size=200, min_frequency=1)
    )
    return save_checkpoint(model, tmp_path_factory.mktemp("ckpt"))


def _images(n: int) -> list[bytes]:
    out = []
    for i in range(n):
        buf = io.BytesIO()
        Image.new("RGB", (40 + 7 * i, 32), (30 * i % 255, 90, 200 - 20 * i)).save(buf, "PNG")
        out.append(buf.getvalue())
    return out


@pytest.mark.parametrize("bf16", ["0", "1"])
def test_checkpoint_directory_gives_normalised_float32(checkpoint: Path, bf16: str,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The encoder computes what the model computes: exactly in fp32, to bf16's precision
    under autocast (BRIVL_BF16=1)."""
    from brivl.model import load_checkpoint
    from brivl.model.preprocess import load_images

    monkeypatch.setenv("BRIVL_BF16", bf16)
    tolerance = 1e-5 if bf16 == "0" else 3e-2
    enc = load(checkpoint, device="cpu")
    assert isinstance(enc, Encoder) and enc.device.type == "cpu"
    imgs, texts = _images(5), CAPTIONS[:4]
    got_i, got_t = enc.encode_images(imgs, batch_size=2), enc.encode_texts(texts, batch_size=3)
    assert got_i.dtype == np.float32 and got_i.shape == (5, enc.dim)
    assert got_t.dtype == np.float32 and got_t.shape == (4, enc.dim)
    np.testing.assert_allclose(np.linalg.norm(got_i, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got_t, axis=1), 1, atol=1e-5)
    model = load_checkpoint(checkpoint).eval()
    with torch.no_grad():
        ref_i = model.encode_image(load_images(imgs, model.config.image_size)).numpy()
        ref_t = model.encode_text(**model.tokenize(texts)).numpy()
    assert np.abs(got_i - ref_i).max() < tolerance
    assert np.abs(got_t - ref_t).max() < tolerance


def test_batch_size_and_input_type_do_not_change_embeddings(checkpoint: Path) -> None:
    enc = load(str(checkpoint))
    imgs = _images(3)
    pils = [Image.open(io.BytesIO(b)) for b in imgs]
    one = enc.encode_images(imgs, batch_size=1)
    assert np.abs(one - enc.encode_images(pils, batch_size=64)).max() < 1e-5
    texts = ["a", "a much longer caption about a blue circle on white paper"]
    assert np.abs(enc.encode_texts(texts, batch_size=1) - enc.encode_texts(texts)).max() < 1e-5
    assert enc.encode_texts([]).shape == (0, enc.dim)
    assert enc.encode_images([]).shape == (0, enc.dim)


def test_bad_inputs_are_named(checkpoint: Path) -> None:
    enc = load(checkpoint)
    with pytest.raises(ValueError, match="image 1: cannot decode"):
        enc.encode_images([_images(1)[0], b"not an image"])
    with pytest.raises(TypeError, match="list of strings"):
        enc.encode_texts("one string")


def test_uri_schemes(checkpoint: Path) -> None:
    assert resolve(f"file://{checkpoint}") == checkpoint
    assert {"models", "runs"} <= set(uri_resolvers())  # registered by pyproject entry points
    with pytest.raises(
        ValueError, match=r"unknown URI scheme 's3'.*known schemes: file, models, runs"
    ):
        load("s3://bucket/model")
    with pytest.raises(FileNotFoundError, match="no checkpoint directory"):
        load(checkpoint / "missing")


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: _truncate(d / "model.safetensors"), r"model\.safetensors: cannot be read"),
        (lambda d: (d / "config.json").unlink(), r"config\.json: missing; a BriVL checkpoint"),
        (lambda d: (d / "config.json").write_text("{not json"), r"config\.json: not valid JSON"),
        (lambda d: (d / "config.json").write_text('{"embed_dim": "big"}'),
         r"config\.json: model\.embed_dim: 'big' is not accepted"),
        (lambda d: _truncate(d / "tokenizer.json"), r"tokenizer\.json: not valid JSON"),
        (lambda d: (d / "checkpoint.json").write_text("[]"), r"checkpoint\.json: format \[\]"),
        (lambda d: (d / "checkpoint.json").unlink(), r"is not a complete BriVL checkpoint"),
    ],
)
def test_a_damaged_checkpoint_is_one_error_naming_the_file(checkpoint: Path, tmp_path: Path,
                                                            damage, message) -> None:
    import shutil

    from brivl.errors import CheckpointError

    copy = Path(shutil.copytree(checkpoint, tmp_path / "ckpt"))
    damage(copy)
    with pytest.raises(CheckpointError, match=message) as caught:
        load(copy, device="cpu")
    assert str(copy) in str(caught.value)


def test_weights_of_another_model_are_named(checkpoint: Path, tmp_path: Path) -> None:
    import shutil

    from safetensors.torch import load_file, save_file

    from brivl.errors import CheckpointError

    copy = Path(shutil.copytree(checkpoint, tmp_path / "ckpt"))
    state = load_file(str(copy / "model.safetensors"))
    state.pop(sorted(state)[0])
    save_file(state, str(copy / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"model\.safetensors: does not fit config\.json"):
        load(copy, device="cpu")

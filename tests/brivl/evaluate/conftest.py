"""A colour encoder (no model needed) and tiny eval Parquet sets written by tests."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

COLOURS = {"red": (220, 20, 20), "green": (20, 200, 20), "blue": (20, 20, 220)}


def jpeg(colour: str) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), COLOURS[colour]).save(buf, format="JPEG")
    return buf.getvalue()


class ColourEncoder:
    """Images -> one-hot of their dominant channel; texts -> one-hot of the colour they name."""

    dim = 4

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def encode_images(self, images: Sequence, batch_size: int = 64) -> np.ndarray:
        self.calls.append(("images", len(images)))
        out = np.zeros((len(images), self.dim), np.float32)
        for i, img in enumerate(images):
            if isinstance(img, bytes):
                img = Image.open(io.BytesIO(img))
            out[i, int(np.asarray(img.convert("RGB"), np.float32).mean((0, 1)).argmax())] = 1
        return out

    def encode_texts(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        self.calls.append(("texts", len(texts)))
        out = np.zeros((len(texts), self.dim), np.float32)
        for i, text in enumerate(texts):
            hit = [j for j, c in enumerate(COLOURS) if c in text]
            out[i, hit[0] if hit else 3] = 1
        return out


@pytest.fixture
def encoder() -> ColourEncoder:
    return ColourEncoder()


def write(path: Path, rows: dict) -> Path:
    pq.write_table(pa.table(rows), path)
    return path


@pytest.fixture
def helpers():
    """(jpeg(colour) -> bytes, write(path, columns) -> path) for tests that build their own sets."""
    return jpeg, write


@pytest.fixture
def eval_dir(tmp_path: Path) -> Path:
    """All four eval sets, shaped as the demo web writes them."""
    names = list(COLOURS)
    write(
        tmp_path / "retrieval.parquet",
        {
            "image": [jpeg(c) for c in names],
            "captions": [[f"a {c} square", f"something {c}"] for c in names],
        },
    )
    labels = names * 2
    write(
        tmp_path / "zeroshot_images.parquet",
        {"image": [jpeg(c) for c in labels], "label": labels},
    )
    write(
        tmp_path / "zeroshot_text.parquet",
        {"text": [f"the {c} one" for c in labels], "label": labels},
    )
    answers = [0, 1, 2, 0, 1, 2, 0, 1]
    write(
        tmp_path / "vqa.parquet",
        {
            "image": [jpeg(names[a]) for a in answers],
            "question": ["which colour is it?"] * 8,
            "choices": [names + ["black"]] * 8,
            "answer": answers,
        },
    )
    return tmp_path

"""Fixtures for the interpretation tests: coloured-shape pictures, a lightly trained brivl-tiny.

The model is trained inside the session (in-batch contrastive loss, a few dozen steps at
64 px) so that "a red circle" and "a green square" mean different things to it; training
and the tests run on one thread, which on a small shared machine is faster than two.
"""

from __future__ import annotations

import io
import random
from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 170, 40),
    "blue": (30, 60, 220),
    "yellow": (235, 205, 30),
}
SHAPES = ("circle", "square", "triangle")
MODEL_SIZE = 64
STEPS, BATCH = 40, 16  # contrastive training of the toy model


def draw_shape(colour: str, shape: str, size: int, seed: int) -> Image.Image:
    """One shape of one colour on a light background, placed and sized by ``seed``."""
    rng = random.Random(seed)
    image = Image.new("RGB", (size, size), (235, 235, 228))
    draw = ImageDraw.Draw(image)
    c = size / 2 + rng.uniform(-size / 8, size / 8)
    r = size * rng.uniform(0.22, 0.32)
    fill = COLOURS[colour]
    if shape == "circle":
        draw.ellipse((c - r, c - r, c + r, c + r), fill=fill)
    elif shape == "square":
        draw.rectangle((c - r, c - r, c + r, c + r), fill=fill)
    else:
        draw.polygon([(c, c - r), (c + r, c + r), (c - r, c + r)], fill=fill)
    return image


def shapes_corpus(n: int, size: int) -> list[tuple[Image.Image, str]]:
    """``n`` (picture, caption) pairs cycling through every shape and colour."""
    out = []
    for i in range(n):
        shape, colour = SHAPES[i % len(SHAPES)], list(COLOURS)[(i // len(SHAPES)) % len(COLOURS)]
        out.append((draw_shape(colour, shape, size, seed=i), f"a {colour} {shape}"))
    return out


def png_roundtrip(image: Image.Image) -> tuple[bytes, Image.Image]:
    """The PNG bytes of ``image`` and the image read back from them."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    data = buffer.getvalue()
    return data, Image.open(io.BytesIO(data))


@pytest.fixture(scope="session")
def png():
    """:func:`png_roundtrip` (test modules cannot import conftest under importlib mode)."""
    return png_roundtrip


@pytest.fixture(scope="session")
def shapes():
    """:func:`shapes_corpus`."""
    return shapes_corpus


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def trained_model():
    """brivl-tiny at 64 px, trained STEPS in-batch contrastive steps on 48 shape pictures."""
    return train_toy_model()


def train_toy_model():
    """The model behind :func:`trained_model` (a plain function, usable outside pytest)."""
    from brivl.interpret.common import pil_to_tensor
    from brivl.model import create_model
    from brivl.model.tokenizer import train_tokenizer

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    data = shapes_corpus(48, MODEL_SIZE)
    captions = [c for _, c in data]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = create_model(
            "brivl-tiny",
            tokenizer=train_tokenizer(captions, vocab_size=200, min_frequency=1),
            image_size=MODEL_SIZE,
            queue_size=64,
        )
    pixels = torch.stack([pil_to_tensor(im) for im, _ in data])  # [48,3,64,64]
    tokens = model.tokenize(captions)
    same = torch.tensor([[a == b for b in captions] for a in captions], dtype=torch.float32)
    params = list(model.image_tower.parameters()) + list(model.text_tower.parameters())
    optimiser = torch.optim.AdamW([p for p in params if p.requires_grad], lr=1e-3)
    generator = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(STEPS):
        idx = torch.randperm(len(data), generator=generator)[:BATCH]
        image = model.encode_image(pixels[idx])  # [B,D]
        text = model.encode_text(tokens["input_ids"][idx], tokens["attention_mask"][idx])
        logits = image @ text.T / 0.07  # [B,B]
        target = same[idx][:, idx]
        target = target / target.sum(1, keepdim=True)  # equal captions share the positive
        loss = -(target * F.log_softmax(logits, 1)).sum(1).mean()
        loss = loss - (target * F.log_softmax(logits.T, 1)).sum(1).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    optimiser.zero_grad(set_to_none=True)
    torch.set_num_threads(threads)
    return model.eval()

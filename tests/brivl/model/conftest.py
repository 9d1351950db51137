"""Fixtures for the model tests: a caption corpus, its tokenizer, tiny models.

Torch runs single-threaded here: on a small shared box, OpenMP threads spinning against
other processes cost far more than they gain.
"""

from __future__ import annotations

import random

import pytest
import torch

from brivl.model import create_model
from brivl.model.tokenizer import train_tokenizer

COLOURS = "red green blue yellow black white orange purple".split()
THINGS = "cat dog car tree house bird boat horse".split()
PLACES = "grass street table beach snow river".split()


def make_captions(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [
        f"a {rng.choice(COLOURS)} {rng.choice(THINGS)} on the {rng.choice(PLACES)} number {i}"
        for i in range(n)
    ]


@pytest.fixture(autouse=True)
def _single_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def captions() -> list[str]:
    return make_captions(200)


@pytest.fixture(scope="session")
def tokenizer(captions):
    return train_tokenizer(captions, vocab_size=300, min_frequency=1)


@pytest.fixture
def tiny(tokenizer):
    """A factory for very small tiny-config models (32 px, narrow layers)."""

    def build(seed: int = 0, **overrides):
        torch.manual_seed(seed)
        small = {
            "image_size": 32,
            "embed_dim": 32,
            "queue_size": 16,
            "image": {
                "cnn_channels": [8, 16, 32],
                "patch_dim": 32,
                "patch_heads": 2,
                "patch_ffn": 64,
                "head_hidden": 64,
            },
            "text": {
                "width": 32,
                "heads": 2,
                "ffn": 64,
                "layers": 1,
                "token_heads": 2,
                "token_ffn": 64,
                "head_hidden": 64,
                "max_length": 16,
            },
        }
        for key, value in overrides.items():
            if key in ("image", "text"):
                small[key] = {**small[key], **value}
            else:
                small[key] = value
        return create_model("brivl-tiny", tokenizer=tokenizer, **small)

    return build

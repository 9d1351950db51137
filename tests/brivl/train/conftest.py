"""Fixtures for the training tests: a tiny toy shard directory and a tiny model config."""

from __future__ import annotations

from pathlib import Path

import pytest

from brivl.train.toydata import make_toy_shards

TINY = {"image_size": 32, "queue_size": 32}


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """One intra-op thread: on a shared 2-core box, spinning OpenMP threads cost 10x."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def toy_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """96 train / 32 val coloured-shape pairs (48 px JPEGs), two train files."""
    return make_toy_shards(tmp_path_factory.mktemp("toy") / "shards", n_train=96, n_val=32,
                           side=48, rows_per_file=64)


@pytest.fixture(scope="session")
def toy_captions(toy_shards: Path) -> list[str]:
    from brivl.train import read_captions

    return read_captions(toy_shards)


@pytest.fixture()
def tiny_model(toy_captions: list[str]):
    """A fresh brivl-tiny at 32 px with a 32-slot queue (seeded)."""
    from brivl.train import TrainConfig, build_model

    return build_model(TrainConfig(model_overrides=dict(TINY), vocab_size=300), toy_captions)

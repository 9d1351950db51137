"""Fixtures of the retrieval tests: tiny shards, a tiny real checkpoint, a built index."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def shard_dir(corpus, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return corpus.make_shards(tmp_path_factory.mktemp("shards"))


@pytest.fixture(scope="session")
def checkpoint(corpus, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return corpus.make_checkpoint(tmp_path_factory.mktemp("ckpt"))


@pytest.fixture(scope="session")
def encoder(checkpoint: Path):
    from brivl.inference import load

    return load(checkpoint, device="cpu")


@pytest.fixture(scope="session")
def built_index(
    encoder, checkpoint: Path, shard_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """An index stage directory built from the shards with the tiny model (manifest included)."""
    from brivl.manifest import write_manifest
    from brivl.retrieval.build import IndexConfig, build_retrieval_index, checkpoint_identity

    out = tmp_path_factory.mktemp("index")
    config = IndexConfig(batch_size=8)
    summary = build_retrieval_index(encoder, shard_dir, out, config)
    write_manifest(
        out,
        stage="index",
        config=config.to_dict(),
        inputs=[checkpoint_identity(checkpoint)],
        code_version="test",
        row_counts={"indexed": summary["rows"], "rejected": summary["rejected"]},
        extra={
            "checkpoint": str(checkpoint),
            "checkpoint_id": checkpoint_identity(checkpoint),
            **summary,
        },
    )
    return out


@pytest.fixture(scope="session")
def search_index(built_index: Path, encoder):
    from brivl.retrieval.service import SearchIndex

    return SearchIndex.open(built_index, encoder)

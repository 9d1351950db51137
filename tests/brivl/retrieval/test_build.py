"""The index build: clip-retrieval's embedding/index layout from our model, row for row."""

from __future__ import annotations

import json
from pathlib import Path

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from brivl.retrieval.build import IndexConfig, build_retrieval_index, checkpoint_identity


def _concat(folder: Path) -> np.ndarray:
    return np.concatenate([np.load(p) for p in sorted(folder.glob("*.npy"))])


def test_layout_matches_clip_retrieval(built_index: Path, shard_dir: Path, encoder, corpus) -> None:
    emb, idx = built_index / "embeddings", built_index / "index"
    assert [p.name for p in (emb / "img_emb").iterdir()] == ["img_emb_0.npy"]
    assert [p.name for p in (emb / "text_emb").iterdir()] == ["text_emb_0.npy"]
    assert [p.name for p in (emb / "metadata").iterdir()] == ["metadata_0.parquet"]
    for name in (
        "image.index",
        "image.json",
        "text.index",
        "text.json",
        "metadata/metadata_0.parquet",
    ):
        assert (idx / name).is_file(), name
    paths = json.loads((built_index / "indices_paths.json").read_text())
    assert paths == {
        "brivl": {
            "indice_folder": str(idx),
            "columns_to_return": ["key", "caption", "url", "split"],
        }
    }
    assert (
        json.loads((idx / "image.json").read_text())["index_key"] == "Flat"
    )  # autofaiss, < 1000 rows

    rows = corpus.shard_rows(shard_dir)
    good = [r for r in rows if r["key"] != "broken"]
    meta = pq.read_table(idx / "metadata").to_pylist()
    assert [m["key"] for m in meta] == [r["key"] for r in good]
    assert [m["caption"] for m in meta] == [r["caption"] for r in good]
    assert (
        meta[-1]["split"] == "val"
        and meta[0]["split"] == "train"
        and meta[0]["url"] == good[0]["url"]
    )

    images, texts = _concat(emb / "img_emb"), _concat(emb / "text_emb")
    np.testing.assert_allclose(images, encoder.encode_images([r["image"] for r in good]), atol=1e-5)
    np.testing.assert_allclose(texts, encoder.encode_texts([r["caption"] for r in good]), atol=1e-5)
    index = faiss.read_index(str(idx / "image.index"))
    assert index.ntotal == len(good) and index.metric_type == faiss.METRIC_INNER_PRODUCT


def test_undecodable_rows_are_rejected_with_reason(built_index: Path) -> None:
    rejected = pq.read_table(built_index / "rejected.parquet").to_pylist()
    assert [(r["key"], r["split"]) for r in rejected] == [("broken", "val")]
    assert rejected[0]["reason"].startswith("image:")


def test_partitions_keep_row_order(encoder, shard_dir: Path, tmp_path: Path, corpus) -> None:
    config = IndexConfig(rows_per_file=3, batch_size=5, splits=["train"])
    summary = build_retrieval_index(encoder, shard_dir, tmp_path, config)
    assert summary["rows"] == 16 and summary["partitions"] == 6 and summary["rejected"] == 0
    names = sorted(p.name for p in (tmp_path / "embeddings" / "img_emb").iterdir())
    assert names == [f"img_emb_{i}.npy" for i in range(6)]
    keys = pq.read_table(tmp_path / "index" / "metadata").column("key").to_pylist()
    assert keys == [r["key"] for r in corpus.shard_rows(shard_dir) if r["key"] < "000016"]
    # faiss id i <-> metadata row i: each image finds itself
    index = faiss.read_index(str(tmp_path / "index" / "image.index"))
    _, ids = index.search(_concat(tmp_path / "embeddings" / "img_emb"), 1)
    assert ids[:, 0].tolist() == list(range(16))


def test_bad_inputs_are_named(encoder, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"index: unknown key\(s\) \['batchsize'\]"):
        IndexConfig.from_dict({"batchsize": 3})
    with pytest.raises(FileNotFoundError, match="no shard files"):
        build_retrieval_index(encoder, tmp_path, tmp_path / "out", IndexConfig())
    (tmp_path / "train").mkdir()
    pq.write_table(
        pa.table({"key": ["a"], "caption": ["x"]}), tmp_path / "train" / "part-0.parquet"
    )
    with pytest.raises(ValueError, match=r"part-0.parquet: missing columns \['image'\]"):
        build_retrieval_index(encoder, tmp_path, tmp_path / "out", IndexConfig())


def test_checkpoint_identity_follows_the_weights(checkpoint: Path, corpus, tmp_path: Path) -> None:
    first = checkpoint_identity(checkpoint)
    assert first == checkpoint_identity(str(checkpoint)) and len(first) == 64
    extra = checkpoint / "trainer-state.bin"
    extra.write_bytes(b"not part of the encoder")
    try:
        assert checkpoint_identity(checkpoint) == first
    finally:
        extra.unlink()
    other = corpus.make_checkpoint(tmp_path / "other", seed=1)
    assert checkpoint_identity(other) != first
    assert checkpoint_identity("models:/brivl/3") == "models:/brivl/3"
    with pytest.raises(FileNotFoundError, match="neither a local path"):
        checkpoint_identity(tmp_path / "missing")

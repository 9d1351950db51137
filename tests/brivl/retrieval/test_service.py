"""clip_back answers kNN queries over HTTP on 127.0.0.1 with our model's exact neighbours."""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np
import pytest
import requests

K = 5


def _stored(built_index: Path, modality: str) -> np.ndarray:
    folder = built_index / "embeddings" / ("img_emb" if modality == "image" else "text_emb")
    return np.concatenate([np.load(p) for p in sorted(folder.glob("*.npy"))])


def assert_brute_force_ranking(
    hits: list[dict], query: np.ndarray, stored: np.ndarray, k: int = K
) -> None:
    """Served top-k == numpy brute-force top-k: same similarities rank by rank, and each served
    id really has the similarity of its rank (ids may only differ among exact ties)."""
    sims = stored @ query.ravel()
    expected = np.sort(sims)[::-1][:k]
    assert len(hits) == k
    got = np.array([h["similarity"] for h in hits])
    np.testing.assert_allclose(got, expected, atol=1e-5)
    np.testing.assert_allclose(sims[[h["id"] for h in hits]], expected, atol=1e-5)
    assert len({h["id"] for h in hits}) == k


@pytest.fixture(scope="module")
def server(search_index):
    with search_index.server(port=0) as srv:
        yield srv


def _post(server, **body) -> list[dict]:
    body = {"modality": "image", "num_images": K, "indice_name": "brivl", **body}
    reply = requests.post(f"{server.url}/knn-service", json=body, timeout=30)
    assert reply.status_code == 200, reply.text
    return reply.json()


def test_served_on_loopback(server) -> None:
    assert server.host == "127.0.0.1" and server.port > 0
    assert requests.get(f"{server.url}/indices-list", timeout=10).json() == ["brivl"]
    assert requests.get(f"{server.url}/health", timeout=10).json() == "ok"


def test_text_query_over_http_returns_brute_force_neighbours(
    server, encoder, built_index: Path, corpus, shard_dir
) -> None:
    text = "a red circle picture"
    query = encoder.encode_texts([text])
    hits = _post(server, text=text)  # text -> images
    assert_brute_force_ranking(hits, query, _stored(built_index, "image"))
    keys = [r["key"] for r in corpus.shard_rows(shard_dir) if r["key"] != "broken"]
    assert [h["key"] for h in hits] == [keys[h["id"]] for h in hits]  # metadata follows the id
    assert set(hits[0]) >= {"id", "similarity", "key", "caption", "url", "split"}

    caption_hits = _post(server, text=text, modality="text")  # text -> captions
    assert_brute_force_ranking(caption_hits, query, _stored(built_index, "text"))


def test_indexed_caption_finds_itself_first(server, corpus, shard_dir) -> None:
    row = corpus.shard_rows(shard_dir)[7]
    hits = _post(server, text=row["caption"], modality="text")
    assert hits[0]["key"] == row["key"] and hits[0]["caption"] == row["caption"]
    assert hits[0]["similarity"] == pytest.approx(1.0, abs=1e-5)


def test_image_query_over_http_finds_the_image_first(
    server, encoder, built_index: Path, corpus, shard_dir
) -> None:
    row = corpus.shard_rows(shard_dir)[11]
    hits = _post(server, image=base64.b64encode(row["image"]).decode())
    assert hits[0]["key"] == row["key"]
    assert hits[0]["similarity"] == pytest.approx(1.0, abs=1e-5)
    assert_brute_force_ranking(
        hits, encoder.encode_images([row["image"]]), _stored(built_index, "image")
    )


def test_embedding_query_and_in_process_query_agree_with_http(
    server, search_index, built_index: Path
) -> None:
    vector = _stored(built_index, "image")[4]
    hits = _post(server, embedding_input=vector.tolist())
    assert hits[0]["id"] == 4
    assert_brute_force_ranking(hits, vector, _stored(built_index, "image"))
    local = search_index.query(embedding=vector, k=K)
    assert [h["id"] for h in local] == [h["id"] for h in hits]
    text_local = search_index.query(text="a green square picture", k=K)
    text_http = _post(server, text="a green square picture")
    assert [h["key"] for h in text_local] == [h["key"] for h in text_http]


def test_metadata_endpoint(server, corpus, shard_dir) -> None:
    reply = requests.post(
        f"{server.url}/metadata", json={"ids": [0, 3], "indice_name": "brivl"}, timeout=10
    )
    keys = [r["key"] for r in corpus.shard_rows(shard_dir)]
    assert [m["metadata"]["key"] for m in reply.json()] == [keys[0], keys[3]]


def test_fast_metadata_provider_matches_clip_backs_own(
    built_index: Path, encoder, search_index
) -> None:
    from brivl.retrieval.service import load_resources

    stock = load_resources(built_index, encoder, fast_metadata=False)["brivl"].metadata_provider
    ours = search_index.resources["brivl"].metadata_provider
    assert type(stock).__name__ == "ParquetMetadataProvider"
    cols = ["key", "caption", "url", "split"]
    ids = [5, 0, 12]
    assert [dict(sorted(m.items())) for m in ours.get(ids, cols)] == [
        dict(sorted(m.items())) for m in stock.get(ids, cols)
    ]
    with pytest.raises(IndexError, match="metadata ids"):
        ours.get([10_000], cols)


def test_query_arguments_are_checked(search_index) -> None:
    with pytest.raises(ValueError, match="exactly one"):
        search_index.query(text="a", embedding=[0.0])
    with pytest.raises(ValueError, match="modality"):
        search_index.query(text="a", modality="audio")


def test_moved_index_still_loads(built_index: Path, encoder, tmp_path: Path) -> None:
    import shutil

    from brivl.retrieval.service import SearchIndex

    moved = tmp_path / "moved"
    shutil.copytree(built_index, moved)
    (moved / "indices_paths.json").write_text('{"brivl": {"indice_folder": "/nowhere/index"}}')
    index = SearchIndex.open(moved, encoder)
    assert index.resources["brivl"].image_index.ntotal == 20


def test_a_model_of_another_dimension_is_refused(built_index: Path) -> None:
    from brivl.retrieval.service import SearchIndex

    class Wide:
        dim = 7

        def encode_images(self, images, batch_size=64):
            return np.ones((len(images), 7), np.float32)

        def encode_texts(self, texts, batch_size=64):
            return np.ones((len(texts), 7), np.float32)

    with pytest.raises(ValueError, match="128-d embeddings but the model gives 7-d"):
        SearchIndex.open(built_index, Wide())

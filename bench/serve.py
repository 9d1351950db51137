"""Search latency of the retrieval service on a 100k-vector index (goal: p50 <= 10 ms).

Builds a synthetic index the way the index stage does (clip-retrieval layout, autofaiss
picks the faiss index), loads it into clip-retrieval's ``clip_back`` and times kNN queries:

- baseline: exact brute-force kNN in numpy over the same vectors (the ratio's denominator);
- faiss: the faiss index's ``search`` alone;
- in-process: clip_back's ``KnnService.query`` with ``embedding_input`` (faiss search +
  reconstruct + metadata lookup), no HTTP; once with our Arrow metadata provider (what the
  service uses) and once with clip_back's own pandas one (100 queries);
- HTTP: POST ``/knn-service`` with ``embedding_input`` to clip_back served on 127.0.0.1.

Vectors are random unit vectors of the model's embedding dimension mixed with cluster
structure (queries are perturbed corpus vectors), so the HNSW index works as on real data.
Usage: ``python bench/serve.py [--n 100000] [--dim 256] [--queries 500] [--no-record]``.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.results import replace_section  # noqa: E402
from brivl.env import apply_defaults  # noqa: E402

apply_defaults()

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import requests  # noqa: E402

from brivl.retrieval.build import (  # noqa: E402
    METADATA_COLUMNS,
    IndexConfig,
    build_faiss_indices,
    write_indices_paths,
)
from brivl.retrieval.service import SearchIndex, load_resources  # noqa: E402

SECTION = "## Retrieval (issue 7)"


class NoModel:
    """Encoder stand-in: the benchmark sends embeddings, never text or images."""

    def encode_images(self, images, batch_size=64):
        raise RuntimeError("bench/serve.py queries by embedding only")

    def encode_texts(self, texts, batch_size=64):
        raise RuntimeError("bench/serve.py queries by embedding only")


def synthetic(n: int, dim: int, seed: int = 0) -> np.ndarray:
    """Unit vectors with low intrinsic dimension, clustered, like real embeddings: a 32-d
    Gaussian mixture mapped linearly into ``dim`` dimensions, plus a little isotropic noise."""
    rng = np.random.default_rng(seed)
    latent = 32
    centres = rng.standard_normal((max(n // 1000, 1), latent)).astype(np.float32)
    z = centres[rng.integers(0, len(centres), n)] + 0.5 * rng.standard_normal((n, latent)).astype(
        np.float32
    )
    x = z @ rng.standard_normal((latent, dim)).astype(np.float32)
    x += (
        0.05
        * np.linalg.norm(x, axis=1, keepdims=True).mean()
        / np.sqrt(dim)
        * rng.standard_normal((n, dim)).astype(np.float32)
    )
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def write_layout(root: Path, vectors: np.ndarray) -> None:
    emb = root / "embeddings"
    for sub in ("img_emb", "text_emb", "metadata"):
        (emb / sub).mkdir(parents=True, exist_ok=True)
    np.save(emb / "img_emb" / "img_emb_0.npy", vectors)
    np.save(emb / "text_emb" / "text_emb_0.npy", vectors[:1000])  # text side unused here
    n = len(vectors)
    meta = {"key": [f"{i:07d}" for i in range(n)], "caption": [f"caption {i}" for i in range(n)]}
    meta |= {"url": [f"http://127.0.0.1/{i}.jpg" for i in range(n)], "split": ["train"] * n}
    pq.write_table(
        pa.table(meta, schema=pa.schema([(c, pa.string()) for c in METADATA_COLUMNS])),
        emb / "metadata" / "metadata_0.parquet",
    )


def pct(times_s: list[float]) -> tuple[float, float]:
    ms = np.asarray(times_s) * 1000
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


def timed(fn, queries: np.ndarray, warmup: int = 20) -> list[float]:
    for q in queries[:warmup]:
        fn(q)
    out = []
    for q in queries:
        start = time.perf_counter()
        fn(q)
        out.append(time.perf_counter() - start)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--no-record", action="store_true", help="do not write bench/RESULTS.md")
    parser.add_argument(
        "--checkpoint",
        help="also time text queries end to end through this model (its dim replaces --dim)",
    )
    args = parser.parse_args()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    encoder = NoModel()
    if args.checkpoint:
        from brivl.inference import load

        encoder = load(args.checkpoint, device="cpu")
        args.dim = encoder.dim

    vectors = synthetic(args.n, args.dim)
    rng = np.random.default_rng(1)
    picks = rng.integers(0, args.n, args.queries)
    queries = vectors[picks] + 0.05 * rng.standard_normal((args.queries, args.dim)).astype(
        np.float32
    )
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)

    with tempfile.TemporaryDirectory(prefix="brivl-bench-serve-") as tmp:
        root = Path(tmp)
        write_layout(root, vectors)
        start = time.perf_counter()
        keys = build_faiss_indices(root / "embeddings", root / "index", IndexConfig())
        build_s = time.perf_counter() - start
        write_indices_paths(root, IndexConfig())
        index = SearchIndex(root, encoder, load_resources(root, encoder))
        faiss_index = index.resources["brivl"].image_index
        k = args.k

        exact = np.argsort(-(queries @ vectors.T), axis=1)[:, :k]
        _, approx = faiss_index.search(queries, k)
        recall = float(
            np.mean([len(set(a) & set(e)) / k for a, e in zip(approx, exact, strict=True)])
        )

        rows = {}
        rows["numpy brute force (baseline)"] = timed(
            lambda q: np.argpartition(-(vectors @ q), k)[:k], queries
        )
        rows["faiss search"] = timed(lambda q: faiss_index.search(q[None, :], k), queries)
        rows["clip_back KnnService.query, in-process"] = timed(
            lambda q: index.query(embedding=q, k=k), queries
        )
        stock = SearchIndex(root, NoModel(), load_resources(root, NoModel(), fast_metadata=False))
        rows["same, clip_back's own ParquetMetadataProvider"] = timed(
            lambda q: stock.query(embedding=q, k=k), queries[:100]
        )
        with index.server() as server, requests.Session() as http:
            url = f"{server.url}/knn-service"

            def post(q: np.ndarray) -> None:
                body = {
                    "embedding_input": q.tolist(),
                    "modality": "image",
                    "num_images": k,
                    "indice_name": "brivl",
                }
                reply = http.post(url, json=body, timeout=30)
                reply.raise_for_status()
                assert len(reply.json()) == k

            rows["clip_back HTTP POST /knn-service (embedding_input)"] = timed(post, queries)
            if args.checkpoint:
                words = ["red", "blue", "circle", "square", "small", "picture", "of", "a"]
                texts = [" ".join(rng.choice(words, 5)) for _ in range(len(queries))]
                text_rows = iter(texts * 2)

                def post_text(_: np.ndarray) -> None:
                    body = {
                        "text": next(text_rows),
                        "modality": "image",
                        "num_images": k,
                        "indice_name": "brivl",
                    }
                    http.post(url, json=body, timeout=30).raise_for_status()

                name = Path(args.checkpoint).name
                rows[f"same, `text` query encoded by the model ({name}, included)"] = timed(
                    post_text, queries
                )

    base_p50, _ = pct(rows["numpy brute force (baseline)"])
    lines = [
        f"{args.n:,} vectors, dim {args.dim}, k={k}, {args.queries} queries after 20 warm-up; "
        f"autofaiss chose `{keys['image']}` (built in {build_s:.1f} s), recall@{k} vs exact {recall:.3f}. "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, load average "
        f"{os.getloadavg()[0]:.1f} at the end (other jobs share the box). Goal: HTTP p50 <= 10 ms.",
        "",
        "| path | p50 ms | p99 ms | baseline p50 / p50 (speed-up) |",
        "|---|---:|---:|---:|",
    ]
    for name, times in rows.items():
        p50, p99 = pct(times)
        lines.append(f"| {name} | {p50:.2f} | {p99:.2f} | {base_p50 / p50:.1f}x |")
    if args.checkpoint:
        lines.append("")
        lines.append(
            f"Text queries: model `{args.checkpoint}` (dim {args.dim}) on CPU, random 5-word texts."
        )
    text = "\n".join(lines)
    print(text)
    http_p50, _ = pct(rows["clip_back HTTP POST /knn-service (embedding_input)"])
    print(
        f"goal p50 <= 10 ms over HTTP: {'met' if http_p50 <= 10 else 'NOT met'} ({http_p50:.2f} ms)"
    )
    if not args.no_record:
        replace_section(SECTION, "python bench/serve.py", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

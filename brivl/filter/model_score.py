"""Model-score filtering (DataComp's CLIP-score baseline, with a BriVL model).

Every pair that survived the per-row and dedup rules is scored with a model: the cosine of
its image and caption embeddings (both L2-normalised), stored as ``brivl_score``. Then
either every pair scoring at least ``model_score_threshold`` is kept, or the best
``model_score_top_fraction`` of the scored pairs (``round(fraction * scored)`` of them; ties
at the cut broken by candidate order); the rest are rejected as ``model_score``.

The model (``model_score``): a checkpoint directory, a ``models:/`` URI (resolved by the
project's plugin, e.g. ``models:/brivl@champion``), or a model config name such as
``brivl-lite`` built at step 0: its towers are pretrained (ImageNet, MiniLM) but its
projections into the shared space are random, so its scores say little about how well a
caption fits its image - use it to try the rule, not to clean a corpus.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

RULE = "model_score"
NEAR_CUT = 5  # examples logged on each side of the cut
HIST_BINS = 20


def load_scorer(spec: str, device: str = "cpu") -> Any:
    """An encoder for ``spec``: a checkpoint directory or model URI (:func:`brivl.inference.load`),
    else a model config name built at step 0 (pretrained towers, random projections)."""
    from brivl.inference import Encoder, load
    from brivl.model.factory import registry_config

    path = Path(spec).expanduser()
    if path.exists() or "://" in spec or spec.startswith("models:/"):
        return load(spec, device=device)
    try:
        registry_config(spec)
    except Exception as exc:  # noqa: BLE001 - named in the error below
        raise FileNotFoundError(
            f"filter.model_score {spec!r}: not a checkpoint directory, a models:/ or runs:/ URI, "
            f"or a model config name such as brivl-lite ({exc})") from None
    import torch

    from brivl.model import create_model

    torch.manual_seed(0)  # the random projections of a step-0 model, the same every run
    return Encoder(create_model(spec), device, source=f"{spec} (step 0)")


def score_pairs(images: list[bytes], captions: list[str], encoder: Any, batch_size: int
                ) -> np.ndarray:
    """Cosine similarity of each image with its caption (float32, one per pair)."""
    if not images:
        return np.zeros(0, np.float32)
    img = np.asarray(encoder.encode_images(images, batch_size=batch_size), np.float32)
    txt = np.asarray(encoder.encode_texts(captions, batch_size=batch_size), np.float32)
    img /= np.maximum(np.linalg.norm(img, axis=1, keepdims=True), 1e-12)
    txt /= np.maximum(np.linalg.norm(txt, axis=1, keepdims=True), 1e-12)
    return (img * txt).sum(axis=1).astype(np.float32)


def score_scratch(path: Path, skip: set[int], encoder: Any, batch_size: int,
                  on_rows: Callable[[int], None] | None = None) -> np.ndarray:
    """Scores of one scratch file's rows (NaN for the rows in ``skip``: already rejected)."""
    handle = pq.ParquetFile(path)
    scores = np.full(handle.metadata.num_rows, np.nan, np.float32)
    offset = 0
    for batch in handle.iter_batches(batch_size=batch_size, columns=["jpg", "caption"],
                                     use_threads=False):
        n = batch.num_rows
        rows = [i for i in range(n) if offset + i not in skip]
        if rows:
            images, captions = batch.column("jpg").to_pylist(), batch.column("caption").to_pylist()
            scores[[offset + i for i in rows]] = score_pairs(
                [images[i] for i in rows], [captions[i] or "" for i in rows], encoder, batch_size)
        offset += n
        if on_rows:
            on_rows(n)
    return scores


def choose(scores: list[np.ndarray], threshold: float | None, top_fraction: float | None
           ) -> tuple[list[np.ndarray], float]:
    """Per file, which scored rows are rejected (bool, NaN rows never), and the cut score."""
    flat = np.concatenate(scores) if scores else np.zeros(0, np.float32)
    scored = np.flatnonzero(~np.isnan(flat))
    reject = np.zeros(len(flat), dtype=bool)
    if top_fraction is not None:
        keep_n = int(round(top_fraction * len(scored)))
        order = scored[np.argsort(-flat[scored], kind="stable")]  # best first, ties by order
        reject[order[keep_n:]] = True
        cut = float(flat[order[keep_n - 1]]) if keep_n else math.inf
    else:
        cut = float(threshold)
        reject[scored] = flat[scored] < cut
    out, start = [], 0
    for part in scores:
        out.append(reject[start:start + len(part)])
        start += len(part)
    return out, cut


def summary(spec: str, source: str, scores: list[np.ndarray], rejected: list[np.ndarray],
            cut: float, examples: list[dict[str, Any]], seconds: float, mode: str
            ) -> dict[str, Any]:
    """What the report records: model, mode, cut, counts, histogram, pairs/s, near-cut rows."""
    flat = np.concatenate(scores) if scores else np.zeros(0, np.float32)
    flat = flat[~np.isnan(flat)]
    counts, edges = (np.histogram(flat, bins=HIST_BINS, range=(-1.0, 1.0)) if len(flat)
                     else (np.zeros(HIST_BINS, int), np.linspace(-1, 1, HIST_BINS + 1)))
    n_rejected = int(sum(r.sum() for r in rejected))
    return {"model": spec, "loaded": source, "mode": mode, "cut": cut if math.isfinite(cut) else None,
            "scored": len(flat), "kept": len(flat) - n_rejected, "rejected": n_rejected,
            "seconds": round(seconds, 3), "pairs_per_s": round(len(flat) / seconds, 1) if seconds else None,
            "mean": float(flat.mean()) if len(flat) else None,
            "histogram": {"edges": [round(float(e), 3) for e in edges],
                          "counts": [int(c) for c in counts]},
            "near_cut": examples}


def near_cut(scores: list[np.ndarray], rejected: list[np.ndarray], cut: float,
             describe: Callable[[int, int], dict[str, Any]]) -> list[dict[str, Any]]:
    """The ``NEAR_CUT`` kept rows just above the cut and rejected ones just below it."""
    if not math.isfinite(cut):
        return []
    items = [(abs(float(s[i]) - cut), f, i) for f, s in enumerate(scores)
             for i in np.flatnonzero(~np.isnan(s))]
    out = []
    for want_rejected in (False, True):
        side = sorted((d, f, i) for d, f, i in items if bool(rejected[f][i]) == want_rejected)
        for _, f, i in side[:NEAR_CUT]:
            out.append({**describe(f, int(i)), "score": round(float(scores[f][i]), 5),
                        "kept": not want_rejected})
    return out


class Timer:
    """Seconds spent scoring (the rule's own pairs/s)."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def __enter__(self) -> Timer:
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.seconds += time.perf_counter() - self._start

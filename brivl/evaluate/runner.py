"""Run every evaluation set that is present against an encoder; return flat metrics.

The encoder is anything with ``encode_images`` and ``encode_texts`` (see :class:`Encoder`),
so a :mod:`brivl.inference` encoder, an MLflow-loaded one or a test double all work.
Metric names are ``<set name>/<metric>``, e.g. ``retrieval/i2t_r1``, ``zeroshot_images/top1``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image

from brivl.config_parse import bounded, config_from_dict
from brivl.evaluate import datasets, formats, metrics, vqa
from brivl.report import track


class Encoder(Protocol):
    """What evaluation needs from a model: both towers, L2-normalised float32 (n, d)."""

    def encode_images(
        self, images: Sequence[Image.Image | bytes], batch_size: int = 64
    ) -> np.ndarray: ...

    def encode_texts(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray: ...


@dataclass(frozen=True)
class EvalConfig:
    """How the evaluation sets are scored."""

    image_templates: tuple[str, ...] = (
        "a photo of a {}.",
        "a picture of a {}.",
        "an image showing a {}.",
        "{}",
    )  # zero-shot image classification prompts, ensembled per class
    text_templates: tuple[str, ...] = ("{}", "a text about {}.")  # label prompts, text task
    ks: tuple[int, ...] = bounded((1, 5, 10), min=1, max=100_000)  # retrieval recall@k
    linear_probe: bool = True  # also fit a logistic regression on image-classification sets
    probe_test_fraction: float = bounded(0.5, gt=0, max=0.99)  # stratified held-out share
    probe_c: float = bounded(1.0, gt=0)  # inverse L2 strength of the probe
    vqa_test_fraction: float = bounded(0.5, gt=0, max=0.99)  # held-out share when a VQA set
    #                                                          has no ``split`` column
    vqa_head: vqa.VQAHeadConfig = field(default_factory=vqa.VQAHeadConfig)
    batch_size: int = bounded(64, min=1, max=65_536)  # encoder batch size
    max_rows: int | None = bounded(None, min=1)  # read at most this many rows per set
    seed: int = bounded(0, min=0)  # splits and head initialisation

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any] | None) -> EvalConfig:
        """Build from a JSON-like dict, every field checked (ConfigError names it)."""
        return config_from_dict(cls, raw, "eval")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (what tasks pass around and MLflow logs as params)."""
        return asdict(self)


@dataclass
class EvalReport:
    """Flat metrics plus per-set detail tables and the rows that were skipped."""

    metrics: dict[str, float] = field(default_factory=dict)
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    skipped: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


def class_embeddings(
    encoder: Encoder, classes: Sequence[str], templates: Sequence[str], batch_size: int = 64
) -> np.ndarray:
    """Prompt-ensembled class embeddings [classes, dim] through the text tower."""
    prompts = [t.format(c) for c in classes for t in templates]
    emb = encoder.encode_texts(prompts, batch_size=batch_size)  # [C*T, D]
    return metrics.ensemble_templates(emb.reshape(len(classes), len(templates), -1))


def _per_class(pred_ok: np.ndarray, labels: np.ndarray, classes: Sequence[str]) -> list[dict]:
    return [
        {"class": c, "n": int((labels == i).sum()), "top1": float(pred_ok[labels == i].mean())}
        for i, c in enumerate(classes)
        if (labels == i).any()
    ]


def _classification(encoder: Encoder, es: datasets.EvalSet, cfg: EvalConfig, rep: EvalReport):
    image_kind = es.kind == "image_classification"
    templates = es.templates or (cfg.image_templates if image_kind else cfg.text_templates)
    cls_emb = class_embeddings(encoder, es.classes, templates, cfg.batch_size)
    x = (
        encoder.encode_images(es.images, batch_size=cfg.batch_size)
        if image_kind
        else encoder.encode_texts(es.texts, batch_size=cfg.batch_size)
    )
    out = metrics.topk_accuracy(x, cls_emb, es.labels, ks=(1, 5))
    pred_ok = (x @ cls_emb.T).argmax(axis=1) == es.labels
    rep.tables[f"{es.name}_per_class"] = _per_class(pred_ok, es.labels, es.classes)
    if image_kind and cfg.linear_probe and len(np.unique(es.labels)) >= 2:
        train, test = metrics.stratified_split(es.labels, cfg.probe_test_fraction, cfg.seed)
        if len(test) and len(np.unique(es.labels[train])) >= 2:
            out["linear_probe_acc"] = metrics.linear_probe(
                x[train], es.labels[train], x[test], es.labels[test], c=cfg.probe_c
            )
    out["n_classes"] = float(len(es.classes))
    return out


def _retrieval(encoder: Encoder, es: datasets.EvalSet, cfg: EvalConfig, rep: EvalReport):
    flat = [c for caps in es.captions for c in caps]
    owner = [i for i, caps in enumerate(es.captions) for _ in caps]
    img = encoder.encode_images(es.images, batch_size=cfg.batch_size)
    txt = encoder.encode_texts(flat, batch_size=cfg.batch_size)
    out = metrics.retrieval_recall(img, txt, owner, ks=cfg.ks)
    out["n_captions"] = float(len(flat))
    return out


def _vqa(encoder: Encoder, es: datasets.EvalSet, cfg: EvalConfig, rep: EvalReport):
    n, k = len(es.images), len(es.choices[0]) if es.choices else 0
    img = encoder.encode_images(es.images, batch_size=cfg.batch_size)
    q = encoder.encode_texts(es.questions, batch_size=cfg.batch_size)
    flat = [c for row in es.choices for c in row]
    ch = encoder.encode_texts(flat, batch_size=cfg.batch_size).reshape(n, k, -1)
    if es.is_test is not None and es.is_test.any() and (~es.is_test).any():
        test = np.flatnonzero(es.is_test)
        train = np.flatnonzero(~es.is_test)
    else:
        rng = np.random.default_rng(cfg.seed)
        order = rng.permutation(n)
        n_test = min(max(int(round(n * cfg.vqa_test_fraction)), 1), n - 1)
        test, train = np.sort(order[:n_test]), np.sort(order[n_test:])
    a = es.answers
    head = vqa.train_vqa_head(img[train], q[train], ch[train], a[train], cfg.vqa_head)
    return {
        "acc": vqa.vqa_accuracy(head, img[test], q[test], ch[test], a[test]),
        "zeroshot_acc": vqa.zero_shot_vqa_accuracy(img[test], q[test], ch[test], a[test]),
        "chance": 1.0 / k,
        "n_train": float(len(train)),
    }


_RUNNERS = {
    "image_classification": _classification,
    "text_classification": _classification,
    "retrieval": _retrieval,
    "vqa": _vqa,
}
_MIN_ROWS = {"vqa": 2}


def resolve_sets(eval_dir_or_sets: str | Path | Mapping[str, str | Path]) -> dict[str, Path]:
    """Name -> path of each set: a mapping as given, else :func:`formats.discover_sets`.

    A path that is one set (Parquet, CSV, webdataset or ImageFolder directory) is that set;
    a directory of sets gives its known-named Parquet files, CSVs and set subfolders.
    """
    if isinstance(eval_dir_or_sets, Mapping):  # sidecars (classes.json) are not sets
        return {str(k): Path(v) for k, v in eval_dir_or_sets.items() if Path(v).suffix != ".json"}
    return formats.discover_sets(eval_dir_or_sets)


def evaluate_sets(
    encoder: Encoder,
    eval_dir_or_sets: str | Path | Mapping[str, str | Path],
    config: EvalConfig | Mapping[str, Any] | None = None,
) -> EvalReport:
    """Score every set present; see :func:`evaluate_model` for the metric names."""
    cfg = config if isinstance(config, EvalConfig) else EvalConfig.from_dict(config)
    sets = resolve_sets(eval_dir_or_sets)
    report = EvalReport()
    for name, path in track(list(sets.items()), "evaluate"):
        es = datasets.read_eval_set(path, name=name, max_rows=cfg.max_rows)
        report.skipped[name] = es.skipped
        result: dict[str, float] = {"n": float(len(es)), "skipped": float(len(es.skipped))}
        if len(es) >= _MIN_ROWS.get(es.kind, 1):
            result.update(_RUNNERS[es.kind](encoder, es, cfg, report))
        report.metrics.update({f"{name}/{k}": float(v) for k, v in result.items()})
    return report


def evaluate_model(
    encoder: Encoder,
    eval_dir_or_sets: str | Path | Mapping[str, str | Path],
    config: EvalConfig | Mapping[str, Any] | None = None,
) -> dict[str, float]:
    """Run whichever eval sets are present; return ``{"<set>/<metric>": value}``.

    Per set: ``n`` (rows used), ``skipped`` (unusable rows). Retrieval: ``i2t_r{k}``,
    ``t2i_r{k}``, ``mean_recall``, ``n_captions``. Classification: ``top1``, ``top5`` (when
    there are more than five classes), ``n_classes``; image sets also ``linear_probe_acc``.
    VQA: ``acc`` (trained head, test split), ``zeroshot_acc`` (no training), ``chance``,
    ``n_train``.
    """
    return evaluate_sets(encoder, eval_dir_or_sets, config).metrics

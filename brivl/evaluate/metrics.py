"""Evaluation metrics as pure functions on L2-normalised embeddings (numpy in, floats out).

Ties are scored pessimistically: an item counts as retrieved within the top k only when
fewer than k wrong items score at least as high as it. A collapsed model (every embedding
equal) therefore scores zero, never a perfect recall.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _as_matrix(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D array (n, dim), got shape {x.shape}")
    return x


def l2_normalize(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Scale vectors to unit L2 norm along ``axis`` (zero vectors stay zero)."""
    x = np.asarray(x, dtype=np.float32)
    norm = np.linalg.norm(x, axis=axis, keepdims=True)
    return x / np.maximum(norm, 1e-12)


def retrieval_recall(
    image_emb: np.ndarray,
    text_emb: np.ndarray,
    text_to_image: Sequence[int],
    ks: Sequence[int] = (1, 5, 10),
) -> dict[str, float]:
    """Image<->text recall@k, several captions per image allowed.

    ``text_to_image[j]`` is the index of the image that caption ``j`` describes. Image->text:
    an image is a hit at k when one of its captions ranks in the top k of all captions.
    Text->image: a caption is a hit when its image ranks in the top k of all images.
    Returns ``i2t_r{k}``, ``t2i_r{k}`` (fractions in [0, 1]) and ``mean_recall``.
    """
    img = _as_matrix(image_emb, "image_emb")
    txt = _as_matrix(text_emb, "text_emb")
    owner = np.asarray(text_to_image, dtype=np.int64)
    if owner.shape != (len(txt),):
        raise ValueError(f"text_to_image has {owner.shape} entries for {len(txt)} captions")
    if len(owner) and (owner.min() < 0 or owner.max() >= len(img)):
        raise ValueError(f"text_to_image points outside 0..{len(img) - 1}")
    sim = img @ txt.T  # [n_img, n_txt]
    positive = owner[None, :] == np.arange(len(img))[:, None]  # [n_img, n_txt]
    has_caption = positive.any(axis=1)
    # image->text: best-scoring own caption vs all other captions
    best_pos = np.where(positive, sim, -np.inf).max(axis=1)  # [n_img]
    i2t_rank = ((sim >= best_pos[:, None]) & ~positive).sum(axis=1)[has_caption]
    # text->image: own image vs all other images
    own = sim[owner, np.arange(len(txt))]  # [n_txt]
    t2i_rank = ((sim >= own[None, :]) & ~positive).sum(axis=0)
    out: dict[str, float] = {}
    for k in ks:
        out[f"i2t_r{k}"] = float((i2t_rank < k).mean()) if len(i2t_rank) else float("nan")
    for k in ks:
        out[f"t2i_r{k}"] = float((t2i_rank < k).mean()) if len(t2i_rank) else float("nan")
    out["mean_recall"] = float(np.mean(list(out.values())))
    return out


def ensemble_templates(template_emb: np.ndarray) -> np.ndarray:
    """Class embeddings from per-template text embeddings ``[classes, templates, dim]``.

    Each template embedding is normalised, the templates are averaged per class, and the
    mean is renormalised (CLIP-style prompt ensembling).
    """
    emb = np.asarray(template_emb, dtype=np.float32)
    if emb.ndim != 3:
        raise ValueError(f"expected [classes, templates, dim], got shape {emb.shape}")
    return l2_normalize(l2_normalize(emb).mean(axis=1))


def topk_accuracy(
    emb: np.ndarray, class_emb: np.ndarray, labels: Sequence[int], ks: Sequence[int] = (1, 5)
) -> dict[str, float]:
    """Nearest-class accuracy: ``top{k}`` for each k below the number of classes (top1 always)."""
    x = _as_matrix(emb, "emb")
    c = _as_matrix(class_emb, "class_emb")
    y = np.asarray(labels, dtype=np.int64)
    if y.shape != (len(x),):
        raise ValueError(f"labels has {y.shape} entries for {len(x)} embeddings")
    if len(y) and (y.min() < 0 or y.max() >= len(c)):
        raise ValueError(f"labels must lie in 0..{len(c) - 1}")
    scores = x @ c.T  # [n, classes]
    true = scores[np.arange(len(x)), y]
    wrong_above = (scores >= true[:, None]).sum(axis=1) - 1  # the true class itself counts once
    return {
        f"top{k}": float((wrong_above < k).mean()) if len(y) else float("nan")
        for k in ks
        if k == 1 or k < len(c)
    }


def zero_shot_accuracy(
    emb: np.ndarray,
    template_emb: np.ndarray,
    labels: Sequence[int],
    ks: Sequence[int] = (1, 5),
) -> dict[str, float]:
    """Zero-shot classification: ensemble the templates per class, then :func:`topk_accuracy`."""
    return topk_accuracy(emb, ensemble_templates(template_emb), labels, ks)


def stratified_split(
    labels: Sequence[int], test_fraction: float = 0.5, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, test), split per class; every class with >=2 items lands in both."""
    y = np.asarray(labels)
    rng = np.random.default_rng(seed)
    train: list[int] = []
    test: list[int] = []
    for cls in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == cls))
        n_test = int(round(len(idx) * test_fraction))
        n_test = min(max(n_test, 1 if len(idx) > 1 else 0), len(idx) - 1)
        test.extend(idx[:n_test])
        train.extend(idx[n_test:])
    return np.sort(np.asarray(train, dtype=np.int64)), np.sort(np.asarray(test, dtype=np.int64))


def linear_probe(
    train_x: np.ndarray,
    train_y: Sequence[int],
    test_x: np.ndarray,
    test_y: Sequence[int],
    c: float = 1.0,
    steps: int = 300,
    lr: float = 0.1,
) -> float:
    """Accuracy of an L2-regularised multinomial logistic regression on frozen features.

    Minimises mean cross-entropy + ||W||^2 / (2 * c * n) (sklearn's objective with
    ``C=c``, divided by n) by full-batch Adam; features are standardised on the train split.
    """
    import torch

    from brivl.evaluate.fit import adam_fit

    x_tr, x_te = _as_matrix(train_x, "train_x"), _as_matrix(test_x, "test_x")
    classes, y_tr = np.unique(np.asarray(train_y), return_inverse=True)
    if len(classes) < 2:
        raise ValueError("linear probe needs at least two classes in the training split")
    mean, std = x_tr.mean(axis=0), x_tr.std(axis=0) + 1e-6
    xt = torch.from_numpy((x_tr - mean) / std)
    yt = torch.from_numpy(y_tr.astype(np.int64))
    w = torch.zeros(xt.shape[1], len(classes), requires_grad=True)
    b = torch.zeros(len(classes), requires_grad=True)
    penalty = 1.0 / (2.0 * c * len(xt))

    def loss() -> torch.Tensor:
        return torch.nn.functional.cross_entropy(xt @ w + b, yt) + penalty * (w * w).sum()

    adam_fit([w, b], loss, steps=steps, lr=lr)
    with torch.no_grad():
        pred = (torch.from_numpy((x_te - mean) / std) @ w + b).argmax(dim=1).numpy()
    return float((classes[pred] == np.asarray(test_y)).mean())

"""Multiple-choice VQA on frozen features: a tiny MLP scores (image, question, choice).

The paper's Visual7W-style task: every question has K candidate answers, one correct. The
towers stay frozen; only the head trains, on a train split, and is scored on a test split.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from brivl.config_parse import bounded
from brivl.evaluate.fit import adam_fit


@dataclass(frozen=True)
class VQAHeadConfig:
    """Size and training length of the scoring head."""

    hidden: int = bounded(128, min=1, max=65_536)  # hidden units of the MLP
    epochs: int = bounded(200, min=1, max=1_000_000)  # full-batch Adam steps
    lr: float = bounded(3e-3, gt=0, max=10)  # Adam learning rate
    weight_decay: float = bounded(1e-4, min=0)  # Adam weight decay
    seed: int = bounded(0, min=0)  # torch seed for the head's initialisation


class VQAHead(nn.Module):
    """score(img, q, c) = MLP([img, q, c, img*c, q*c]) — one logit per choice."""

    def __init__(self, dim: int, hidden: int = 128):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(5 * dim, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, img: torch.Tensor, q: torch.Tensor, choices: torch.Tensor) -> torch.Tensor:
        # img, q: [B, D]; choices: [B, K, D] -> logits [B, K]
        k = choices.shape[1]
        img = img[:, None, :].expand(-1, k, -1)  # [B, K, D]
        q = q[:, None, :].expand(-1, k, -1)  # [B, K, D]
        feats = torch.cat([img, q, choices, img * choices, q * choices], dim=-1)  # [B, K, 5D]
        return self.mlp(feats).squeeze(-1)  # [B, K]


def _tensors(*arrays: np.ndarray) -> list[torch.Tensor]:
    return [torch.as_tensor(np.asarray(a, dtype=np.float32)) for a in arrays]


def _check(img: np.ndarray, q: np.ndarray, choices: np.ndarray, answer: np.ndarray) -> None:
    n = len(img)
    if np.ndim(choices) != 3 or len(q) != n or len(choices) != n or len(answer) != n:
        raise ValueError(
            "VQA expects img [N,D], question [N,D], choices [N,K,D], answer [N]; got "
            f"{np.shape(img)}, {np.shape(q)}, {np.shape(choices)}, {np.shape(answer)}"
        )
    if n and (np.min(answer) < 0 or np.max(answer) >= np.shape(choices)[1]):
        raise ValueError(f"answer indices must lie in 0..{np.shape(choices)[1] - 1}")


def train_vqa_head(
    img: np.ndarray,
    question: np.ndarray,
    choices: np.ndarray,
    answer: np.ndarray,
    config: VQAHeadConfig = VQAHeadConfig(),
) -> VQAHead:
    """Fit a :class:`VQAHead` by cross-entropy over the choices (full batch)."""
    _check(img, question, choices, answer)
    torch.manual_seed(config.seed)
    x_img, x_q, x_c = _tensors(img, question, choices)
    y = torch.as_tensor(np.asarray(answer, dtype=np.int64))
    head = VQAHead(x_img.shape[1], config.hidden)
    adam_fit(
        list(head.parameters()),
        lambda: nn.functional.cross_entropy(head(x_img, x_q, x_c), y),
        steps=config.epochs,
        lr=config.lr,
        weight_decay=config.weight_decay,
    )
    return head.eval()


def vqa_accuracy(
    head: VQAHead, img: np.ndarray, question: np.ndarray, choices: np.ndarray, answer: np.ndarray
) -> float:
    """Fraction of questions whose top-scoring choice is the answer."""
    _check(img, question, choices, answer)
    if not len(img):
        return float("nan")
    with torch.no_grad():
        logits = head(*_tensors(img, question, choices))
    return float((logits.argmax(dim=1).numpy() == np.asarray(answer)).mean())


def zero_shot_vqa_accuracy(
    img: np.ndarray, question: np.ndarray, choices: np.ndarray, answer: np.ndarray
) -> float:
    """Training-free baseline: pick the choice closest to normalise(image + question)."""
    _check(img, question, choices, answer)
    if not len(img):
        return float("nan")
    query = np.asarray(img, np.float32) + np.asarray(question, np.float32)
    query /= np.maximum(np.linalg.norm(query, axis=1, keepdims=True), 1e-12)
    scores = np.einsum("nkd,nd->nk", np.asarray(choices, np.float32), query)
    return float((scores.argmax(axis=1) == np.asarray(answer)).mean())

"""Metrics against hand-computed small cases."""

from __future__ import annotations

import numpy as np
import pytest

from brivl.evaluate import metrics, vqa

# image_emb = I3, so sim[i, j] = TEXT[j, i]: each row lists one caption's score per image.
TEXT = np.array(
    [
        [0.9, 0.1, 0.0],  # t0 -> img0: own best, rank 0
        [0.2, 0.8, 0.45],  # t1 -> img0: img1, img2 above, rank 2
        [0.0, 0.7, 0.1],  # t2 -> img1: rank 0
        [0.0, 0.3, 0.5],  # t3 -> img1: img2 above, rank 1
        [0.6, 0.0, 0.4],  # t4 -> img2: img0 above, rank 1
        [0.1, 0.2, 0.3],  # t5 -> img2: rank 0
    ],
    dtype=np.float32,
)
OWNER = [0, 0, 1, 1, 2, 2]


def test_retrieval_two_captions_per_image() -> None:
    got = metrics.retrieval_recall(np.eye(3, dtype=np.float32), TEXT, OWNER, ks=(1, 2, 3))
    # text->image ranks [0, 2, 0, 1, 1, 0]
    assert got["t2i_r1"] == pytest.approx(3 / 6)
    assert got["t2i_r2"] == pytest.approx(5 / 6)
    assert got["t2i_r3"] == pytest.approx(1.0)
    # image->text: img0 best own 0.9 (rank 0); img1 best own t2=0.7, t1=0.8 above (rank 1);
    # img2 best own t4=0.4, t3=0.5 and t1=0.45 above (rank 2)
    assert got["i2t_r1"] == pytest.approx(1 / 3)
    assert got["i2t_r2"] == pytest.approx(2 / 3)
    assert got["i2t_r3"] == pytest.approx(1.0)
    assert got["mean_recall"] == pytest.approx((0.5 + 5 / 6 + 1 + 1 / 3 + 2 / 3 + 1) / 6)


def test_retrieval_collapsed_model_scores_zero() -> None:
    same = np.ones((3, 4), dtype=np.float32) / 2
    got = metrics.retrieval_recall(same, np.ones((6, 4), np.float32) / 2, OWNER, ks=(1,))
    assert got["i2t_r1"] == 0.0 and got["t2i_r1"] == 0.0


def test_retrieval_rejects_bad_owner() -> None:
    with pytest.raises(ValueError, match="outside"):
        metrics.retrieval_recall(np.eye(3), TEXT, [0, 0, 1, 1, 2, 3])


def test_template_ensembling_is_mean_of_normalised_then_renormalised() -> None:
    templates = np.array(
        [
            [[1.0, 0.0], [0.6, 0.8]],  # class 0: mean (0.8, 0.4)
            [[0.0, 2.0], [-0.6, 0.8]],  # class 1: (0,1) after normalising; mean (-0.3, 0.9)
        ]
    )
    cls = metrics.ensemble_templates(templates)
    np.testing.assert_allclose(cls[0], np.array([0.8, 0.4]) / np.hypot(0.8, 0.4), atol=1e-6)
    np.testing.assert_allclose(cls[1], np.array([-0.3, 0.9]) / np.hypot(0.3, 0.9), atol=1e-6)
    x = np.array([[0.6, 0.8], [-0.1, 1.0]])
    labels = [0, 1]
    # ensembled: x0 -> 0.894 vs 0.569 (class 0), x1 -> 0.358 vs 0.98 (class 1)
    assert metrics.zero_shot_accuracy(x, templates, labels) == {"top1": 1.0}
    # the first template alone sends x0 to class 1 (0.6 < 0.8)
    assert metrics.zero_shot_accuracy(x, templates[:, :1], labels) == {"top1": 0.5}


def test_topk_accuracy_top5_only_with_more_than_five_classes() -> None:
    classes = np.eye(6, dtype=np.float32)
    x = np.array([[0.5, 0.9, 0.8, 0.1, 0.0, 0.0]], dtype=np.float32)  # true class 0 ranks 3rd
    assert metrics.topk_accuracy(x, classes, [0]) == {"top1": 0.0, "top5": 1.0}
    assert "top5" not in metrics.topk_accuracy(x[:, :3], np.eye(3), [0])


def test_linear_probe_on_separable_data() -> None:
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 20)
    centres = np.eye(3, 8) * 5
    x = centres[y] + rng.normal(scale=0.3, size=(60, 8))
    train, test = metrics.stratified_split(y, 0.5, seed=1)
    assert set(train).isdisjoint(test) and len(train) + len(test) == 60
    assert sorted(np.bincount(y[test])) == [10, 10, 10]
    assert metrics.linear_probe(x[train], y[train], x[test], y[test]) == 1.0
    shuffled = rng.permutation(y[train])  # labels unrelated to features: near chance
    assert metrics.linear_probe(x[train], shuffled, x[test], y[test]) < 0.8


def _vqa_case(n: int, seed: int):
    """The answer is the choice pointing AWAY from the image: learnable, not zero-shot."""
    rng = np.random.default_rng(seed)
    unit = lambda a: a / np.linalg.norm(a, axis=-1, keepdims=True)  # noqa: E731
    img, q = unit(rng.normal(size=(n, 8))), unit(rng.normal(size=(n, 8)))
    choices = unit(rng.normal(size=(n, 4, 8)))
    answer = rng.integers(0, 4, size=n)
    choices[np.arange(n), answer] = unit(-img + 0.1 * rng.normal(size=(n, 8)))
    return img, q, choices, answer


def test_vqa_head_learns_a_trivially_learnable_case() -> None:
    train, test = _vqa_case(256, 0), _vqa_case(128, 1)
    head = vqa.train_vqa_head(*train, vqa.VQAHeadConfig(hidden=32, epochs=150))
    assert vqa.vqa_accuracy(head, *test) > 0.9
    assert vqa.zero_shot_vqa_accuracy(*test) < 0.3  # closeness to image+question fails here


def test_vqa_rejects_answers_out_of_range() -> None:
    img, q, ch, a = _vqa_case(4, 0)
    with pytest.raises(ValueError, match="answer indices"):
        vqa.zero_shot_vqa_accuracy(img, q, ch, a + 4)

"""Evaluation: retrieval, zero-shot image/text classification, linear probe, VQA head.

Metrics are pure functions on embeddings (:mod:`brivl.evaluate.metrics`,
:mod:`brivl.evaluate.vqa`); :func:`evaluate_model` runs every eval set present against
anything with ``encode_images``/``encode_texts``.
"""

from brivl.evaluate.datasets import EvalSet, EvalSetError, discover, read_eval_set
from brivl.evaluate.grid import retrieval_grid
from brivl.evaluate.metrics import (
    ensemble_templates,
    linear_probe,
    retrieval_recall,
    stratified_split,
    topk_accuracy,
    zero_shot_accuracy,
)
from brivl.evaluate.runner import (
    Encoder,
    EvalConfig,
    EvalReport,
    class_embeddings,
    evaluate_model,
    evaluate_sets,
)
from brivl.evaluate.vqa import VQAHeadConfig, train_vqa_head, vqa_accuracy, zero_shot_vqa_accuracy

__all__ = [
    "Encoder",
    "EvalConfig",
    "EvalReport",
    "EvalSet",
    "EvalSetError",
    "VQAHeadConfig",
    "class_embeddings",
    "discover",
    "ensemble_templates",
    "evaluate_model",
    "evaluate_sets",
    "linear_probe",
    "read_eval_set",
    "retrieval_grid",
    "retrieval_recall",
    "stratified_split",
    "topk_accuracy",
    "train_vqa_head",
    "vqa_accuracy",
    "zero_shot_accuracy",
    "zero_shot_vqa_accuracy",
]

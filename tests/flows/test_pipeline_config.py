"""The pipeline's default training recipe and what overriding the model does to it."""

from __future__ import annotations

from flows.pipeline import CPU_TRAIN, merged_config


def test_default_trains_brivl_lite_with_the_cpu_recipe() -> None:
    train = merged_config({})["train"]
    assert train == CPU_TRAIN and train["model"] == "brivl-lite" and train["trunk_cache"]


def test_another_model_does_not_inherit_brivl_lites_overrides() -> None:
    train = merged_config({"train": {"model": "brivl-tiny", "steps": 6}})["train"]
    assert train["model"] == "brivl-tiny" and train["model_overrides"] == {}
    assert train["steps"] == 6 and train["batch_size"] == CPU_TRAIN["batch_size"]
    kept = merged_config({"train": {"model": "brivl-tiny", "model_overrides": {"image_size": 32}}})
    assert kept["train"]["model_overrides"] == {"image_size": 32}

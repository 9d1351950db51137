"""Defaults that more than one entry point shows (the library's dataclasses and the CLI's
help): each is defined here once. Imports nothing, so ``brivl --help`` stays instant."""

from __future__ import annotations

DEFAULT_MODEL = "brivl-tiny"  # model registry name TrainConfig trains unless told otherwise
DEFAULT_STEPS = 200  # TrainConfig's optimiser steps
DEFAULT_BATCH_SIZE = 32  # TrainConfig's pairs per worker per step

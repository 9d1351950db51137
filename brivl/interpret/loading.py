"""Load the frozen model to interpret, from a checkpoint directory or a model URI."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def load_model(ref: str | Path) -> Any:
    """A BriVL model on CPU in eval mode from a checkpoint directory or a model URI.

    URIs (``models:/brivl@champion``, ``runs:/...``) go through :func:`brivl.inference.load`,
    which resolves them with the installed resolver plugins.
    """
    from brivl.inference import load

    return load(ref, device="cpu").model.eval()

"""Shared pieces of eval sets read from files: capped image loading, text lists, prompts."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from PIL import Image

from brivl.evaluate.datasets import EvalSetError, _decode

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
MAX_IMAGE_BYTES = 64 * 2**20  # one image file or tar member; larger ones are skipped rows
TEMPLATES_TXT = "zeroshot_classification_templates.txt"


def is_image_name(name: str) -> bool:
    """True for a file name with an accepted image suffix (case-insensitive)."""
    return name.lower().endswith(IMAGE_SUFFIXES) and not name.startswith(".")


def check_size(size: int, what: str) -> None:
    """Raise ``ValueError`` when ``size`` bytes is over the per-image cap."""
    if size > MAX_IMAGE_BYTES:
        raise ValueError(f"{what} is {size} bytes, over the {MAX_IMAGE_BYTES} byte cap")


def load_image(path: Path) -> Image.Image:
    """Decode an image file to RGB; missing, oversized or undecodable files raise."""
    if not path.exists():
        raise FileNotFoundError(f"image file not found: {path}")
    if not path.is_file():
        raise ValueError(f"not a regular file: {path}")
    check_size(path.stat().st_size, str(path))
    return _decode(path.read_bytes())


def reason(exc: BaseException) -> str:
    """A skipped row's reason from the exception that stopped it."""
    return f"{type(exc).__name__}: {exc}"


def text_lines(path: Path) -> list[str]:
    """Non-empty stripped lines of a UTF-8 text file (class names, templates)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise EvalSetError(f"{path}: not UTF-8 text ({exc})") from exc
    return [line.strip() for line in lines if line.strip()]


def prompt_templates(raw: Any, source: Path | str) -> list[str] | None:
    """Validated prompt templates; CLIP_benchmark's ``{c}`` placeholder becomes ``{}``."""
    if raw is None:
        return None
    if not isinstance(raw, list) or not raw or not all(isinstance(t, str) for t in raw):
        raise EvalSetError(
            f"{source}: templates must be a non-empty list of strings, each with {{}} "
            "(or {c}) where the class name goes"
        )
    out = [t.replace("{c}", "{}") for t in raw]
    for template in out:
        try:
            template.format("x")
        except (IndexError, KeyError, ValueError) as exc:
            raise EvalSetError(
                f"{source}: template {template!r} cannot be filled ({exc!r}); use {{}} or {{c}} "
                "for the class name and double other braces"
            ) from exc
    return out


def natural_key(path: Path) -> list[Any]:
    """Sort key that puts ``2.tar`` before ``10.tar``."""
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", path.name)]

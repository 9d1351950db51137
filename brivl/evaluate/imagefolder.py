"""ImageFolder trees (``root/<class>/<image>``) as image-classification eval sets.

Optional ``train/``, ``test/`` and ``val/`` folders at the top each hold class folders;
``test``/``val`` images get ``is_test`` True. Class order: ``classes.json`` in the root (a
list of folder names, or ``{"classes": [...] | {folder: name}, "templates": [...]}``), else
the sorted folder names. Templates may also come from
``zeroshot_classification_templates.txt`` in the root.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from brivl.evaluate.datasets import EvalSet, EvalSetError
from brivl.evaluate.sources import (
    IMAGE_SUFFIXES,
    TEMPLATES_TXT,
    is_image_name,
    load_image,
    prompt_templates,
    reason,
    text_lines,
)

SPLITS = {"train": False, "test": True, "val": True}  # folder -> is_test


def _subdirs(path: Path) -> list[Path]:
    return sorted(d for d in path.iterdir() if d.is_dir() and not d.name.startswith("."))


def split_roots(root: Path) -> list[tuple[Path, bool | None]]:
    """(folder of class folders, is_test) pairs: the split folders, else the root itself."""
    splits = [d for d in _subdirs(root) if d.name in SPLITS]
    if splits:
        return [(d, SPLITS[d.name]) for d in splits]
    return [(root, None)]


def is_image_folder(root: Path) -> bool:
    """True when some class folder holds an image file directly."""
    return any(
        any(f.is_file() and is_image_name(f.name) for f in class_dir.iterdir())
        for base, _ in split_roots(root)
        for class_dir in _subdirs(base)
    )


def _class_map(root: Path, folders: list[str]) -> tuple[list[str], dict[str, int], Any]:
    """Class names, folder -> class index, and the raw templates from ``classes.json``."""
    side = root / "classes.json"
    if not side.is_file():
        return folders, {f: i for i, f in enumerate(folders)}, None
    try:
        body = json.loads(side.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise EvalSetError(f"{side}: not valid JSON ({exc})") from exc
    body = {"classes": body} if isinstance(body, list) else body
    classes = body.get("classes") if isinstance(body, dict) else None
    if isinstance(classes, dict):
        index = {str(f): i for i, f in enumerate(classes)}
        names = [str(n) for n in classes.values()]
    elif isinstance(classes, list):
        names = [str(c) for c in classes]
        index = {c: i for i, c in enumerate(names)}
    else:
        raise EvalSetError(
            f"{side}: expected a list of class folder names, or an object whose 'classes' is "
            "that list or a {folder: class name} mapping (optional 'templates': list)"
        )
    if len(set(names)) != len(names):
        raise EvalSetError(f"{side}: class list has duplicates: {names}")
    return names, index, body.get("templates")


def _files(class_dir: Path) -> Iterator[Path]:
    """Files under a class folder, sorted, recursing into subfolders (not symlinked ones)."""
    for top, dirs, files in os.walk(class_dir):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith("."):
                yield Path(top) / name


def files(root: Path) -> list[Path]:
    """Every file the set reads (images and sidecars), for a content identity."""
    out = [p for p in (root / "classes.json", root / TEMPLATES_TXT) if p.is_file()]
    for base, _ in split_roots(root):
        for class_dir in _subdirs(base):
            out.extend(p for p in _files(class_dir) if is_image_name(p.name))
    return out


def _templates(root: Path, raw: Any) -> list[str] | None:
    txt = root / TEMPLATES_TXT
    if raw is None and txt.is_file():
        return prompt_templates(text_lines(txt), txt)
    return prompt_templates(raw, root / "classes.json")


def _entries(splits: list[tuple[Path, bool | None]]) -> Iterator[tuple[Path, str, bool]]:
    """(file, class folder name, is_test) in split, class and file-name order."""
    for base, test in splits:
        for class_dir in _subdirs(base):
            for path in _files(class_dir):
                yield path, class_dir.name, bool(test)


def read_image_folder(root: Path, name: str, max_rows: int | None = None) -> EvalSet:
    """Read an ImageFolder tree; bad files land in ``skipped`` with their relative path."""
    splits = split_roots(root)
    has_splits = splits[0][1] is not None
    folders = sorted({d.name for base, _ in splits for d in _subdirs(base)})
    classes, index, raw_templates = _class_map(root, folders)
    out = EvalSet(name=name, kind="image_classification", path=root, classes=classes)
    out.templates = _templates(root, raw_templates)
    others = [d.name for d in _subdirs(root) if d.name not in SPLITS] if has_splits else []
    if others:
        out.notes.append(f"{root}: split folders present, so top-level folders {others} ignored")
    labels, is_test = [], []
    for path, folder, test in islice(_entries(splits), max_rows):
        row = path.relative_to(root).as_posix()
        if not is_image_name(path.name):
            why = f"not an image file (accepted suffixes: {', '.join(IMAGE_SUFFIXES)})"
        elif folder not in index:
            why = f"class folder {folder!r} is not in {root / 'classes.json'}"
        else:
            try:
                out.images.append(load_image(path))
            except Exception as exc:  # noqa: BLE001 - a bad file is recorded, the rest goes on
                why = reason(exc)
            else:
                labels.append(index[folder])
                is_test.append(test)
                continue
        out.skipped.append({"row": row, "reason": why})
    out.labels = np.asarray(labels, dtype=np.int64)
    out.is_test = np.asarray(is_test, dtype=bool) if has_splits else None
    return out

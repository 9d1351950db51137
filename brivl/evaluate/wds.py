"""CLIP_benchmark-style webdataset directories as classification or retrieval eval sets.

Layout: ``*.tar`` shards in the directory, or in ``train/``, ``test/`` and ``val/`` folders
(``is_test`` from the folder, as for ImageFolder); ``classnames.txt`` (one class per line,
line i = class index i), optional ``zeroshot_classification_templates.txt`` (``{c}`` is the
class name) and optional ``dataset_type.txt`` (``classification`` or ``retrieval``) beside
them. A sample is the run of consecutive members sharing a key (the member name up to the
first dot of its base name): one image (``.jpg``/``.jpeg``/``.png``/``.webp``) plus ``.cls``
(class index) or ``.txt`` (captions, one per line). Without ``dataset_type.txt`` the set is
classification when ``classnames.txt`` exists, else retrieval.

Shards are read as plain (uncompressed) tar streams with :mod:`tarfile`: nothing is
extracted to disk, only regular members are read, each at most ``MAX_IMAGE_BYTES``; other
members (``.json``, and pickles such as ``.pyd``/``.pickle``, which are never loaded) are
ignored and counted in ``EvalSet.notes``. A bad sample or an unreadable shard is a skipped
row; samples read before a shard breaks are kept.
"""

from __future__ import annotations

import tarfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

import numpy as np

from brivl.evaluate.datasets import EvalSet, EvalSetError, _decode
from brivl.evaluate.sources import (
    MAX_IMAGE_BYTES,
    TEMPLATES_TXT,
    check_size,
    natural_key,
    prompt_templates,
    reason,
    text_lines,
)

IMAGE_EXTS = ("webp", "png", "jpg", "jpeg")  # CLIP_benchmark's order of preference
READ_EXTS = (*IMAGE_EXTS, "cls", "txt")
PICKLE_EXTS = ("pyd", "pickle", "pkl", "pth", "npy", "npz")
SPLITS = {"train": False, "test": True, "val": True}


def shards(root: Path) -> list[tuple[Path, bool | None]]:
    """(shard, is_test) pairs: split folders' shards if any, else the root's own."""
    split_dirs = [root / s for s in SPLITS if (root / s).is_dir()]
    found = [
        (tar, SPLITS[d.name])
        for d in split_dirs
        for tar in sorted(d.glob("*.tar"), key=natural_key)
    ]
    return found or [(tar, None) for tar in sorted(root.glob("*.tar"), key=natural_key)]


def is_webdataset(root: Path) -> bool:
    """True for a directory holding ``*.tar`` shards (directly or in split folders)."""
    return bool(shards(root))


def files(root: Path) -> list[Path]:
    """Every file the set reads (shards and text sidecars), for a content identity."""
    names = ("classnames.txt", TEMPLATES_TXT, "dataset_type.txt")
    return [root / n for n in names if (root / n).is_file()] + [s for s, _ in shards(root)]


def _kind(root: Path) -> str:
    type_file = root / "dataset_type.txt"
    lines = text_lines(type_file) if type_file.is_file() else []
    declared = lines[0].lower() if lines else ""
    if declared in ("", "classification", "zeroshot_classification"):
        if (root / "classnames.txt").is_file():
            return "image_classification"
        if declared:
            raise EvalSetError(f"{root}: a classification webdataset needs classnames.txt")
        return "retrieval"
    if declared in ("retrieval", "zeroshot_retrieval"):
        return "retrieval"
    raise EvalSetError(
        f"{type_file}: dataset type {declared!r} is not supported; accepted: classification, "
        "retrieval (multilabel sets are not)"
    )


@dataclass
class Sample:
    """One webdataset sample: its key, the members read (by extension) and problems."""

    key: str
    members: dict[str, bytes] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def _split_name(name: str) -> tuple[str, str]:
    head, _, base = name.rpartition("/")
    stem, _, ext = base.partition(".")
    return (f"{head}/{stem}" if head else stem), ext.lower()


def read_samples(shard: Path, ignored: Counter) -> Iterator[Sample]:
    """Samples of one shard, in order; unused member extensions are counted in ``ignored``."""
    current: Sample | None = None
    with tarfile.open(shard, mode="r|") as tar:
        for member in tar:
            if not member.isreg():
                ignored["non-regular member"] += 1
                continue
            key, ext = _split_name(member.name)
            if current is None or key != current.key:
                if current is not None:
                    yield current
                current = Sample(key)
            if ext not in READ_EXTS:
                ignored[f".{ext} (pickle, not loaded)" if ext in PICKLE_EXTS else f".{ext}"] += 1
            elif ext in current.members:
                current.problems.append(f"duplicate member {member.name}")
            else:
                try:
                    check_size(member.size, f"member {member.name}")
                except ValueError as exc:
                    current.problems.append(str(exc))
                    continue
                current.members[ext] = tar.extractfile(member).read()
    if current is not None:
        yield current


def _image(sample: Sample) -> bytes:
    for ext in IMAGE_EXTS:
        if ext in sample.members:
            return sample.members[ext]
    raise ValueError(
        f"no image member (.{', .'.join(IMAGE_EXTS)}); has {sorted(sample.members) or 'none'}"
    )


def _target(sample: Sample, kind: str, n_classes: int) -> int | list[str]:
    if kind == "retrieval":
        if "txt" not in sample.members:
            raise ValueError("no .txt caption member (a classification set needs classnames.txt)")
        caps = [c.strip() for c in sample.members["txt"].decode("utf-8").splitlines()]
        if not any(caps):
            raise ValueError("empty .txt caption")
        return [c for c in caps if c]
    if "cls" not in sample.members:
        raise ValueError("no .cls class-index member")
    text = sample.members["cls"].decode("utf-8").strip()
    if not text.isdigit() or int(text) >= n_classes:
        raise ValueError(f".cls {text!r} is not a class index in 0..{n_classes - 1}")
    return int(text)


def _add(out: EvalSet, sample: Sample, test: bool | None, labels: list, is_test: list) -> None:
    if sample.problems:
        raise ValueError("; ".join(sample.problems))
    target = _target(sample, out.kind, len(out.classes))
    out.images.append(_decode(_image(sample)))
    if out.kind == "retrieval":
        out.captions.append(target)
    else:
        labels.append(target)
    is_test.append(bool(test))


def _stream(
    root: Path, found: list[tuple[Path, bool | None]], ignored: Counter
) -> Iterator[tuple[str, bool | None, Sample | Exception]]:
    """(row id, is_test, sample) over all shards; an unreadable shard yields its error."""
    for shard, test in found:
        shard_name = shard.relative_to(root).as_posix()
        try:
            for sample in read_samples(shard, ignored):
                yield f"{shard_name}:{sample.key}", test, sample
        except (tarfile.TarError, OSError, EOFError) as exc:
            yield shard_name, test, exc


def read_webdataset(root: Path, name: str, max_rows: int | None = None) -> EvalSet:
    """Read a webdataset directory; bad samples (``shard:key``) land in ``skipped``."""
    kind = _kind(root)
    out = EvalSet(name=name, kind=kind, path=root)
    if kind == "image_classification":
        out.classes = text_lines(root / "classnames.txt")
        if len(set(out.classes)) != len(out.classes):
            raise EvalSetError(f"{root / 'classnames.txt'}: class list has duplicates")
        tpl = root / TEMPLATES_TXT
        out.templates = prompt_templates(text_lines(tpl), tpl) if tpl.is_file() else None
    found = shards(root)
    labels: list[int] = []
    is_test: list[bool] = []
    ignored: Counter = Counter()
    for row, test, item in islice(_stream(root, found, ignored), max_rows):
        try:
            if isinstance(item, Exception):
                raise ValueError(f"unreadable tar shard ({reason(item)}); samples before it kept")
            _add(out, item, test, labels, is_test)
        except Exception as exc:  # noqa: BLE001 - a bad sample is recorded, the rest goes on
            out.skipped.append({"row": row, "reason": reason(exc)})
    if ignored:
        out.notes.append(
            f"{root}: ignored tar members {dict(sorted(ignored.items()))} (only images, .cls and "
            f".txt are read, each at most {MAX_IMAGE_BYTES} bytes; pickles are never loaded)"
        )
    out.labels = np.asarray(labels, dtype=np.int64) if kind == "image_classification" else None
    out.is_test = np.asarray(is_test, dtype=bool) if found and found[0][1] is not None else None
    return out

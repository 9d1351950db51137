"""Evaluation sets, validated, with bad rows recorded in ``skipped`` instead of raised.

Parquet shapes (any user Parquet of one of these shapes works):

=====================  ===============================================================
kind                   columns
=====================  ===============================================================
image_classification   ``image`` (encoded bytes), ``label`` (class name)
retrieval              ``image`` (encoded bytes), ``captions`` (list of strings) or ``caption``
text_classification    ``text`` (string), ``label`` (class name)
vqa                    ``image``, ``question`` (string), ``choices`` (list of strings,
                       the same count per row), ``answer`` (int index into choices);
                       optional ``split`` ("train"/"test")
=====================  ===============================================================

Classification sets take their class list, in order, from a ``classes`` column (list of
strings, first row), else from a sidecar JSON (``<stem>.classes.json`` or ``classes.json``
beside the file: a list, or an object with ``classes`` and optionally ``templates``), else
from the sorted distinct labels. File names ``zeroshot_images``, ``retrieval``,
``zeroshot_text`` and ``vqa`` fix the kind; other names are recognised by their columns.

Other formats (:func:`read_eval_set` picks by path; :mod:`brivl.evaluate.formats` detects):

- ImageFolder tree ``root/<class>/<image>`` (``.jpg .jpeg .png .webp .bmp .gif .tif``),
  optionally under ``train/``, ``test/``, ``val/`` (sets ``is_test``): image_classification;
  classes are the sorted folder names unless ``classes.json`` is in the root
  (:mod:`~brivl.evaluate.imagefolder`).
- CSV/TSV (or Parquet) with ``image_path``/``filepath`` (relative to the file's folder) and
  ``caption``/``title``/``captions``: retrieval; rows naming one image are merged
  (:mod:`~brivl.evaluate.captions`).
- CLIP_benchmark webdataset directory: ``*.tar`` shards (or ``train/``/``test/`` of them) of
  image + ``.cls``/``.txt`` samples, ``classnames.txt``, optional
  ``zeroshot_classification_templates.txt``; tar members are read in memory, size-capped,
  never unpickled (:mod:`~brivl.evaluate.wds`).

A missing or undecodable image, or a bad sample, is a skipped row: ``{"row", "reason"}`` with
the row index, relative file path or ``shard:key``. What a reader ignores on purpose (tar
members it does not read, stray folders) is listed in ``EvalSet.notes``.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from brivl.errors import InputError

KINDS: dict[str, tuple[str, ...]] = {
    "image_classification": ("image", "label"),
    "retrieval": ("image", "captions"),
    "text_classification": ("text", "label"),
    "vqa": ("image", "question", "choices", "answer"),
}
KIND_BY_NAME = {
    "zeroshot_images": "image_classification",
    "retrieval": "retrieval",
    "zeroshot_text": "text_classification",
    "vqa": "vqa",
}


class EvalSetError(InputError):
    """An evaluation Parquet file cannot be used as it is (named file, column, what is accepted)."""


@dataclass
class EvalSet:
    """One validated evaluation set; only the fields of its kind are filled."""

    name: str
    kind: str
    path: Path
    images: list[Image.Image] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)  # text_classification inputs
    labels: np.ndarray | None = None  # class indices into ``classes``
    classes: list[str] = field(default_factory=list)
    templates: list[str] | None = None  # prompt templates from the sidecar, if any
    captions: list[list[str]] = field(default_factory=list)
    questions: list[str] = field(default_factory=list)
    choices: list[list[str]] = field(default_factory=list)
    answers: np.ndarray | None = None
    is_test: np.ndarray | None = None  # from a ``split`` column, if present
    skipped: list[dict[str, Any]] = field(default_factory=list)  # {"row", "reason"}
    notes: list[str] = field(default_factory=list)  # what a reader ignored on purpose
    sources: list[dict[str, Any]] = field(default_factory=list)  # retrieval sets: per image,
    #   {"row", "sha256", "image_url", "page_url", "licence"} (what the set says of it)

    def __len__(self) -> int:
        return len(self.images) if self.kind != "text_classification" else len(self.texts)


def _shapes() -> str:
    return "; ".join(f"{kind}: {', '.join(cols)}" for kind, cols in KINDS.items())


def infer_kind(name: str, columns: list[str], path: Path | str = "") -> str:
    """The set's kind from its name if known, else from its columns."""
    if name in KIND_BY_NAME:
        return KIND_BY_NAME[name]
    cols = set(columns)
    if {"question", "choices", "answer"} <= cols:
        return "vqa"
    if "image" in cols and ({"captions", "caption"} & cols):
        return "retrieval"
    if {"image", "label"} <= cols:
        return "image_classification"
    if {"text", "label"} <= cols:
        return "text_classification"
    raise EvalSetError(
        f"{path}: columns {sorted(cols)} match no evaluation set shape; accepted: {_shapes()}"
    )


def discover(eval_dir: str | Path) -> dict[str, Path]:
    """The known-named eval sets present in a directory (``zeroshot_images.parquet`` ...)."""
    eval_dir = Path(eval_dir)
    if not eval_dir.is_dir():
        raise EvalSetError(f"{eval_dir}: not a directory of evaluation Parquet files")
    return {
        n: eval_dir / f"{n}.parquet" for n in KIND_BY_NAME if (eval_dir / f"{n}.parquet").is_file()
    }


def _require(path: Path, kind: str, table: pa.Table) -> None:
    needed = list(KINDS[kind])
    if kind == "retrieval" and "caption" in table.column_names:
        needed = ["image", "caption"]
    missing = [c for c in needed if c not in table.column_names]
    if missing:
        raise EvalSetError(
            f"{path}: missing column(s) {missing} for a {kind} eval set "
            f"(has {table.column_names}); a {kind} set needs {', '.join(KINDS[kind])}"
        )


def _check_type(path: Path, table: pa.Table, column: str, ok: Any, expected: str) -> None:
    typ = table.schema.field(column).type
    if not ok(typ):
        raise EvalSetError(f"{path}: column {column!r} has type {typ}; expected {expected}")


def _is_binary(t: pa.DataType) -> bool:
    if pa.types.is_struct(t):  # Hugging Face image feature: {bytes, path}
        return any(f.name == "bytes" and _is_binary(f.type) for f in t)
    return pa.types.is_binary(t) or pa.types.is_large_binary(t)


def _is_string(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def _is_string_list(t: pa.DataType) -> bool:
    return (pa.types.is_list(t) or pa.types.is_large_list(t)) and _is_string(t.value_type)


def _decode(value: Any) -> Image.Image:
    if isinstance(value, dict):
        value = value.get("bytes")
    if not value:
        raise ValueError("empty image bytes")
    with Image.open(io.BytesIO(value)) as img:
        return img.convert("RGB")


def _sidecar(path: Path) -> dict[str, Any]:
    for candidate in (path.with_name(f"{path.stem}.classes.json"), path.with_name("classes.json")):
        if candidate.is_file():
            try:
                body = json.loads(candidate.read_text())
            except json.JSONDecodeError as exc:
                raise EvalSetError(f"{candidate}: not valid JSON ({exc})") from exc
            if isinstance(body, dict) and path.stem in body and "classes" not in body:
                body = body[path.stem]
            if isinstance(body, list):
                body = {"classes": body}
            if not isinstance(body, dict) or not isinstance(body.get("classes"), list):
                raise EvalSetError(
                    f"{candidate}: expected a list of class names or an object with 'classes'"
                )
            return body
    return {}


def read_eval_set(
    path: str | Path, name: str | None = None, max_rows: int | None = None
) -> EvalSet:
    """Read and validate one eval set (any accepted format); unusable rows land in ``skipped``."""
    path = Path(path)
    name = name or (path.name if path.is_dir() else path.stem)
    if not path.exists():
        raise EvalSetError(f"{path}: eval set {name!r} does not exist")
    if path.is_dir() or path.suffix.lower() in (".csv", ".tsv"):
        from brivl.evaluate import formats  # its readers import this module

        return formats.read_set(path, name, max_rows)
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise EvalSetError(f"{path}: not a readable Parquet file ({exc})") from exc
    if max_rows is not None:
        table = table.slice(0, max_rows)
    if "image" not in table.column_names:
        from brivl.evaluate import captions

        if captions.path_column(table.column_names):
            return captions.from_table(path, name, table)
    kind = infer_kind(name, table.column_names, path)
    _require(path, kind, table)
    out = EvalSet(name=name, kind=kind, path=path)
    if kind == "text_classification":
        _check_type(path, table, "text", _is_string, "string")
    else:
        _check_type(path, table, "image", _is_binary, "binary (encoded image bytes)")
    reader = {
        "image_classification": _read_classification,
        "text_classification": _read_classification,
        "retrieval": _read_retrieval,
        "vqa": _read_vqa,
    }[kind]
    reader(out, table)
    return out


def _rows(table: pa.Table, columns: list[str]) -> list[dict[str, Any]]:
    return table.select(columns).to_pylist()


def _read_classification(out: EvalSet, table: pa.Table) -> None:
    path, image_kind = out.path, out.kind == "image_classification"
    side = _sidecar(path)
    if "classes" in table.column_names:
        _check_type(path, table, "classes", _is_string_list, "list<string>")
        classes = list(table.column("classes")[0].as_py() or [])
    elif side:
        classes = [str(c) for c in side["classes"]]
    else:
        classes = sorted({str(v) for v in table.column("label").to_pylist() if v is not None})
    if len(set(classes)) != len(classes):
        raise EvalSetError(f"{path}: class list has duplicates: {classes}")
    out.classes = classes
    out.templates = side.get("templates")
    index = {c: i for i, c in enumerate(classes)}
    labels: list[int] = []
    for row, rec in enumerate(_rows(table, ["image" if image_kind else "text", "label"])):
        label = None if rec["label"] is None else str(rec["label"])
        if label not in index:
            out.skipped.append({"row": row, "reason": f"label {label!r} not in class list"})
            continue
        try:
            if image_kind:
                out.images.append(_decode(rec["image"]))
            elif not rec["text"]:
                raise ValueError("empty text")
            else:
                out.texts.append(str(rec["text"]))
        except Exception as exc:  # noqa: BLE001 - a bad row is recorded, the rest goes on
            out.skipped.append({"row": row, "reason": f"{type(exc).__name__}: {exc}"})
            continue
        labels.append(index[label])
    out.labels = np.asarray(labels, dtype=np.int64)


def _read_retrieval(out: EvalSet, table: pa.Table) -> None:
    column = "captions" if "captions" in table.column_names else "caption"
    check = _is_string_list if column == "captions" else _is_string
    _check_type(
        out.path, table, column, check, "list<string>" if column == "captions" else "string"
    )
    extra = {role: next((c for c in names if c in table.column_names), None)
             for role, names in SOURCE_COLUMNS.items()}
    columns = ["image", column, *dict.fromkeys(c for c in extra.values() if c)]
    for row, rec in enumerate(_rows(table, columns)):
        caps = rec[column] if column == "captions" else [rec[column]]
        caps = [c for c in (caps or []) if c]
        if not caps:
            out.skipped.append({"row": row, "reason": "no captions"})
            continue
        try:
            out.images.append(_decode(rec["image"]))
        except Exception as exc:  # noqa: BLE001
            out.skipped.append({"row": row, "reason": f"{type(exc).__name__}: {exc}"})
            continue
        out.captions.append([str(c) for c in caps])
        blob = rec["image"].get("bytes") if isinstance(rec["image"], dict) else rec["image"]
        out.sources.append({"row": row, "sha256": hashlib.sha256(blob).hexdigest(),
                            **{role: str(rec[c] or "") if c else ""
                               for role, c in extra.items()}})


# optional columns of a retrieval set naming where each image came from (first found wins)
SOURCE_COLUMNS = {"image_url": ("image_url", "url"), "page_url": ("page_url",),
                  "licence": ("licence", "license")}


def _read_vqa(out: EvalSet, table: pa.Table) -> None:
    path = out.path
    _check_type(path, table, "question", _is_string, "string")
    _check_type(path, table, "choices", _is_string_list, "list<string>")
    _check_type(path, table, "answer", pa.types.is_integer, "integer index into choices")
    columns = ["image", "question", "choices", "answer"]
    has_split = "split" in table.column_names
    rows = _rows(table, columns + (["split"] if has_split else []))
    counts = {len(r["choices"] or []) for r in rows}
    n_choices = max(counts) if counts else 0
    answers, is_test = [], []
    for row, rec in enumerate(rows):
        choices = rec["choices"] or []
        reason = None
        if len(choices) != n_choices or n_choices < 2:
            reason = (
                f"{len(choices)} choices; every row needs the same count (>=2, here {n_choices})"
            )
        elif rec["answer"] is None or not 0 <= rec["answer"] < len(choices):
            reason = f"answer {rec['answer']!r} is not an index into {len(choices)} choices"
        elif not rec["question"]:
            reason = "empty question"
        if reason is None:
            try:
                image = _decode(rec["image"])
            except Exception as exc:  # noqa: BLE001
                reason = f"{type(exc).__name__}: {exc}"
        if reason is not None:
            out.skipped.append({"row": row, "reason": reason})
            continue
        out.images.append(image)
        out.questions.append(str(rec["question"]))
        out.choices.append([str(c) for c in choices])
        answers.append(int(rec["answer"]))
        if has_split:
            is_test.append(str(rec["split"]).lower() in ("test", "val", "validation", "eval"))
    out.answers = np.asarray(answers, dtype=np.int64)
    out.is_test = np.asarray(is_test, dtype=bool) if has_split else None

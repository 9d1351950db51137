"""Retrieval eval sets from a CSV/TSV (or Parquet) of image paths and captions.

Columns: the image path in ``image_path`` or ``filepath`` (relative to the file's folder, or
absolute) and the text in ``caption``, ``title`` (open_clip's name) or ``captions`` (in a
CSV, a JSON list of strings, or one caption). Rows naming the same image are merged into
one image with all their captions (COCO/Flickr style, one row per caption). A ``.tsv`` file,
or a header with tabs and no commas, is tab-separated. Every cell is read as a string. A
row with a missing, oversized or undecodable image, no caption, or the wrong number of
fields is a skipped row with its reason; the rest of the file goes on.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv

from brivl.evaluate.datasets import EvalSet, EvalSetError
from brivl.evaluate.sources import load_image, reason
from brivl.fingerprint import file_sha256

PATH_COLUMNS = ("image_path", "filepath")
CAPTION_COLUMNS = ("caption", "title", "captions")
CSV_SUFFIXES = (".csv", ".tsv")


def path_column(columns: list[str]) -> str | None:
    """The image-path column among ``columns``, if any."""
    return next((c for c in PATH_COLUMNS if c in columns), None)


def _delimiter(path: Path, header: str) -> str:
    if path.suffix.lower() == ".tsv" or ("\t" in header and "," not in header):
        return "\t"
    return ","


def read_csv(path: Path) -> tuple[pa.Table, list[dict[str, Any]]]:
    """All-string table of a CSV/TSV and the lines that had the wrong number of fields."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:  # Excel writes a BOM
            header_line = f.readline()
    except UnicodeDecodeError as exc:
        raise EvalSetError(f"{path}: not UTF-8 text ({exc})") from exc
    delimiter = _delimiter(path, header_line)
    names = next(csv.reader([header_line], delimiter=delimiter), [])
    if not names or not any(n.strip() for n in names):
        raise EvalSetError(f"{path}: no header row; expected columns {_accepted()}")
    bad: list[dict[str, Any]] = []

    def invalid(row: Any) -> str:
        bad.append({
            "row": f"line {row.number}",
            "reason": f"{row.actual_columns} fields, expected {row.expected_columns}",
        })
        return "skip"

    try:
        table = pacsv.read_csv(
            path,
            read_options=pacsv.ReadOptions(column_names=names, skip_rows=1, use_threads=False),
            parse_options=pacsv.ParseOptions(delimiter=delimiter, invalid_row_handler=invalid),
            convert_options=pacsv.ConvertOptions(column_types={n: pa.string() for n in names}),
        )
    except (pa.ArrowInvalid, OSError) as exc:
        raise EvalSetError(f"{path}: not a readable CSV file ({exc})") from exc
    return table, bad


def _accepted() -> str:
    return f"an image path ({' or '.join(PATH_COLUMNS)}) and text ({', '.join(CAPTION_COLUMNS)})"


def _columns(path: Path, columns: list[str]) -> tuple[str, str]:
    image, text = path_column(columns), next((c for c in CAPTION_COLUMNS if c in columns), None)
    if image is None or text is None:
        hint = " (a CSV cannot hold image bytes)" if "image" in columns and image is None else ""
        raise EvalSetError(
            f"{path}: columns {columns} do not make a retrieval set{hint}; expected {_accepted()}"
        )
    return image, text


def _captions(value: Any, column: str) -> list[str]:
    if isinstance(value, str) and column == "captions" and value.lstrip().startswith("["):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ValueError(f"captions cell is not a JSON list of strings ({exc})") from exc
    items = value if isinstance(value, list) else [value]
    return [str(c).strip() for c in items if c is not None and str(c).strip()]


def _group(path: Path, rows: list[dict[str, Any]], image: str, text: str, out: EvalSet):
    """Image file -> (rows, captions), in first-seen order; unusable rows go to skipped."""
    groups: dict[Path, tuple[list[int], list[str]]] = {}
    for row, rec in enumerate(rows):
        try:
            caps = _captions(rec[text], text)
        except ValueError as exc:
            out.skipped.append({"row": row, "reason": str(exc)})
            continue
        if not rec[image]:
            out.skipped.append({"row": row, "reason": f"empty {image}"})
        elif not caps:
            out.skipped.append({"row": row, "reason": "no captions"})
        else:
            entry = groups.setdefault(path.parent / str(rec[image]), ([], []))
            entry[0].append(row)
            entry[1].extend(caps)
    return groups


def from_table(path: Path, name: str, table: pa.Table, skipped: list | None = None) -> EvalSet:
    """A retrieval set from a table of image paths and captions (CSV or Parquet)."""
    image, text = _columns(path, table.column_names)
    out = EvalSet(name=name, kind="retrieval", path=path, skipped=list(skipped or []))
    groups = _group(path, table.select([image, text]).to_pylist(), image, text, out)
    for file, (rows, caps) in groups.items():
        try:
            out.images.append(load_image(file))
        except Exception as exc:  # noqa: BLE001 - a bad image is recorded, the rest goes on
            out.skipped.extend({"row": row, "reason": reason(exc)} for row in rows)
            continue
        out.captions.append(caps)
        out.sources.append({"row": rows[0], "sha256": file_sha256(file),
                            "image_url": file.resolve().as_uri(), "page_url": "", "licence": ""})
    out.skipped.sort(key=lambda s: (isinstance(s["row"], str), s["row"]))
    return out


def files(path: Path) -> list[Path]:
    """The CSV and every image file it names, for a content identity."""
    table, _ = read_csv(path)
    image = path_column(table.column_names)
    names = table.column(image).to_pylist() if image else []
    return [path, *dict.fromkeys(path.parent / n for n in names if n)]


def read_csv_set(path: Path, name: str, max_rows: int | None = None) -> EvalSet:
    """Read a CSV/TSV of image paths and captions as a retrieval set."""
    table, bad = read_csv(path)
    if max_rows is not None:
        table = table.slice(0, max_rows)
    return from_table(path, name, table, bad)

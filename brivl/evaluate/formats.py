"""Which eval-set format a path is, the sets a path names, and the files each set reads.

A file is Parquet (``.parquet`` or any other suffix) or CSV (``.csv``/``.tsv``). A directory
is webdataset shards (``*.tar``, directly or in ``train/``/``test/``/``val/``), or an
ImageFolder tree (class folders holding images), unless it holds ``.parquet``/``.csv``/``.tsv``
files; otherwise it is a directory of sets: its known-named Parquet files (as
:func:`brivl.evaluate.datasets.discover`), its ``*.csv``/``*.tsv`` files and its subfolders
that are webdatasets or ImageFolder trees, each named by file stem or folder name.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

from brivl.evaluate import captions, imagefolder, wds
from brivl.evaluate.datasets import EvalSet, EvalSetError, discover

SET_SUFFIXES = (".parquet", *captions.CSV_SUFFIXES)  # a folder holding these is a folder of sets
ACCEPTED = (
    "a Parquet file, a CSV/TSV of image paths and captions, a webdataset directory (*.tar "
    "shards + classnames.txt), an ImageFolder tree (<class>/<image>), or a directory of these"
)


def detect(path: str | Path) -> str:
    """``parquet``, ``csv``, ``webdataset``, ``imagefolder`` or ``directory`` (of sets)."""
    path = Path(path)
    if path.is_file():
        return "csv" if path.suffix.lower() in captions.CSV_SUFFIXES else "parquet"
    if not path.is_dir():
        raise EvalSetError(f"{path}: no such file or directory; an eval set is {ACCEPTED}")
    if any(f.suffix.lower() in SET_SUFFIXES for f in path.iterdir() if f.is_file()):
        return "directory"  # e.g. a CSV beside its images/ folder is not an ImageFolder
    if wds.is_webdataset(path):
        return "webdataset"
    if imagefolder.is_image_folder(path):
        return "imagefolder"
    return "directory"


def read_set(path: Path, name: str, max_rows: int | None = None) -> EvalSet:
    """Read a CSV, webdataset or ImageFolder set (Parquet is :func:`datasets.read_eval_set`)."""
    kind = detect(path)
    if kind == "csv":
        return captions.read_csv_set(path, name, max_rows)
    if kind == "webdataset":
        return wds.read_webdataset(path, name, max_rows)
    if kind == "imagefolder":
        return imagefolder.read_image_folder(path, name, max_rows)
    raise EvalSetError(
        f"{path}: eval set {name!r} is a directory with neither *.tar shards nor class folders "
        f"of images ({', '.join(imagefolder.IMAGE_SUFFIXES)}); an eval set is {ACCEPTED}"
    )


def _add(sets: dict[str, Path], name: str, path: Path) -> None:
    if name in sets:
        raise EvalSetError(f"eval set name {name!r} is taken by both {sets[name]} and {path}")
    sets[name] = path


def discover_sets(path: str | Path) -> dict[str, Path]:
    """The sets a path names: itself if it is one set, else the sets in the directory."""
    path = Path(path)
    kind = detect(path)
    if kind == "parquet" or kind == "csv":
        return {path.stem: path}
    if kind != "directory":
        return {path.name: path}
    sets = discover(path)
    for child in sorted(path.iterdir()):
        if child.name.startswith("."):
            continue
        if child.is_file() and child.suffix.lower() in captions.CSV_SUFFIXES:
            _add(sets, child.stem, child)
        elif child.is_dir() and detect(child) != "directory":
            _add(sets, child.name, child)
    return sets


def set_files(path: str | Path) -> list[Path]:
    """Every file one set reads (data, sidecars, referenced images), for a content identity."""
    path = Path(path)
    kind = detect(path)
    if kind == "csv":
        return captions.files(path)
    if kind == "webdataset":
        return wds.files(path)
    if kind == "imagefolder":
        return imagefolder.files(path)
    if kind == "directory":
        return []
    sidecars = [path.with_name(f"{path.stem}.classes.json"), path.with_name("classes.json")]
    out = [path, *(s for s in sidecars if s.is_file())]
    try:
        columns = pq.read_schema(path).names
    except Exception:  # noqa: BLE001 - an unreadable file is reported when it is read
        return out
    image = captions.path_column(columns)
    if image and "image" not in columns:
        names = pq.read_table(path, columns=[image]).column(image).to_pylist()
        out.extend(dict.fromkeys(path.parent / str(n) for n in names if n))
    return out

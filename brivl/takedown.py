"""Take-downs: remove named images from a stage directory's Parquet files, nothing else.

A request names image URLs (an image's own URL or the page it was found on) and/or sha256
digests (of the stored bytes or of the downloaded ones). :func:`remove_rows` rewrites only
the Parquet files holding a matching row, dropping exactly those rows (every other row and
column is copied as it was; the writer options are the shard stage's); files without a
match are not touched. :func:`supersede_manifest` then writes the directory's new manifest
(file checksums recomputed, row counts lowered) whose ``extra.takedown`` names the manifest
it replaces and how many rows went; the old manifest is kept beside it as
``.superseded-<hash>.json``. The stage's key (inputs, config, code version) is unchanged, so
a rerun of the stage reuses the cleaned directory instead of rebuilding the removed rows. A
shard directory's datasheet (:mod:`brivl.datasheet`), when it has one, is written again from
the rows left, its funnel ending with the rows taken down.

The index has its own step (:mod:`brivl.retrieval.takedown`); tagging model versions is
the task's (:mod:`tasks.takedown`), as brivl never imports MLflow.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from brivl import datasheet, manifest
from brivl.errors import InputError

URL_COLUMNS = ("url", "page_url")  # an image's own URL, the page it was found on
SHA_COLUMNS = ("sha256", "source_sha256")  # the stored bytes, the downloaded bytes
_SHA = re.compile(r"^[0-9a-f]{64}$")
JOURNAL = ".takedown-journal.json"  # hidden: the old manifest while files are replaced


@dataclass(frozen=True)
class Request:
    """What to remove: image or page URLs, and sha256 digests (lower-case hex)."""

    urls: frozenset[str] = frozenset()
    sha256: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if not self.urls and not self.sha256:
            raise InputError("takedown: the request names no URL and no sha256")

    @classmethod
    def from_files(cls, urls: str | Path | None = None, sha256: str | Path | None = None
                   ) -> Request:
        """Read one URL / one digest per line (blank lines and ``#`` comments ignored)."""
        found_urls = _read_list(urls, "--urls", _check_url) if urls else []
        digests = _read_list(sha256, "--sha256", _check_sha) if sha256 else []
        return cls(frozenset(found_urls), frozenset(d.lower() for d in digests))

    def to_dict(self) -> dict[str, int]:
        return {"urls": len(self.urls), "sha256": len(self.sha256)}


def _read_list(path: str | Path, flag: str, check: Any) -> list[str]:
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"takedown {flag} {path}: cannot be read ({exc})") from exc
    out = []
    for number, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        problem = check(line)
        if problem:
            raise InputError(f"takedown {flag} {path}, line {number}: {line[:80]!r} {problem}")
        out.append(line)
    if not out:
        raise InputError(f"takedown {flag} {path}: no entries (one per line, # for comments)")
    return out


def _check_url(line: str) -> str | None:
    if not line.lower().startswith(("http://", "https://")) or " " in line:
        return "is not an http(s) URL; accepted: one absolute http:// or https:// URL per line"
    return None


def _check_sha(line: str) -> str | None:
    if not _SHA.match(line.lower()):
        return "is not a sha256 digest; accepted: 64 hexadecimal characters per line"
    return None


def match_mask(table: pa.Table, request: Request) -> np.ndarray:
    """Which rows of ``table`` the request names (by whichever of its columns exist)."""
    hit = np.zeros(table.num_rows, dtype=bool)
    for columns, values in ((URL_COLUMNS, request.urls), (SHA_COLUMNS, request.sha256)):
        if not values:
            continue
        wanted = pa.array(sorted(values), pa.string())
        for name in columns:
            if name in table.column_names:
                column = table.column(name).cast(pa.string())
                hit |= pc.is_in(column, value_set=wanted).fill_null(False).to_numpy(
                    zero_copy_only=False)
    return hit


@dataclass
class Removal:
    """What :func:`remove_rows` took out of one directory."""

    directory: Path
    removed: dict[str, int] = field(default_factory=dict)  # file (relative) -> rows removed
    keys: set[str] = field(default_factory=set)  # the removed rows' keys
    urls: set[str] = field(default_factory=set)  # and their image URLs

    @property
    def count(self) -> int:
        return sum(self.removed.values())


def _write_options(config: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """The shard stage's writer options (brivl.shard), read from its manifest config."""
    compression = str(config.get("compression", "snappy"))
    return {"row_group_size": int(config.get("row_group_rows", 128)),
            "compression": {c: ("none" if c in ("image", "jpg") else compression) for c in names},
            "use_dictionary": False,
            "write_statistics": [c for c in ("key", "width", "height") if c in names]}


def remove_rows(directory: str | Path, request: Request, files: Iterable[Path],
                config: dict[str, Any] | None = None) -> Removal:
    """Drop the rows ``request`` names from each of ``files``; only files with a match are
    rewritten (all to hidden names first, journaled, then renamed over the old files)."""
    directory = Path(directory)
    result = Removal(directory)
    earlier = _journal(directory).get("removal", {})  # an interrupted run's renamed files
    result.removed.update(earlier.get("removed", {}))
    result.keys.update(earlier.get("keys", []))
    result.urls.update(earlier.get("urls", []))
    staged: list[tuple[Path, Path]] = []
    for path in files:
        table = pq.read_table(path)
        hit = match_mask(table, request)
        if not hit.any():
            continue
        rel = str(path.relative_to(directory))
        result.removed[rel] = int(hit.sum())
        gone = table.filter(pa.array(hit))
        if "key" in gone.column_names:
            result.keys.update(str(k) for k in gone.column("key").to_pylist())
        if "url" in gone.column_names:
            result.urls.update(u for u in gone.column("url").to_pylist() if u)
        tmp = path.with_name(f".{path.name}.takedown")
        pq.write_table(table.filter(pa.array(~hit)), tmp,
                       **_write_options(config or {}, table.column_names))
        staged.append((tmp, path))
    if staged:
        journal = _journal(directory)
        journal["removal"] = {"removed": result.removed, "keys": sorted(result.keys),
                              "urls": sorted(result.urls)}
        (directory / JOURNAL).write_text(json.dumps(journal, sort_keys=True))
    for tmp, path in staged:
        os.replace(tmp, path)
    return result


def _journal(directory: Path) -> dict[str, Any]:
    path = directory / JOURNAL
    return json.loads(path.read_text()) if path.is_file() else {}


def begin(directory: Path) -> dict[str, Any]:
    """The manifest a take-down replaces, journaled before any file changes: an interrupted
    take-down, rerun, still names the manifest the directory had before it and counts the
    rows it had already removed."""
    journal = _journal(directory)
    if "manifest" in journal:
        return journal["manifest"]
    body = manifest.read_manifest(directory)
    (directory / JOURNAL).write_text(json.dumps({"manifest": body}, sort_keys=True))
    return body


def supersede_manifest(directory: Path, old: dict[str, Any], removal: Removal, request: Request,
                       row_counts: dict[str, int], extra: dict[str, Any] | None = None,
                       note: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write the directory's new manifest (same stage, inputs, config and code version, so the
    same key; new checksums and counts) pointing back to ``old``; keep ``old`` beside it."""
    (directory / f".superseded-{old['hash']}.json").write_text(
        json.dumps(old, indent=2, sort_keys=True))
    entry = {"supersedes": old["hash"], "removed": removal.count,
             "removed_by_file": dict(sorted(removal.removed.items())),
             "request": request.to_dict(),
             "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
             "earlier": old.get("extra", {}).get("takedown"), **(note or {})}
    base = old.get("extra", {}) if extra is None else extra
    body = manifest.write_manifest(
        directory, stage=old["stage"], config=old.get("config"), inputs=old.get("inputs", []),
        code_version=old.get("code_version", ""), row_counts=row_counts,
        extra={**base, "takedown": entry})
    (directory / JOURNAL).unlink(missing_ok=True)
    return body


def shard_parquet_files(shard_dir: Path) -> list[Path]:
    """The data files of a shard directory that hold rows (``train/``, ``val/``)."""
    return sorted(p for split in ("train", "val") for p in (shard_dir / split).glob("*.parquet")
                  if not p.name.startswith("."))


def takedown_shards(shard_dir: str | Path, request: Request) -> tuple[Removal, dict[str, Any] | None]:
    """Remove the named rows from a shard directory; ``(removal, new manifest or None)``
    (``None``: nothing matched and the directory is left as it was)."""
    shard_dir = Path(shard_dir)
    old = begin(shard_dir)
    removal = remove_rows(shard_dir, request, shard_parquet_files(shard_dir), old.get("config"))
    if not removal.count and old["hash"] == manifest.read_manifest(shard_dir)["hash"]:
        (shard_dir / JOURNAL).unlink(missing_ok=True)
        return removal, None
    counts = dict(old["row_counts"])
    extra = json.loads(json.dumps(old.get("extra", {})))  # a copy: ``old`` is saved as it was
    for rel, n in removal.removed.items():
        split = rel.split("/", 1)[0]
        if split in counts:
            counts[split] -= n
        if "total" in counts:
            counts["total"] -= n
        for entry in extra.get("shards", {}).get(split, []):
            if entry.get("file") == rel:
                entry["rows"] = int(entry["rows"]) - n
    if (shard_dir / datasheet.JSON_NAME).is_file():  # the datasheet describes the rows left
        input_dir = extra.get("input_dir") or None
        earlier = _removed_before(old.get("extra", {}).get("takedown"))
        datasheet.write_datasheet(shard_dir, datasheet.build_datasheet(
            shard_dir, input_dir, taken_down=earlier + removal.count))
    return removal, supersede_manifest(shard_dir, old, removal, request, counts, extra)


def _removed_before(note: dict[str, Any] | None) -> int:
    """Rows removed by the take-downs a manifest's ``extra.takedown`` chain records."""
    total = 0
    while note:
        total += int(note.get("removed", 0))
        note = note.get("earlier")
    return total

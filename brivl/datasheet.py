"""A datasheet for a shard directory: what the training corpus holds and how it was cut.

:func:`build_datasheet` reads the shard rows' small columns (never the image bytes) and the
reports of the stages before it - the filter output the shards were made from, and the
download output that filter read, found through their manifests - and returns a JSON-able
dict: rows per split; domains (page host); caption languages; caption-length and image-size
histograms; the reject funnel (download, filter, shard: rows in, rows out, rejected by
reason, then the rows removed by take-downs); licences as the pages declared them; faces
found, blurred and dropped. :func:`write_datasheet` writes it as ``datasheet.json`` and
``datasheet.md``; a take-down (:mod:`brivl.takedown`) writes it again from the rows left.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pyarrow.parquet as pq

from brivl.filter.text import detect_language, words

JSON_NAME, MD_NAME = "datasheet.json", "datasheet.md"
TOP = 20  # domains and licences listed; the rest are summed as "(other)"
CAPTION_WORD_BINS = (0, 3, 5, 9, 17, 33, 65)  # left edges: 0-2, 3-4, 5-8, ..., 65+
IMAGE_SIDE_BINS = (0, 64, 128, 256, 512, 1024)  # shorter side, left edges
NOT_DECLARED = "(not declared)"
_COLUMNS = ("url", "page_url", "caption", "width", "height", "licence", "face_count")


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _histogram(values: list[int], edges: tuple[int, ...], unit: str) -> dict[str, int]:
    labels = [f"{lo}-{hi - 1} {unit}" for lo, hi in zip(edges[:-1], edges[1:], strict=True)]
    labels.append(f"{edges[-1]}+ {unit}")
    counts = dict.fromkeys(labels, 0)
    for value in values:
        index = max(i for i, edge in enumerate(edges) if value >= edge) if value >= edges[0] else 0
        counts[labels[index]] += 1
    return counts


def _top(counter: Counter, top: int = TOP) -> dict[str, int]:
    out = dict(counter.most_common(top))
    rest = sum(counter.values()) - sum(out.values())
    if rest:
        out["(other)"] = rest
    return out


def _host(row: dict[str, Any]) -> str:
    for url in (row.get("page_url"), row.get("url")):
        if url:
            try:
                return urlsplit(url).hostname or "(none)"
            except ValueError:
                return "(unparsable)"
    return "(none)"


def shard_rows(shard_dir: Path) -> dict[str, list[dict[str, Any]]]:
    """The small columns of every shard row, per split."""
    out = {}
    for split in ("train", "val"):
        rows = []
        for path in sorted((shard_dir / split).glob("part-*.parquet")):
            names = set(pq.ParquetFile(path).schema_arrow.names)
            rows += pq.read_table(path, columns=[c for c in _COLUMNS if c in names]).to_pylist()
        out[split] = rows
    return out


def funnel(shard_dir: Path, input_dir: Path | None, shard_counts: dict[str, int],
           taken_down: int = 0) -> list[dict[str, Any]]:
    """Rows in, out and rejected by reason for download, filter and shard (those found), and
    the take-downs when ``taken_down`` rows have been removed from the shards since."""
    steps = []
    filter_manifest = _read_json(input_dir / "_manifest.json") if input_dir else None
    if filter_manifest and filter_manifest.get("stage") == "filter":
        download_dir = filter_manifest.get("extra", {}).get("input_dir")
        download = _read_json(Path(download_dir) / "_manifest.json") if download_dir else None
        if download and download.get("stage") == "download":
            counts = download["row_counts"]
            steps.append({"stage": "download", "in": counts.get("candidates"),
                          "out": counts.get("downloaded"),
                          "rejected": download.get("extra", {}).get("rejected_by_reason", {})})
        report = _read_json(input_dir / "filter_report.json") or {}
        steps.append({"stage": "filter", "in": report.get("input_rows"), "out": report.get("kept"),
                      "rejected": {k: v for k, v in report.get("by_rule", {}).items() if v}})
    rejected = Counter()
    for path in sorted((shard_dir / "rejected").glob("*.parquet")):
        rejected.update(pq.read_table(path, columns=["reason"])["reason"].to_pylist())
    total = shard_counts.get("train", 0) + shard_counts.get("val", 0)
    sharded = total + taken_down
    steps.append({"stage": "shard", "in": sharded + sum(rejected.values()), "out": sharded,
                  "rejected": dict(sorted(rejected.items()))})
    if taken_down:
        steps.append({"stage": "takedown", "in": sharded, "out": total,
                      "rejected": {"takedown": taken_down}})
    return steps


def build_datasheet(shard_dir: str | Path, input_dir: str | Path | None = None,
                    taken_down: int = 0) -> dict[str, Any]:
    """The datasheet of ``shard_dir``, made from ``input_dir`` (a filter output, or any);
    ``taken_down``: rows removed from the shards by take-downs so far."""
    shard_dir = Path(shard_dir)
    input_dir = Path(input_dir) if input_dir else None
    splits = shard_rows(shard_dir)
    rows = splits["train"] + splits["val"]
    report = (_read_json(input_dir / "filter_report.json") or {}) if input_dir else {}
    counts = {split: len(r) for split, r in splits.items()}
    with_faces = [r for r in rows if (r.get("face_count") or 0) > 0]
    searched = any(r.get("face_count") is not None for r in rows)
    return {
        "rows": {**counts, "total": len(rows)},
        "domains": _top(Counter(_host(r) for r in rows)),
        "languages": dict(Counter(detect_language(r["caption"] or "") for r in rows).most_common()),
        "caption_words": _histogram([len(words(r["caption"] or "")) for r in rows],
                                    CAPTION_WORD_BINS, "words"),
        "image_shorter_side": _histogram([min(r["width"] or 0, r["height"] or 0) for r in rows],
                                         IMAGE_SIDE_BINS, "px"),
        "funnel": funnel(shard_dir, input_dir, counts, taken_down),
        "licences": _top(Counter(r.get("licence") or NOT_DECLARED for r in rows)),
        "faces": {
            "policy": report.get("faces", {}).get("policy") if report else None,
            "searched": searched,
            "rows_with_faces": len(with_faces),
            "faces": sum(r["face_count"] for r in with_faces),
            "dropped_by_filter": report.get("faces", {}).get("dropped", 0) if report else 0,
        },
    }


def markdown(sheet: dict[str, Any]) -> str:
    """The datasheet as Markdown tables."""
    def table(title: str, mapping: dict[str, Any], key: str, value: str = "rows") -> list[str]:
        lines = [f"## {title}", "", f"| {key} | {value} |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in mapping.items()] or ["| (none) | 0 |"]
        return lines + [""]

    rows = sheet["rows"]
    faces = sheet["faces"]
    out = ["# Datasheet", "",
           f"{rows['total']} image-text pairs: {rows['train']} train, {rows['val']} val.", ""]
    out += ["## Reject funnel", "", "| stage | in | out | rejected by reason |", "|---|---|---|---|"]
    out += [f"| {s['stage']} | {s['in']} | {s['out']} | "
            + (", ".join(f"{k} {v}" for k, v in s["rejected"].items()) or "none") + " |"
            for s in sheet["funnel"]]
    out += [""]
    out += table("Domains (page host)", sheet["domains"], "domain")
    out += table("Caption languages", sheet["languages"], "language")
    out += table("Caption length", sheet["caption_words"], "words")
    out += table("Image size (shorter side)", sheet["image_shorter_side"], "pixels")
    out += table("Licences declared by the pages", sheet["licences"], "licence")
    policy = faces["policy"] or "unknown"
    out += ["## Faces", "",
            f"Filter policy {policy!r}; detector run: {'yes' if faces['searched'] else 'no'}. "
            f"{faces['rows_with_faces']} rows hold {faces['faces']} detected face(s)"
            + (" (blurred in the stored JPEG)" if policy == "blur" else "")
            + f"; {faces['dropped_by_filter']} pair(s) dropped by the filter for faces.", ""]
    return "\n".join(out)


def write_datasheet(shard_dir: str | Path, sheet: dict[str, Any]) -> tuple[Path, Path]:
    """``datasheet.json`` and ``datasheet.md`` in ``shard_dir``."""
    shard_dir = Path(shard_dir)
    json_path, md_path = shard_dir / JSON_NAME, shard_dir / MD_NAME
    json_path.write_text(json.dumps(sheet, indent=2, sort_keys=False))
    md_path.write_text(markdown(sheet))
    return json_path, md_path

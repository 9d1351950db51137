"""The candidates table: one row per ``<img>`` found on a page, and how rows are written.

Each row keeps the image's raw text fields (alt, title, figcaption, sibling, cell, heading,
surrounding) beside the caption made of them, so the choice can be audited."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from brivl.crawl.config import CrawlConfig
from brivl.crawl.parse import ImageRef
from brivl.errors import InputError
from brivl.parquet_input import BadFile, Column, open_inputs, read_table_or_bad, resolve_columns

CANDIDATES_DIR = "candidates"
PAGES_FILE = "pages.parquet"

# decision values (why a candidate may or may not be downloaded)
ALLOWED = "allowed"
ROBOTS_DISALLOWED = "robots_disallowed"
OPTOUT_META = "optout_meta"
OPTOUT_PAGE_HEADER = "optout_page_header"
SSRF_BLOCKED = "ssrf_blocked"

CANDIDATE_SCHEMA = pa.schema(
    [
        ("candidate_id", pa.string()),
        ("image_url", pa.string()),
        ("page_url", pa.string()),
        ("alt", pa.string()),
        ("title", pa.string()),
        ("figcaption", pa.string()),
        ("sibling", pa.string()),
        ("cell", pa.string()),
        ("heading", pa.string()),
        ("surrounding", pa.string()),
        ("caption", pa.string()),
        ("caption_source", pa.string()),
        ("crawl_time", pa.timestamp("us", tz="UTC")),
        ("depth", pa.int32()),
        ("robots", pa.string()),
        ("decision", pa.string()),
        ("licence", pa.string()),  # what the page declared (brivl.crawl.licence)
        ("licence_source", pa.string()),
        ("copyright", pa.string()),
    ]
)
# where a pair came from and what rights were declared: kept from crawl to the shards
SOURCE_COLUMNS = ("licence", "licence_source", "copyright")

PAGE_SCHEMA = pa.schema(
    [
        ("url", pa.string()),
        ("final_url", pa.string()),
        ("depth", pa.int32()),
        ("outcome", pa.string()),
        ("status", pa.int32()),
        ("error", pa.string()),
        ("detail", pa.string()),
        ("content_type", pa.string()),
        ("encoding", pa.string()),
        ("n_links", pa.int32()),
        ("n_images", pa.int32()),
        ("fetched_at", pa.timestamp("us", tz="UTC")),
        ("elapsed_s", pa.float64()),
    ]
)


def candidate_id(image_url: str, page_url: str) -> str:
    """Stable id of an (image, page) pair: sha256 of both URLs, 20 hex characters."""
    return hashlib.sha256(f"{image_url}\n{page_url}".encode()).hexdigest()[:20]


def candidate_row(
    image: ImageRef,
    page_url: str,
    *,
    depth: int,
    crawl_time: datetime,
    robots: str,
    decision: str,
    config: CrawlConfig,
) -> dict[str, Any]:
    """One candidates row: every raw text field of the image, and the caption the config's
    policy made of them with ``caption_source`` naming the fields used (``"alt+heading"``)."""
    texts = image.texts()
    caption, source = config.caption.choose(texts)
    return {
        "candidate_id": candidate_id(image.image_url, page_url),
        "image_url": image.image_url,
        "page_url": page_url,
        **texts,
        "caption": caption,
        "caption_source": source,
        "crawl_time": crawl_time,
        "depth": depth,
        "robots": robots,
        "decision": decision,
        **{name: getattr(image, name) for name in SOURCE_COLUMNS},
    }


def write_candidates(rows: list[dict[str, Any]], out_dir: Path, rows_per_part: int) -> list[Path]:
    """``candidates/part-NNNNN.parquet`` files (at least one, possibly empty)."""
    target = out_dir / CANDIDATES_DIR
    target.mkdir(parents=True, exist_ok=True)
    paths = []
    for part, start in enumerate(range(0, max(len(rows), 1), rows_per_part)):
        table = pa.Table.from_pylist(rows[start : start + rows_per_part], schema=CANDIDATE_SCHEMA)
        path = target / f"part-{part:05d}.parquet"
        pq.write_table(table, path)
        paths.append(path)
    return paths


def write_pages(rows: list[dict[str, Any]], out_dir: Path) -> Path:
    """``pages.parquet``: every page considered, fetched or not, with its outcome."""
    path = out_dir / PAGES_FILE
    pq.write_table(pa.Table.from_pylist(rows, schema=PAGE_SCHEMA), path)
    return path


# what a reader of candidates needs, checked per file before it is read (SchemaError)
REQUIRED_COLUMNS = ("candidate_id", "image_url", "page_url", "caption", "decision")


def read_candidates(stage_dir: str | Path, columns: Iterable[str] | None = None,
                    bad_files: list[BadFile] | None = None) -> pa.Table:
    """All candidate rows of a crawl output directory, in part order.

    Each part's ``columns`` (default: every column, :data:`REQUIRED_COLUMNS` required) are
    checked first: missing or non-string ones are a SchemaError naming file and column. A
    part that cannot be read is appended to ``bad_files`` and skipped; without that list it
    is an InputError naming it."""
    parts = sorted((Path(stage_dir) / CANDIDATES_DIR).glob("part-*.parquet"))
    if not parts:
        raise FileNotFoundError(
            f"{stage_dir}: no {CANDIDATES_DIR}/part-*.parquet; expected a crawl stage output "
            "directory (written by `brivl crawl`)"
        )
    cols = list(columns) if columns is not None else None
    roles = {c: Column((c,)) for c in (cols if cols is not None else REQUIRED_COLUMNS)}
    handles, bad = open_inputs(parts)
    tables = []
    for path, handle in handles:
        resolve_columns(path, handle.schema_arrow, roles, "the download stage")
        table = read_table_or_bad(path, cols)
        if isinstance(table, BadFile):
            bad.append(table)
        else:
            tables.append(table)
    if bad and bad_files is None:
        raise InputError(f"unreadable candidates file(s): {'; '.join(b.file + ': ' + b.error for b in bad)}")
    if bad_files is not None:
        bad_files.extend(bad)
    if not tables:
        raise InputError(f"{stage_dir}: no readable candidates file ({len(bad)} unreadable)")
    return pa.concat_tables(tables)

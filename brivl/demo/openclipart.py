"""OpenClipArt from Debian's ``openclipart-png`` and ``openclipart-svg`` as a local corpus.

:func:`fetch_openclipart` runs ``apt-get download`` and ``dpkg-deb -x`` into
``$BRIVL_HOME/cache/openclipart`` once (a stamp written last marks it done; a rerun does
nothing). :func:`load_catalogue` reads every PNG's SVG twin once into ``catalogue-v1.parquet``
(one :class:`ClipArt` per PNG). Where apt or dpkg is missing or fails,
:class:`CorpusUnavailable` says why, so a caller can fall back to the synthetic demo web.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import os
import re
import shutil
import struct
import subprocess
from collections import Counter
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import ftfy
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from brivl.demo.svgmeta import read_svg_metadata
from brivl.env import project_home

PACKAGES = ("openclipart-png", "openclipart-svg")
PNG_ROOT = "tree/usr/share/openclipart/png"
SVG_ROOT = "tree/usr/share/openclipart/svg"
STAMP = "_fetched.json"
CATALOGUE = "catalogue-v1.parquet"
COLLECTION_TITLE_MIN = 10  # a title shared by this many files names a collection, not a picture
PLACEHOLDER_KEYWORDS = frozenset({"unsorted", "clip art", "clipart", "image"})
FLAG_WORDS = frozenset({"flags", "cards", "icons", "stock"})  # a leaf under these qualifies them
_MISSING_LISTS = ("Unable to locate package", "no installation candidate", "Can't select")
_CLIPART_BY = re.compile(r"^clip\s*art\s+by\s+[^-]+?\s+-\s+", re.IGNORECASE)


class CorpusUnavailable(RuntimeError):
    """The OpenClipArt packages cannot be fetched or extracted here; the message says why."""


@dataclass(frozen=True)
class ClipArt:
    """One picture of the package and what its SVG twin says about it."""

    file: str  # PNG path below the png root: "recreation/games/chess/chesspieces-king.png"
    category: str  # its folder: "recreation/games/chess"
    category_name: str  # readable: "chess"
    title: str  # cleaned SVG title, or the cleaned file stem (see title_source)
    title_source: str  # "svg" or "stem"
    keywords: tuple[str, ...]
    creator: str
    licence: str  # licence URL as declared ("" when the SVG declares none)
    width: int
    height: int
    sha256: str  # of the PNG bytes
    metadata_error: str = ""  # why the SVG metadata could not be read ("" = it was read)


def cache_dir(path: str | Path | None = None) -> Path:
    """Where the corpus lives: ``path``, else ``$BRIVL_HOME/cache/openclipart``."""
    return Path(path) if path is not None else project_home() / "cache" / "openclipart"


# --- fetching ----------------------------------------------------------------------------------


def fetch_openclipart(path: str | Path | None = None, timeout_s: float = 900.0) -> Path:
    """Download and extract both packages into the cache once; return the cache directory."""
    root = cache_dir(path)
    if (root / STAMP).is_file():
        return root
    missing = [tool for tool in ("apt-get", "dpkg-deb") if shutil.which(tool) is None]
    if missing:
        raise CorpusUnavailable(f"{' and '.join(missing)} not found (not a Debian-like system)")
    root.mkdir(parents=True, exist_ok=True)
    with _locked(root):
        if not (root / STAMP).is_file():
            _fetch(root, timeout_s)
    return root


@contextlib.contextmanager
def _locked(root: Path):
    with open(root / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _fetch(root: Path, timeout_s: float) -> None:
    debs = root / "debs"
    shutil.rmtree(debs, ignore_errors=True)
    debs.mkdir()
    _apt_download(debs, timeout_s)
    partial = root / "tree.partial"
    shutil.rmtree(partial, ignore_errors=True)
    names = []
    for package in PACKAGES:
        found = sorted(debs.glob(f"{package}_*.deb"))
        if not found:
            raise CorpusUnavailable(f"apt-get download left no {package}_*.deb in {debs}")
        _run(["dpkg-deb", "-x", str(found[-1]), str(partial)], root, timeout_s)
        names.append(found[-1].name)
    shutil.rmtree(root / "tree", ignore_errors=True)
    os.replace(partial, root / "tree")
    shutil.rmtree(debs)
    counts = {kind: sum(1 for _ in (root / r).rglob(f"*.{kind}")) for kind, r in
              (("png", PNG_ROOT), ("svg", SVG_ROOT))}
    if not counts["png"]:
        raise CorpusUnavailable(f"{names} held no PNG below {PNG_ROOT}")
    tmp = root / f".{STAMP}.tmp"
    tmp.write_text(json.dumps({"packages": names, "files": counts}, indent=2))
    os.replace(tmp, root / STAMP)


def _apt_download(debs: Path, timeout_s: float) -> None:
    """``apt-get download`` both packages; with missing package lists, update once (root)."""
    command = ["apt-get", "download", *PACKAGES]
    try:
        _run(command, debs, timeout_s)
    except CorpusUnavailable as exc:
        if not any(s in str(exc) for s in _MISSING_LISTS) or os.geteuid() != 0:
            raise
        _run(["apt-get", "update"], debs, timeout_s)
        _run(command, debs, timeout_s)


def _run(command: list[str], cwd: Path, timeout_s: float) -> None:
    try:
        done = subprocess.run(
            command, cwd=cwd, capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CorpusUnavailable(f"{' '.join(command[:2])} failed: {exc}") from exc
    if done.returncode != 0:
        lines = [ln for ln in (done.stderr or done.stdout).splitlines() if ln.strip()]
        why = lines[-1].strip() if lines else f"exit status {done.returncode}"
        raise CorpusUnavailable(f"{' '.join(command[:2])} failed: {why}")


# --- the catalogue -----------------------------------------------------------------------------


def load_catalogue(path: str | Path | None = None, fetch: bool = True) -> list[ClipArt]:
    """The catalogue of the cached corpus, built on first use (fetching first if asked)."""
    root = fetch_openclipart(path) if fetch else cache_dir(path)
    file = root / CATALOGUE
    if not file.is_file():
        items = build_catalogue(root / PNG_ROOT, root / SVG_ROOT)
        write_catalogue(items, file)
    return read_catalogue(file)


def build_catalogue(png_root: str | Path, svg_root: str | Path) -> list[ClipArt]:
    """One :class:`ClipArt` per PNG below ``png_root`` (sorted by path), metadata from the
    SVG at the same relative path below ``svg_root``."""
    png_root, svg_root = Path(png_root), Path(svg_root)
    if not png_root.is_dir():
        raise CorpusUnavailable(f"{png_root}: no OpenClipArt PNG tree here")
    pngs = sorted(png_root.rglob("*.png"))
    raw = []
    for png in pngs:
        rel = png.relative_to(png_root)
        svg = svg_root / rel.with_suffix(".svg")
        meta = read_svg_metadata(svg) if svg.is_file() else None
        raw.append((rel, png, meta))
    titles = Counter(_clean_title(m.title).lower() for _, _, m in raw if m and m.title)
    return [_item(rel, png, meta, titles) for rel, png, meta in raw]


def _item(rel: Path, png: Path, meta, title_counts: Counter) -> ClipArt:
    category = rel.parent.as_posix() if rel.parent != Path(".") else ""
    title = _clean_title(meta.title) if meta else ""
    source = "svg"
    if not title or title_counts[title.lower()] >= COLLECTION_TITLE_MIN:
        title, source = clean_stem(rel.stem), "stem"
    body = png.read_bytes()
    width, height = png_size(body)
    return ClipArt(
        file=rel.as_posix(),
        category=category,
        category_name=category_name(category),
        title=title,
        title_source=source,
        keywords=clean_keywords(meta.keywords) if meta else (),
        creator=_clean_text(meta.creator) if meta else "",
        licence=meta.licence if meta else "",
        width=width,
        height=height,
        sha256=hashlib.sha256(body).hexdigest(),
        metadata_error=(meta.error if meta else "no SVG twin"),
    )


def png_size(body: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR without decoding it; (0, 0) for a non-PNG."""
    if len(body) < 24 or body[:8] != b"\x89PNG\r\n\x1a\n" or body[12:16] != b"IHDR":
        return 0, 0
    width, height = struct.unpack(">II", body[16:24])
    return int(width), int(height)


def to_jpeg(path: str | Path, max_side: int | None = None, quality: int = 90) -> bytes:
    """A PNG (transparency included) composited on white, as JPEG bytes; downscaled to
    ``max_side`` when given."""
    with Image.open(path) as img:
        rgba = img.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    rgb = Image.alpha_composite(white, rgba).convert("RGB")
    if max_side:
        rgb.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    rgb.save(out, "JPEG", quality=quality)
    return out.getvalue()


def _clean_text(text: str) -> str:
    return " ".join(ftfy.fix_text(text).split())


def _clean_title(title: str) -> str:
    """Mojibake and entities fixed, "Clipart by NAME - " dropped, file-like names spaced."""
    text = _CLIPART_BY.sub("", _clean_text(title))
    if " " not in text and "_" in text:
        text = clean_stem(text)
    return text


def clean_stem(stem: str) -> str:
    """A file stem as words: ``"chess_game_01"`` → ``"chess game"``; trailing counters go
    (never the first word)."""
    words = [w for w in re.split(r"[\s_.\-]+", stem) if w]
    while len(words) > 1 and words[-1].isdigit():
        words.pop()
    return " ".join(words) or stem


def clean_keywords(keywords: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """Keywords as words, deduplicated in order, without placeholders like "unsorted"."""
    out: list[str] = []
    for keyword in keywords:
        word = " ".join(_clean_text(keyword).replace("_", " ").split()).lower()
        if word and word not in PLACEHOLDER_KEYWORDS and word not in out:
            out.append(word)
    return tuple(out)


def category_name(category: str) -> str:
    """A readable name for a folder: its last part in words; a part under flags/cards/icons
    qualifies that word (``"signs_and_symbols/flags/europe"`` → ``"europe flags"``)."""
    parts = [p for p in category.split("/") if p and not p.endswith("-theme")]
    if not parts:
        return "clip art"
    words = [p.replace("_", " ").replace("-", " ").lower() for p in parts]
    owner = next((w for w in reversed(words[:-1]) if w in FLAG_WORDS), None)
    return f"{words[-1]} {owner}" if owner else words[-1]


_SCHEMA = pa.schema(
    [
        (f.name, pa.list_(pa.string()) if f.name == "keywords" else
         pa.int64() if f.name in ("width", "height") else pa.string())
        for f in fields(ClipArt)
    ]
)


def write_catalogue(items: list[ClipArt], file: str | Path) -> Path:
    """Write the catalogue as one Parquet file, atomically."""
    file = Path(file)
    rows = [asdict(item) for item in items]
    table = pa.Table.from_pylist(rows, schema=_SCHEMA)
    tmp = file.with_name(f".{file.name}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, file)
    return file


def read_catalogue(file: str | Path) -> list[ClipArt]:
    """The catalogue written by :func:`write_catalogue`."""
    rows = pq.read_table(file).to_pylist()
    return [ClipArt(**{**row, "keywords": tuple(row["keywords"] or ())}) for row in rows]

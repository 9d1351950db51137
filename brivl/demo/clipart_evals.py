"""The public real evaluation sets: OpenClipArt pictures held out of the demo site.

Every picture comes from :class:`~brivl.demo.holdout.Holdout` (whole held-out categories,
plus held-out titles of the site's categories), so none is on the site. Pictures are
composited on white and stored as JPEG (longest side ``max_side``). Files in ``out_dir``
(``_manifest.json`` written last):

- ``zeroshot_images.parquet``: ``image``, ``label`` (readable category name, e.g. "chess"),
  ``file``, ``title`` - held-out categories only, at most ``n_zeroshot`` rows spread evenly
  over the classes (each class >= 2 rows, so the linear probe's stratified split has both
  halves)
- ``retrieval.parquet``: ``image``, ``captions`` (title; title with category; keywords),
  ``file``, ``category`` - held-out titles first (up to a quarter), then category pictures
- ``classes.json``: ``{"zeroshot_images": {"classes": [...], "templates": [...]}}``
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from brivl.demo.holdout import Holdout
from brivl.demo.openclipart import ClipArt, to_jpeg
from brivl.fingerprint import code_version
from brivl.manifest import write_manifest

TEMPLATES = ("a drawing of {}.", "clip art of {}.", "an illustration of {}.", "{}")


def _rank(item: ClipArt) -> str:
    return hashlib.sha256(f"brivl-clipart-eval:{item.file}".encode()).hexdigest()


def zeroshot_items(holdout: Holdout, n: int) -> list[ClipArt]:
    """Up to ``n`` held-out category pictures, evenly per class (at least 2 per class)."""
    by_class: dict[str, list[ClipArt]] = {}
    for item in sorted(holdout.by_category, key=_rank):
        by_class.setdefault(item.category_name, []).append(item)
    per_class = max(2, n // max(1, len(by_class)))
    return [i for name in sorted(by_class) for i in by_class[name][:per_class]]


def retrieval_items(holdout: Holdout, n: int) -> list[ClipArt]:
    """Up to ``n`` held-out pictures: held-out titles first (a quarter at most), then
    category pictures, each group in hash order."""
    titles = sorted(holdout.by_title, key=_rank)[: n // 4]
    rest = sorted(holdout.by_category, key=_rank)[: n - len(titles)]
    return titles + rest


def captions(item: ClipArt) -> list[str]:
    """The title, the title with its category, and a keyword phrase (when there are any)."""
    out = [item.title, f"{item.title}, {item.category_name} clip art"]
    if item.keywords:
        out.append(f"clip art of {', '.join(item.keywords[:3])}")
    return out


def _encode(items: list[ClipArt], png_root: Path, max_side: int, skipped: list[dict]):
    kept, images = [], []
    for item in items:
        try:
            images.append(to_jpeg(png_root / item.file, max_side))
        except Exception as exc:  # noqa: BLE001 - a bad picture is recorded, the rest goes on
            skipped.append({"file": item.file, "reason": f"{type(exc).__name__}: {exc}"})
            continue
        kept.append(item)
    return kept, images


def write_clipart_eval_sets(
    holdout: Holdout,
    png_root: str | Path,
    out_dir: str | Path,
    *,
    n_zeroshot: int = 400,
    n_retrieval: int = 400,
    max_side: int = 256,
) -> dict[str, Path]:
    """Write ``zeroshot_images``, ``retrieval`` and ``classes.json``; return name → path."""
    out, root = Path(out_dir), Path(png_root)
    out.mkdir(parents=True, exist_ok=True)
    skipped: list[dict] = []
    zs, zs_images = _encode(zeroshot_items(holdout, n_zeroshot), root, max_side, skipped)
    rt, rt_images = _encode(retrieval_items(holdout, n_retrieval), root, max_side, skipped)
    tables = {
        "zeroshot_images": pa.table({
            "image": pa.array(zs_images, pa.binary()),
            "label": pa.array([i.category_name for i in zs], pa.string()),
            "file": pa.array([i.file for i in zs], pa.string()),
            "title": pa.array([i.title for i in zs], pa.string()),
        }),
        "retrieval": pa.table({
            "image": pa.array(rt_images, pa.binary()),
            "captions": pa.array([captions(i) for i in rt], pa.list_(pa.string())),
            "file": pa.array([i.file for i in rt], pa.string()),
            "category": pa.array([i.category for i in rt], pa.string()),
        }),
    }
    paths = {}
    for name, table in tables.items():
        paths[name] = out / f"{name}.parquet"
        pq.write_table(table, paths[name])
    classes = sorted({i.category_name for i in zs})
    paths["classes"] = out / "classes.json"
    paths["classes"].write_text(json.dumps(
        {"zeroshot_images": {"classes": classes, "templates": list(TEMPLATES)}}, indent=2))
    write_manifest(
        out,
        stage="demo_eval_sets",
        config={"corpus": "openclipart", "n_zeroshot": n_zeroshot, "n_retrieval": n_retrieval,
                "max_side": max_side},
        inputs=[],
        code_version=code_version("brivl.demo"),
        row_counts={name: table.num_rows for name, table in tables.items()},
        extra={"heldout_categories": list(holdout.categories), "skipped": skipped},
    )
    return paths

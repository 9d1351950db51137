"""The crawl stage: crawl (live or from WARC files), write candidates + pages + manifest."""

from __future__ import annotations

import shutil
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from brivl import manifest
from brivl.crawl import candidates as cand
from brivl.crawl.config import CrawlConfig
from brivl.crawl.crawler import CrawlOutput, crawl_pages
from brivl.crawl.seeds import check_seeds
from brivl.crawl.warc import crawl_warc_files
from brivl.errors import InputError

STAGE = "crawl"


def run_crawl(
    seeds: Sequence[str],
    config: CrawlConfig,
    out_dir: str | Path,
    *,
    warc_files: Sequence[str | Path] = (),
    inputs: Sequence[str] | None = None,
    code_version: str = "",
    on_page: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Crawl ``seeds`` (or read ``warc_files``) into ``out_dir``; return the manifest.

    ``out_dir`` is cleared first (a crawl is not resumable: a rerun starts over).
    """
    if not seeds and not warc_files:
        raise InputError("nothing to crawl: give seed URLs (http/https) or WARC files")
    check_seeds(seeds)
    out_dir = prepare_out_dir(Path(out_dir))
    output = CrawlOutput([], [])
    if seeds:
        live = crawl_pages(seeds, config, on_page)
        output.pages += live.pages
        output.candidates += live.candidates
    if warc_files:
        archived = crawl_warc_files(warc_files, config, on_page)
        output.pages += archived.pages
        output.candidates += archived.candidates
    cand.write_candidates(output.candidates, out_dir, config.rows_per_part)
    cand.write_pages(output.pages, out_dir)
    return manifest.write_manifest(
        out_dir,
        stage=STAGE,
        config=config.to_dict(),
        inputs=list(inputs if inputs is not None else [*seeds, *map(str, warc_files)]),
        code_version=code_version,
        row_counts=crawl_counts(output),
        extra={
            "seeds": list(seeds),
            "warc_files": [str(p) for p in warc_files],
            "pages_by_outcome": dict(Counter(p["outcome"] for p in output.pages)),
            "candidates_by_decision": dict(Counter(c["decision"] for c in output.candidates)),
        },
    )


def prepare_out_dir(out_dir: Path) -> Path:
    """Create ``out_dir``, clearing an earlier crawl's output in it (a crawl restarts from
    scratch); refuse a directory holding anything else, rather than delete it."""
    ours = {cand.CANDIDATES_DIR, cand.PAGES_FILE, manifest.MANIFEST_NAME}
    if out_dir.is_dir():
        foreign = sorted(p.name for p in out_dir.iterdir() if p.name not in ours)
        if foreign:
            raise FileExistsError(
                f"{out_dir} holds files that are not a crawl output ({foreign[:5]}); "
                "give an empty or new directory"
            )
        shutil.rmtree(out_dir / cand.CANDIDATES_DIR, ignore_errors=True)
        for name in (cand.PAGES_FILE, manifest.MANIFEST_NAME):
            (out_dir / name).unlink(missing_ok=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    return out_dir


def no_candidates_message(body: dict[str, Any], out_dir: str | Path) -> str:
    """Why a crawl manifest ``body`` with no candidates is the end of the pipeline."""
    outcomes = body.get("extra", {}).get("pages_by_outcome", {})
    seen = ", ".join(f"{k}={v}" for k, v in sorted(outcomes.items())) or "none"
    seeds = body.get("extra", {}).get("seeds") or body.get("inputs", [])
    return (f"no candidates from these seeds {list(seeds)}: {body['row_counts'].get('pages', 0)} "
            f"pages considered (outcomes: {seen}); see {Path(out_dir) / cand.PAGES_FILE} for "
            "each page's outcome, and check the seeds, allowed_domains, allow_cidrs and robots.txt")


def crawl_counts(output: CrawlOutput) -> dict[str, int]:
    """Row counts for the manifest."""
    decisions = Counter(c["decision"] for c in output.candidates)
    return {
        "pages": len(output.pages),
        "pages_fetched": sum(p["outcome"] == "fetched" for p in output.pages),
        "candidates": len(output.candidates),
        "candidates_allowed": decisions.get(cand.ALLOWED, 0),
    }

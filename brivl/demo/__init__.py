"""The demo web: the pipeline's embedded default corpus (see :mod:`brivl.demo.site`).

::

    site = build_site(DemoConfig(n_images=200, seed=0, slow_seconds=3.0))
    with serve(site) as server:          # http://127.0.0.1:PORT, a daemon thread
        crawl(server.seed_urls, ...)
    site.images                          # ImageTruth per <img>: labels, caption, texts, fault
    site.eval_sets(out_dir)              # held-out eval Parquet sets

The real demo web is :func:`openclipart_site` (Debian's OpenClipArt pictures as a clip-art
gallery, :mod:`brivl.demo.clipart_site`); it raises :class:`CorpusUnavailable` where the
packages cannot be fetched. :func:`build_site` is the synthetic web (fault injection).
"""

from brivl.demo.clipart_site import ClipArtConfig, ClipArtSite, openclipart_site
from brivl.demo.openclipart import CorpusUnavailable
from brivl.demo.server import AccessLog, AccessRecord, DemoServer, serve, serve_at
from brivl.demo.site import (
    BLOCKLIST_WORDS,
    DOWNLOAD_FAULTS,
    FAULT_KINDS,
    FILTER_FAULTS,
    PAGE_FAULTS,
    Article,
    DemoConfig,
    DemoSite,
    ImageTruth,
    Response,
    build_site,
)

__all__ = [
    "BLOCKLIST_WORDS",
    "DOWNLOAD_FAULTS",
    "FAULT_KINDS",
    "FILTER_FAULTS",
    "PAGE_FAULTS",
    "AccessLog",
    "AccessRecord",
    "Article",
    "ClipArtConfig",
    "ClipArtSite",
    "CorpusUnavailable",
    "DemoConfig",
    "DemoServer",
    "DemoSite",
    "ImageTruth",
    "Response",
    "build_site",
    "openclipart_site",
    "serve",
    "serve_at",
]

"""Download: crawl candidates → images with the real img2dataset, every miss with a reason.

Public API: :class:`DownloadConfig`, :func:`run_download` (the stage), :func:`reason_of`
(img2dataset error message → reason code), :data:`REJECTED_DIR`.
"""

from brivl.download.config import DownloadConfig
from brivl.download.reasons import reason_of
from brivl.download.stage import REJECTED_DIR, REJECTED_SCHEMA, STAGE, run_download, shard_files

__all__ = [
    "REJECTED_DIR",
    "REJECTED_SCHEMA",
    "STAGE",
    "DownloadConfig",
    "reason_of",
    "run_download",
    "shard_files",
]

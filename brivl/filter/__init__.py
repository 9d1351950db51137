"""Weak-correlation filtering: keep image-text pairs that are globally related, drop junk.

After BriVL's cleaning rules, DataComp's basic filter and LAION's: image size and aspect,
caption length, text repair, blocklist, spam, language, faces (blurred in the stored JPEG
by default, or the pair dropped: :mod:`brivl.filter.faces`), exact and near-duplicate
images, duplicate URLs and a cap on identical captions. Every input row ends kept or rejected with the
first rule it failed (:data:`RULES` is the order). See :mod:`brivl.filter.run` for the stage.
"""

from brivl.filter.config import DEDUP_RULES, ROW_RULES, RULES, FilterConfig, default_blocklist
from brivl.filter.image import inspect, phash_bits, thumb_difference
from brivl.filter.run import (
    KEPT_SCHEMA,
    REJECTED_SCHEMA,
    REPORT_NAME,
    FilterResult,
    find_input_files,
    run_filter,
    summary_rows,
)
from brivl.filter.text import detect_language, repair

__all__ = [
    "DEDUP_RULES",
    "KEPT_SCHEMA",
    "REJECTED_SCHEMA",
    "REPORT_NAME",
    "ROW_RULES",
    "RULES",
    "FilterConfig",
    "FilterResult",
    "default_blocklist",
    "detect_language",
    "find_input_files",
    "inspect",
    "phash_bits",
    "repair",
    "run_filter",
    "summary_rows",
    "thumb_difference",
]

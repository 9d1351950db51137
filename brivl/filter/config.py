"""The filter's configuration and the fixed order in which its rules run."""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass, field
from typing import Any

from brivl.config_parse import bounded, config_from_dict
from brivl.filter.faces import POLICIES as FACE_POLICIES

# Every input row is kept, or rejected by the FIRST of these rules it fails, in this order.
# Per-row rules (image first: a bad image makes the pair useless whatever its text says):
ROW_RULES = (
    "undecodable",  # no bytes, not an image, truncated, or more pixels than max_image_pixels
    "aspect_ratio",  # longer side / shorter side > max_aspect_ratio (before size: a banner
    #                  is named a banner even when its short side is also small)
    "image_too_small",  # shorter side < min_image_side (original size when the input has it)
    "caption_too_short",  # fewer than min_caption_chars characters or min_caption_words words
    "caption_too_long",  # more than max_caption_chars characters or max_caption_words words
    "garbled_text",  # U+FFFD left after repair: bytes were lost in decoding, not recoverable
    "blocklist",  # a blocklisted word or phrase (whole words, case-insensitive)
    "spam",  # spam phrase, URL, one token repeated, few unique words, mostly symbols
    "language",  # detected language not in `languages`
    "face",  # face_policy "drop" and the face detector found a face (last: the costliest)
)
# ...then the dedup rules, over the survivors in a stable order (sorted by candidate id), so
# the first of a group is kept whatever order the shards were read in:
DEDUP_RULES = (
    "eval_overlap",  # near-duplicate of an evaluation set's image (brivl.filter.decontam)
    "duplicate_key",  # the same candidate id as an earlier row
    "duplicate_image",  # the same image bytes (sha256) as a kept row
    "near_duplicate",  # perceptual hash close to a kept row's, confirmed on thumbnails
    "duplicate_url",  # the same image URL as a kept row
    "caption_cap",  # max_identical_captions kept rows already carry this caption
)
# ...then, when a model is configured, over the dedup survivors (brivl.filter.model_score):
MODEL_RULES = (
    "model_score",  # image-caption cosine under the threshold or outside the top fraction
)
RULES = ROW_RULES + DEDUP_RULES + MODEL_RULES

FALLBACK_BLOCKLIST = ("blockword",)
DEFAULT_SPAM_PATTERNS = (
    r"\bbuy (it )?now\b",
    r"\border (it )?now\b",
    r"\bclick here\b",
    r"\bfree shipping\b",
    r"\bbest prices?\b",
    r"\blimited[- ]time offer\b",
    r"\bdiscount code\b",
    r"\b\d{1,3}\s?% off\b",
    r"\bcheap(est)? [a-z]+ online\b",
    r"https?://",
    r"\bwww\.",
)


def default_blocklist() -> list[str]:
    """A small fallback list plus the demo web's blocklisted words when that module exists."""
    words = set(FALLBACK_BLOCKLIST)
    try:
        demo = importlib.import_module("brivl.demo")
        words.update(str(w) for w in getattr(demo, "BLOCKLIST_WORDS", ()))
    except ImportError:
        pass
    return sorted(words)


@dataclass
class FilterConfig:
    """What a kept image-text pair must satisfy. Dedup keeps the first by sorted candidate id."""

    min_image_side: int = bounded(64, min=0, max=100_000)  # pixels; the original's shorter side
    max_aspect_ratio: float = bounded(3.0, min=1)  # longer / shorter side (DataComp's basic)
    max_image_pixels: int = bounded(89_478_485, min=1)  # larger: treated as decompression bombs
    min_caption_chars: int = bounded(5, min=0)
    max_caption_chars: int = bounded(1000, min=0)
    min_caption_words: int = bounded(2, min=0)  # each CJK character counts as one word
    max_caption_words: int = bounded(200, min=0)
    repair_text: bool = True  # ftfy: fix mojibake, HTML entities, control chars; kept repaired
    blocklist: list[str] = field(default_factory=default_blocklist)  # words or phrases
    spam_patterns: list[str] = field(default_factory=lambda: list(DEFAULT_SPAM_PATTERNS))
    spam_min_words: int = bounded(4, min=0)  # the repetition checks apply from this many words
    spam_min_unique_ratio: float = bounded(0.4, min=0, max=1)  # distinct / all words below: spam
    spam_max_token_share: float = bounded(0.5, min=0, max=1)  # one word's share above: spam
    spam_max_symbol_ratio: float = bounded(0.3, min=0, max=1)  # neither letters, digits, space
    languages: list[str] = field(default_factory=lambda: ["en"])  # empty list: any language
    allow_undetermined_language: bool = True  # keep captions the detector cannot place
    dedup_exact: bool = True  # sha256 of the image bytes
    near_dup_max_distance: int = bounded(8, min=-1, max=31)  # per-channel pHash Hamming
    #                                                          distance; -1: off
    near_dup_max_pixel_diff: float = bounded(40.0, min=0)  # thumbnail difference limit
    dedup_url: bool = True
    max_identical_captions: int = bounded(5, min=0)  # kept rows per normalised caption; 0: any
    face_policy: str = bounded("blur", choices=FACE_POLICIES)  # blur: faces blurred in the
    #   stored JPEG (DataComp's choice); drop: the pair rejected as "face"; off: no detection
    face_detect_side: int = bounded(128, min=20, max=4096)  # detector's grey copy, longer side
    face_min_size: int = bounded(24, min=20, max=4096)  # smallest face, in grey-copy pixels
    face_min_neighbors: int = bounded(3, min=1, max=100)  # hits a face needs (more: surer)
    face_blur_quality: int = bounded(95, min=1, max=100)  # JPEG quality of a blurred image
    model_score: str = ""  # "": off; a checkpoint dir, models:/brivl@champion, or a model
    #   config name (e.g. brivl-lite) at step 0 - random projections: its scores mean little
    model_score_threshold: float | None = bounded(None, min=-1, max=1)  # keep score >= this
    model_score_top_fraction: float | None = bounded(None, gt=0, max=1)  # or keep the best share
    model_score_batch: int = bounded(64, min=1, max=4096)  # pairs per encoder call

    def __post_init__(self) -> None:
        self.blocklist = sorted({str(w).strip().lower() for w in self.blocklist if str(w).strip()})
        self.spam_patterns = [str(p) for p in self.spam_patterns]
        self.languages = [str(code).lower() for code in self.languages]
        problems = []
        for name in ("min_image_side", "min_caption_chars", "min_caption_words", "spam_min_words",
                     "max_identical_captions"):
            if int(getattr(self, name)) < 0:
                problems.append(f"{name} must be >= 0")
        if self.max_aspect_ratio < 1:
            problems.append("max_aspect_ratio must be >= 1")
        if self.max_caption_chars < self.min_caption_chars:
            problems.append("max_caption_chars must be >= min_caption_chars")
        if self.max_caption_words < self.min_caption_words:
            problems.append("max_caption_words must be >= min_caption_words")
        if not -1 <= self.near_dup_max_distance <= 31:
            problems.append("near_dup_max_distance must be -1 (off) or 0..31")
        for name in ("spam_min_unique_ratio", "spam_max_token_share", "spam_max_symbol_ratio"):
            if not 0 <= float(getattr(self, name)) <= 1:
                problems.append(f"{name} must be in [0, 1]")
        chosen = [n for n in ("model_score_threshold", "model_score_top_fraction")
                  if getattr(self, n) is not None]
        if self.model_score and len(chosen) != 1:
            problems.append("model_score needs exactly one of model_score_threshold and "
                            f"model_score_top_fraction (got {chosen or 'neither'})")
        if problems:
            raise ValueError("bad FilterConfig: " + "; ".join(problems))

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> FilterConfig:
        """Build from a plain dict (e.g. a task parameter), every field checked (ConfigError)."""
        return config_from_dict(cls, values, "filter")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict with every field (the stage config that enters the cache key)."""
        return dataclasses.asdict(self)

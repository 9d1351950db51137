"""Download settings: what img2dataset is asked to do, and the guards around it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

OUTPUT_FORMATS = ("parquet", "webdataset", "files")
RESIZE_MODES = ("no", "keep_ratio", "keep_ratio_largest", "center_crop", "border")
DISTRIBUTORS = ("multiprocessing", "ray")


@dataclass
class DownloadConfig:
    """How candidates are downloaded (img2dataset options plus brivl's guards)."""

    output_format: str = "parquet"
    """img2dataset writer: ``parquet`` (image bytes in a column), ``webdataset`` (tar +
    parquet metadata) or ``files``."""
    image_size: int = 384
    """Target size in pixels for the resize mode."""
    resize_mode: str = "keep_ratio"
    """``no`` keeps the original pixels; ``keep_ratio`` scales the shorter side to
    ``image_size``; see img2dataset for ``center_crop``, ``border``, ``keep_ratio_largest``."""
    resize_only_if_bigger: bool = True
    """Only downscale, never upscale."""
    encode_format: str = "jpg"
    """Stored image encoding (``jpg``, ``png``, ``webp``)."""
    encode_quality: int = 95
    """JPEG/WebP quality (PNG compression level for png)."""
    timeout_s: float = 10.0
    """Per-request socket timeout (connect and each read), and the deadline for receiving a
    whole image body (a slowly trickling body times out too)."""
    max_image_bytes: int = 50_000_000
    """Image bodies larger than this are refused (``too_large``)."""
    retries: int = 0
    """Extra attempts per failed image (404s are retried too: keep small)."""
    processes_count: int = 2
    """img2dataset worker processes."""
    thread_count: int = 16
    """Download threads per process."""
    number_sample_per_shard: int = 1000
    """Rows per output shard (a shard is the unit of resume)."""
    distributor: str = "multiprocessing"
    """img2dataset distributor: ``multiprocessing`` or ``ray`` (needs Ray started)."""
    incremental_mode: str = "incremental"
    """``incremental``: a rerun skips shards already finished (resume after a kill)."""
    user_agent_token: str = "brivl"
    """Token img2dataset adds to its User-Agent, matched against robots.txt and
    ``X-Robots-Tag: <token>: ...``."""
    disallowed_header_directives: tuple[str, ...] = ("noai", "noimageai", "noindex", "noimageindex")
    """X-Robots-Tag directives on an image response that refuse its use."""
    allow_cidrs: tuple[str, ...] = ()
    """Non-public networks the SSRF guard lets through (e.g. ``("127.0.0.1/32",)``)."""
    recheck_robots: bool = True
    """Check robots.txt again before downloading (rules may have changed since the crawl)."""
    max_image_pixels: int = 89_478_485
    """Images whose header declares more pixels are refused before decoding (PIL's limit)."""
    min_image_size: int = 0
    """img2dataset's smallest accepted side (0: leave tiny images to the filter stage)."""
    compute_hash: str = "sha256"
    """Hash of the downloaded bytes stored per row (``md5``, ``sha256``, ``sha512``)."""
    sniff_images: bool = True
    """Inspect image headers to tell not-an-image, truncated and bomb apart."""

    def __post_init__(self) -> None:
        for name in ("disallowed_header_directives", "allow_cidrs"):
            value = getattr(self, name)
            setattr(self, name, tuple([value] if isinstance(value, str) else value))
        for name, accepted in (
            ("output_format", OUTPUT_FORMATS),
            ("resize_mode", RESIZE_MODES),
            ("distributor", DISTRIBUTORS),
            ("incremental_mode", ("incremental", "overwrite")),
        ):
            if getattr(self, name) not in accepted:
                raise ValueError(f"{name}={getattr(self, name)!r}; accepted: {list(accepted)}")
        for name in ("processes_count", "thread_count", "number_sample_per_shard", "image_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> DownloadConfig:
        """Build from a JSON dict; unknown keys raise naming them and the accepted ones."""
        data = dict(data or {})
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown download config keys {unknown}; accepted: {sorted(names)}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

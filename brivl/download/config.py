"""Download settings: what img2dataset is asked to do, and the guards around it."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from brivl.config_parse import bounded, config_from_dict

OUTPUT_FORMATS = ("parquet", "webdataset", "files")
RESIZE_MODES = ("no", "keep_ratio", "keep_ratio_largest", "center_crop", "border")
DISTRIBUTORS = ("multiprocessing", "ray")


@dataclass
class DownloadConfig:
    """How candidates are downloaded (img2dataset options plus brivl's guards)."""

    output_format: str = bounded("parquet", choices=OUTPUT_FORMATS)
    """img2dataset writer: ``parquet`` (image bytes in a column), ``webdataset`` (tar +
    parquet metadata) or ``files``."""
    image_size: int = bounded(384, min=1, max=16_384)
    """Target size in pixels for the resize mode."""
    resize_mode: str = bounded("keep_ratio", choices=RESIZE_MODES)
    """``no`` keeps the original pixels; ``keep_ratio`` scales the shorter side to
    ``image_size``; see img2dataset for ``center_crop``, ``border``, ``keep_ratio_largest``."""
    resize_only_if_bigger: bool = True
    """Only downscale, never upscale."""
    encode_format: str = bounded("jpg", choices=("jpg", "png", "webp"))
    """Stored image encoding (``jpg``, ``png``, ``webp``)."""
    encode_quality: int = bounded(95, min=0, max=100)
    """JPEG/WebP quality (PNG compression level for png)."""
    timeout_s: float = bounded(10.0, gt=0, max=3600)
    """Per-request socket timeout (connect and each read), and the deadline for receiving a
    whole image body (a slowly trickling body times out too)."""
    max_image_bytes: int = bounded(50_000_000, min=1, max=10_000_000_000)
    """Image bodies larger than this are refused (``too_large``)."""
    retries: int = bounded(0, min=0, max=20)
    """Extra attempts per failed image (404s are retried too: keep small)."""
    processes_count: int = bounded(2, min=1, max=1024)
    """img2dataset worker processes."""
    thread_count: int = bounded(16, min=1, max=1024)
    """Download threads per process."""
    number_sample_per_shard: int = bounded(1000, min=1, max=10_000_000)
    """Rows per output shard (a shard is the unit of resume)."""
    distributor: str = bounded("multiprocessing", choices=DISTRIBUTORS)
    """img2dataset distributor: ``multiprocessing`` or ``ray`` (needs Ray started)."""
    incremental_mode: str = bounded("incremental", choices=("incremental", "overwrite"))
    """``incremental``: a rerun skips shards already finished (resume after a kill)."""
    robots_token: str = "brivl"
    """Product token matched against robots.txt groups and ``X-Robots-Tag: <token>: ...``
    (the crawl's ``robots_token``; img2dataset also adds it to its User-Agent)."""
    disallowed_header_directives: tuple[str, ...] = ("noai", "noimageai", "noindex", "noimageindex")
    """X-Robots-Tag directives on an image response that refuse its use."""
    allow_cidrs: tuple[str, ...] = ()
    """Non-public networks the SSRF guard lets through (e.g. ``("127.0.0.1/32",)``)."""
    recheck_robots: bool = True
    """Check robots.txt again before downloading (rules may have changed since the crawl)."""
    max_image_pixels: int = bounded(89_478_485, min=1)
    """Images whose header declares more pixels are refused before decoding (PIL's limit)."""
    min_image_size: int = bounded(0, min=0)
    """img2dataset's smallest accepted side (0: leave tiny images to the filter stage)."""
    compute_hash: str = bounded("sha256", choices=("md5", "sha256", "sha512"))
    """Hash of the downloaded bytes stored per row (``md5``, ``sha256``, ``sha512``)."""
    sniff_images: bool = True
    """Inspect image headers to tell not-an-image, truncated and bomb apart."""
    per_host_concurrency: int = bounded(8, min=1, max=1024)
    """Most requests to one host at a time, all processes together (each process gets
    ``max(1, per_host_concurrency // processes_count)``; with the ray distributor, each Ray
    worker gets it all)."""
    per_host_rate: float = bounded(0.0, min=0, max=100_000)
    """Most request starts per second to one host, all processes together; 0: no cap."""
    backoff_retries: int = bounded(3, min=0, max=20)
    """Retries of a 429 or 503 answer, after the wait its ``Retry-After`` asks for."""
    backoff_max_s: float = bounded(30.0, min=0, max=3600)
    """Longest back-off made; a ``Retry-After`` asking for more fails the image (http_429)."""

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
        """Build from a JSON dict, every field checked (ConfigError names it)."""
        return config_from_dict(cls, data, "download")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

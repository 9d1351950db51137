"""The served kNN API's input checks: what a ``/knn-service`` or ``/metadata`` request may ask.

clip_back's own resources read any JSON they get: a missing field or an unknown index is a
bare 500, a huge ``text`` is tokenised whatever its size, and ``image_url`` is fetched by an
unguarded ``urllib`` (``file:///etc/passwd`` included). Here every request is parsed into
exactly the arguments clip_back's ``KnnService.query`` takes, or refused with a 400 that
names the field and what is accepted. ``image_url`` is fetched through the crawler's SSRF
guard (:class:`brivl.crawl.fetch.Fetcher`: http(s) only, public addresses unless
allow-listed, every redirect hop checked, connection pinned to the checked address, size
and time caps) and handed on as image bytes, so clip_back never opens a URL itself.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
import warnings
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from PIL import Image
from werkzeug.exceptions import BadRequest

from brivl.crawl.fetch import Fetcher
from brivl.crawl.guard import AddressGuard

USER_AGENT = "brivl-search/0.1"
MODALITIES = ("image", "text")
QUERY_FIELDS = ("text", "image", "image_url", "embedding_input")


@dataclass(frozen=True)
class ServiceLimits:
    """Bounds on what one request may cost."""

    max_body_bytes: int = 16 * 1024 * 1024
    """Request bodies over this are refused (413) before they are parsed."""
    max_text_chars: int = 2000
    max_k: int = 1000
    """Largest ``num_images`` / number of metadata ids."""
    max_result_ids: int = 10_000
    """Largest ``num_result_ids`` (the nearest ids fetched before deduplication; the bundled
    web UI asks for 3,000)."""
    max_image_bytes: int = 10_000_000
    max_image_pixels: int = 40_000_000
    fetch_timeout_s: float = 10.0
    """``image_url``: connect and per-read timeout."""
    fetch_total_s: float = 20.0
    """``image_url``: deadline for the whole transfer, redirects included."""
    allow_cidrs: tuple[str, ...] = ()
    """Non-public networks ``image_url`` may reach (none by default)."""


def bad(field: str, problem: str) -> BadRequest:
    return BadRequest(description=f"{field}: {problem}")


def check_origins(origins: Collection[str]) -> list[str]:
    """CORS allow-list entries, each ``scheme://host[:port]``; anything else raises."""
    out = []
    for origin in origins:
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.hostname or origin != (
            f"{parts.scheme}://{parts.netloc}"
        ):
            raise ValueError(
                f"CORS origin {origin!r}: give scheme://host[:port] with no path, "
                "e.g. http://localhost:3000"
            )
        out.append(origin)
    return out


class ImageFetcher:
    """``image_url`` -> bytes through the SSRF guard; a refusal or failure is a 400."""

    def __init__(self, limits: ServiceLimits) -> None:
        self.fetcher = Fetcher(
            AddressGuard(limits.allow_cidrs),
            USER_AGENT,
            timeout_s=limits.fetch_timeout_s,
            total_timeout_s=limits.fetch_total_s,
            max_bytes=limits.max_image_bytes,
        )

    def __call__(self, url: str) -> bytes:
        got = self.fetcher.fetch(url)
        if got.error:
            raise bad("image_url", f"not fetched ({got.error}: {got.detail})")
        if not got.ok:
            raise bad("image_url", f"not fetched (HTTP {got.status})")
        return got.body


def checked_image(data: bytes, limits: ServiceLimits, field: str) -> bytes:
    """``data`` if it is a decodable image within the size and pixel limits."""
    if len(data) > limits.max_image_bytes:
        raise bad(field, f"image over {limits.max_image_bytes} bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                pixels = image.width * image.height
                if pixels > limits.max_image_pixels:
                    raise bad(field, f"image of {pixels} pixels, over {limits.max_image_pixels}")
                image.load()
    except BadRequest:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever PIL says, the bytes are no usable image
        raise bad(field, f"not a decodable image ({type(exc).__name__}: {exc})") from None
    return data


def _int(body: dict[str, Any], field: str, default: int | None, top: int) -> int:
    value = body.get(field, default)
    if value is None:
        raise bad(field, "missing; give an integer")
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= top:
        raise bad(field, f"{value!r}; accepted: an integer in [1, {top}]")
    return value


NOT_LOADED = ("use_safety_model", "use_violence_detector")
NOT_APPLIED_HEADER = "X-Brivl-Not-Applied"  # the request flags whose model is not loaded


def _off(body: dict[str, Any], field: str, what: str) -> None:
    if body.get(field) not in (None, False, ""):
        raise bad(field, f"{what} is not available on this service; leave it out")


def _index_name(body: dict[str, Any], indices: Collection[str]) -> str:
    name = body.get("indice_name")
    if name not in indices:
        raise bad("indice_name", f"{name!r}; accepted: {sorted(indices)}")
    return name


def _embedding(value: Any, dim: int | None) -> list[float]:
    if not isinstance(value, list) or not all(
        isinstance(x, (int, float)) and not isinstance(x, bool) for x in value
    ):
        raise bad("embedding_input", "give a list of numbers")
    if dim is not None and len(value) != dim:
        raise bad("embedding_input", f"{len(value)} numbers; the index holds {dim}-d embeddings")
    if not all(math.isfinite(x) for x in value):
        raise bad("embedding_input", "numbers must be finite")
    return [float(x) for x in value]


def _query_input(
    body: dict[str, Any], limits: ServiceLimits, fetch_image: Callable[[str], bytes], dim: int | None
) -> dict[str, Any]:
    given = [f for f in QUERY_FIELDS if body.get(f) not in (None, "")]
    if len(given) != 1:
        raise bad("query", f"give exactly one of {list(QUERY_FIELDS)}, got {given or 'none'}")
    field, value = given[0], body[given[0]]
    if field == "embedding_input":
        return {"embedding_input": _embedding(value, dim)}
    if not isinstance(value, str):
        raise bad(field, f"give a string, got {type(value).__name__}")
    if field == "text":
        if len(value) > limits.max_text_chars:
            raise bad("text", f"{len(value)} characters, over {limits.max_text_chars}")
        return {"text_input": value}
    if field == "image_url":
        data = checked_image(fetch_image(value), limits, "image_url")
    else:
        if len(value) > limits.max_image_bytes * 4 // 3 + 4:
            raise bad("image", f"over {limits.max_image_bytes} bytes")
        try:
            data = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise bad("image", "not base64 of image bytes") from None
        checked_image(data, limits, "image")
    return {"image_input": base64.b64encode(data).decode("ascii")}


def parse_knn_request(
    body: Any,
    indices: dict[str, int | None],
    limits: ServiceLimits,
    fetch_image: Callable[[str], bytes],
) -> dict[str, Any]:
    """clip_back ``KnnService.query`` keyword arguments for a ``/knn-service`` JSON body,
    plus ``not_applied``: the flags asked for whose model is not loaded (see NOT_LOADED).

    ``indices`` maps each index name to its embedding dimension (``None``: unknown).
    Raises :class:`werkzeug.exceptions.BadRequest` naming the field and what is accepted.
    """
    if not isinstance(body, dict):
        raise bad("body", "give a JSON object")
    modality = body.get("modality")
    if modality not in MODALITIES:
        raise bad("modality", f"{modality!r}; accepted: {list(MODALITIES)}")
    name = _index_name(body, indices)
    num_images = _int(body, "num_images", None, limits.max_k)
    num_result_ids = _int(body, "num_result_ids", num_images, limits.max_result_ids)
    deduplicate = body.get("deduplicate", False)
    if not isinstance(deduplicate, bool):
        raise bad("deduplicate", f"{deduplicate!r}; accepted: true or false")
    _off(body, "use_mclip", "multilingual CLIP")
    # no safety model or violence detector is loaded: like clip_back without them, the flags
    # (on by default in the bundled web UI) are accepted and not applied, and the reply says so
    not_applied = [f for f in NOT_LOADED if body.get(f) not in (None, False)]
    for field in not_applied:
        if not isinstance(body[field], bool):
            raise bad(field, f"{body[field]!r}; accepted: true or false")
    _off(body, "aesthetic_score", "aesthetic embeddings")  # aesthetic_weight only weighs it
    query = _query_input(body, limits, fetch_image, indices[name])
    return {
        "text_input": None,
        "image_input": None,
        "image_url_input": None,
        "embedding_input": None,
        **query,
        "modality": modality,
        "num_images": num_images,
        "num_result_ids": max(num_result_ids, num_images),
        "indice_name": name,
        "use_mclip": False,
        "deduplicate": deduplicate,
        "use_safety_model": False,
        "use_violence_detector": False,
        "aesthetic_score": None,
        "aesthetic_weight": None,
        "not_applied": not_applied,
    }


def parse_metadata_request(
    body: Any, indices: Collection[str], limits: ServiceLimits
) -> tuple[list[int], str]:
    """``(ids, indice_name)`` of a ``/metadata`` JSON body, or a 400."""
    if not isinstance(body, dict):
        raise bad("body", "give a JSON object")
    ids = body.get("ids")
    if not isinstance(ids, list) or not all(
        isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in ids
    ):
        raise bad("ids", "give a list of non-negative integers")
    if len(ids) > limits.max_k:
        raise bad("ids", f"{len(ids)} ids, over {limits.max_k}")
    return ids, _index_name(body, indices)

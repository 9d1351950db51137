"""Image checks and features: decode (bombs and truncation caught), perceptual hashes.

The perceptual hash is imagehash's pHash algorithm (DCT of a 32x32 picture, its 8x8 lowest
frequencies against their median; :func:`phash_bits` gives the same bits as ``imagehash.phash``
on the same 32x32 channel), computed per colour channel of a bilinear 32x32 reduction: web
pictures whose structure lives in colour rather than brightness (a yellow shape on a grey
page) hash to noise in greyscale. A Hamming match on any channel makes two images
near-duplicate *candidates*; the match is confirmed on the 32x32 thumbnails after fitting
brightness and contrast (:func:`thumb_difference`), so a pHash collision between two
different flat pictures, or the same layout in other colours, does not drop either.
"""

from __future__ import annotations

import io
import struct
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image

try:  # OpenCV ships with img2dataset; without it every image takes the PIL path
    import cv2
except ImportError:  # pragma: no cover
    cv2 = None

HASH_SIDE = 32  # pHash works on a 32x32 picture ...
LOW = 8  # ... and keeps its 8x8 lowest DCT frequencies: 64 bits
THUMB_SIDE = HASH_SIDE  # thumbnails that confirm a near-duplicate candidate (32x32x3)

# (shorter side at least, OpenCV reduced-decode flag): libjpeg's DCT scaling decodes at
# 1/8..1/2 scale as long as the shorter side stays >= HASH_SIDE (Huffman decoding is then most
# of the cost); the reduction to HASH_SIDE x HASH_SIDE is an area average either way.
_CV2_REDUCED = (
    ((8 * HASH_SIDE, cv2.IMREAD_REDUCED_COLOR_8), (4 * HASH_SIDE, cv2.IMREAD_REDUCED_COLOR_4),
     (2 * HASH_SIDE, cv2.IMREAD_REDUCED_COLOR_2))
    if cv2 is not None else ()
)
_k = np.arange(HASH_SIDE)
# Rows of the (unnormalised) DCT-II matrix for the lowest LOW frequencies; scaling does not
# change a comparison with the median, so these bits equal scipy.fftpack.dct's.
_DCT = np.cos(np.pi * (2 * _k[None, :] + 1) * _k[:LOW, None] / (2 * HASH_SIDE))


class ImageError(ValueError):
    """The bytes are not a usable image; the message says why."""


@dataclass(frozen=True)
class ImageFeatures:
    width: int
    height: int
    phash: tuple[int, int, int]  # one 64-bit pHash per channel (R, G, B)
    thumb: bytes  # THUMB_SIDE x THUMB_SIDE x 3 uint8, row-major


def phash_bits(channel: np.ndarray) -> int:
    """64-bit pHash of one 32x32 channel (imagehash's algorithm, as an int, MSB first)."""
    low = _DCT @ channel.astype(np.float64) @ _DCT.T
    return _pack(low > np.median(low))


def _pack(bits: np.ndarray) -> int:
    return int.from_bytes(np.packbits(bits.ravel()).tobytes(), "big")


def decode_small(data: bytes | None, max_pixels: int) -> tuple[int, int, np.ndarray]:
    """Decode ``data`` fully (at reduced scale for JPEG): ``(width, height, small)`` with
    ``small`` the picture as a HASH_SIDE x HASH_SIDE x 3 uint8 RGB array.

    Raises :class:`ImageError` for anything that is not a complete, decodable image of at
    most ``max_pixels`` pixels.

    A complete JPEG (SOF header found, ending in its EOI marker) is decoded by OpenCV's scaled
    libjpeg decode, ~2x faster than PIL's (whose header parsing alone costs as much);
    anything else - PNG, WebP, a JPEG cut short - goes through PIL, whose full decode raises
    on truncation. EXIF orientation is ignored on both paths.
    """
    if not data:
        raise ImageError("no image bytes")
    size = _complete_jpeg_size(data) if cv2 is not None else None
    try:
        if size is not None:
            width, height = size
            _check_size(width, height, max_pixels)
            return width, height, _small_rgb_cv2(data, min(width, height))
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))  # reads the header only
            width, height = image.size
            _check_size(width, height, max_pixels)
            return width, height, _small_rgb_pil(image)
    except ImageError:
        raise
    except Exception as exc:  # PIL raises many types for broken files; each is a bad row
        raise ImageError(f"{type(exc).__name__}: {exc}") from None


def phashes(smalls: np.ndarray) -> np.ndarray:
    """Per-channel pHashes of N small pictures (N x HASH_SIDE x HASH_SIDE x 3 uint8), as an
    N x 3 uint64 array (R, G, B); the bits of :func:`phash_bits` on each channel, all N at
    once (a batch costs ~5 us a picture, one picture alone ~60 us)."""
    count = len(smalls)
    channels = smalls.transpose(0, 3, 1, 2).reshape(count * 3, HASH_SIDE, HASH_SIDE)
    low = (_DCT @ channels.astype(np.float64) @ _DCT.T).reshape(count * 3, LOW * LOW)
    half = LOW * LOW // 2
    middle = np.partition(low, (half - 1, half), axis=1)
    medians = (middle[:, half - 1] + middle[:, half]) / 2  # np.median's
    packed = np.packbits(low > medians[:, None], axis=1)  # MSB first, 8 bytes per channel
    return packed.view(">u8").astype(np.uint64).reshape(count, 3)


def inspect(data: bytes | None, max_pixels: int) -> ImageFeatures:
    """Decode one image and compute its features (:func:`decode_small` + :func:`phashes`)."""
    width, height, small = decode_small(data, max_pixels)
    hashes = tuple(int(h) for h in phashes(small[None])[0])
    return ImageFeatures(width, height, hashes, small.tobytes())


def _check_size(width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise ImageError(f"{width}x{height} pixels is more than max_image_pixels {max_pixels}")
    if width < 1 or height < 1:
        raise ImageError(f"empty image {width}x{height}")


_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})


def _complete_jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the SOF segment of a JPEG that ends in its EOI marker; None for
    anything else (not a JPEG, cut short, or a header this walk does not understand)."""
    if data[:2] != b"\xff\xd8" or not data.rstrip(b"\0").endswith(b"\xff\xd9"):
        return None
    pos, end = 2, len(data) - 9
    while pos < end:
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _SOF:
            height, width = struct.unpack(">HH", data[pos + 5:pos + 9])
            return width, height
        if marker in (0xD9, 0xDA):  # end of image / start of scan before any frame header
            return None
        pos += 2 + struct.unpack(">H", data[pos + 2:pos + 4])[0]
    return None


def _small_rgb_cv2(data: bytes, short: int) -> np.ndarray:
    """A complete JPEG as HASH_SIDE x HASH_SIDE x 3 uint8 RGB, decoded at 1/8..1/1 scale."""
    reduce = next((flag for side, flag in _CV2_REDUCED if short >= side), cv2.IMREAD_COLOR)
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), reduce | cv2.IMREAD_IGNORE_ORIENTATION)
    if decoded is None:
        raise ImageError("the JPEG data could not be decoded")
    small = cv2.resize(decoded, (HASH_SIDE, HASH_SIDE), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(small, cv2.COLOR_BGR2RGB)


def _small_rgb_pil(image: Image.Image) -> np.ndarray:
    """Any image PIL opens, as HASH_SIDE x HASH_SIDE x 3 uint8 RGB (JPEG at reduced scale)."""
    image.draft("RGB", (HASH_SIDE, HASH_SIDE))
    image.load()  # decodes the whole stream: truncation raises here
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.asarray(image.resize((HASH_SIDE, HASH_SIDE), Image.BILINEAR), dtype=np.uint8)


def thumb_difference(a: bytes, b: bytes) -> float:
    """How different two thumbnails are, in 0..255 pixel units, after fitting brightness and
    contrast: both are lightly blurred (resampling shifts edges by a fraction of a pixel),
    ``b ~ gain * a + offset`` is fitted by least squares (one gain for all channels, an
    offset per channel), and the 99.5th percentile of the per-pixel residual is returned
    (a handful of edge pixels do not decide). Re-encoded, resized or brightened copies score
    ~10-30; another picture, or the same layout in other colours, scores 60 or more."""
    x, y = (_blur(np.frombuffer(t, np.uint8).reshape(THUMB_SIDE, THUMB_SIDE, 3))
            .reshape(-1, 3).T.copy() for t in (a, b))  # 3 x pixels: channels contiguous
    xc = x - x.mean(axis=1, keepdims=True)
    yc = y - y.mean(axis=1, keepdims=True)
    var = float(np.vdot(xc, xc))
    gain = max(0.0, float(np.vdot(xc, yc)) / var) if var > 1e-9 else 0.0  # never invert
    residual = np.abs(yc - gain * xc).max(axis=0)
    return _percentile(residual, 99.5)


def _percentile(values: np.ndarray, q: float) -> float:
    """``np.percentile(values, q)`` (linear interpolation) by partial sort: ~10x faster."""
    rank = (len(values) - 1) * q / 100
    lo = int(rank)
    hi = min(lo + 1, len(values) - 1)
    part = np.partition(values, (lo, hi))
    return float(part[lo] + (part[hi] - part[lo]) * (rank - lo))


_BLUR = np.exp(-0.5 * (np.arange(-2, 3) / 0.7) ** 2)
_BLUR /= _BLUR.sum()


def _blur(image: np.ndarray) -> np.ndarray:
    """Separable Gaussian blur (sigma 0.7 px, 5 taps) of an H x W x C array, edges
    repeated; float64."""
    out = image.astype(np.float64)
    if cv2 is not None:
        return cv2.sepFilter2D(out, -1, _BLUR, _BLUR, borderType=cv2.BORDER_REPLICATE)
    for axis in (0, 1):
        padded = np.pad(out, [(2, 2) if a == axis else (0, 0) for a in range(3)], mode="edge")
        size = out.shape[axis]
        out = sum(w * np.take(padded, range(i, i + size), axis=axis) for i, w in enumerate(_BLUR))
    return out

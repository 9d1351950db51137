"""Faces: find them with a detector shipped inside an installed package, and blur them.

The detector is OpenCV's Haar cascade ``haarcascade_frontalface_alt2.xml``, a file of the
``opencv-python-headless`` wheel (``cv2.data.haarcascades``): nothing is downloaded. It runs
on a grey copy of the image, histogram-equalised and scaled so its longer side is at most
``detect_side`` pixels; a face is found when it is at least ``min_face`` of those pixels
(with the defaults, about a fifth of the image's longer side). An image whose shorter side
at that scale is under ``min_face`` cannot hold such a face and is not searched.

:func:`blur_boxes` pixelates and smooths every box (a little larger than found) so the face
cannot be recognised, and re-encodes the image as JPEG. Boxes are ``(x, y, w, h)`` in the
pixels of the image they were found in. EXIF orientation is ignored, as everywhere in the
filter.
"""

from __future__ import annotations

import functools
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

try:
    import cv2
except ImportError:  # pragma: no cover
    cv2 = None

CASCADE = "haarcascade_frontalface_alt2.xml"
POLICIES = ("blur", "drop", "off")  # blur the boxes in the stored JPEG / reject "face" / neither
MARGIN = 0.15  # each side of a box grows by this share of its size before blurring
BLOCKS = 6  # a blurred box keeps at most BLOCKS x BLOCKS cells of detail
Box = tuple[int, int, int, int]


class FaceDetectorError(RuntimeError):
    """The face detector cannot run here (OpenCV or its cascade file is missing)."""


@functools.lru_cache(maxsize=4)
def _cascade(name: str):
    """The cascade classifier ``name`` from the installed OpenCV wheel (loaded once)."""
    if cv2 is None:
        raise FaceDetectorError(
            "face detection needs OpenCV: pip install opencv-python-headless (or set the "
            "filter's face_policy to 'off')"
        )
    path = Path(cv2.data.haarcascades) / name
    classifier = cv2.CascadeClassifier(str(path))
    if not path.is_file() or classifier.empty():
        raise FaceDetectorError(f"{path}: no usable cascade file in the installed OpenCV; "
                                "reinstall opencv-python-headless")
    return classifier


@dataclass(frozen=True)
class FaceDetector:
    """Frontal faces in an image (see the module docstring for what is found)."""

    detect_side: int = 128  # the grey copy's longer side, at most
    min_face: int = 24  # smallest face searched for, in pixels of the grey copy (>= 20)
    min_neighbors: int = 3  # overlapping hits needed for a face (higher: fewer, surer faces)
    scale_factor: float = 1.2  # step between the window sizes searched
    cascade: str = CASCADE

    def boxes(self, data: bytes, width: int, height: int) -> list[Box]:
        """Face boxes in ``data`` (an image of ``width`` x ``height`` pixels)."""
        scale = min(1.0, self.detect_side / max(width, height))
        if min(width, height) * scale < self.min_face:
            return []  # too small to hold a face the detector would find
        grey = grey_copy(data, width, height, scale)
        return self.boxes_in_grey(grey, width / grey.shape[1], height / grey.shape[0],
                                  width, height)

    def boxes_in_grey(self, grey: np.ndarray, sx: float = 1.0, sy: float = 1.0,
                      width: int | None = None, height: int | None = None) -> list[Box]:
        """Face boxes in a uint8 grey array, scaled by ``(sx, sy)`` and clipped to the image."""
        width = width or grey.shape[1]
        height = height or grey.shape[0]
        found = _cascade(self.cascade).detectMultiScale(
            cv2.equalizeHist(grey), scaleFactor=self.scale_factor,
            minNeighbors=self.min_neighbors, minSize=(self.min_face, self.min_face))
        out = []
        for x, y, w, h in (found if len(found) else ()):
            x0, y0 = max(0, int(x * sx)), max(0, int(y * sy))
            x1, y1 = min(width, round((x + w) * sx)), min(height, round((y + h) * sy))
            out.append((x0, y0, x1 - x0, y1 - y0))
        return sorted(out)


def grey_copy(data: bytes, width: int, height: int, scale: float) -> np.ndarray:
    """``data`` (``width`` x ``height``) decoded to grey, resized by ``scale`` (a JPEG is
    decoded at the reduced scale libjpeg offers, then resized)."""
    flag = cv2.IMREAD_GRAYSCALE
    for factor, reduced in ((8, cv2.IMREAD_REDUCED_GRAYSCALE_8),
                            (4, cv2.IMREAD_REDUCED_GRAYSCALE_4),
                            (2, cv2.IMREAD_REDUCED_GRAYSCALE_2)):
        if scale * factor <= 1:
            flag = reduced
            break
    grey = cv2.imdecode(np.frombuffer(data, np.uint8), flag | cv2.IMREAD_IGNORE_ORIENTATION)
    if grey is None:  # a format OpenCV does not read (e.g. GIF): PIL decodes it
        with Image.open(io.BytesIO(data)) as image:
            grey = np.asarray(image.convert("L"), dtype=np.uint8)
    target = (max(1, round(width * scale)), max(1, round(height * scale)))
    if (grey.shape[1], grey.shape[0]) != target:
        grey = cv2.resize(grey, target, interpolation=cv2.INTER_AREA)
    return grey


def blur_boxes(data: bytes, boxes: list[Box], quality: int = 95) -> bytes:
    """``data`` with every box pixelated and smoothed, re-encoded as JPEG at ``quality``."""
    pixels = cv2.imdecode(np.frombuffer(data, np.uint8),
                          cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if pixels is None:
        with Image.open(io.BytesIO(data)) as image:
            pixels = cv2.cvtColor(np.asarray(image.convert("RGB")), cv2.COLOR_RGB2BGR)
    height, width = pixels.shape[:2]
    for x, y, w, h in boxes:
        dx, dy = round(w * MARGIN), round(h * MARGIN)
        x0, y0 = max(0, x - dx), max(0, y - dy)
        x1, y1 = min(width, x + w + dx), min(height, y + h + dy)
        if x1 <= x0 or y1 <= y0:
            continue
        region = pixels[y0:y1, x0:x1]
        cells = cv2.resize(region, (min(BLOCKS, x1 - x0), min(BLOCKS, y1 - y0)),
                           interpolation=cv2.INTER_AREA)
        smooth = cv2.resize(cells, (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
        pixels[y0:y1, x0:x1] = smooth
    ok, encoded = cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:  # pragma: no cover - OpenCV encodes any 8-bit BGR array
        raise FaceDetectorError("OpenCV could not encode the blurred image as JPEG")
    return encoded.tobytes()


def boxes_json(boxes: list[Box]) -> str:
    """The boxes as stored in the ``face_boxes`` column: ``[[x, y, w, h], ...]``."""
    return json.dumps([list(map(int, b)) for b in boxes], separators=(",", ":"))

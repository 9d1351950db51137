"""Evaluation decontamination: no training pair may show an image of an evaluation set.

:func:`load_eval_images` reads every image of the configured evaluation sets (retrieval,
zero-shot classification, VQA; text-only sets have none) into :class:`EvalImages`: the same
per-channel pHashes and 32x32 thumbnails the filter computes for the corpus. The filter's
dedup pass then runs its near-duplicate search over the corpus and these images together
(:class:`EvalOverlap`), with the dedup thresholds (``near_dup_max_distance`` bits on a
channel, confirmed by ``near_dup_max_pixel_diff`` on the thumbnails), and rejects each
corpus row that matches an evaluation image with the rule ``eval_overlap``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from brivl.filter.dedup import NearGraph
from brivl.filter.image import HASH_SIDE, phashes, thumb_difference

IMAGE_KINDS = ("retrieval", "image_classification", "vqa")


@dataclass
class EvalImages:
    """Evaluation images as the filter sees them: hashes, thumbnails and a name each."""

    hashes: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), np.uint64))
    thumbs: list[bytes] = field(default_factory=list)
    names: list[str] = field(default_factory=list)  # "retrieval image 3"
    per_set: dict[str, int] = field(default_factory=dict)  # images read per set

    def __len__(self) -> int:
        return len(self.thumbs)

    @classmethod
    def from_images(cls, named: Iterable[tuple[str, str, Image.Image]]) -> EvalImages:
        """From ``(set name, image name, PIL image)`` triples."""
        out, smalls = cls(), []
        for set_name, name, image in named:
            small = np.asarray(image.convert("RGB").resize((HASH_SIDE, HASH_SIDE),
                                                           Image.BILINEAR), dtype=np.uint8)
            smalls.append(small)
            out.thumbs.append(small.tobytes())
            out.names.append(name)
            out.per_set[set_name] = out.per_set.get(set_name, 0) + 1
        if smalls:
            out.hashes = phashes(np.stack(smalls))
        return out


def load_eval_images(eval_sets: str | Path | Mapping[str, str | Path]) -> EvalImages:
    """Every image of the evaluation sets (a directory of sets, one set, or name -> path)."""
    from brivl.evaluate.datasets import read_eval_set
    from brivl.evaluate.runner import resolve_sets

    def named() -> Iterable[tuple[str, str, Image.Image]]:
        for set_name, path in sorted(resolve_sets(eval_sets).items()):
            es = read_eval_set(path, name=set_name)
            if es.kind in IMAGE_KINDS:
                for i, image in enumerate(es.images):
                    yield set_name, f"{set_name} image {i}", image

    return EvalImages.from_images(named())


class EvalOverlap:
    """Which corpus rows near-duplicate an evaluation image.

    ``near`` is a :class:`NearGraph` over the corpus rows (positions ``0..corpus-1``, in
    dedup order) followed by the evaluation images; ``thumb_of(pos)`` gives a corpus row's
    thumbnail.
    """

    def __init__(self, near: NearGraph, corpus: int, images: EvalImages,
                 thumb_of: Callable[[int], bytes], max_pixel_diff: float) -> None:
        self.near, self.images, self.thumb_of = near, images, thumb_of
        self.limit = max_pixel_diff
        self.by_value: list[dict[int, list[int]]] = []  # per channel: value -> eval images
        for channel in range(near.channels):
            values: dict[int, list[int]] = {}
            for e in range(len(images)):
                values.setdefault(near.value(channel, corpus + e), []).append(e)
            self.by_value.append(values)
        self.found: dict[str, int] = {}  # per eval set: corpus rows matched

    def check(self, pos: int) -> str | None:
        """Why corpus row ``pos`` is an eval image's near-duplicate, or ``None``."""
        matches: dict[int, int] = {}
        for channel, by_value in enumerate(self.by_value):
            own = self.near.value(channel, pos)
            for value, bits in [(own, 0), *self.near.links(channel, own)]:
                for e in by_value.get(value, ()):
                    matches[e] = min(bits, matches.get(e, bits))
        if not matches:
            return None
        thumb = self.thumb_of(pos)
        for e, distance in sorted(matches.items()):
            diff = thumb_difference(self.images.thumbs[e], thumb)
            if diff <= self.limit:
                name = self.images.names[e]
                set_name = name.rsplit(" image ", 1)[0]
                self.found[set_name] = self.found.get(set_name, 0) + 1
                return (f"near-duplicate of eval {name} (pHash distance {distance}, "
                        f"thumbnail difference {diff:.0f})")
        return None

    def summary(self) -> dict[str, Any]:
        """Eval images checked against, and corpus rows found, per set."""
        return {"eval_images": len(self.images), "per_set": dict(self.images.per_set),
                "found": sum(self.found.values()), "found_per_set": dict(sorted(self.found.items()))}

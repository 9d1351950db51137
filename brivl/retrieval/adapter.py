"""Our encoder in the shape clip-retrieval's ``clip_back`` expects from a CLIP model.

``clip_back`` computes a query embedding like this (``KnnService.compute_query``)::

    text = tokenizer([text]).to(device);        features = model.encode_text(text)
    image = preprocess(pil).unsqueeze(0).to(device); features = model.encode_image(image)
    features /= features.norm(dim=-1, keepdim=True); features.cpu().to(float32).numpy()

It gets ``(model, preprocess, tokenizer)`` from ``all_clip.load_clip``, which only knows
OpenAI/open_clip/HF CLIP models and drags in torchvision. :class:`ClipAdapter` provides the
same three callables backed by any :class:`Encoder` (our BriVL inference API): the
tokenizer and preprocess steps only carry the raw inputs forward, and the model calls
``encode_texts`` / ``encode_images``, so tokenisation and image transforms stay exactly
the ones the model was trained with.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from PIL import Image


@runtime_checkable
class Encoder(Protocol):
    """The inference API the retrieval stage needs (``brivl.inference.load`` returns one)."""

    def encode_images(self, images: Sequence[Any], batch_size: int = 64) -> np.ndarray:
        """PIL images or encoded image bytes -> float32 (n, d), rows L2-normalised."""
        ...

    def encode_texts(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Strings -> float32 (n, d), rows L2-normalised."""
        ...


class PendingInputs:
    """Raw inputs on their way from clip_back's tokenizer/preprocess to the model.

    Supports the two tensor methods clip_back calls on them (``.to(device)`` and
    ``.unsqueeze(0)``), which are no-ops here: batching and devices are the encoder's job.
    """

    def __init__(self, kind: str, items: list[Any]) -> None:
        self.kind = kind
        self.items = items

    def to(self, device: Any) -> PendingInputs:
        return self

    def unsqueeze(self, dim: int) -> PendingInputs:
        return self

    def __len__(self) -> int:
        return len(self.items)


def _as_tensor(embeddings: np.ndarray) -> torch.Tensor:
    """A writable float32 (n, d) tensor (clip_back normalises it in place)."""
    array = np.array(embeddings, dtype=np.float32, copy=True)
    if array.ndim != 2:
        raise ValueError(f"encoder returned shape {array.shape}; expected (n, d)")
    return torch.from_numpy(array)


class ClipModelAdapter:
    """``model.encode_text`` / ``model.encode_image`` over an :class:`Encoder`."""

    def __init__(self, encoder: Encoder) -> None:
        self.encoder = encoder

    def encode_text(self, pending: PendingInputs) -> torch.Tensor:
        _expect(pending, "text")
        return _as_tensor(self.encoder.encode_texts(pending.items))

    def encode_image(self, pending: PendingInputs) -> torch.Tensor:
        _expect(pending, "image")
        return _as_tensor(self.encoder.encode_images(pending.items))


def _expect(pending: Any, kind: str) -> None:
    if not isinstance(pending, PendingInputs) or pending.kind != kind:
        got = getattr(pending, "kind", type(pending).__name__)
        raise TypeError(f"encode_{kind} expects the adapter's {kind} inputs, got {got}")


def tokenize(texts: str | Sequence[str]) -> PendingInputs:
    """clip_back's ``tokenizer``: keep the strings (the encoder tokenises)."""
    items = [texts] if isinstance(texts, str) else list(texts)
    bad = [type(t).__name__ for t in items if not isinstance(t, str)]
    if bad:
        raise TypeError(f"text queries must be strings, got {bad}")
    return PendingInputs("text", items)


def preprocess(image: Image.Image) -> PendingInputs:
    """clip_back's ``preprocess``: decode to RGB now (the encoder resizes and normalises)."""
    if not isinstance(image, Image.Image):
        raise TypeError(f"image query must be a PIL image, got {type(image).__name__}")
    return PendingInputs("image", [image.convert("RGB")])


class ClipAdapter:
    """The ``(model, preprocess, tokenizer)`` triple of ``all_clip.load_clip`` for an encoder."""

    def __init__(self, encoder: Encoder) -> None:
        if not isinstance(encoder, Encoder):
            raise TypeError(
                f"{type(encoder).__name__} is not an encoder: it needs encode_images(images) "
                "and encode_texts(texts) returning (n, d) float32 arrays"
            )
        self.model = ClipModelAdapter(encoder)
        self.preprocess = preprocess
        self.tokenizer = tokenize

    def load_clip(self, clip_model: str = "", use_jit: bool = False, device: str = "cpu", **_: Any):
        """Drop-in for ``all_clip.load_clip`` (arguments accepted and ignored)."""
        return self.model, self.preprocess, self.tokenizer

"""Inference API: a checkpoint directory or a model URI -> an encoder of images and texts.

>>> from brivl.inference import load
>>> enc = load("models:/brivl@champion")          # or a checkpoint directory
>>> enc.encode_images([pil_or_jpeg_bytes, ...])   # float32 (n, d), rows L2-normalised
>>> enc.encode_texts(["a red square", ...])       # float32 (n, d), same space

URI schemes other than plain paths (and ``file://``) are resolved by plugins: Python entry
points in the group ``brivl.uri_resolvers``, named by scheme, each a callable
``resolve(uri) -> local checkpoint directory``. This package ships none itself (it never
imports MLflow); the project's ``tasks.register`` registers ``models`` and ``runs``.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import torch

from brivl.model.precision import autocast

RESOLVER_GROUP = "brivl.uri_resolvers"


def uri_resolvers() -> dict[str, EntryPoint]:
    """Installed URI resolvers by scheme (from the ``brivl.uri_resolvers`` entry points)."""
    return {ep.name: ep for ep in entry_points(group=RESOLVER_GROUP)}


def resolve(uri_or_path: str | Path) -> Path:
    """A local checkpoint directory for a path, ``file://`` URI or plugin-resolved URI."""
    text = str(uri_or_path)
    if Path(text).exists():
        return Path(text)
    if isinstance(uri_or_path, Path):
        raise FileNotFoundError(f"no checkpoint directory at {text}")
    scheme = urlsplit(text).scheme
    if scheme == "file":
        return Path(urlsplit(text).path)
    if not scheme or len(scheme) == 1:  # plain (or Windows drive) path that does not exist
        raise FileNotFoundError(f"no checkpoint directory at {text}")
    resolvers = uri_resolvers()
    if scheme not in resolvers:
        known = ", ".join(["file", *sorted(resolvers)])
        raise ValueError(
            f"unknown URI scheme {scheme!r} in {text!r}; known schemes: {known} "
            f"(resolvers are entry points in group {RESOLVER_GROUP!r}; a checkpoint "
            "directory path is accepted as is)"
        )
    return Path(resolvers[scheme].load()(text))


def default_device() -> torch.device:
    """CUDA when available, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class Encoder:
    """Frozen BriVL towers behind numpy in, numpy out; batched, under ``inference_mode``.

    ``trunk_store``: a directory of frozen-trunk records (:mod:`brivl.model.trunk_store`);
    inputs already there skip the frozen layers, new ones are added (``flush`` writes them).
    """

    def __init__(self, model: Any, device: str | torch.device | None = None, source: str = "",
                 trunk_store: str | Path | None = None):
        from brivl.model.precision import bf16_enabled
        from brivl.model.trunk_store import TrunkStore

        self.device = torch.device(device) if device is not None else default_device()
        self.model = model.to(self.device).eval()
        self.source = source
        self.image_size: int = model.config.image_size
        self.dim: int = model.config.embed_dim
        self.trunks = TrunkStore.open(trunk_store, self.model, bf16_enabled(self.device))
        has = self.trunks is not None
        self._stored_images = has and bool(self.model.image_tower.trunk_tensors())
        self._stored_texts = has and bool(self.model.text_tower.trunk_tensors())

    def flush(self) -> None:
        """Write the frozen-trunk records computed so far (no-op without a store)."""
        if self.trunks is not None:
            self.trunks.flush()

    def __repr__(self) -> str:
        return f"Encoder({self.model.config.name!r}, dim={self.dim}, device={self.device}, source={self.source!r})"

    @staticmethod
    def _finish(chunks: list[torch.Tensor], dim: int) -> np.ndarray:
        if not chunks:
            return np.zeros((0, dim), dtype=np.float32)
        out = torch.cat(chunks).float()
        out = torch.nn.functional.normalize(out, dim=-1)  # guard: rows exactly unit length
        return out.cpu().numpy().astype(np.float32, copy=False)

    def encode_images(self, images: Sequence[Any], batch_size: int = 64) -> np.ndarray:
        """PIL images or encoded image bytes (or paths) -> float32 (n, d), L2-normalised.

        An unreadable image raises ``ValueError`` naming its index in ``images``.
        """
        from brivl.model.preprocess import load_images

        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        chunks = []
        with torch.inference_mode():
            for start in range(0, len(images), batch_size):
                batch = list(images[start : start + batch_size])
                if self._stored_images:
                    chunks.append(self._images_via_store(batch, start))
                    continue
                try:
                    pixels = load_images(batch, self.image_size)  # [B, 3, S, S] in [0, 1]
                except ValueError as exc:
                    raise ValueError(f"encode_images: batch from {start}: {exc}") from exc
                with autocast(self.device):
                    chunks.append(self.model.encode_image(pixels.to(self.device)))  # [B, D]
        self.flush()
        return self._finish(chunks, self.dim)

    def _images_via_store(self, batch: list[Any], start: int) -> torch.Tensor:
        """[B, D] for one batch: frozen-trunk outputs from the store, the missing ones computed."""
        from brivl.model.preprocess import load_images
        from brivl.model.trunk_store import image_key

        tower, store = self.model.image_tower, self.trunks
        keys = [image_key(item, self.image_size) for item in batch]
        rows = [store.get("image", k) for k in keys]
        missing = [i for i, row in enumerate(rows) if row is None]
        if missing:
            try:
                pixels = load_images([batch[i] for i in missing], self.image_size, missing)
            except ValueError as exc:
                raise ValueError(f"encode_images: batch from {start}: {exc}") from exc
            with autocast(self.device):
                computed = tower.trunk(pixels.to(self.device)).float()
            for i, row in zip(missing, computed, strict=True):
                rows[i] = row
                store.put("image", keys[i], row)
        with autocast(self.device):
            return tower.from_trunk(torch.stack(rows).to(self.device))  # [B, D]

    def encode_texts(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Strings -> float32 (n, d), L2-normalised (same space as the images)."""
        if isinstance(texts, str):
            raise TypeError("encode_texts expects a list of strings, got one string")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        chunks = []
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                tokens = self.model.tokenize(list(texts[start : start + batch_size]))
                tokens = {k: v.to(self.device) for k, v in tokens.items()}  # [B, L] each
                with autocast(self.device):
                    if self._stored_texts:
                        chunks.append(self._texts_via_store(tokens))
                    else:
                        chunks.append(self.model.encode_text(**tokens))  # [B, D]
        self.flush()
        return self._finish(chunks, self.dim)

    def _texts_via_store(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        """[B, D] for one tokenised batch: frozen-trunk outputs from the store or computed."""
        from brivl.model.trunk_store import text_key

        tower, store = self.model.text_tower, self.trunks
        ids, mask = tokens["input_ids"], tokens["attention_mask"]
        lengths = mask.sum(dim=1).tolist()
        keys = [text_key(ids[i, :n]) for i, n in enumerate(lengths)]
        rows = [store.get("text", k) for k in keys]
        missing = [i for i, row in enumerate(rows) if row is None]
        if missing:
            computed = tower.trunk(ids[missing], mask[missing]).float()  # [M, L, width]
            for j, i in enumerate(missing):
                rows[i] = computed[j, : lengths[i]]
                store.put("text", keys[i], rows[i])
        trunk = torch.zeros(len(rows), ids.shape[1], rows[0].shape[-1], device=self.device)
        for i, row in enumerate(rows):
            trunk[i, : row.shape[0]] = row.to(self.device)
        return tower.from_trunk(trunk, ids, mask)


def load(uri_or_path: str | Path, device: str | torch.device | None = None,
         trunk_store: str | Path | None = None) -> Encoder:
    """An :class:`Encoder` from a checkpoint directory or a model URI (``models:/brivl@champion``).

    ``trunk_store``: see :class:`Encoder`."""
    from brivl.model import load_checkpoint

    directory = resolve(uri_or_path)
    if not directory.is_dir():
        raise FileNotFoundError(f"{uri_or_path}: {directory} is not a checkpoint directory")
    dev = torch.device(device) if device is not None else default_device()
    return Encoder(load_checkpoint(directory, map_location=dev), dev, source=str(uri_or_path),
                   trunk_store=trunk_store)

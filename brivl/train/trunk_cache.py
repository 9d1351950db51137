"""Frozen-trunk cache: the frozen prefix of each tower, computed once per sample.

The frozen prefix (lower EfficientNet stages, lower text layers) never changes during
training. When the inputs repeat across epochs unchanged (no pixel augmentation), its
outputs are the same every epoch, so they are kept in memory by sample key (the
text trunk unpadded) and a cached sample is neither decoded nor run through the prefix
again. Later epochs then cost only the trainable part of each tower.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from brivl.model.trunk_store import TrunkStore, image_key, text_key

Decode = Callable[[list[bytes], list[str]], tuple[np.ndarray, np.ndarray]]  # -> pixels, valid


def stable_id(text: str) -> int:
    """A non-negative 63-bit id of ``text`` (the same in every process and run)."""
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") & 0x7FFF_FFFF_FFFF_FFFF


def caption_id(caption: str) -> int:
    """Id of a caption up to case and spacing (pairs with the same text share it)."""
    return stable_id(" ".join(caption.lower().split()))


def batch_ids(keys: Sequence[str], captions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """(sample ids, caption ids), LongTensor[B] each, for the queue's false-negative mask."""
    return (torch.tensor([stable_id(k) for k in keys], dtype=torch.long),
            torch.tensor([caption_id(c) for c in captions], dtype=torch.long))


class TrunkCache:
    """Frozen-trunk outputs by sample key; ``lookup`` fills what is missing.

    With ``store`` (a :mod:`brivl.model.trunk_store` root directory) a miss is first looked
    up there by content (image bytes, token ids), and what is computed is added to it, so
    the other stages that run the same frozen layers on the same inputs skip them.
    """

    def __init__(self, dtype: torch.dtype = torch.float32, bf16: bool = False,
                 store: str | Path | None = None) -> None:
        self.dtype, self.bf16 = dtype, bf16  # bf16: compute the trunks under bf16 autocast
        self.image: dict[str, torch.Tensor] = {}  # key -> (C', h', w')
        self.text: dict[str, torch.Tensor | None] = {}  # key -> (L_i, width), unpadded
        self.bad: set[str] = set()  # keys whose image did not decode
        self.hits = self.misses = 0
        self.fill_seconds = 0.0  # time spent reading the store and running the frozen prefixes
        self.store_root = store
        self.store: TrunkStore | None = None
        self._store_opened = False
        self._stored = (False, False)

    def flush(self) -> None:
        """Write the records added to the store (no-op without one)."""
        if self.store is not None:
            self.store.flush()

    def __len__(self) -> int:
        return len(self.image)

    def nbytes(self) -> int:
        tensors = [*self.image.values(), *(t for t in self.text.values() if t is not None)]
        return sum(t.numel() * t.element_size() for t in tensors)

    @torch.no_grad()
    def lookup(self, model: torch.nn.Module, keys: list[str], captions: list[str],
               images: list[bytes], tokens: dict[str, torch.Tensor], decode: Decode,
               device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None, np.ndarray]:
        """(image trunk (B, C', h', w'), text trunk (B, L, width) or None, valid (B,)).

        ``tokens`` is the batch's tokenisation (padded to its longest caption); samples not
        yet cached are decoded with ``decode`` and run through the frozen prefixes.
        """
        missing = [i for i, k in enumerate(keys) if k not in self.image and k not in self.bad]
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)
        if missing:
            start = time.perf_counter()
            self._fill(model, [keys[i] for i in missing], [images[i] for i in missing],
                       {k: v[missing] for k, v in tokens.items()}, decode, device)
            self.fill_seconds += time.perf_counter() - start
        valid = np.array([k not in self.bad for k in keys], dtype=bool)
        good = next((k for k in keys if k not in self.bad), None)
        if good is None:
            return torch.empty(0), None, valid
        fill = [k if k not in self.bad else good for k in keys]
        image = torch.stack([self.image[k] for k in fill]).to(device, torch.float32)
        return image, self._text(fill, tokens, device), valid

    def _fill(self, model: torch.nn.Module, keys: list[str], images: list[bytes],
              tokens: dict[str, torch.Tensor], decode: Decode, device: torch.device) -> None:
        store = self._open_store(model)
        use_image, use_text = self._stored
        ids, mask = tokens["input_ids"].to(device), tokens["attention_mask"].to(device)
        lengths = mask.sum(dim=1).tolist()
        size = model.config.image_size
        image_keys = [image_key(b, size) if use_image else None for b in images]
        text_keys = [text_key(ids[i, :n]) if use_text else None for i, n in enumerate(lengths)]
        image_rows = [store.get("image", k) if use_image else None for k in image_keys]
        text_rows = [store.get("text", k) if use_text else None for k in text_keys]
        need_image = [i for i, row in enumerate(image_rows) if row is None]
        if need_image:
            pixels, valid = decode([images[i] for i in need_image], [keys[i] for i in need_image])
            pixels = torch.as_tensor(pixels).to(device).float().div_(255.0)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.bf16):
                computed = model.image_tower.trunk(pixels)
            for j, i in enumerate(need_image):
                if valid[j]:
                    image_rows[i] = computed[j]
                    if use_image:
                        store.put("image", image_keys[i], computed[j].float())
        need_text = [i for i, row in enumerate(text_rows) if row is None and image_rows[i] is not None]
        if need_text:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.bf16):
                computed = model.text_tower.trunk(ids[need_text], mask[need_text])
            for j, i in enumerate(need_text):
                text_rows[i] = None if computed is None else computed[j, : lengths[i]]
                if use_text and computed is not None:
                    store.put("text", text_keys[i], text_rows[i].float())
        for i, key in enumerate(keys):
            if image_rows[i] is None:
                self.bad.add(key)
                continue
            self.image[key] = image_rows[i].to("cpu", self.dtype)
            self.text[key] = None if text_rows[i] is None else text_rows[i].to("cpu", self.dtype)

    def _open_store(self, model: torch.nn.Module) -> TrunkStore | None:
        """The store (opened on the first fill); ``_stored``: whether each tower's trunk
        (image, text) goes through it: only a tower with frozen layers does."""
        if not self._store_opened:
            self._store_opened = True
            self.store = TrunkStore.open(self.store_root, model, self.bf16)
            has = self.store is not None
            self._stored = (has and bool(model.image_tower.trunk_tensors()),
                            has and bool(model.text_tower.trunk_tensors()))
        return self.store

    def _text(self, keys: list[str], tokens: dict[str, torch.Tensor],
              device: torch.device) -> torch.Tensor | None:
        if self.text[keys[0]] is None:
            return None
        length = tokens["attention_mask"].shape[1]
        rows = [self.text[k] for k in keys]
        out = torch.zeros(len(rows), length, rows[0].shape[-1])  # (B, L, width)
        for i, row in enumerate(rows):
            out[i, : row.shape[0]] = row.float()
        return out.to(device)

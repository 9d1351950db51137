"""Frozen-trunk cache: the frozen prefix of each tower, computed once per sample.

The frozen prefix (lower EfficientNet stages, lower text layers) never changes during
training. When the inputs repeat across epochs unchanged (no pixel augmentation), its
outputs are the same every epoch, so they are kept in memory by sample key (the
text trunk unpadded) and a cached sample is neither decoded nor run through the prefix
again. Later epochs then cost only the trainable part of each tower.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

import numpy as np
import torch

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
    """Frozen-trunk outputs by sample key; ``lookup`` fills what is missing."""

    def __init__(self, dtype: torch.dtype = torch.float32, bf16: bool = False) -> None:
        self.dtype, self.bf16 = dtype, bf16  # bf16: compute the trunks under bf16 autocast
        self.image: dict[str, torch.Tensor] = {}  # key -> (C', h', w')
        self.text: dict[str, torch.Tensor | None] = {}  # key -> (L_i, width), unpadded
        self.bad: set[str] = set()  # keys whose image did not decode
        self.hits = self.misses = 0

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
            self._fill(model, [keys[i] for i in missing], [images[i] for i in missing],
                       {k: v[missing] for k, v in tokens.items()}, decode, device)
        valid = np.array([k not in self.bad for k in keys], dtype=bool)
        good = next((k for k in keys if k not in self.bad), None)
        if good is None:
            return torch.empty(0), None, valid
        fill = [k if k not in self.bad else good for k in keys]
        image = torch.stack([self.image[k] for k in fill]).to(device, torch.float32)
        return image, self._text(fill, tokens, device), valid

    def _fill(self, model: torch.nn.Module, keys: list[str], images: list[bytes],
              tokens: dict[str, torch.Tensor], decode: Decode, device: torch.device) -> None:
        pixels, valid = decode(images, keys)
        pixels = torch.as_tensor(pixels).to(device).float().div_(255.0)
        mask = tokens["attention_mask"].to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.bf16):
            image_trunk, text_trunk = model.trunks(pixels, tokens["input_ids"].to(device), mask)
        lengths = mask.sum(dim=1).tolist()
        for i, key in enumerate(keys):
            if not valid[i]:
                self.bad.add(key)
                continue
            self.image[key] = image_trunk[i].to("cpu", self.dtype)
            self.text[key] = (None if text_trunk is None
                              else text_trunk[i, : lengths[i]].to("cpu", self.dtype))

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

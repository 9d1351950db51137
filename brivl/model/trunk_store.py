"""Frozen-trunk store: the towers' frozen-prefix outputs on disk, shared across stages.

The pretrained layers under BriVL's own layers are frozen, so pretrain, the frozen-towers
baseline, the evaluations of all three models and the index run the same frozen layers on
the same inputs. The store keeps those outputs under ``<root>/<fingerprint>/``. The
fingerprint is a digest of every tensor the frozen prefixes read (weights, BatchNorm
statistics, the pixel mean/std), the torch version and the precision, so a model whose
frozen layers differ in any bit never reads another model's outputs.

Keys: an image is its encoded bytes (or a PIL image's pixels) and the output size; a text is
its token ids. Pixels come from :func:`brivl.model.preprocess.crop_resize`, the one path
training and inference share, so a training image's record serves the index too.

Records are pack files of plain arrays, read with ``numpy.load(allow_pickle=False)``: hex
keys, per-record lengths, float32 data. A pack that does not read back as that layout is
skipped with a warning naming it (its records are recomputed); nothing in it is executed.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)

FORMAT = "brivl-trunks-1"
FLUSH_EVERY = 512  # records held in memory before they are written as one pack


def default_root() -> Path:
    """``$BRIVL_HOME/cache/trunks``: where the pipeline's stages share their records."""
    from brivl.env import project_home

    return project_home() / "cache" / "trunks"


def clear(root: str | Path) -> int:
    """Delete every record under ``root`` (all fingerprints); the number of packs removed.

    A take-down calls it: records are features of the images and captions they came from, so
    they go with them (every stage recomputes what it needs)."""
    root = Path(root)
    packs = list(root.glob("*/*.npz")) + list(root.glob("*/*.npz.part"))
    for path in packs:
        path.unlink(missing_ok=True)
    for directory in [d for d in root.glob("*") if d.is_dir()]:
        with contextlib.suppress(OSError):
            directory.rmdir()
    return sum(1 for p in packs if p.suffix == ".npz")


def image_key(item: Any, size: int) -> str | None:
    """Key of one image input at ``size`` px (None: not a kind the store keys)."""
    digest = hashlib.blake2b(f"image|{size}|".encode(), digest_size=16)
    if isinstance(item, (bytes, bytearray, memoryview)):
        digest.update(b"bytes|")
        digest.update(bytes(item))
    elif isinstance(item, (str, Path)):
        try:
            digest.update(b"bytes|")
            digest.update(Path(item).read_bytes())
        except OSError:
            return None  # unreadable: the decoder reports it
    else:
        from PIL import Image

        if not isinstance(item, Image.Image):
            return None
        digest.update(f"pil|{item.mode}|{item.size}|{getattr(item, 'format', None)}|".encode())
        digest.update(item.tobytes())
    return digest.hexdigest()


def text_key(ids: torch.Tensor) -> str:
    """Key of one text: its token ids without padding (1-D)."""
    data = ids.detach().to("cpu", torch.int64).numpy().tobytes()
    return hashlib.blake2b(b"text|" + data, digest_size=16).hexdigest()


def trunk_fingerprint(model: torch.nn.Module, bf16: bool) -> str | None:
    """Digest of everything the model's frozen prefixes compute with; None if none is frozen."""
    image = model.image_tower.trunk_tensors()
    text = model.text_tower.trunk_tensors()
    if not image and not text:
        return None
    digest = hashlib.blake2b(digest_size=12)
    im, tx = model.config.image, model.config.text
    text_dropout = tx.dropout if model.text_tower.training else 0.0
    digest.update(f"{FORMAT}|torch {torch.__version__}|bf16 {bf16}|{im.backbone} frozen "
                  f"{im.frozen_stages}|{tx.encoder} frozen {tx.frozen_layers} dropout "
                  f"{text_dropout}|".encode())
    for part, tensors in (("image", image), ("text", text)):
        for name in sorted(tensors):
            tensor = tensors[name].detach().to("cpu").contiguous()
            digest.update(f"{part}.{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class TrunkStore:
    """Records of one fingerprint: ``get`` / ``put`` by kind ("image", "text") and key;
    ``flush`` writes the new ones as packs."""

    def __init__(self, directory: str | Path) -> None:
        self.dir = Path(directory)
        self.records: dict[str, dict[str, torch.Tensor]] = {"image": {}, "text": {}}
        self.pending: dict[str, list[str]] = {"image": [], "text": []}
        self.hits = self.misses = 0
        self.skipped: list[str] = []  # packs that did not read back
        for path in sorted(self.dir.glob("*.npz")):
            self._read(path)

    @classmethod
    def open(cls, root: str | Path | None, model: torch.nn.Module, bf16: bool = False) -> TrunkStore | None:
        """The store of ``model``'s frozen prefixes under ``root`` (None: no root, or nothing frozen)."""
        if root is None:
            return None
        fingerprint = trunk_fingerprint(model, bf16)
        return None if fingerprint is None else cls(Path(root) / fingerprint)

    def __len__(self) -> int:
        return sum(len(r) for r in self.records.values())

    def get(self, kind: str, key: str | None) -> torch.Tensor | None:
        found = None if key is None else self.records[kind].get(key)
        if found is None:
            self.misses += 1
        else:
            self.hits += 1
        return found

    def put(self, kind: str, key: str | None, value: torch.Tensor) -> None:
        if key is None or key in self.records[kind]:
            return
        self.records[kind][key] = value.detach().to("cpu", torch.float32).contiguous()
        self.pending[kind].append(key)
        if len(self.pending[kind]) >= FLUSH_EVERY:
            self._write(kind)

    def flush(self) -> None:
        """Write every record not yet on disk (one pack per kind)."""
        for kind in self.records:
            self._write(kind)

    def _write(self, kind: str) -> None:
        keys = self.pending[kind]
        if not keys:
            return
        rows = [self.records[kind][k] for k in keys]
        lengths = np.array([r.shape[0] if kind == "text" else 1 for r in rows], dtype=np.int64)
        data = torch.cat(rows) if kind == "text" else torch.stack(rows)
        self.dir.mkdir(parents=True, exist_ok=True)
        final = self.dir / f"{kind}-{uuid.uuid4().hex}.npz"
        part = final.with_name(final.name + ".part")
        with open(part, "wb") as fh:
            np.savez(fh, format=np.array(FORMAT), kind=np.array(kind),
                     keys=np.array(keys, dtype="U32"), lengths=lengths, data=data.numpy())
        os.replace(part, final)
        self.pending[kind] = []

    def _read(self, path: Path) -> None:
        try:
            with np.load(path, allow_pickle=False) as pack:
                kind, keys = str(pack["kind"]), pack["keys"]
                lengths, data = pack["lengths"], pack["data"]
                if str(pack["format"]) != FORMAT or kind not in self.records:
                    raise ValueError(f"format {str(pack['format'])!r}, kind {kind!r}; "
                                     f"accepted: {FORMAT!r}, image or text")
                if keys.dtype.kind != "U" or data.dtype != np.float32 or lengths.shape != keys.shape:
                    raise ValueError("keys must be strings, lengths one per key, data float32")
                if lengths.sum() != data.shape[0] or (lengths < 1).any():
                    raise ValueError(f"lengths sum to {int(lengths.sum())}, data has {data.shape[0]} rows")
                tensor = torch.from_numpy(np.ascontiguousarray(data))
        except (OSError, ValueError, KeyError, EOFError) as exc:
            self.skipped.append(str(path))
            log.warning("trunk store: %s skipped (%s); its records are recomputed", path, exc)
            return
        if kind == "image":
            for key, row in zip(keys.tolist(), tensor, strict=True):
                self.records[kind].setdefault(key, row)
            return
        for key, row in zip(keys.tolist(), torch.split(tensor, lengths.tolist()), strict=True):
            self.records[kind].setdefault(key, row)

"""Validation retrieval: encode a shard split's images and captions, image<->text recall@k."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from brivl.evaluate.metrics import retrieval_recall
from brivl.model import BriVL
from brivl.model.preprocess import try_load_images
from brivl.train.data import read_split


@torch.no_grad()
def retrieval_metrics(model: BriVL, shard_dir: str | Path, split: str = "val",
                      limit: int | None = 1000, batch_size: int = 64,
                      device: str | torch.device | None = None) -> dict[str, Any]:
    """R@1/5/10 image->text and text->image over (up to ``limit``) pairs of ``split``.

    Pairs whose caption repeats an earlier one are dropped (an identical caption cannot be
    told apart from its twin, and ties count as misses), so every caption has exactly one
    image; chance R@1 is ``1 / n``. Images that cannot be decoded are left out (``n_bad``).
    Returns ``i2t_r1``, ``t2i_r1``, ..., ``mean_recall``, ``n`` and ``chance_r1``.
    """
    raw = read_split(shard_dir, split, ["image", "caption"])
    seen: set[str] = set()
    data: dict[str, list] = {"image": [], "caption": []}
    for image, caption in zip(raw["image"], raw["caption"], strict=True):
        key = str(caption).strip().lower()
        if key in seen:
            continue
        seen.add(key)
        data["image"].append(image)
        data["caption"].append(caption)
        if limit is not None and len(seen) >= limit:
            break
    device = torch.device(device) if device else next(model.parameters()).device
    was_training = model.training
    model.eval()
    img_parts, txt_parts, n_bad = [], [], 0
    size = model.config.image_size
    for start in range(0, len(data["image"]), batch_size):
        images = data["image"][start : start + batch_size]
        captions = data["caption"][start : start + batch_size]
        pixels, reasons = try_load_images(images, size)
        keep = [i for i, r in enumerate(reasons) if r is None]
        n_bad += len(images) - len(keep)
        if not keep:
            continue
        tokens = model.tokenize([str(captions[i]) for i in keep])
        img_parts.append(model.encode_image(pixels[keep].to(device)).float().cpu())
        txt_parts.append(model.encode_text(tokens["input_ids"].to(device),
                                           tokens["attention_mask"].to(device)).float().cpu())
    model.train(was_training)
    if not img_parts:
        raise ValueError(f"{shard_dir}/{split}: no decodable images to evaluate")
    image_emb = torch.cat(img_parts).numpy()
    text_emb = torch.cat(txt_parts).numpy()
    n = len(image_emb)
    out: dict[str, Any] = retrieval_recall(image_emb, text_emb, np.arange(n))
    out.update(n=n, n_bad=n_bad, chance_r1=1.0 / n)
    return out

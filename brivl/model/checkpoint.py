"""Checkpoint directory: safetensors weights (no pickle), config JSON and tokenizer.

Layout of ``dir``::

    model.safetensors    towers, momentum towers, queues, pointers (model.state_dict())
    config.json          the resolved BriVLConfig: a checkpoint alone rebuilds the model
    tokenizer.json       the tokenizer (HF tokenizers format)
    extra.safetensors    optional tensors of the caller (e.g. optimizer state)
    extra.json           optional JSON of the caller (e.g. step, RNG seeds)
    checkpoint.json      format version and file list, written last: marks the checkpoint complete

Other files in ``dir`` (a trainer's own state) are left alone.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from brivl.model.config import BriVLConfig
from brivl.model.model import BriVL

FORMAT = "brivl-checkpoint"
VERSION = 1
WEIGHTS, CONFIG, TOKENIZER = "model.safetensors", "config.json", "tokenizer.json"
EXTRA_TENSORS, EXTRA_JSON, INDEX = "extra.safetensors", "extra.json", "checkpoint.json"


def _tmp(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


def _write_json(path: Path, data: Any) -> None:
    tmp = _tmp(path)
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def _write_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    tmp = _tmp(path)
    save_file({k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}, str(tmp),
              metadata={"format": FORMAT})
    os.replace(tmp, path)


def save_checkpoint(model: BriVL, directory: str | Path, extra_tensors: dict[str, torch.Tensor] | None = None,
                    extra_json: dict[str, Any] | None = None) -> Path:
    """Write ``model`` (and optional extras) into ``directory``; returns the directory."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    (out / INDEX).unlink(missing_ok=True)  # incomplete until rewritten last
    _write_tensors(out / WEIGHTS, model.state_dict())
    _write_json(out / CONFIG, model.config.to_dict())
    tmp = _tmp(out / TOKENIZER)
    model.tokenizer.save(tmp)
    os.replace(tmp, out / TOKENIZER)
    files = [WEIGHTS, CONFIG, TOKENIZER]
    for name, data, writer in ((EXTRA_TENSORS, extra_tensors, _write_tensors), (EXTRA_JSON, extra_json, _write_json)):
        if data is None:
            (out / name).unlink(missing_ok=True)
        else:
            writer(out / name, data)
            files.append(name)
    _write_json(out / INDEX, {"format": FORMAT, "version": VERSION, "files": files,
                              "model": model.config.name, "torch": torch.__version__})
    return out


def _index(directory: Path) -> dict[str, Any]:
    index_file = directory / INDEX
    if not index_file.is_file():
        raise FileNotFoundError(f"{directory} is not a complete BriVL checkpoint (no {INDEX})")
    index = json.loads(index_file.read_text())
    if index.get("format") != FORMAT or index.get("version") != VERSION:
        raise ValueError(f"{index_file}: format {index.get('format')!r} v{index.get('version')!r}; "
                         f"accepted: {FORMAT!r} v{VERSION}")
    return index


def load_checkpoint(directory: str | Path, map_location: str | torch.device = "cpu") -> BriVL:
    """Rebuild the model from ``directory`` alone (no pretrained files needed), bit-exactly."""
    from brivl.model.factory import model_from_config

    directory = Path(directory)
    _index(directory)
    cfg = BriVLConfig.from_dict(json.loads((directory / CONFIG).read_text()))
    model = model_from_config(cfg, directory / TOKENIZER)
    state = load_file(str(directory / WEIGHTS), device=str(map_location))
    model.load_state_dict(state, strict=True)
    return model.to(map_location)


def load_checkpoint_extras(directory: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The caller's extra tensors and JSON saved with the checkpoint (empty when absent)."""
    directory = Path(directory)
    _index(directory)
    tensors = load_file(str(directory / EXTRA_TENSORS)) if (directory / EXTRA_TENSORS).is_file() else {}
    extra = json.loads((directory / EXTRA_JSON).read_text()) if (directory / EXTRA_JSON).is_file() else {}
    return tensors, extra


def is_checkpoint(directory: str | Path) -> bool:
    """True when ``directory`` holds a complete checkpoint."""
    try:
        _index(Path(directory))
    except (FileNotFoundError, ValueError, json.JSONDecodeError):
        return False
    return True

"""Checkpoint directory: safetensors weights (no pickle), config JSON and tokenizer.

Layout of ``dir``::

    model.safetensors    towers, momentum towers, queues, pointers (model.state_dict())
    config.json          the resolved BriVLConfig: a checkpoint alone rebuilds the model
    tokenizer.json       the tokenizer (HF tokenizers format)
    extra.safetensors    optional tensors of the caller (e.g. optimizer state)
    extra.json           optional JSON of the caller (e.g. step, RNG seeds)
    checkpoint.json      format version and file list, written last: marks the checkpoint complete

Other files in ``dir`` (a trainer's own state) are left alone. A damaged checkpoint (a file
missing, truncated or not valid JSON, weights that do not fit the config) raises
:class:`~brivl.errors.CheckpointError` naming the file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from brivl.errors import CheckpointError, ConfigError
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


def _read_json(path: Path) -> Any:
    """The JSON in a checkpoint file; CheckpointError naming it when missing or malformed."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing; a BriVL checkpoint directory holds {WEIGHTS}, "
                              f"{CONFIG}, {TOKENIZER} and {INDEX}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc})") from None


def _index(directory: Path) -> dict[str, Any]:
    index_file = directory / INDEX
    if not index_file.is_file():
        raise CheckpointError(f"{directory} is not a complete BriVL checkpoint (no {INDEX})")
    index = _read_json(index_file)
    if not isinstance(index, dict) or index.get("format") != FORMAT or index.get("version") != VERSION:
        found = index if not isinstance(index, dict) else (index.get("format"), index.get("version"))
        raise CheckpointError(f"{index_file}: format {found!r}; accepted: {FORMAT!r} v{VERSION}")
    return index


def load_checkpoint(directory: str | Path, map_location: str | torch.device = "cpu") -> BriVL:
    """Rebuild the model from ``directory`` alone (no pretrained files needed), bit-exactly."""
    directory = Path(directory)
    _index(directory)
    model = _rebuild(directory)
    weights = directory / WEIGHTS
    try:
        state = load_file(str(weights), device=str(map_location))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{weights}: cannot be read ({exc})") from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[:2]
        raise CheckpointError(f"{weights}: does not fit {CONFIG} ({' '.join(first)})") from None
    return model.to(map_location)


def _rebuild(directory: Path) -> BriVL:
    """The architecture from ``config.json`` and ``tokenizer.json`` (no weights)."""
    from brivl.model.factory import model_from_config

    config, tokenizer = directory / CONFIG, directory / TOKENIZER
    try:
        cfg = BriVLConfig.from_dict(_read_json(config))
    except ConfigError as exc:
        raise CheckpointError(f"{config}: {exc}") from None
    _read_json(tokenizer)
    try:
        return model_from_config(cfg, tokenizer)
    except Exception as exc:  # noqa: BLE001 - the tokenizers library raises plain Exception
        raise CheckpointError(f"{config} with {tokenizer}: cannot rebuild the model "
                              f"({type(exc).__name__}: {exc})") from None


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
    except CheckpointError:
        return False
    return True

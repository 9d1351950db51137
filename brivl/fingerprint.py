"""Stable hashes: of JSON-like configs, of files, and of the code that implements a stage."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import inspect
import json
from pathlib import Path
from typing import Any


def _jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _jsonable(dataclasses.asdict(obj))
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        items = [_jsonable(v) for v in obj]
        return sorted(items, key=repr) if isinstance(obj, (set, frozenset)) else items
    if isinstance(obj, Path):
        return str(obj)
    return obj


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace; dataclasses and paths allowed."""
    return json.dumps(_jsonable(obj), sort_keys=True, separators=(",", ":"), default=str)


def stable_hash(obj: Any, length: int = 64) -> str:
    """sha256 of :func:`canonical_json` (truncated to ``length`` hex characters)."""
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()[:length]


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """sha256 of a file's bytes, streamed."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def code_version(*modules: str) -> str:
    """Hash of the source of the named modules (and, for packages, every .py file in them).

    A stage's code version changes exactly when the code that computes it changes, so that
    editing the filter reruns the filter and what follows it, and nothing upstream.
    """
    digest = hashlib.sha256()
    for name in sorted(modules):
        module = importlib.import_module(name)
        source_file = Path(inspect.getfile(module))
        files = (
            sorted(source_file.parent.rglob("*.py"))
            if source_file.name == "__init__.py"
            else [source_file]
        )
        for path in files:
            digest.update(path.name.encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]

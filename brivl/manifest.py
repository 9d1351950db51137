"""Stage output contract: a directory of data files plus ``_manifest.json``, written last.

The manifest records the schema version, the stage, the input manifests' hashes, the stage
config, the code version, row counts and a checksum per file. Its ``hash`` (over everything
but the timestamp) is the stage output's identity, so lineage can be followed from a
registered model back to the crawl seeds.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from brivl.errors import ManifestError
from brivl.fingerprint import file_sha256, stable_hash

SCHEMA_VERSION = 1
MANIFEST_NAME = "_manifest.json"
_UNHASHED = ("created_at", "hash", "extra")


def data_files(out_dir: Path) -> list[Path]:
    """Every file under ``out_dir`` except the manifest and hidden scratch files."""
    return sorted(
        p
        for p in out_dir.rglob("*")
        if p.is_file() and p.name != MANIFEST_NAME and not p.name.startswith((".", "_tmp"))
    )


def write_manifest(
    out_dir: str | Path,
    *,
    stage: str,
    config: Any,
    inputs: list[str],
    code_version: str,
    row_counts: dict[str, int],
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Checksum the files in ``out_dir`` and write its manifest atomically, last."""
    out_dir = Path(out_dir)
    files = {str(p.relative_to(out_dir)): file_sha256(p) for p in data_files(out_dir)}
    body: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "stage": stage,
        "inputs": list(inputs),
        "config": json.loads(json.dumps(config, default=str)),
        "code_version": code_version,
        "row_counts": dict(row_counts),
        "files": files,
    }
    body["hash"] = stable_hash({k: v for k, v in body.items() if k not in _UNHASHED})
    body["created_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    body["extra"] = extra or {}
    tmp = out_dir / f".{MANIFEST_NAME}.tmp"
    tmp.write_text(json.dumps(body, indent=2, sort_keys=True, default=str))
    os.replace(tmp, out_dir / MANIFEST_NAME)
    return body


def read_manifest(out_dir: str | Path) -> dict[str, Any]:
    """Load a stage directory's manifest; raise :class:`ManifestError` naming what is wrong."""
    path = Path(out_dir) / MANIFEST_NAME
    if not path.is_file():
        raise ManifestError(
            f"{out_dir}: no {MANIFEST_NAME}; the stage that writes this directory did not "
            "finish (rerun it) or this is not a stage output directory"
        )
    try:
        body = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{path}: not valid JSON ({exc})") from exc
    missing = {"schema_version", "stage", "hash", "files", "row_counts"} - body.keys()
    if missing:
        raise ManifestError(f"{path}: missing fields {sorted(missing)}")
    if body["schema_version"] != SCHEMA_VERSION:
        raise ManifestError(
            f"{path}: schema_version {body['schema_version']}, this code reads {SCHEMA_VERSION}"
        )
    return body


def is_complete(out_dir: str | Path) -> bool:
    """True when ``out_dir`` has a readable manifest (the stage finished)."""
    try:
        read_manifest(out_dir)
    except ManifestError:
        return False
    return True


def verify(out_dir: str | Path) -> dict[str, Any]:
    """Read the manifest and check every listed file's checksum; return the manifest."""
    out_dir = Path(out_dir)
    body = read_manifest(out_dir)
    for rel, expected in body["files"].items():
        path = out_dir / rel
        if not path.is_file():
            raise ManifestError(f"{out_dir}: file {rel} listed in the manifest is missing")
        if file_sha256(path) != expected:
            raise ManifestError(f"{out_dir}: file {rel} does not match its manifest checksum")
    return body


def stage_key(stage: str, inputs: list[str], config: Any, code_version: str) -> str:
    """Cache identity of a stage run: hash(stage, input manifests, config, code version)."""
    return stable_hash(
        {"stage": stage, "inputs": list(inputs), "config": config, "code": code_version}, 24
    )


def manifest_key(body: dict[str, Any]) -> str:
    """The :func:`stage_key` of the run that wrote manifest ``body`` (from its stage, inputs,
    config and code version), so ``done`` can tell this run's output from any other's."""
    return stage_key(
        body["stage"], body.get("inputs", []), body.get("config"), body.get("code_version", "")
    )

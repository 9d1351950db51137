"""The stage output contract: manifest written last, checksums, stable identity."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from brivl import manifest
from brivl.fingerprint import code_version, file_sha256, stable_hash


def _stage(out: Path, payload: bytes = b"rows") -> dict:
    (out / "part").mkdir(parents=True, exist_ok=True)
    (out / "part" / "a.parquet").write_bytes(payload)
    return manifest.write_manifest(
        out, stage="demo", config={"b": 2, "a": 1}, inputs=["x"], code_version="c",
        row_counts={"rows": 3},
    )


def test_identity_is_stable_and_content_addressed(tmp_path: Path) -> None:
    first = _stage(tmp_path / "one")
    second = _stage(tmp_path / "two")
    changed = _stage(tmp_path / "three", b"other rows")
    assert first["hash"] == second["hash"]  # timestamps do not enter the identity
    assert first["hash"] != changed["hash"]
    assert first["files"] == {"part/a.parquet": file_sha256(tmp_path / "one/part/a.parquet")}


def test_verify_detects_tampering_and_missing_manifest(tmp_path: Path) -> None:
    _stage(tmp_path)
    assert manifest.verify(tmp_path)["row_counts"] == {"rows": 3}
    (tmp_path / "part" / "a.parquet").write_bytes(b"tampered")
    with pytest.raises(manifest.ManifestError, match="part/a.parquet"):
        manifest.verify(tmp_path)
    (tmp_path / manifest.MANIFEST_NAME).unlink()
    assert not manifest.is_complete(tmp_path)
    with pytest.raises(manifest.ManifestError, match="did not finish"):
        manifest.read_manifest(tmp_path)


def test_schema_version_mismatch_is_named(tmp_path: Path) -> None:
    body = _stage(tmp_path)
    body["schema_version"] = 99
    (tmp_path / manifest.MANIFEST_NAME).write_text(json.dumps(body))
    with pytest.raises(manifest.ManifestError, match="schema_version 99"):
        manifest.read_manifest(tmp_path)


def test_hashes_ignore_key_order_and_follow_code() -> None:
    assert stable_hash({"a": 1, "b": [1, 2]}) == stable_hash({"b": [1, 2], "a": 1})
    assert stable_hash({"a": 1}) != stable_hash({"a": 2})
    assert code_version("brivl.manifest") != code_version("brivl.fingerprint")
    assert len(code_version("brivl")) == 16

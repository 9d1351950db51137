"""Take-downs across a project home: shards, the indices built from them, model versions.

:func:`run_takedown` removes the requested rows from every shard directory (each under its
stage lock; its datasheet is written again), then from every index directory built from an affected shard directory (by
the removed rows' keys) or holding a requested image URL, and tags every registered model
version whose lineage names an affected shard manifest - the one a take-down replaced or
any it superseded earlier - with ``takedown_pending=<rows removed from its shards>`` (added
to an earlier count). A model retrained on the new shards names the new manifest, so its
version carries no such tag. When any row went, the frozen-trunk store
(``$BRIVL_HOME/cache/trunks``, features computed from images and captions) is cleared; the
next run recomputes what it needs. Nothing else is rewritten.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from brivl import manifest
from brivl.env import project_home
from brivl.retrieval.takedown import remove_from_index
from brivl.takedown import Request, takedown_shards
from tasks.locking import file_lock

PENDING_TAG = "takedown_pending"
SHARDS_TAG = "brivl.takedown.shards"  # old -> new shard manifest hashes, newest take-down
LINEAGE_TAGS = ("brivl.shards_manifest_hash", "brivl.train_inputs")


def stage_dirs(stage: str) -> list[Path]:
    """The home's finished directories of ``stage`` (``$BRIVL_HOME/data/<stage>/*``)."""
    root = project_home() / "data" / stage
    found = []
    for path in sorted(root.glob("*")) if root.is_dir() else []:
        try:
            if path.is_dir() and manifest.read_manifest(path)["stage"] == stage:
                found.append(path)
        except manifest.ManifestError:
            continue
    return found


def history(body: dict[str, Any]) -> list[str]:
    """A manifest's hash and every hash it superseded through earlier take-downs."""
    hashes, note = [body["hash"]], body.get("extra", {}).get("takedown")
    while note:
        hashes.append(note["supersedes"])
        note = note.get("earlier")
    return hashes


def _lock(directory: Path) -> Any:
    return file_lock(directory.parent / f".{directory.name}.lock", f"take-down in {directory}")


def _checked(dirs: Sequence[str | Path], stage: str) -> list[Path]:
    out = []
    for d in dirs:
        body = manifest.read_manifest(d)  # a ManifestError names a directory without one
        if body["stage"] != stage:
            raise manifest.ManifestError(f"{d}: a {body['stage']!r} stage directory, not {stage!r}")
        out.append(Path(d).resolve())
    return out


def run_takedown(request: Request, shard_dirs: Sequence[str | Path] | None = None,
                 index_dirs: Sequence[str | Path] | None = None,
                 model_names: Sequence[str] | None = None, tag_models: bool = True
                 ) -> dict[str, Any]:
    """Remove the request's rows from shards and indices, tag model versions; a JSON summary
    (``shards``/``indices``: per directory the rows removed and the old and new manifest
    hashes; ``models``: the versions tagged). Default directories: all of the home's."""
    shards = _checked(shard_dirs, "shard") if shard_dirs is not None else stage_dirs("shard")
    indices = _checked(index_dirs, "index") if index_dirs is not None else stage_dirs("index")
    affected: list[dict[str, Any]] = []  # per touched shard dir: hashes, removed, keys
    for directory in shards:
        with _lock(directory):
            removal, body = takedown_shards(directory, request)
        if body is not None:
            affected.append({"dir": str(directory), "old": body["extra"]["takedown"]["supersedes"],
                             "new": body["hash"], "history": history(body)[1:],
                             "removed": removal.count, "keys": removal.keys, "urls": removal.urls})
    index_results = [r for r in (_index(d, request, affected) for d in indices) if r]
    models = _tag_models(affected, model_names) if tag_models and affected else []
    trunks = None
    if affected:  # the frozen-trunk store holds features of the removed images and captions
        from brivl.model.trunk_store import clear, default_root

        trunks = {"dir": str(default_root()), "packs_removed": clear(default_root())}
    return {
        "request": request.to_dict(),
        "shards": [{k: a[k] for k in ("dir", "old", "new", "removed")} for a in affected],
        "indices": index_results,
        "models": models,
        "trunk_store": trunks,
        "removed": sum(a["removed"] for a in affected),
    }


def _index(directory: Path, request: Request, affected: list[dict[str, Any]]
           ) -> dict[str, Any] | None:
    built_from = set(manifest.read_manifest(directory).get("inputs", []))
    keys: set[str] = set()
    urls = set(request.urls)
    for shard in affected:
        if built_from & set(shard["history"]):
            keys |= shard["keys"]
            urls |= shard["urls"]
    with _lock(directory):
        removal, body = remove_from_index(directory, keys, urls, request)
    if body is None:
        return None
    return {"dir": str(directory), "old": body["extra"]["takedown"]["supersedes"],
            "new": body["hash"], "removed": removal.count}


def _tag_models(affected: list[dict[str, Any]], model_names: Sequence[str] | None
                ) -> list[dict[str, Any]]:
    """Tag every version whose lineage tags name an affected shard manifest (any hash of its
    history) with ``takedown_pending`` += the rows removed from those shards."""
    from tasks import tracking

    mlflow = tracking._mlflow()
    client = mlflow.MlflowClient()
    tagged = []
    for version in _versions(client, model_names):
        lineage = set()
        for tag in LINEAGE_TAGS:
            lineage.update(v for v in str(version.tags.get(tag, "")).split(",") if v)
        hits = [a for a in affected if lineage & set(a["history"])]
        if not hits:
            continue
        count = int(version.tags.get(PENDING_TAG, "0") or 0) + sum(a["removed"] for a in hits)
        client.set_model_version_tag(version.name, version.version, PENDING_TAG, str(count))
        client.set_model_version_tag(version.name, version.version, SHARDS_TAG,
                                     json.dumps({a["old"]: a["new"] for a in hits})[:4900])
        tagged.append({"model": version.name, "version": int(version.version),
                       PENDING_TAG: count})
    return tagged


def _versions(client: Any, model_names: Sequence[str] | None) -> list[Any]:
    names = list(model_names) if model_names else [m.name for m in _all_models(client)]
    out = []
    for name in names:
        token = None
        while True:
            page = client.search_model_versions(f"name = '{name}'", max_results=1000,
                                                page_token=token)
            out.extend(page)
            token = page.token
            if not token:
                break
    return out


def _all_models(client: Any) -> list[Any]:
    out, token = [], None
    while True:
        page = client.search_registered_models(max_results=1000, page_token=token)
        out.extend(page)
        token = page.token
        if not token:
            return out

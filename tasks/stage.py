"""The shared shape of a pipeline stage as a Prefect task.

A stage's identity is ``stage_key(stage, input manifest hashes, config, code version)``. It
names both the Prefect cache key and the output directory
(``$BRIVL_HOME/data/<stage>/<key>`` unless ``out_dir`` is given), so a rerun with the same
inputs, config and code is a Prefect cache hit, and the stage body itself is idempotent:
it returns at once when its output directory already holds a complete manifest.

Cached results are plain JSON, never pickles. Prefect's result record names the serializer
that reads it back, so whoever can write ``$BRIVL_HOME/prefect/storage`` could otherwise
make the next run unpickle (execute) anything. :func:`stage_cache_key` therefore pins every
stage task's results to :data:`STAGE_SERIALIZER` (plain ``json``, no object hooks) and,
before Prefect looks a key up, reads the record itself with ``json.loads``: a record that is
unreadable, oversized, or names any other serializer is deleted, so the lookup is a miss
and the stage runs again (its body is idempotent). Residual window: a record rewritten in
the milliseconds between that check and Prefect's read is not caught.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect.serializers import JSONSerializer

from brivl import manifest
from brivl.env import project_home
from brivl.fingerprint import code_version

STAGE_SERIALIZER = JSONSerializer(object_encoder=None, object_decoder=None)
"""Stage results are small JSON values (paths as strings, dicts of numbers)."""
MAX_RECORD_BYTES = 1_000_000
TRANSIENT_KEY = "transient_rejections"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StageRun:
    """Where and under which identity one stage run writes."""

    stage: str
    key: str
    out_dir: Path
    inputs: list[str]
    code_version: str

    @property
    def done(self) -> bool:
        """True when the output directory holds a complete manifest that lists no transient
        rejections (rows a rerun should try again, e.g. robots.txt was unavailable)."""
        if not manifest.is_complete(self.out_dir):
            return False
        return not manifest.read_manifest(self.out_dir).get("extra", {}).get(TRANSIENT_KEY)


def input_identity(value: Any) -> str:
    """Identity of a stage input: a stage directory's manifest hash, else the value itself."""
    if isinstance(value, (str, Path)) and Path(value).is_dir():
        return manifest.read_manifest(value)["hash"]
    return str(value)


def resolve_stage(
    stage: str,
    code_modules: Sequence[str],
    inputs: Sequence[Any],
    config: Any,
    out_dir: str | Path | None = None,
) -> StageRun:
    """Compute a stage run's key and output directory."""
    input_ids = [input_identity(v) for v in inputs]
    version = code_version(*code_modules)
    key = manifest.stage_key(stage, input_ids, config, version)
    target = Path(out_dir) if out_dir else project_home() / "data" / stage / key
    return StageRun(stage, key, target.resolve(), input_ids, version)


def record_path(cache_key: str) -> Path:
    """Where Prefect keeps the result record of ``cache_key`` (its local storage)."""
    return Path(os.environ.get("PREFECT_LOCAL_STORAGE_PATH", "")) / cache_key


def untrusted_record(path: Path) -> str | None:
    """Why the result record at ``path`` must not be read, or ``None`` when it is a JSON
    record written with :data:`STAGE_SERIALIZER` holding a JSON value."""
    try:
        if path.stat().st_size > MAX_RECORD_BYTES:
            return f"over {MAX_RECORD_BYTES} bytes"
        record = json.loads(path.read_bytes())
        serializer = record["metadata"]["serializer"]
        if serializer != STAGE_SERIALIZER.model_dump(mode="json"):
            return f"serializer {serializer!r} is not the stage JSON serializer"
        json.loads(record["result"])
    except (OSError, ValueError, TypeError, KeyError) as exc:
        return f"unreadable ({type(exc).__name__}: {exc})"
    return None


def _refused(record: Path) -> bool:
    why = untrusted_record(record)
    if why:
        log.warning("ignoring the cached result %s (a cache miss): %s", record, why)
    return why is not None


def pin_results(context: Any) -> None:
    """Make this task run persist its result with :data:`STAGE_SERIALIZER` (whatever the
    task's decorator says): the run's result store, which Prefect's transaction then uses."""
    store = getattr(context, "result_store", None)
    if store is not None and store.serializer != STAGE_SERIALIZER:
        context.result_store = store.model_copy(update={"serializer": STAGE_SERIALIZER})


def stage_cache_key(
    stage: str, code_modules: Sequence[str], input_params: Sequence[str], config_param: str = "config"
) -> Callable[[Any, dict[str, Any]], str]:
    """A Prefect ``cache_key_fn`` for a stage task.

    ``input_params`` name the task parameters holding input stage directories (or other
    identifying values). When the output directory has gone missing since a cached run, the
    stale cache record is dropped so the stage runs again instead of returning a dead path;
    so is a record that is not a plain JSON one (see the module docstring).
    """

    def key_fn(context: Any, parameters: dict[str, Any]) -> str:
        run = resolve_stage(
            stage,
            code_modules,
            [parameters.get(p) for p in input_params],
            parameters.get(config_param),
            parameters.get("out_dir"),
        )
        cache_key = f"{stage}-{run.key}"
        pin_results(context)
        record = record_path(cache_key)
        if record.is_file() and (not run.done or _refused(record)):
            record.unlink(missing_ok=True)
        return cache_key

    return key_fn


@dataclass(frozen=True)
class ConfiguredStage:
    """A one-input stage whose config is a dataclass with ``from_dict``/``to_dict``.

    Its identity uses the *normalised* config (defaults filled in), so ``{}`` and the full
    default config name the same run, and ``identify`` for the input (default: the input
    directory's manifest hash).
    """

    stage: str
    code_modules: tuple[str, ...]
    config_cls: Any
    identify: Callable[[Any], str] = input_identity
    input_param: str = "input_dir"

    def resolve(self, input_dir: Any, config: Any = None, out_dir: str | Path | None = None) -> StageRun:
        """Where this stage writes for ``input_dir`` and ``config`` (and whether it is done)."""
        settings = self.config_cls.from_dict(config).to_dict()
        return resolve_stage(
            self.stage, self.code_modules, [self.identify(input_dir)], settings, out_dir
        )

    def cache_key(self, context: Any, parameters: dict[str, Any]) -> str:
        """The Prefect ``cache_key_fn``: :func:`stage_cache_key` over normalised parameters."""
        normalised = {
            **parameters,
            self.input_param: self.identify(parameters[self.input_param]),
            "config": self.config_cls.from_dict(parameters.get("config")).to_dict(),
        }
        key_fn = stage_cache_key(self.stage, self.code_modules, [self.input_param])
        return key_fn(context, normalised)

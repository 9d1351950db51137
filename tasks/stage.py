"""The stage contract: one implementation for all ten pipeline stages (crawl, download, filter,
shard, pretrain, evaluate, register, index, generator, grid).

A :class:`Stage` is a name, the code modules that compute it, and two functions of its task's
parameters: the *normalised* config (the typed config's ``from_dict``, back to a JSON dict, so
``{}`` and the spelled-out defaults are one run) and the input identities (a stage
directory's manifest hash, a checkpoint's identity, seed URLs, ...). From these it owns:

- **identity**: ``key = stage_key(stage, inputs, normalised config, code version)``; the
  output directory ``$BRIVL_HOME/data/<stage>/<key>`` (unless ``out_dir`` is given) and the
  Prefect cache key ``<stage>-<key>`` (:meth:`Stage.cache_key`);
- **done**: the directory's manifest names this stage and this key (recomputed from the
  manifest's stage, inputs, config and code version) and lists no transient rejections;
- **writing** (:meth:`Stage.run`): under an exclusive lock on the directory (a second
  writer waits, then finds it done and reuses it), only into an empty directory or one
  holding this stage's own (partial) output - anything else is refused, never deleted -
  and the manifest is written last;
- **its MLflow child run**, nested under the pipeline run when one is open: the normalised
  config as params (flattened, MLflow-safe, values truncated), the manifest's counts as
  metrics, ``brivl.cached``. A Prefect cache hit does not run the task body, so the task's
  on-completion hook (:meth:`Stage.on_completion`) logs that child run.

Cached results are plain JSON, never pickles. Prefect's result record names the serializer
that reads it back, so whoever can write ``$BRIVL_HOME/prefect/storage`` could otherwise
make the next run unpickle (execute) anything. The cache key function therefore pins every
stage task's results to :data:`tasks.prefect_cache.STAGE_SERIALIZER` (plain ``json``, no object hooks) and,
before Prefect looks a key up, reads the record itself with ``json.loads``: a record that is
unreadable, oversized, or names any other serializer is deleted, so the lookup is a miss
and the stage runs again (its body is idempotent). Residual window: a record rewritten in
the milliseconds between that check and Prefect's read is not caught.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from brivl import manifest, report
from brivl.env import project_home
from brivl.fingerprint import canonical_json, code_version
from tasks import run_log  # noqa: F401  (milestones into the Prefect run log)
from tasks.locking import file_lock
from tasks.prefect_cache import pin_results, record_path, untrusted_record

TRANSIENT_KEY = "transient_rejections"
log = logging.getLogger(__name__)
Params = dict[str, Any]


class StageDirError(FileExistsError):
    """An output directory holds something that is not this stage's output."""


@dataclass(frozen=True)
class StageOutput:
    """What a stage body computed: the manifest's row counts and its extra fields."""

    row_counts: dict[str, int]
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StageRun:
    """Where and under which identity one stage run writes."""

    stage: str
    key: str
    out_dir: Path
    inputs: list[str]
    code_version: str
    config: Any = None  # the normalised config the key was computed from
    label: str = ""  # the MLflow child run's name (default: the stage)
    default_dir: bool = True  # out_dir is the home's data/<stage>/<key>

    @property
    def done(self) -> bool:
        """True when ``out_dir`` holds a readable manifest of this stage with this key that
        lists no transient rejections (rows a rerun should try again, e.g. robots.txt was
        unavailable). Another stage's manifest, or this stage's of another key, is not done."""
        try:
            body = manifest.read_manifest(self.out_dir)
        except manifest.ManifestError:
            return False
        if body["stage"] != self.stage or manifest.manifest_key(body) != self.key:
            return False
        return not body.get("extra", {}).get(TRANSIENT_KEY)

    @property
    def lock_path(self) -> Path:
        """The lock file next to ``out_dir``; it also records which stage claimed it."""
        return self.out_dir.parent / f".{self.out_dir.name}.lock"


def input_identity(value: Any) -> str:
    """Identity of a stage input: a stage directory's manifest hash, else the value itself."""
    if isinstance(value, (str, Path)) and Path(value).is_dir():
        return manifest.read_manifest(value)["hash"]
    return str(value)


def normalised(config_cls: Any, raw: Any) -> dict[str, Any]:
    """``config_cls.from_dict(raw)`` back as a plain JSON dict: defaults filled in, types
    checked, so every spelling of one config is one dict (and one key)."""
    value = config_cls.from_dict(raw)
    data = value.to_dict() if hasattr(value, "to_dict") else dataclasses.asdict(value)
    return json.loads(canonical_json(data))


def config_param(config_cls: Any, name: str = "config") -> Callable[[Params], dict[str, Any]]:
    """A :attr:`Stage.normalise` reading the task parameter ``name`` as a ``config_cls``."""
    return lambda params: normalised(config_cls, params.get(name))


def _make_run(
    stage: str, code_modules: Sequence[str], input_ids: list[str], config: Any, out_dir: Any
) -> StageRun:
    version = code_version(*code_modules)
    key = manifest.stage_key(stage, input_ids, config, version)
    default = project_home() / "data" / stage / key
    target = Path(out_dir).expanduser() if out_dir else default
    return StageRun(stage, key, target.resolve(), input_ids, version, config,
                    default_dir=target.resolve() == default.resolve())


def resolve_stage(
    stage: str,
    code_modules: Sequence[str],
    inputs: Sequence[Any],
    config: Any,
    out_dir: str | Path | None = None,
) -> StageRun:
    """A stage run's key and output directory; each input is identified by
    :func:`input_identity`, ``config`` is used as given."""
    return _make_run(stage, code_modules, [input_identity(v) for v in inputs], config, out_dir)


# -- the output directory ------------------------------------------------------------------
def _claimed_by(run: StageRun) -> str | None:
    try:
        return json.loads(run.lock_path.read_text()).get("stage")
    except (OSError, ValueError, AttributeError):
        return None


def foreign_content(run: StageRun) -> str | None:
    """Why ``run.out_dir`` (existing, not empty) is not this stage's to write, or ``None``."""
    path = run.out_dir / manifest.MANIFEST_NAME
    if path.is_file():
        try:
            other = json.loads(path.read_text()).get("stage")
        except (OSError, ValueError, AttributeError):
            return f"its {manifest.MANIFEST_NAME} is unreadable"
        if other == run.stage:
            return None  # an earlier output of this stage, redone now
        return f"it holds a {other!r} stage output (its {manifest.MANIFEST_NAME})"
    if run.default_dir or _claimed_by(run) == run.stage:
        return None  # this stage's partial output
    found = sorted(p.name for p in run.out_dir.iterdir())
    listed = ", ".join(found[:5]) + (f", ... ({len(found)} entries)" if len(found) > 5 else "")
    return f"it is not empty ({listed}) and holds no {run.stage} output"


def claim(run: StageRun) -> None:
    """Make ``run.out_dir`` this stage's: empty or new, or holding this stage's (partial)
    output. Anything else raises :class:`StageDirError`; nothing is deleted."""
    out = run.out_dir
    if out.is_dir() and any(out.iterdir()):
        why = foreign_content(run)
        if why:
            raise StageDirError(
                f"{out}: {why}. The {run.stage} stage writes only into an empty directory or "
                f"one holding its own (partial) output, and deletes nothing else: give an "
                "empty or new output directory"
            )
    elif out.exists() and not out.is_dir():
        raise StageDirError(f"{out}: is a file; the {run.stage} stage needs a directory")
    out.mkdir(parents=True, exist_ok=True)
    run.lock_path.write_text(json.dumps({"stage": run.stage, "key": run.key}))


def publish(run: StageRun, output: StageOutput) -> dict[str, Any]:
    """Write the manifest of ``run.out_dir`` (last: checksums, counts, normalised config)."""
    return manifest.write_manifest(
        run.out_dir,
        stage=run.stage,
        config=run.config,
        inputs=run.inputs,
        code_version=run.code_version,
        row_counts=output.row_counts,
        extra=output.extra,
    )


# -- Prefect's cache -----------------------------------------------------------------------
def _refused(record: Path) -> bool:
    why = untrusted_record(record)
    if why:
        log.warning("ignoring the cached result %s (a cache miss): %s", record, why)
    return why is not None


def checked_cache_key(context: Any, run: StageRun) -> str:
    """``<stage>-<key>``, after dropping its record when the directory is no longer done
    (the stage runs again instead of returning a dead path) or the record is not plain JSON."""
    cache_key = f"{run.stage}-{run.key}"
    pin_results(context)
    record = record_path(cache_key)
    if record.is_file() and (not run.done or _refused(record)):
        record.unlink(missing_ok=True)
    return cache_key


def stage_cache_key(
    stage: str, code_modules: Sequence[str], input_params: Sequence[str], config_param: str = "config"
) -> Callable[[Any, dict[str, Any]], str]:
    """A Prefect ``cache_key_fn`` over the task parameters ``input_params`` (identified by
    :func:`input_identity`) and the config as given; :class:`Stage` is the normal way."""

    def key_fn(context: Any, parameters: dict[str, Any]) -> str:
        run = resolve_stage(
            stage,
            code_modules,
            [parameters.get(p) for p in input_params],
            parameters.get(config_param),
            parameters.get("out_dir"),
        )
        return checked_cache_key(context, run)

    return key_fn


# -- the contract --------------------------------------------------------------------------
_resolved: dict[str, tuple[StageRun, Params]] = {}  # cache key -> its run, for the hook
_resolved_lock = threading.Lock()


@dataclass(frozen=True)
class Stage:
    """One pipeline stage's identity, output directory, manifest and MLflow child run.

    ``normalise(params)`` and ``inputs(params)`` read the task's parameters (``out_dir``
    and, when given, the ``label_param`` naming the child run are read directly).
    ``report(run, params)`` logs stage-specific extras (metrics, tables, images) into the
    child run, for a fresh and a cached result alike.
    """

    name: str
    code_modules: tuple[str, ...]
    normalise: Callable[[Params], Any]
    inputs: Callable[[Params], list[str]]
    report: Callable[[StageRun, Params], None] | None = None
    label_param: str = "label"

    def resolve(self, params: Params) -> StageRun:
        """The run these parameters name (key, directory, normalised config)."""
        config = self.normalise(params)  # a bad config is named before inputs are read
        run = _make_run(self.name, self.code_modules, list(self.inputs(params)), config,
                        params.get("out_dir"))
        return replace(run, label=str(params.get(self.label_param) or self.name))

    def cache_key(self, context: Any, parameters: Params) -> str:
        """The Prefect ``cache_key_fn``: ``<stage>-<key>`` of the normalised parameters."""
        run = self.resolve(parameters)
        cache_key = checked_cache_key(context, run)
        with _resolved_lock:
            _resolved[cache_key] = (run, dict(parameters))
        return cache_key

    def task_options(self) -> dict[str, Any]:
        """The ``@task`` options every stage task uses (cache key, JSON results, hook)."""
        return {"cache_key_fn": self.cache_key, "persist_result": True,
                "on_completion": [self.on_completion]}

    def run(self, produce: Callable[[StageRun], StageOutput | None], params: Params) -> StageRun:
        """Resolve ``params``; under the directory's lock, unless done, claim the directory,
        ``produce`` into it and write the manifest (``produce`` returning ``None`` says it
        wrote the manifest itself); log the child run either way."""
        run = self.resolve(params)
        with file_lock(run.lock_path, f"the {run.stage} output {run.out_dir}"):
            cached = run.done
            start = time.perf_counter()
            with self.child_run(run, cached):
                if not cached:
                    report.milestone(f"{run.label}: started (key {run.key[:12]})")
                    claim(run)
                    output = produce(run)
                    if output is not None:
                        publish(run, output)
                    if not manifest.is_complete(run.out_dir):
                        raise RuntimeError(f"{run.out_dir}: the {run.stage} stage wrote no manifest")
                self.log_outcome(run, params)
            report.milestone(_outcome_line(run, cached, time.perf_counter() - start))
        return run

    @contextlib.contextmanager
    def child_run(self, run: StageRun, cached: bool) -> Iterator[Any]:
        """The stage's MLflow child run, its normalised config logged as params."""
        from tasks import tracking

        tags = {"brivl.stage": run.stage, "brivl.cached": cached, "brivl.key": run.key,
                "brivl.out_dir": str(run.out_dir)}
        with tracking.stage_run(run.label or run.stage, tags=tags) as active:
            tracking.log_flat_params({"config": run.config, "inputs": run.inputs})
            yield active

    def log_outcome(self, run: StageRun, params: Params) -> None:
        """Inside the child run: the manifest (counts as metrics) and the stage's report."""
        from tasks import tracking

        tracking.log_manifest(run.out_dir, run.stage)
        if self.report is not None:
            self.report(run, params)

    def on_completion(self, task: Any, task_run: Any, state: Any) -> None:
        """Prefect hook: a cache hit ran no task body, so log its child run here."""
        if state.name != "Cached":
            return
        storage_key = getattr(getattr(state.data, "metadata", None), "storage_key", None)
        with _resolved_lock:
            found = _resolved.get(Path(str(storage_key or "")).name)
        if found is None or not found[0].done:
            return
        run, params = found
        with self.child_run(run, cached=True):
            self.log_outcome(run, params)
        report.milestone(_outcome_line(run, True, 0.0))


def _outcome_line(run: StageRun, cached: bool, seconds: float) -> str:
    """``crawl: done in 3.1 s; pages 12, candidates 120; output DIR`` (or that it reused its
    finished output)."""
    counts = manifest.read_manifest(run.out_dir).get("row_counts", {})
    shown = ", ".join(f"{name} {value:,}" for name, value in counts.items()
                      if isinstance(value, int))
    how = "reused its finished output" if cached else f"done in {seconds:.1f} s"
    return f"{run.label}: {how}; {shown or 'no counts'}; output {run.out_dir}"

"""Test session setup: an isolated project home, set before Prefect/MLflow/Ray are imported."""

from __future__ import annotations

import os
import tempfile

import pytest

from brivl.env import HOME_BOUND_KEYS, apply_defaults  # imports neither Prefect, MLflow nor Ray

_HOME = tempfile.mkdtemp(prefix="brivl-test-")
for _key in HOME_BOUND_KEYS:
    os.environ.pop(_key, None)
os.environ["BRIVL_HOME"] = _HOME
apply_defaults()


def helper_module(relative: str):
    """A helper module of the tests by its path below ``tests/``, loaded once (tests are no
    package under --import-mode=importlib)."""
    import importlib.util
    import sys
    from pathlib import Path

    name = "brivl_tests_" + relative.removesuffix(".py").replace("/", "_")
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).parent / relative)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture(scope="session")
def load_helper():
    """:func:`helper_module`, for conftest files below this one."""
    return helper_module


def kill_when_written(proc, path, timeout_s: float) -> None:
    """SIGKILL ``proc`` once ``path`` exists (a checkpoint it wrote), failing if it exits or
    ``timeout_s`` passes first; the process is reaped either way."""
    import signal
    import time

    try:
        deadline = time.monotonic() + timeout_s
        while not path.exists():
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, f"no {path.name} within {timeout_s:.0f} s"
            time.sleep(0.1)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def kill_when():
    """:func:`kill_when_written`: kill a training subprocess at a checkpoint."""
    return kill_when_written


@pytest.fixture(scope="session")
def hostile():
    """The hostile-site module: its server, listeners and page table."""
    return helper_module("hostile_site.py")


@pytest.fixture(scope="session")
def corpus():
    """``tests/brivl/retrieval/corpus.py``: tiny shards and tiny real checkpoints."""
    return helper_module("brivl/retrieval/corpus.py")


@pytest.fixture(scope="module")
def patient_prefect_server():
    """The ephemeral Prefect API server may start slowly on a busy 2-core box (default 20 s)."""
    from prefect.settings import (
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
        temporary_settings,
    )

    with temporary_settings(updates={PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS: 120}):
        yield


@pytest.fixture
def hostile_site(hostile):
    """A running hostile site on 127.0.0.1 (see tests/hostile_site.py)."""
    with hostile.serve_hostile() as site:
        yield site


def shared_cache():
    """``$BRIVL_TEST_CACHE``, else ``<tmp>/brivl-test-cache`` (kept between sessions)."""
    from pathlib import Path

    default = Path(tempfile.gettempdir()) / "brivl-test-cache"
    return Path(os.environ.get("BRIVL_TEST_CACHE", default))


@pytest.fixture(scope="session")
def openclipart_catalogue():
    """(catalogue, PNG root) of the real corpus, fetched once per machine into the shared
    test cache; skips where apt cannot fetch it."""
    from brivl.demo.openclipart import PNG_ROOT, CorpusUnavailable, load_catalogue

    cache = shared_cache() / "openclipart"
    try:
        return load_catalogue(cache), cache / PNG_ROOT
    except CorpusUnavailable as exc:
        pytest.skip(f"OpenClipArt cannot be fetched here: {exc}")

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


def _hostile_module():
    """``tests/hostile_site.py`` (tests are no package under --import-mode=importlib)."""
    import importlib.util
    import sys
    from pathlib import Path

    name = "brivl_tests_hostile_site"
    if name not in sys.modules:
        path = Path(__file__).with_name("hostile_site.py")
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture(scope="session")
def hostile():
    """The hostile-site module: its server, listeners and page table."""
    return _hostile_module()


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

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

"""The UI tests' shared pieces: ``ui`` (tests/ui/browser.py: the DevTools client, free
ports, screenshot checks, the screenshot folder) and a ``browser`` per test module."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest


def _browser_module():
    """``tests/ui/browser.py`` (tests are no package under --import-mode=importlib)."""
    name = "brivl_tests_ui_browser"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("browser.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture(scope="session")
def ui():
    return _browser_module()


@pytest.fixture(scope="module")
def browser(ui):
    with ui.Browser() as page:
        yield page

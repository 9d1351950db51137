"""The UI tests' shared pieces: ``ui`` (tests/ui/browser.py: the DevTools client, free
ports, screenshot checks, the screenshot folder) and a ``browser`` per test module."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def ui(load_helper):
    return load_helper("ui/browser.py")


@pytest.fixture(scope="module")
def browser(ui):
    with ui.Browser() as page:
        yield page

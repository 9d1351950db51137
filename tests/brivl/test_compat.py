"""The third-party shims check the installed releases they were written for."""

from __future__ import annotations

import importlib
import threading

import pytest

from brivl.compat import UNTESTED_ENV, IncompatibleVersion, require


@pytest.mark.parametrize("module", ["brivl.compat.img2dataset", "brivl.compat.clip_retrieval",
                                    "tasks.prefect_cache"])
def test_every_shim_imports_against_the_pinned_releases(module: str) -> None:
    importlib.import_module(module)


def test_an_untested_release_is_refused_with_what_to_do(monkeypatch) -> None:
    monkeypatch.delenv(UNTESTED_ENV, raising=False)
    installed = require("img2dataset", ("1.47",), "brivl/compat/img2dataset.py")
    assert installed.startswith("1.47")
    with pytest.raises(IncompatibleVersion) as info:
        require("img2dataset", ("0.9", "2.0"), "brivl/compat/img2dataset.py")
    message = str(info.value)
    assert f"but {installed} is installed" in message and "0.9.x or 2.0.x" in message
    assert "make install" in message and f"{UNTESTED_ENV}=warn" in message
    # a prefix matches whole version parts only: 1.4 is not 1.47
    with pytest.raises(IncompatibleVersion):
        require("img2dataset", ("1.4",), "shim")


def test_untested_releases_can_be_run_with_a_warning(monkeypatch) -> None:
    monkeypatch.setenv(UNTESTED_ENV, "warn")
    with pytest.warns(RuntimeWarning, match="written for img2dataset 0.9.x"):
        assert require("img2dataset", ("0.9",), "shim").startswith("1.47")


def test_a_missing_package_says_to_install() -> None:
    with pytest.raises(IncompatibleVersion, match="not installed; run `make install`"):
        require("no-such-distribution-brivl", ("1.0",), "shim")


def test_patched_main_swaps_and_restores_img2dataset_globals() -> None:
    from brivl.compat.img2dataset import patched_main

    main = importlib.import_module("img2dataset.main")
    original = main.Downloader
    marker = type("Marker", (), {})
    with patched_main(Downloader=marker):
        assert main.Downloader is marker
    assert main.Downloader is original
    with pytest.raises(ValueError, match="accepted: Downloader, ray_distributor, signal"):
        with patched_main(writer=marker):
            pass
    assert threading.current_thread() is threading.main_thread()

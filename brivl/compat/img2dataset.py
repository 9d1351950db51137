"""The names ``img2dataset.main`` looks up at call time, swapped for the length of a block.

img2dataset 1.47's ``download`` builds its ``Downloader`` and picks its distributor by
reading module globals of ``img2dataset.main`` when it runs, and installs a SIGINT handler
with ``signal.signal`` (which only the main thread may do). :func:`patched_main` replaces such
globals and restores them after; :mod:`brivl.download.guarded` uses it for the guarded
downloader, :mod:`tasks.ray_download` for the Ray distributor.
"""

from __future__ import annotations

import contextlib
import importlib
import signal
import threading
import types
from collections.abc import Iterator
from typing import Any

from brivl.compat import require

IMG2DATASET_VERSION = require("img2dataset", ("1.47",), "brivl/compat/img2dataset.py")

from img2dataset.downloader import Downloader  # noqa: E402  (the class our downloader subclasses)

__all__ = ["Downloader", "IMG2DATASET_VERSION", "no_signal_handlers", "patched_main"]


PATCHABLE = ("Downloader", "ray_distributor", "signal")  # globals of img2dataset.main we swap
_lock = threading.RLock()


def _main_module() -> types.ModuleType:
    # ``img2dataset.main`` the attribute is the CLI function; the module is in sys.modules
    return importlib.import_module("img2dataset.main")


@contextlib.contextmanager
def patched_main(**replacements: Any) -> Iterator[None]:
    """Within the block, ``img2dataset.main``'s globals named in ``replacements`` are replaced
    (one patch at a time per process; nested patches of other names are fine)."""
    unknown = set(replacements) - set(PATCHABLE)
    if unknown:
        raise ValueError(f"img2dataset.main globals {sorted(unknown)} are not shimmed; "
                         f"accepted: {', '.join(PATCHABLE)}")
    main = _main_module()
    missing = [name for name in replacements if not hasattr(main, name)]
    if missing:
        raise RuntimeError(f"img2dataset {IMG2DATASET_VERSION}: img2dataset.main has no "
                           f"{', '.join(missing)}; brivl/compat/img2dataset.py needs porting")
    with _lock:
        saved = {name: getattr(main, name) for name in replacements}
        for name, value in replacements.items():
            setattr(main, name, value)
        try:
            yield
        finally:
            for name, value in saved.items():
                setattr(main, name, value)


def no_signal_handlers() -> types.SimpleNamespace:
    """A stand-in for the ``signal`` module whose ``signal()`` installs nothing (for calls
    off the main thread, e.g. inside a Prefect worker thread)."""
    return types.SimpleNamespace(SIGINT=signal.SIGINT, signal=lambda *_args, **_kw: None)

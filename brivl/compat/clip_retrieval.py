"""Import clip-retrieval's ``clip_back`` and ``clip_index`` without its package ``__init__``.

clip-retrieval is installed ``--no-deps``: its pins (pyarrow<16, torchvision, open_clip,
all_clip) conflict with Ray's pyarrow and would pull a multi-GB CUDA stack. Its package
``__init__`` eagerly imports ``clip_inference`` -> ``all_clip``, so ``import clip_retrieval``
fails here even though the two modules we use (the kNN service and the index builder) only
need faiss, flask, h5py and friends, which are installed.

:func:`clip_retrieval_module` registers the ``clip_retrieval`` package *without executing*
its ``__init__`` (an import spec turned into an empty package module whose ``__path__`` is
the real one) and then imports the requested submodule normally, so relative and absolute
imports inside clip-retrieval resolve to its own files. A ``clip_retrieval`` package that
is already imported (for example a full install imported elsewhere) is used as it is.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import sys
import types
import warnings
from collections.abc import Iterator
from typing import Any

from brivl.compat import require

CLIP_RETRIEVAL_VERSION = require("clip-retrieval", ("2.45",), "brivl/compat/clip_retrieval.py")
PACKAGE = "clip_retrieval"
INSTALL_HINT = (
    "clip-retrieval is not installed; install it without its dependencies: "
    "pip install --no-deps clip-retrieval==2.45.0 (see the Makefile's install target)"
)


class ClipRetrievalMissing(ImportError):
    """clip-retrieval (or a module it needs) is not importable."""


def _package_without_init() -> types.ModuleType:
    """The ``clip_retrieval`` package module, registered without running its ``__init__``."""
    loaded = sys.modules.get(PACKAGE)
    if loaded is not None:
        return loaded
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ClipRetrievalMissing(INSTALL_HINT)
    package = importlib.util.module_from_spec(spec)  # has __path__, body not executed
    package.__brivl_init_skipped__ = True  # type: ignore[attr-defined]
    sys.modules[PACKAGE] = package
    return package


def clip_retrieval_module(name: str) -> types.ModuleType:
    """Import ``clip_retrieval.<name>`` (e.g. ``"clip_back"``, ``"clip_index"``)."""
    _package_without_init()
    try:
        with warnings.catch_warnings():  # clip_back imports fire, which imports ``pipes``
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            return importlib.import_module(f"{PACKAGE}.{name}")
    except ModuleNotFoundError as exc:
        raise ClipRetrievalMissing(
            f"clip_retrieval.{name} needs the module {exc.name!r}, which is not installed; "
            "its runtime needs are listed in pyproject.toml"
        ) from exc


def clip_back() -> types.ModuleType:
    """clip-retrieval's kNN service module (Flask resources, index and metadata loaders)."""
    return clip_retrieval_module("clip_back")


@contextlib.contextmanager
def all_clip_shim(load_clip: Any) -> Iterator[None]:
    """Make ``from all_clip import load_clip`` return ``load_clip`` inside the block.

    ``clip_back.load_clip_index`` imports its model loader from the ``all_clip`` package
    inside the function body; this is the one piece of clip-retrieval we replace. The shim is
    scoped: whatever ``all_clip`` was before (nothing, or a real install) is restored after.
    """
    shim = types.ModuleType("all_clip")
    shim.load_clip = load_clip  # type: ignore[attr-defined]
    previous = sys.modules.get("all_clip")
    sys.modules["all_clip"] = shim
    try:
        yield
    finally:
        if previous is None:
            sys.modules.pop("all_clip", None)
        else:
            sys.modules["all_clip"] = previous

"""Shims over third-party internals, each checked against the versions it was written for.

Each module here reaches into a package's private layout, which a release may change without
notice:

- :mod:`brivl.compat.img2dataset` swaps the ``Downloader`` class and the Ray distributor that
  ``img2dataset.main`` looks up at call time;
- :mod:`brivl.compat.clip_retrieval` imports clip-retrieval's ``clip_back`` / ``clip_index``
  without its package ``__init__`` (installed ``--no-deps``);
- ``tasks/prefect_cache.py`` reads and removes Prefect's task result records and pins a task
  run's result serializer (it lives in ``tasks/``, since ``brivl`` never imports Prefect, and
  checks its release with :func:`require` too).

On import each calls :func:`require`, which raises :class:`IncompatibleVersion` (saying what to
do) when the installed release is not one the shim was tested with. Set
``BRIVL_COMPAT_UNTESTED=warn`` to run an untested release anyway, with a warning.
"""

from __future__ import annotations

import os
import warnings
from importlib import metadata

UNTESTED_ENV = "BRIVL_COMPAT_UNTESTED"


class IncompatibleVersion(ImportError):
    """An installed package is not a release a :mod:`brivl.compat` shim was written for."""


def require(distribution: str, tested: tuple[str, ...], shim: str) -> str:
    """The installed version of ``distribution``, checked against ``tested`` release prefixes
    (``"1.47"`` accepts 1.47.0, 1.47.1, ...); ``shim`` names the module that depends on it."""
    try:
        installed = metadata.version(distribution)
    except metadata.PackageNotFoundError as exc:
        raise IncompatibleVersion(
            f"{shim} needs {distribution} (tested: {', '.join(tested)}), which is not "
            f"installed; run `make install`") from exc
    if any(installed == t or installed.startswith(t + ".") for t in tested):
        return installed
    message = (
        f"{shim} was written for {distribution} {' or '.join(t + '.x' for t in tested)}, but "
        f"{installed} is installed; install a tested release (`make install` takes the "
        f"version pyproject.toml pins), or port {shim} to {installed} and add it to the "
        f"tested list; {UNTESTED_ENV}=warn runs it anyway")
    if os.environ.get(UNTESTED_ENV, "").lower() == "warn":
        warnings.warn(message, RuntimeWarning, stacklevel=2)
        return installed
    raise IncompatibleVersion(message)

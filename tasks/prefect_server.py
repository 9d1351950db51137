"""This process's ephemeral Prefect server, started in the background.

With no ``PREFECT_API_URL``, Prefect starts a server subprocess the first time a flow needs
its API and waits for it: about 12 s on a 2-core machine, in series with everything else. A
``brivl`` command that runs flows calls :func:`start_in_background` first, so the server
boots while the command checks its arguments, builds the demo web and starts its HTTP
server; the flow entry points call :func:`wait_ready` before their first API call. It is
Prefect's own server object (the one its client would start), so nothing else changes: it
stops when the process exits.
"""

from __future__ import annotations

import os
import threading

_thread: threading.Thread | None = None
_lock = threading.Lock()


def _ephemeral() -> bool:
    return not os.environ.get("PREFECT_API_URL")


def start_in_background(migrated_only: bool = False) -> None:
    """Start booting the ephemeral server on a thread (once per process; nothing when a
    server is configured). ``migrated_only``: only if this home's database is already
    migrated (a fresh home's first server migrates it under a lock,
    :func:`tasks.stores.prepare_orchestration_store`)."""
    global _thread
    if not _ephemeral():
        return
    if migrated_only:
        from tasks.stores import prefect_marker

        if not prefect_marker().is_file():
            return
    with _lock:
        if _thread is not None:
            return
        from prefect.server.api.server import SubprocessASGIServer

        server = SubprocessASGIServer()
        if server.running:
            return
        _thread = threading.Thread(target=_boot, args=(server,), name="prefect-server-boot",
                                   daemon=True)
        _thread.start()


def _boot(server) -> None:
    try:
        server.start()
    except Exception:  # wait_ready starts it again in the caller's thread and raises there
        pass


def wait_ready() -> None:
    """Block until the server :func:`start_in_background` began booting answers (or start
    it now, raising Prefect's own error if it cannot start)."""
    if not _ephemeral():
        return
    with _lock:
        thread = _thread
    if thread is None:
        return
    thread.join()
    from prefect.server.api.server import SubprocessASGIServer

    SubprocessASGIServer().start()  # a no-op when the boot succeeded

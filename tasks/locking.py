"""Advisory file locks (``fcntl.flock``) shared by every process on one ``BRIVL_HOME``.

A lock is held on an open file, so the kernel releases it when its process dies: a killed
run never leaves a stale lock behind, and a waiting process then goes on. The lock files
stay in place (removing one while another process waits on it would split the lock).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)


@contextlib.contextmanager
def file_lock(path: str | Path, what: str = "") -> Iterator[int]:
    """Hold an exclusive lock on ``path`` (created if missing) for the ``with`` block.

    When another process holds it, one line says who waits for what (``what``), then the
    call blocks until the lock is free. Yields the open file descriptor.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _say(f"waiting for {what or path}: another process holds {path}")
            started = time.monotonic()
            fcntl.flock(fd, fcntl.LOCK_EX)
            _say(f"got {what or path} after {time.monotonic() - started:.1f} s")
        yield fd
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _say(message: str) -> None:
    print(f"brivl: {message}", file=sys.stderr, flush=True)
    log.info(message)

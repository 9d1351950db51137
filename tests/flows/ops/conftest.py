"""Helpers for the operations tests: isolated homes for services and clusters, free ports,
and a check that nothing a test started is left running.

Every process a test here starts gets ``BRIVL_HOME=<its own temp home>`` in its environment
(and passes it on to its children), so "nothing left behind" means: no live process whose
environment holds that home.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from brivl.env import HOME_BOUND_KEYS

# what ties a process to this test session's home: dropped so a child derives its own
DERIVED_KEYS = (*HOME_BOUND_KEYS, "BRIVL_MLFLOW_PARENT_RUN_ID")


def isolated_env(home: Path, **extra: str) -> dict[str, str]:
    """This process's environment with ``BRIVL_HOME=home`` and nothing derived from ours."""
    env = {k: v for k, v in os.environ.items() if k not in DERIVED_KEYS}
    env["BRIVL_HOME"] = str(home)
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _state(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "X"


def processes_of(home: Path) -> list[tuple[int, str]]:
    """Live processes (pid, command line) whose environment has ``BRIVL_HOME=home``."""
    needle = f"BRIVL_HOME={home}".encode() + b"\0"
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle not in (entry / "environ").read_bytes() + b"\0":
                continue
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if _state(entry.name) not in ("Z", "X"):
            found.append((int(entry.name), cmdline.strip()[:200]))
    return found


def kill_leftovers(home: Path, wait_s: float = 10.0) -> list[tuple[int, str]]:
    """Wait up to ``wait_s`` for ``home``'s processes to exit; SIGKILL and return the rest."""
    deadline = time.monotonic() + wait_s
    while (left := processes_of(home)) and time.monotonic() < deadline:
        time.sleep(0.3)
    for pid, _ in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return left


@pytest.fixture(scope="session")
def ops() -> SimpleNamespace:
    """The helpers above, for the test modules of this folder."""
    return SimpleNamespace(isolated_env=isolated_env, free_port=free_port,
                           processes_of=processes_of, kill_leftovers=kill_leftovers)

"""Process-wide defaults: Ray's socket paths must fit AF_UNIX's 107 bytes wherever home is."""

from __future__ import annotations

from pathlib import Path

import pytest

from brivl.env import ray_temp_dir

WORST_SESSION = "/session_2026-11-28_19-00-07_337262_4194304/sockets/plasma_store"


@pytest.mark.parametrize(
    "home", ["/h", "/tmp/pytest-of-root/pytest-120/raycluster0", "/very/long/" + "x" * 120]
)
def test_ray_socket_paths_fit(home: str) -> None:
    temp = ray_temp_dir(Path(home))
    assert len(str(temp) + WORST_SESSION) <= 107, temp


def test_short_homes_keep_ray_inside() -> None:
    assert ray_temp_dir(Path("/srv/brivl")) == Path("/srv/brivl/ray")

"""``brivl`` subcommands, one module each (see :mod:`flows.cli`)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any


def checked(args: argparse.Namespace, check: Callable[[argparse.Namespace], Any]) -> Any:
    """The value ``check(args)`` returned when :func:`flows.cli.main` checked the arguments,
    or ``check(args)`` now when ``run`` is called without it (tests, other entry points)."""
    if hasattr(args, "_checked"):
        return args._checked
    return check(args)

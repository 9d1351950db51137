"""The ``brivl`` command line. Each subcommand is a module in :mod:`flows.commands`.

A command module defines ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``
and keeps heavy imports (Prefect, Ray, torch) inside ``run`` so ``brivl --help`` is instant.
Optionally ``check(args)`` validates the arguments and configs (raising an InputError) with
no side effects: it runs before the project home's stores are set up, so a bad argument
fails in about a second even on a fresh ``BRIVL_HOME`` (whose Prefect database takes ~30 s
to migrate); ``run`` takes the checked value from :func:`flows.commands.checked` instead
of checking again. ``ORCHESTRATED = False`` says the command runs no
Prefect flow or task, so that database is not prepared for it at all;
``ORCHESTRATED = "served"`` (the one-stage commands) says it runs as a Prefect task only when
a Prefect server is configured, else in-process (:mod:`tasks.standalone`). A command that
runs flows starts this process's ephemeral Prefect server in the background while its
arguments are checked (:mod:`tasks.prefect_server`).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys

from brivl.env import apply_defaults


def build_parser() -> argparse.ArgumentParser:
    """Parser with one subcommand per module in :mod:`flows.commands`."""
    import flows.commands as commands

    parser = argparse.ArgumentParser(
        prog="brivl",
        description="BriVL pipeline: crawl, download, filter, shard, pretrain, evaluate, "
        "register, search and interpret.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"flows.commands.{info.name}")
        name = getattr(module, "NAME", info.name.replace("_", "-"))
        command = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(command)
        command.set_defaults(_run=module.run, _check=getattr(module, "check", None),
                             _orchestrated=getattr(module, "ORCHESTRATED", True))
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``brivl`` console script.

    Input a user can fix (a bad config, input file, seed or checkpoint; a missing or foreign
    directory) is one line on stderr and exit code 2, not a traceback. The arguments are
    checked before the stores are prepared."""
    from brivl.errors import USER_ERRORS

    apply_defaults()
    args = build_parser().parse_args(argv)
    for name in _RUN_LOGGERS:
        logging.getLogger(name).addFilter(_no_input_error_traceback)
    prefect = _needs_prefect(args._orchestrated)
    try:
        if prefect:
            from tasks.prefect_server import start_in_background

            start_in_background(migrated_only=True)  # boots while the arguments are checked
        if args._check is not None:
            # before any setup: a bad argument costs no database migration; ``run`` reads the
            # checked value back with flows.commands.checked rather than checking again
            args._checked = args._check(args)
        if prefect:
            from tasks.stores import prepare_orchestration_store

            prepare_orchestration_store()  # a fresh home's Prefect database, once, under a lock
            start_in_background()  # flows wait for it (tasks.prefect_server.wait_ready)
        return int(args._run(args) or 0)
    except USER_ERRORS as exc:
        print(f"brivl {args.command}: {_one_line(exc)}", file=sys.stderr)
        return 2


def _needs_prefect(orchestrated: bool | str) -> bool:
    if orchestrated == "served":
        from tasks.standalone import orchestrated as served

        return served()
    return bool(orchestrated)


_RUN_LOGGERS = ("prefect.flow_runs", "prefect.task_runs")  # Prefect logs a failed run's traceback


def _no_input_error_traceback(record: logging.LogRecord) -> bool:
    """Keep Prefect's run logs, but not the traceback of an InputError (main prints it as
    one line); every other failure keeps its traceback."""
    from brivl.errors import InputError

    return not (record.exc_info and isinstance(record.exc_info[1], InputError))


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if isinstance(exc, (ValueError, RuntimeError)) else f"{text} ({type(exc).__name__})"


if __name__ == "__main__":
    sys.exit(main())

"""The ``brivl`` command line. Each subcommand is a module in :mod:`flows.commands`.

A command module defines ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``
and keeps heavy imports (Prefect, Ray, torch) inside ``run`` so ``brivl --help`` is instant.
"""

from __future__ import annotations

import argparse
import importlib
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
        command.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``brivl`` console script."""
    apply_defaults()
    args = build_parser().parse_args(argv)
    from tasks.stores import prepare_orchestration_store

    prepare_orchestration_store()  # a fresh home's Prefect database, migrated once under a lock
    return int(args._run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())

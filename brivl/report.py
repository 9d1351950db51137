"""Progress bars and closing summary tables for long work (rich)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

console = Console(stderr=True)


@contextlib.contextmanager
def progress(description: str, total: int | None, completed: int = 0) -> Iterator[Any]:
    """A progress bar; yields ``advance(n=1, description=None)`` (a new description replaces
    the bar's label, e.g. to show the latest loss). Quiet when stderr is not a terminal."""
    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not console.is_terminal,
        transient=False,
    )
    with bar:
        task_id = bar.add_task(description, total=total, completed=completed)

        def advance(n: int = 1, description: str | None = None) -> None:
            if description is None:
                bar.advance(task_id, n)
            else:
                bar.update(task_id, advance=n, description=description)

        yield advance


def track(items: Iterable[Any], description: str, total: int | None = None) -> Iterator[Any]:
    """Iterate with a progress bar."""
    if total is None and isinstance(items, Sequence):
        total = len(items)
    with progress(description, total) as advance:
        for item in items:
            yield item
            advance()


def table(title: str, rows: Sequence[Mapping[str, Any]] | Mapping[str, Any]) -> Table:
    """A rich table from a list of row dicts, or from one ``{name: value}`` mapping."""
    if isinstance(rows, Mapping):
        rows = [{"name": k, "value": v} for k, v in rows.items()]
    out = Table(title=title)
    columns: list[str] = []
    for row in rows:
        columns.extend(c for c in row if c not in columns)
    for column in columns:
        out.add_column(str(column), justify="right" if _numeric(rows, column) else "left")
    for row in rows:
        out.add_row(*(_fmt(row.get(c, "")) for c in columns))
    return out


def print_table(title: str, rows: Sequence[Mapping[str, Any]] | Mapping[str, Any]) -> None:
    """Print :func:`table` to stderr (stdout stays clean for machine-readable output)."""
    console.print(table(title, rows))


def _numeric(rows: Sequence[Mapping[str, Any]], column: str) -> bool:
    values = [r.get(column) for r in rows if r.get(column) not in (None, "")]
    return bool(values) and all(isinstance(v, (int, float)) for v in values)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)

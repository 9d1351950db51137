"""Progress bars and closing summary tables for long work (rich), and the milestones they pass.

Every bar reports its start, each quarter done and its end to the milestone sinks (see
:func:`add_milestone_sink`): ``tasks/`` adds one that writes them to the Prefect run log, so
the Prefect UI shows the same progress as the terminal.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
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
_sinks: list[Callable[[str], None]] = []


def add_milestone_sink(sink: Callable[[str], None]) -> None:
    """Call ``sink(message)`` for every milestone from now on (once per sink)."""
    if sink not in _sinks:
        _sinks.append(sink)


def milestone(message: str) -> None:
    """One line of progress for the sinks (the terminal has the bars and tables)."""
    for sink in list(_sinks):
        sink(message)


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
    state = {"done": completed, "label": description, "quarter": _quarter(completed, total)}
    start = time.perf_counter()
    milestone(f"{description}: started" + (f", {total:,} to do" if total else ""))
    with bar:
        task_id = bar.add_task(description, total=total, completed=completed)

        def advance(n: int = 1, description: str | None = None) -> None:
            if description is None:
                bar.advance(task_id, n)
            else:
                bar.update(task_id, advance=n, description=description)
                state["label"] = description
            state["done"] += n
            quarter = _quarter(state["done"], total)
            if quarter > state["quarter"] and quarter < 4:
                state["quarter"] = quarter
                milestone(f"{state['label']}: {state['done']:,}/{total:,}")

        yield advance
    of = f"/{total:,}" if total else ""
    milestone(f"{state['label']}: {state['done']:,}{of} in {time.perf_counter() - start:.1f} s")


def _quarter(done: int, total: int | None) -> int:
    return int(4 * done / total) if total else 0


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

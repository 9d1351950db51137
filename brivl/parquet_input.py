"""A stage's input Parquet files: the schema checked first, unreadable files set aside.

* :func:`resolve_columns` maps each role a stage reads (``caption``, ``image``, ...) to a
  column of the file and checks its type; a missing column or one of the wrong type (int64
  captions, string widths, a string ``jpg``) is a :class:`~brivl.errors.SchemaError`
  naming the file and the column, and what is accepted.
* :func:`open_inputs` opens each file; one that cannot be read (truncated, corrupt footer,
  not Parquet) becomes a :class:`BadFile` with its error, and the stage goes on with the
  others. Only when no file is readable is it an error.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pyarrow.types as pat

from brivl.errors import InputError, SchemaError

STRING = "string"
BINARY = "binary"
INTEGER = "integer"
FLOAT = "float"
_KINDS: dict[str, tuple[Callable[[pa.DataType], bool], str]] = {
    STRING: (lambda t: pat.is_string(t) or pat.is_large_string(t), "string"),
    BINARY: (lambda t: pat.is_binary(t) or pat.is_large_binary(t), "binary (encoded bytes)"),
    INTEGER: (pat.is_integer, "an integer type"),
    FLOAT: (pat.is_floating, "a floating-point type"),
}
READ_ERRORS = (pa.ArrowException, OSError)  # what pyarrow raises on a damaged file


@dataclass(frozen=True)
class Column:
    """One role a stage reads: the column names that may play it (the first present wins),
    the types accepted, and whether the file must have it."""

    names: tuple[str, ...]
    kinds: tuple[str, ...] = (STRING,)
    required: bool = True

    def describe(self) -> str:
        return " or ".join(_KINDS[k][1] for k in self.kinds)


@dataclass(frozen=True)
class BadFile:
    """An input file the stage could not read, and why."""

    file: str
    error: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def resolve_columns(path: Path, schema: pa.Schema, roles: Mapping[str, Column],
                    reader: str) -> dict[str, str | None]:
    """``role -> column name`` (``None``: an optional role the file lacks); SchemaError on a
    missing required column or a column of a type not accepted. ``reader`` names the stage
    for the message (e.g. ``"the filter"``)."""
    out: dict[str, str | None] = {}
    missing = []
    for role, spec in roles.items():
        name = next((n for n in spec.names if n in schema.names), None)
        if name is None:
            if spec.required:
                missing.append(" or ".join(spec.names))
            out[role] = None
            continue
        kind = schema.field(name).type
        all_null = pat.is_null(kind) and not spec.required  # e.g. a column of only nulls
        if not all_null and not any(_KINDS[k][0](kind) for k in spec.kinds):
            raise SchemaError(f"{path}: column {name!r} is {kind}; accepted: {spec.describe()} "
                              f"({reader} reads it as {role})")
        out[role] = name
    if missing:
        raise SchemaError(f"{path}: missing column(s) {missing}; found {sorted(schema.names)}. "
                          f"{reader} reads {_expected(roles)}")
    return out


def _expected(roles: Mapping[str, Column]) -> str:
    parts = [f"{' or '.join(c.names)} ({c.describe()}{'' if c.required else ', optional'})"
             for c in roles.values()]
    return ", ".join(parts)


def open_inputs(files: Sequence[Path]) -> tuple[list[tuple[Path, pq.ParquetFile]], list[BadFile]]:
    """Open each file (its footer is read); unreadable ones are returned as BadFiles.

    Raises InputError when there were files and none could be read."""
    good: list[tuple[Path, pq.ParquetFile]] = []
    bad: list[BadFile] = []
    for path in files:
        try:
            good.append((path, pq.ParquetFile(path)))
        except READ_ERRORS as exc:
            bad.append(bad_file(path, exc))
    if files and not good:
        raise InputError(f"no readable input file: {'; '.join(f'{b.file}: {b.error}' for b in bad)}")
    return good, bad


def bad_file(path: Path, exc: BaseException) -> BadFile:
    """A BadFile for ``path`` with ``exc`` as one line."""
    return BadFile(str(path), " ".join(f"{type(exc).__name__}: {exc}".split())[:500])


def read_table_or_bad(path: Path, columns: Sequence[str] | None = None) -> pa.Table | BadFile:
    """The whole table (``columns`` only, if given), or a BadFile when it cannot be read."""
    try:
        return pq.read_table(path, columns=list(columns) if columns is not None else None,
                             use_threads=False)
    except READ_ERRORS as exc:
        return bad_file(path, exc)


def bad_files_rows(bad: Sequence[BadFile]) -> list[dict[str, Any]]:
    """JSON-able list for a report or manifest extra."""
    return [b.to_dict() for b in bad]

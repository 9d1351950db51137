"""bench/RESULTS.md: each benchmark owns ``## `` sections and rewrites them whole."""

from __future__ import annotations

import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def replace_section(heading: str, command: str, text: str, path: Path = RESULTS) -> None:
    """Set section ``heading`` (up to the next ``## `` heading) to the command that measured
    it, today's date and ``text``; append the section when it is new. Others stay as they are."""
    body = path.read_text() if path.exists() else "# Benchmark results\n"
    section = f"{heading}\n\n`{command}` ({time.strftime('%Y-%m-%d')}):\n\n{text.rstrip()}\n"
    if heading in body:
        head, rest = body.split(heading, 1)
        nxt = rest.find("\n## ")
        tail = rest[nxt + 1 :] if nxt >= 0 else ""
        body = head + section + ("\n" + tail if tail else "")
    else:
        body = body.rstrip("\n") + "\n\n" + section
    path.write_text(body)

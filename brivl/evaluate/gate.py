"""The champion gate: does a newly registered model version take the ``champion`` alias?

A pure function of the new version's primary metric and the current champion's; the
registry calls around it are ``tasks/register.py``'s.
"""

from __future__ import annotations

import math

CHAMPION, CHALLENGER = "champion", "challenger"


def gate(
    new_value: float | None, champion_value: float | None, has_champion: bool
) -> tuple[str, str]:
    """(alias, reason): ``champion`` when new >= champion's (or none), else ``challenger``."""
    if new_value is None or not math.isfinite(new_value):
        return CHALLENGER, "the new model has no finite value for the primary metric"
    if not has_champion:
        return CHAMPION, "there was no champion"
    if champion_value is None:
        return CHALLENGER, "the champion has no value for the primary metric; not comparable"
    if new_value >= champion_value:
        return CHAMPION, f"{new_value:.6g} >= champion's {champion_value:.6g}"
    return CHALLENGER, f"{new_value:.6g} < champion's {champion_value:.6g}"

"""Byte units, and how fitplan prints sizes and reads counts."""
from __future__ import annotations

import math
import re

KiB, MiB, GiB = 2**10, 2**20, 2**30
# Counts a person types (--tokens 20M, 1e9): suffixes are powers of ten, as in "a 20M-token dataset"
_SUFFIXES = {"": 1, "k": 10**3, "m": 10**6, "b": 10**9, "g": 10**9, "t": 10**12}
MAX_COUNT = 10**18   # beyond any dataset or GPU count: larger is a typo


def gib(n: float | None, digits: int = 2, unit: bool = True) -> str:
    """A byte count in GiB: "12.35 GiB" ("12.35" without the unit, for a column that names it)."""
    return "N/A" if n is None else f"{n / GiB:.{digits}f}" + (" GiB" if unit else "")


def parse_count(text: str | int | float, what: str = "count") -> int:
    """A positive whole count from '20000000', '2e7', '20M', '1.5B' or '500k'; ValueError says why not."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]{1,3})?)\s*([kmbgt]?)\s*", str(text).lower())
    if not match:
        raise ValueError(f"{what} must be a number such as 20000000, 2e7 or 20M, not {str(text)[:40]!r}")
    value = float(match.group(1)) * _SUFFIXES[match.group(2)]
    if not math.isfinite(value) or value < 1 or value > MAX_COUNT:
        raise ValueError(f"{what} must be between 1 and {MAX_COUNT:.0e}, not {str(text)[:40]!r}")
    return int(round(value))

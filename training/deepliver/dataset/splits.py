"""Case-level (patient-level) train / val / test splits, seeded and reproducible.

A case is never in two splits. The counts come from the percentages by largest remainder; when there are
at least as many cases as splits with a non-zero percentage, each such split gets at least one case
(taken from the largest split). Cases are sorted by id, then shuffled with ``numpy.random.default_rng(seed)``,
so the same ids and seed always give the same splits, whatever the order they were listed in.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from deepliver.errors import ConfigError, InputError

__all__ = ["SPLIT_NAMES", "Splits", "parse_ratios", "split_cases", "read_splits_file"]

SPLIT_NAMES = ("train", "val", "test")


def parse_ratios(text: str | Sequence[float]) -> tuple[float, float, float]:
    """``"70,20,10"`` (or a sequence) -> ``(70.0, 20.0, 10.0)``; ``ConfigError`` unless three
    non-negative percentages summing to 100."""
    if isinstance(text, str):
        try:
            values = [float(p) for p in text.split(",")]
        except ValueError:
            raise ConfigError(f"split must be three percentages TRAIN,VAL,TEST (e.g. 70,20,10), got {text!r}") from None
    else:
        values = [float(v) for v in text]
    if len(values) != 3:
        raise ConfigError(f"split needs three percentages TRAIN,VAL,TEST (e.g. 70,20,10), got {len(values)}: "
                          f"{','.join(f'{v:g}' for v in values)}")
    if any(not np.isfinite(v) or v < 0 for v in values):
        raise ConfigError(f"split percentages must be >= 0, got {','.join(f'{v:g}' for v in values)}")
    if abs(sum(values) - 100.0) > 1e-6:
        raise ConfigError(f"split percentages must sum to 100, got {','.join(f'{v:g}' for v in values)} "
                          f"(sum {sum(values):g})")
    return tuple(values)  # type: ignore[return-value]


@dataclass(frozen=True)
class Splits:
    """The case ids of each split (sorted), with the seed and percentages that made them."""

    seed: int
    ratios: tuple[float, float, float]
    train: list[str] = field(default_factory=list)
    val: list[str] = field(default_factory=list)
    test: list[str] = field(default_factory=list)

    def of(self, case: str) -> str:
        """The split name of ``case``; ``KeyError`` if it is in none."""
        for name in SPLIT_NAMES:
            if case in getattr(self, name):
                return name
        raise KeyError(case)

    def to_dict(self) -> dict:
        """The ``splits.json`` form: ``{"seed", "ratios", "train", "val", "test"}``."""
        return {"seed": self.seed, "ratios": [_number(r) for r in self.ratios],
                "train": list(self.train), "val": list(self.val), "test": list(self.test)}


def split_cases(cases: Iterable[str], ratios: Sequence[float] = (70, 20, 10), seed: int = 0) -> Splits:
    """Assign each case id to train / val / test (see the module docstring for the rules)."""
    ratios = parse_ratios(ratios)
    ids = sorted(set(cases))
    counts = _counts(len(ids), ratios)
    order = np.random.default_rng(seed).permutation(len(ids))
    shuffled = [ids[i] for i in order]
    parts, start = [], 0
    for count in counts:
        parts.append(sorted(shuffled[start:start + count]))
        start += count
    return Splits(seed, ratios, *parts)


def _counts(n: int, ratios: Sequence[float]) -> list[int]:
    exact = [n * r / 100.0 for r in ratios]
    counts = [int(np.floor(e + 1e-9)) for e in exact]
    by_remainder = sorted(range(len(ratios)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in by_remainder[:n - sum(counts)]:
        counts[i] += 1
    wanted = [i for i, r in enumerate(ratios) if r > 0]
    if n >= len(wanted):
        for i in wanted:
            if counts[i] == 0:
                donor = max(range(len(counts)), key=lambda j: (counts[j], -j))
                counts[donor] -= 1
                counts[i] += 1
    return counts


def _number(value: float):
    return int(value) if float(value).is_integer() else value


def read_splits_file(path: str | os.PathLike, cases: Iterable[str], seed: int = 0) -> tuple[Splits, list[str]]:
    """The splits a ``splits.json`` (``{"train": [...], "val": [...], "test": [...]}``, e.g. a dataset's own)
    gives ``cases``: ``(Splits, cases it does not list)``. Ids it lists that are not among ``cases`` are
    ignored; a case listed in two splits is an ``InputError``. ``ratios`` records the resulting percentages."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        lists = {name: [str(c) for c in data.get(name, [])] for name in SPLIT_NAMES}
    except (OSError, ValueError, AttributeError, TypeError) as e:
        raise InputError(f"cannot read the train/val/test lists ({e})", path) from e
    known = sorted(set(cases))
    where: dict[str, str] = {}
    for name in SPLIT_NAMES:
        for case in lists[name]:
            if where.get(case, name) != name:
                raise InputError(f"case {case} is in both {where[case]!r} and {name!r}", path)
            where[case] = name
    parts = {name: [c for c in known if where.get(c) == name] for name in SPLIT_NAMES}
    total = sum(len(v) for v in parts.values())
    ratios = tuple(100.0 * len(parts[n]) / total if total else 0.0 for n in SPLIT_NAMES)
    return Splits(seed, ratios, **parts), [c for c in known if c not in where]

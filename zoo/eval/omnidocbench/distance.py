"""Levenshtein edit distances on strings and on sequences (reading orders, cell tokens)."""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np
from rapidfuzz.distance import Levenshtein
from rapidfuzz.process import cdist


def edit_distance(a: Sequence[Hashable], b: Sequence[Hashable]) -> int:
    """Unit-cost Levenshtein distance between two strings or two sequences of hashables."""
    return Levenshtein.distance(a, b)


def normalized_edit_distance(a: Sequence[Hashable], b: Sequence[Hashable]) -> float:
    """Edit distance divided by the longer length: 0 for equal inputs, 1 for nothing in common.

    Two empty inputs are equal (0.0).
    """
    longest = max(len(a), len(b))
    return Levenshtein.distance(a, b) / longest if longest else 0.0


def edit_distance_matrix(rows: Sequence[str], columns: Sequence[str]) -> np.ndarray:
    """Normalised edit distance of every row string to every column string, [rows, columns]."""
    if not rows or not columns:
        return np.zeros((len(rows), len(columns)))
    distances = cdist(rows, columns, scorer=Levenshtein.distance, dtype=np.int64, workers=1)
    longest = np.maximum.outer(
        np.array([len(r) for r in rows]), np.array([len(c) for c in columns])
    )
    return np.divide(distances, longest, out=np.zeros(distances.shape), where=longest > 0)


def has_close_window(text: str, pattern: str, limit: float, inclusive: bool) -> bool:
    """Whether some substring of ``text`` as long as ``pattern`` is within ``limit`` of it.

    Distances are normalised by ``len(pattern)``; ``inclusive`` chooses ``<=`` over ``<``.
    False when ``pattern`` is empty or longer than ``text``. Used by the matcher to find a
    prediction that is a fragment of a ground-truth block (or the other way round).
    """
    width = len(pattern)
    if width == 0 or width > len(text):
        return False
    cutoff = int(limit * width) + 1  # distances above this cannot pass the test
    for start in range(len(text) - width + 1):
        distance = Levenshtein.distance(text[start : start + width], pattern, score_cutoff=cutoff)
        ratio = distance / width
        if ratio < limit or (inclusive and ratio == limit):
            return True
    return False

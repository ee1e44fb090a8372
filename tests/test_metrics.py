"""torchmetrics metrics: text and reading-order edit distance, averaged over pages."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_modules.metrics import ReadingOrderEditDistance, TextEditDistance


def test_text_edit_distance_is_mean_of_page_distances() -> None:
    metric = TextEditDistance(normalize=False)
    metric.update(["kitten", "same"], ["sitting", "same"])  # 3 / 7 and 0
    metric.update(["abc"], [""])  # 1
    assert metric.compute().item() == pytest.approx((3 / 7 + 0 + 1) / 3)


def test_text_edit_distance_normalises_like_omnidocbench() -> None:
    metric = TextEditDistance()
    metric.update(["Hello,   world!\n\n$\\alpha$"], ["hello world α"])
    # Punctuation, spaces and layout vanish; inline LaTeX becomes unicode; case is kept.
    assert metric.compute().item() == pytest.approx(1 / len("Helloworldα"))


def test_reading_order_edit_distance() -> None:
    metric = ReadingOrderEditDistance()
    metric.update([[1, 3, 2, 4], [1, 2]], [[1, 2, 3, 4], [1, 2]])  # 2 / 4 and 0
    metric.update([[]], [[5]])  # everything missing: 1
    assert metric.compute().item() == pytest.approx((0.5 + 0 + 1) / 3)


def test_states_merge_across_processes() -> None:
    whole, part_a, part_b = (TextEditDistance(normalize=False) for _ in range(3))
    whole.update(["ab", "xyz", "q"], ["ab", "xy", "r"])
    part_a.update(["ab", "xyz"], ["ab", "xy"])
    part_b.update(["q"], ["r"])
    part_a.merge_state(part_b)
    assert torch.equal(part_a.compute(), whole.compute())


def test_empty_and_mismatched_input() -> None:
    metric = ReadingOrderEditDistance()
    with pytest.warns(UserWarning):  # torchmetrics warns about compute before update
        assert math.isnan(metric.compute().item())
    with pytest.raises(ValueError, match="one target per prediction"):
        TextEditDistance().update(["a", "b"], ["a"])

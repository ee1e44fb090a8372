"""torchmetrics metrics for use inside training and validation loops.

Both average a per-page normalised edit distance (edits / longer length) over pages, with the
edit distance and text normalisation of the OmniDocBench evaluation (``zoo.eval.omnidocbench``),
so a validation curve speaks the same language as the benchmark. They do not match blocks;
for benchmark numbers use ``zoo.eval.predictions.score_predictions``.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import torch
from torchmetrics import Metric

from zoo.eval.omnidocbench import (
    GroundTruthPage,
    match_page,
    normalize_text,
    normalized_edit_distance,
    split_markdown,
)
from zoo.eval.omnidocbench.markdown_blocks import TEXT


class _MeanPageEditDistance(Metric):
    """Mean over pages of a normalised edit distance; states sum across processes."""

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("total", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("pages", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def _add(self, distances: list[float]) -> None:
        self.total += sum(distances)
        self.pages += len(distances)

    def compute(self) -> torch.Tensor:
        """The mean distance in [0, 1]; NaN before any page was seen."""
        if self.pages == 0:
            return torch.tensor(float("nan"), dtype=torch.float64)
        return self.total / self.pages


def _check_lengths(preds: Sequence, targets: Sequence) -> None:
    if len(preds) != len(targets):
        raise ValueError(
            f"got {len(preds)} predictions and {len(targets)} targets; expected one target "
            "per prediction"
        )


class TextEditDistance(_MeanPageEditDistance):
    """Normalised edit distance between predicted and reference page text, mean over pages.

    With ``normalize=True`` (default) both sides are normalised as OmniDocBench text (inline
    LaTeX to unicode, then letters, digits and CJK only), so layout and punctuation do not
    count; with False the raw strings are compared.
    """

    def __init__(self, normalize: bool = True, **kwargs) -> None:
        super().__init__(**kwargs)
        self.normalize = normalize

    def update(self, preds: Sequence[str], targets: Sequence[str]) -> None:
        """Add a batch of pages: predicted texts and their reference texts."""
        _check_lengths(preds, targets)
        if self.normalize:
            preds = [normalize_text(text) for text in preds]
            targets = [normalize_text(text) for text in targets]
        self._add([normalized_edit_distance(p, t) for p, t in zip(preds, targets, strict=True)])


class ReadingOrderEditDistance(_MeanPageEditDistance):
    """Edit distance between a predicted and the true reading order, mean over pages.

    Each order is a sequence of block identifiers (e.g. ground-truth order numbers): the
    prediction lists them as the model reads the page, the target in the true order. For a
    benchmark page, ``zoo.eval.omnidocbench.match_page(page, markdown).reading_order`` gives
    ``(target, prediction)``.
    """

    def update(
        self, preds: Sequence[Sequence[Hashable]], targets: Sequence[Sequence[Hashable]]
    ) -> None:
        """Add a batch of pages: predicted block orders and true block orders."""
        _check_lengths(preds, targets)
        self._add(
            [
                normalized_edit_distance(list(p), list(t))
                for p, t in zip(preds, targets, strict=True)
            ]
        )


def markdown_reading_orders(reference: str, prediction: str) -> tuple[list, list] | None:
    """(true order, predicted order) of the text blocks of a reference markdown page.

    For pages known only by their markdown (a validation batch): the reference's text blocks
    become a one-page ground truth numbered in reference order, and the prediction is matched
    to it as OmniDocBench matches a page. None when neither side has a text block.
    """
    blocks = [
        {"category_type": "text_block", "text": block.content, "order": number}
        for number, block in enumerate(
            (b for b in split_markdown(reference) if b.category == TEXT), start=1
        )
    ]
    return match_page(GroundTruthPage("reference", {}, blocks), prediction).reading_order

"""torchmetrics metrics for use inside training and validation loops.

The edit distances average a per-page normalised edit distance (edits / longer length) over
pages, with the edit distance and text normalisation of the OmniDocBench evaluation
(``zoo.eval.omnidocbench``), so a validation curve speaks the same language as the benchmark.
They do not match blocks; for benchmark numbers use ``zoo.eval.predictions.score_predictions``.

:class:`ImageReliance` and :class:`AttentionOnImage` say whether the decoder reads the page at
all: a decoder can learn the answers' language and shape while ignoring the image, and its loss
alone does not tell.
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


class _Mean(Metric):
    """Mean of values added in parts (pages, tokens); states sum across processes."""

    is_differentiable = False
    full_state_update = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("total", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def _add(self, total: float | torch.Tensor, count: int) -> None:
        self.total += total
        self.count += count

    def compute(self) -> torch.Tensor:
        """The mean; NaN before any value was added."""
        if self.count == 0:
            return torch.tensor(float("nan"), dtype=torch.float64)
        return self.total / self.count


class _MeanPageEditDistance(_Mean):
    """Mean over pages of a normalised edit distance, in [0, 1]."""

    higher_is_better = False

    def _add_pages(self, distances: list[float]) -> None:
        self._add(sum(distances), len(distances))


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
        self._add_pages(
            [normalized_edit_distance(p, t) for p, t in zip(preds, targets, strict=True)]
        )


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
        self._add_pages(
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


class ImageReliance(_Mean):
    """How much worse answers are predicted from another page's image than from their own: the
    mean over answer tokens of ``loss(another page's image) - loss(own image)``, in nats per
    token. About 0: the decoder ignores the image; the more it reads the page, the larger.
    (Below 0, another page fits the answer better: noise, or a model that misreads.)
    """

    higher_is_better = True

    def update(self, own: torch.Tensor, other: torch.Tensor) -> None:
        """Add the per-token losses of the same answer tokens, read with each page's own image
        (``own``) and with another page's (``other``)."""
        if own.shape != other.shape:
            raise ValueError(
                f"got {tuple(own.shape)} own-image and {tuple(other.shape)} other-image losses; "
                "expected one pair per answer token"
            )
        self._add((other.double() - own.double()).sum(), own.numel())


class AttentionOnImage(_Mean):
    """The share of attention that answer positions put on the image: the attention probability
    mass on image tokens, averaged over heads, answer positions and the layers observed. In
    [0, 1]; 0 means no answer position looks at the image."""

    higher_is_better = None

    def update(self, probs: torch.Tensor, image_keys: torch.Tensor, queries: torch.Tensor) -> None:
        """Add one layer: its probabilities ``[B, H, T, S]``, which keys are image tokens
        (bool ``[B, S]``) and which query positions answer (bool ``[B, T]``)."""
        batch, heads, length, keys = probs.shape
        rows = probs.transpose(1, 2)[queries].float()  # [N, H, S]: only the answer rows
        image = image_keys[:, None, :].expand(batch, length, keys)[queries].to(rows.dtype)
        mass = torch.einsum("nhs,ns->n", rows, image) / heads
        self._add(mass.double().sum(), mass.numel())

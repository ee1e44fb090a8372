"""A batch whose pages are shown another page's image: the counterfactual input that tells
whether a decoder reads the page (``lightning_modules.metrics.ImageReliance``).

Pages of a batch may take different numbers of image tokens (their tile grids differ), and a
row's ``<image>`` placeholders must match its image's count one to one. So the image is not
swapped alone: each row's run of placeholders is re-laid out for the image it now gets, exactly
as the processor lays out that image, and its prompt text and answer stay its own. Every page
of the batch is compared, whatever its size, at the price of an encoder pass over the moved
views (they are the same pixels, so eval-mode encoders give the same embeddings).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch.nn.utils.rnn import pad_sequence

from zoo.inputs.processor import IGNORE_INDEX


def _split_at_image(
    ids: torch.Tensor, labels: torch.Tensor, image_token_id: int
) -> tuple[slice, slice]:
    """The parts of one row's real tokens before and after its one run of image placeholders,
    which the processor lays out between prompt text."""
    where = (ids == image_token_id).nonzero().flatten()
    if where.numel() == 0 or int(where[-1] - where[0]) + 1 != where.numel():
        raise ValueError(
            f"a row holds {where.numel()} image placeholders (id {image_token_id}) that are not "
            "one run; build the batch with the processor (one <image> per prompt)"
        )
    first, last = int(where[0]), int(where[-1])
    if bool((labels[first : last + 1] != IGNORE_INDEX).any()):
        raise ValueError("image placeholders carry labels; only answer tokens may")
    return slice(0, first), slice(last + 1, None)


def roll_page_images(batch: Mapping[str, Any], image_token_id: int, pad_id: int) -> dict[str, Any]:
    """``batch`` with page ``i`` shown the image of page ``i - 1`` (page 0 that of the last).

    ``batch`` holds ``input_ids``, ``attention_mask``, ``labels`` (left or right padded) and
    ``images`` (an :class:`~zoo.inputs.preprocessing.ImageBatch`, one page per row), as the
    processor makes them. Each row keeps its own text and answer (so the labelled tokens, in
    order, are the batch's), with as many placeholders as its new image takes; rows come back
    right-padded. A batch of one page has no other image, which is an error.
    """
    images = batch["images"]
    n_pages = batch["input_ids"].shape[0]
    if images is None or len(images) != n_pages:
        raise ValueError("rolling page images needs one image per row of the batch")
    if n_pages < 2:
        raise ValueError("a batch of one page has no other page's image to show it")
    counts = (batch["input_ids"] == image_token_id).sum(dim=1).tolist()
    sources = [(page - 1) % n_pages for page in range(n_pages)]
    new_ids, new_labels = [], []
    for ids, mask, labels, source in zip(
        batch["input_ids"], batch["attention_mask"], batch["labels"], sources, strict=True
    ):
        ids, labels = ids[mask.bool()], labels[mask.bool()]
        before, after = _split_at_image(ids, labels, image_token_id)
        placeholders = ids.new_full((counts[source],), image_token_id)
        unlabelled = labels.new_full((counts[source],), IGNORE_INDEX)
        new_ids.append(torch.cat([ids[before], placeholders, ids[after]]))
        new_labels.append(torch.cat([labels[before], unlabelled, labels[after]]))
    masks = [torch.ones_like(ids) for ids in new_ids]
    return {
        **batch,
        "input_ids": pad_sequence(new_ids, batch_first=True, padding_value=pad_id),
        "attention_mask": pad_sequence(masks, batch_first=True, padding_value=0),
        "labels": pad_sequence(new_labels, batch_first=True, padding_value=IGNORE_INDEX),
        "images": images.select(sources),
    }

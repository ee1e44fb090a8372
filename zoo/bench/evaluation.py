"""Suite ``eval``: evaluation throughput in pages per minute, 8 pages of mixed sizes (0 to 6
crops), each prompt = its image tokens + a short instruction, greedy generation of a fixed
number of tokens per page (no early stop).

The zoo generates the 8 pages as one batch (``OCRModel.generate``: an unpadded prefill per
distinct prompt length, then batched decode steps); transformers is measured both ways, one
left-padded batch of the same inputs and page by page, and the target compares the zoo with
transformers' faster way. Image preprocessing is left out of both (the
same preprocessed views go to both). Uses the ``eval`` size: a tiny encoder (the ``vision``
suite times the real one) with the ``main`` decoder.
"""

from __future__ import annotations

from typing import Any

import torch

from zoo.bench.context import BenchContext, comparison, memory_comparison
from zoo.bench.measure import peak_tensor_bytes, time_interleaved
from zoo.bench.models import greedy_tokens, prompts, random_pages, transformers_pixels
from zoo.inputs.preprocessing import ImageBatch

PAGE_SIZES = [
    (600, 800),  # no crops
    (1240, 1754),  # A4 portrait
    (1754, 1240),  # A4 landscape
    (700, 700),  # no crops
    (1536, 1024),  # 6 crops
    (1000, 2000),  # tall
    (1600, 1600),  # 4 crops
    (800, 1100),
]
INSTRUCTION_TOKENS = 12


def page_batch(images: ImageBatch, index: int) -> ImageBatch:
    """The views of page ``index`` alone."""
    start = sum(cols * rows for cols, rows in images.crop_grids[:index])
    cols, rows = images.crop_grids[index]
    local = None if cols == 0 else images.local_views[start : start + cols * rows]
    return ImageBatch(images.global_views[index : index + 1], local, [(cols, rows)])


def run(ctx: BenchContext) -> dict[str, Any]:
    model, twin = ctx.pair("eval")
    new_tokens = 2 if ctx.tiny else 16
    pages = PAGE_SIZES[:3] if ctx.tiny else PAGE_SIZES
    images = model.preprocess(random_pages(pages))
    ids, mask = prompts(model, images, [INSTRUCTION_TOKENS] * len(pages))
    config = greedy_tokens(new_tokens)
    singles = []
    for index in range(len(pages)):
        single = page_batch(images, index)
        row_ids = ids[index : index + 1, mask[index].bool()]
        singles.append((row_ids, transformers_pixels(single)))

    def transformers_per_page() -> None:
        for row_ids, pixels in singles:
            twin.generate(input_ids=row_ids, generation_config=config, **pixels)

    calls = {
        "zoo": lambda: model.generate(ids, images, mask, max_new_tokens=new_tokens),
        "transformers batched": lambda: twin.generate(
            input_ids=ids,
            attention_mask=mask,
            generation_config=config,
            **transformers_pixels(images),
        ),
        "transformers per page": transformers_per_page,
    }
    with torch.no_grad():
        times = time_interleaved(calls, ctx.repeats, ctx.warmup)
        memory = {side: peak_tensor_bytes(call) for side, call in calls.items()}
    rate = {side: stats.inverted(60 * len(pages), "pages/min") for side, stats in times.items()}
    best = max(("transformers batched", "transformers per page"), key=lambda s: rate[s].median)
    case = f"{len(pages)} pages, {new_tokens} new tokens each"
    rows = [
        comparison(
            f"{case}: throughput vs {best}",
            rate["zoo"],
            rate[best],
            ">= 1.3",
            higher_is_better=True,
        ),
        comparison(
            f"{case}: throughput vs transformers "
            + ("per page" if best.endswith("batched") else "batched"),
            rate["zoo"],
            rate["transformers per page" if best.endswith("batched") else "transformers batched"],
            higher_is_better=True,
        ),
        memory_comparison(
            f"{case}: peak memory (vs transformers batched)",
            memory["zoo"],
            memory["transformers batched"],
            "<= 1.0",
        ),
    ]
    return {"rows": rows, "crop_grids": images.crop_grids}

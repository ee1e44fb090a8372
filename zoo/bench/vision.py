"""Suite ``vision``: image features of one 1024 global view and of a page cut into 6 crops + the
global view, through encoder and projector (plus the view separator), both sides batched.

The encoder's FLOPs for the 1024 view are counted once with ``FlopCounterMode`` (the machine
suite divides them by the measured time)."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from zoo.bench.context import BenchContext, comparison
from zoo.bench.measure import Stats, peak_tensor_bytes, time_interleaved
from zoo.bench.models import random_pages, transformers_pixels
from zoo.preprocessing import ImageBatch

SIX_CROP_PAGE = (1536, 1024)  # aspect 3:2 -> a 3 x 2 grid of 768 crops


def _cases(model) -> dict[str, ImageBatch]:
    global_view = torch.randn(1, 3, 1024, 1024, generator=torch.Generator().manual_seed(0))
    page = model.preprocess(random_pages([SIX_CROP_PAGE]))
    if page.crop_grids != [(3, 2)]:
        raise RuntimeError(f"expected a 3x2 crop grid for {SIX_CROP_PAGE}, got {page.crop_grids}")
    return {
        "1024 global view": ImageBatch(global_view, None, [(0, 0)]),
        "page: 6 crops + global": page,
    }


def encoder_flops(model, images: ImageBatch) -> int:
    """FLOPs of ``model.encode(images)`` as counted by ``FlopCounterMode`` (matmuls, convs,
    attention)."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.encode(images)
    return counter.get_total_flops()


def run(ctx: BenchContext) -> dict[str, Any]:
    model, twin = ctx.pair("main")
    rows = []
    flops = {}
    for case, images in _cases(model).items():
        pixels = transformers_pixels(images)
        with torch.no_grad():
            calls = {
                "zoo": lambda images=images: model.encode(images),
                "transformers": lambda pixels=pixels: twin.model.get_image_features(**pixels),
            }
            flops[case] = encoder_flops(model, images)  # also the first warm-up call
            times = time_interleaved(calls, ctx.repeats, ctx.warmup)
            memory = {side: peak_tensor_bytes(call) for side, call in calls.items()}
        rows.append(comparison(f"{case}: time", times["zoo"], times["transformers"], "<= 1.0"))
        rows.append(
            comparison(
                f"{case}: peak memory",
                Stats.of([memory["zoo"] / 2**20], "MiB"),
                Stats.of([memory["transformers"] / 2**20], "MiB"),
                "<= 1.0",
            )
        )
        rows[-2]["flops"] = flops[case]
    return {"rows": rows, "flops": flops}

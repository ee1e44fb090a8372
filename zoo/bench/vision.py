"""Suite ``vision``: image features of one 1024 global view and of a page cut into 6 crops + the
global view, through encoder and projector (plus the view separator), both sides batched.

The encoder's FLOPs for the 1024 view are counted once with ``FlopCounterMode`` (the machine
suite divides them by the measured time). PyTorch's counter knows the CUDA attention kernels
only, so the CPU one is counted here with the same formula (attention is a fifth of the
encoder's FLOPs: SAM's global blocks attend over 4096 tokens)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from zoo.bench.context import BenchContext, comparison, memory_comparison
from zoo.bench.measure import peak_tensor_bytes, time_interleaved
from zoo.bench.models import SIX_CROP_PAGE, random_pages, transformers_pixels
from zoo.inputs.preprocessing import ImageBatch


def _cases(model) -> dict[str, ImageBatch]:
    global_view = torch.randn(1, 3, 1024, 1024, generator=torch.Generator().manual_seed(0))
    page = model.preprocess(random_pages([SIX_CROP_PAGE]))
    if page.crop_grids != [(3, 2)]:
        raise RuntimeError(f"expected a 3x2 crop grid for {SIX_CROP_PAGE}, got {page.crop_grids}")
    return {
        "1024 global view": ImageBatch(global_view, None, [(0, 0)]),
        "page: 6 crops + global": page,
    }


def cpu_attention_flops(
    query_shape: torch.Size, key_shape: torch.Size, value_shape: torch.Size, *args, **kwargs
) -> int:
    """``FlopCounterMode`` formula for SDPA's CPU kernel: that of its CUDA kernels."""
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def count_flops(call: Callable[[], object]) -> int:
    """FLOPs of ``call()`` as ``FlopCounterMode`` counts them (matmuls, convolutions,
    attention), CPU attention included."""
    cpu_attention = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    mapping = {cpu_attention: cpu_attention_flops}
    with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        call()
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
            flops[case] = count_flops(calls["zoo"])  # also the first warm-up call
            times = time_interleaved(calls, ctx.repeats, ctx.warmup)
            memory = {side: peak_tensor_bytes(call) for side, call in calls.items()}
        rows.append(comparison(f"{case}: time", times["zoo"], times["transformers"], "<= 1.0"))
        rows.append(
            memory_comparison(
                f"{case}: peak memory",
                memory["zoo"],
                memory["transformers"],
                "<= 1.0",
            )
        )
        rows[-2]["flops"] = flops[case]
    return {"rows": rows, "flops": flops}

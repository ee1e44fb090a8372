"""Suite ``masks``: the ``causal_flow`` mask compiled for each attention backend available here
(dense additive for SDPA, flex_attention's BlockMask, xformers' aligned bias when xformers and
CUDA exist), then one attention call of the encoder's shape (14 query heads, 2 key/value heads,
head 64) with it, at 256 + 256 tokens (the 1024 view) and 144 + 144 (a 768 crop). The build is
timed as called by the encoder (``compile_mask`` caches results where the backend does).

The page case builds, from cold caches, every mask the encoder needs for a batch of 8 v2 pages
with 6 crops + global (one call over the 48 crops, one over the 8 global views), against
transformers' own construction for its deepseek_ocr2 encoder and against the original remote
code's recipe (a dense float mask per view, written one query row at a time), and reports the
peak memory of building them as flex BlockMasks next to dense SDPA masks."""

from __future__ import annotations

import sys
from typing import Any

import torch
from transformers.masking_utils import create_causal_mask
from transformers.models.deepseek_ocr2.configuration_deepseek_ocr2 import (
    DeepseekOcr2VisionEncoderConfig,
)

from masks import compile_mask, xformers_available
from masks.builtin import QUERY, VISUAL
from zoo.bench.context import BenchContext, comparison, memory_comparison
from zoo.bench.measure import peak_tensor_bytes, time_interleaved
from zoo.layers.attention import ATTENTION_KERNELS
from zoo.registry import create_mask

SIZES = (256, 144)
TINY_SIZES = (64,)
HEADS, KV_HEADS, HEAD_DIM = 14, 2, 64
# (views in the call, visual tokens = queries per view) of a batch of 8 pages, 6 crops each
PAGE_CALLS = ((8 * 6, 144), (8, 256))
TINY_PAGE_CALLS = ((4, 16), (2, 36))


def mask_caches() -> list[Any]:
    """Every memoised function of the ``masks`` package (each has ``cache_clear``)."""
    return [
        value
        for name, module in list(sys.modules.items())
        if name == "masks" or name.startswith("masks.")
        for value in vars(module).values()
        if callable(getattr(value, "cache_clear", None))
    ]


def zoo_page_masks(
    calls: tuple[tuple[int, int], ...], caches: list[Any] | None = None, backend: str = "sdpa"
) -> list[Any]:
    """The masks the zoo encoder builds for ``calls`` with ``backend`` (additive tensors for
    SDPA, BlockMasks for flex), after emptying ``caches``."""
    for cache in caches or ():
        cache.cache_clear()
    spec = create_mask("causal_flow")
    return [compile_mask(spec, ((VISUAL, m), (QUERY, m)), backend) for _, m in calls]


def transformers_page_masks(calls: tuple[tuple[int, int], ...]) -> list[torch.Tensor]:
    """What transformers' deepseek_ocr2 encoder builds for ``calls`` (its forward's recipe)."""
    config = DeepseekOcr2VisionEncoderConfig()
    config._attn_implementation = "sdpa"
    masks = []
    for views, m in calls:
        blocks = torch.full((views, 2 * m), -1, dtype=torch.long)
        blocks[:, :m] = 0
        masks.append(
            create_causal_mask(
                config=config,
                inputs_embeds=torch.empty(views, 2 * m, 1),
                attention_mask=None,
                past_key_values=None,
                block_sequence_ids=blocks,
            )
        )
    return masks


def row_loop_page_masks(calls: tuple[tuple[int, int], ...]) -> list[torch.Tensor]:
    """The baseline, the original remote code's recipe: per view, a float mask filled with the
    minimum, the visual block opened by index, then two writes per query row (the visual
    columns, and the queries up to itself); the views stacked into ``[views, 1, L, L]``."""
    masks = []
    for views, m in calls:
        blocked = torch.finfo(torch.float32).min
        visual, queries = torch.arange(m), torch.arange(m, 2 * m)
        per_view = []
        for _ in range(views):
            mask = torch.full((2 * m, 2 * m), blocked)
            mask[visual[:, None], visual] = 0.0
            for i, row in enumerate(queries):
                mask[row, visual] = 0.0
                mask[row, queries[: i + 1]] = 0.0
            per_view.append(mask)
        masks.append(torch.stack(per_view)[:, None])
    return masks


def page_rows(ctx: BenchContext) -> list[dict[str, Any]]:
    calls = TINY_PAGE_CALLS if ctx.tiny else PAGE_CALLS
    caches = mask_caches()
    times = time_interleaved(
        {
            "zoo": lambda: zoo_page_masks(calls, caches),
            "transformers": lambda: transformers_page_masks(calls),
            "row_loop": lambda: row_loop_page_masks(calls),
        },
        ctx.repeats,
        ctx.warmup,
    )
    zoo, reference, loop = (times[k].scaled(1e3, "ms") for k in ("zoo", "transformers", "row_loop"))
    case = "page mask build (8 pages x 6 crops + global, cold caches)"
    memory = {
        backend: peak_tensor_bytes(lambda b=backend: zoo_page_masks(calls, caches, b))
        for backend in ("flex", "sdpa")
    }
    return [
        comparison(f"{case} vs transformers", zoo, reference, target="<= 1.0"),
        comparison(
            f"{case} vs per-query row loop",
            zoo,
            loop,
            target="<= 0.1",
            note="the 'transformers' column holds the row-loop baseline",
        ),
        memory_comparison(
            f"{case}: peak memory, flex BlockMask vs dense SDPA mask",
            memory["flex"],
            memory["sdpa"],
            note="the 'transformers' column holds the zoo's dense SDPA mask",
        ),
    ]


def backends() -> list[str]:
    names = ["sdpa", "flex"]
    return names + ["xformers"] if xformers_available() else names


def run(ctx: BenchContext) -> dict[str, Any]:
    spec = create_mask("causal_flow")
    rows = []
    for visual in TINY_SIZES if ctx.tiny else SIZES:
        layout = ((VISUAL, visual), (QUERY, visual))
        length = 2 * visual
        generator = torch.Generator().manual_seed(visual)
        qkv = (
            torch.randn(1, HEADS, length, HEAD_DIM, generator=generator),
            torch.randn(1, KV_HEADS, length, HEAD_DIM, generator=generator),
            torch.randn(1, KV_HEADS, length, HEAD_DIM, generator=generator),
        )
        builds, attends = {}, {}
        for backend in backends():
            mask = compile_mask(spec, layout, backend)
            kernel = ATTENTION_KERNELS[backend]
            builds[backend] = lambda b=backend, lay=layout: compile_mask(spec, lay, b)
            attends[backend] = lambda k=kernel, m=mask, t=qkv: k(*t, m)
        with torch.no_grad():
            build_times = time_interleaved(builds, ctx.repeats, ctx.warmup)
            attend_times = time_interleaved(attends, ctx.repeats, ctx.warmup)
        for backend in builds:
            case = f"{visual}+{visual} tokens, {backend}"
            rows.append(
                comparison(f"{case}: mask build", build_times[backend].scaled(1e3, "ms"), None)
            )
            rows.append(
                comparison(f"{case}: attention", attend_times[backend].scaled(1e3, "ms"), None)
            )
    return {"rows": rows + page_rows(ctx), "backends": backends()}

"""Suite ``masks``: the ``causal_flow`` mask compiled for each attention backend available here
(dense additive for SDPA, flex_attention's BlockMask, xformers' aligned bias when xformers and
CUDA exist), then one attention call of the encoder's shape (14 query heads, 2 key/value heads,
head 64) with it, at 256 + 256 tokens (the 1024 view) and 144 + 144 (a 768 crop). The build is
timed as called by the encoder (``compile_mask`` caches results where the backend does)."""

from __future__ import annotations

from typing import Any

import torch

from encoders.attention import ATTENTION_KERNELS
from masks import compile_mask, xformers_available
from masks.builtin import QUERY, VISUAL
from zoo.bench.context import BenchContext, comparison
from zoo.bench.measure import time_interleaved
from zoo.registry import create_mask

SIZES = (256, 144)
TINY_SIZES = (64,)
HEADS, KV_HEADS, HEAD_DIM = 14, 2, 64


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
    return {"rows": rows, "backends": backends()}

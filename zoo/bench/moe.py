"""Suite ``moe``: the MoE feed-forward alone (router, routed experts, shared experts) for 1, 64
and 4096 tokens, zoo vs transformers' ``DeepseekOcr2TextMoe`` with the same weights.

It also counts the matrix-multiply kernel launches of one forward (``torch.profiler``): the
zoo's count must not grow with the tokens or the experts they hit, i.e. no Python loop over
experts or tokens (two grouped matmuls over the token-expert pairs sorted by expert)."""

from __future__ import annotations

from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile

from zoo.bench.context import BenchContext, comparison
from zoo.bench.measure import time_interleaved

TOKEN_COUNTS = (1, 64, 4096)
MATMUL_OPS = (
    "aten::linear",
    "aten::matmul",
    "aten::mm",
    "aten::bmm",
    "aten::addmm",
    "aten::baddbmm",
    "aten::_grouped_mm",
)


def matmul_calls(call) -> int:
    """Matrix-multiply ops one ``call`` issues from Python (top-level profiler events; a
    grouped matmul counts once, whatever its kernel does per group inside)."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        call()
    return sum(1 for e in prof.events() if e.name in MATMUL_OPS and e.cpu_parent is None)


def run(ctx: BenchContext) -> dict[str, Any]:
    model, twin = ctx.pair("main")
    index = next(i for i, layer in enumerate(model.decoder.layers) if hasattr(layer.mlp, "router"))
    ours = model.decoder.layers[index].mlp
    theirs = twin.model.language_model.layers[index].mlp
    width = model.decoder.hidden_size
    counts = TOKEN_COUNTS[:2] if ctx.tiny else TOKEN_COUNTS
    rows, launches = [], {}
    with torch.no_grad():
        for tokens in counts:
            hidden = torch.randn(1, tokens, width, generator=torch.Generator().manual_seed(tokens))
            calls = {"zoo": lambda h=hidden: ours(h), "transformers": lambda h=hidden: theirs(h)}
            torch.testing.assert_close(ours(hidden)[0], theirs(hidden), rtol=1e-4, atol=1e-4)
            times = time_interleaved(calls, ctx.repeats, ctx.warmup)
            launches[tokens] = {side: matmul_calls(call) for side, call in calls.items()}
            rows.append(
                comparison(
                    f"{tokens} tokens: tokens/s",
                    times["zoo"].inverted(tokens, "tokens/s"),
                    times["transformers"].inverted(tokens, "tokens/s"),
                    higher_is_better=True,
                    matmul_launches=launches[tokens],
                )
            )
    zoo_launches = {launch["zoo"] for launch in launches.values()}
    return {
        "rows": rows,
        "matmul_launches": launches,
        "no_loop_over_experts_or_tokens": len(zoo_launches) == 1,
        "transformers_experts_implementation": getattr(
            twin.config.text_config, "_experts_implementation", None
        ),
    }

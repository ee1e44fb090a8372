"""Suite ``prefill``: the decoder's forward over a 1024-token prompt that holds one page's image
embeddings (4 crops + global = 833 tokens, the rest text), filling the KV cache and computing
the last position's logits, as generation's first step does. The image embeddings are computed
once beforehand and given to both sides (``vision`` times the encoder)."""

from __future__ import annotations

from typing import Any

import torch

from zoo.bench.context import BenchContext, comparison, memory_comparison
from zoo.bench.measure import peak_tensor_bytes, time_interleaved
from zoo.bench.models import prompt_embeddings

PAGE = (1536, 1536)  # 2 x 2 crops of 768 + the global view
PROMPT_TOKENS = 1024


def prefill_calls(ctx: BenchContext, length: int) -> dict[str, Any]:
    model, twin = ctx.pair("main")
    embeds, mask = prompt_embeddings(model, PAGE, length)
    return {
        "zoo": lambda: model.decoder(embeds, attention_mask=mask, use_cache=True, logits_to_keep=1),
        "transformers": lambda: twin(
            inputs_embeds=embeds, attention_mask=mask, use_cache=True, logits_to_keep=1
        ),
    }


def run(ctx: BenchContext) -> dict[str, Any]:
    calls = prefill_calls(ctx, PROMPT_TOKENS)
    with torch.no_grad():
        times = time_interleaved(calls, ctx.repeats, ctx.warmup)
        memory = {side: peak_tensor_bytes(call) for side, call in calls.items()}
    case = f"{PROMPT_TOKENS}-token prompt"
    rows = [
        comparison(f"{case}: time", times["zoo"], times["transformers"], "<= 1.0"),
        memory_comparison(
            f"{case}: peak memory",
            memory["zoo"],
            memory["transformers"],
            "<= 1.0",
        ),
    ]
    return {"rows": rows}

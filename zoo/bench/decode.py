"""Suite ``decode``: greedy decoding with the KV cache after a 1024-token page prompt, each side
through its own ``generate``. Seconds per token = (time of ``n + 1`` new tokens - time of 1) /
``n``, paired round by round, so the prefill cancels out. Both sides must produce the same
tokens (checked: same weights, greedy).

Bytes one step must read (for the machine suite's bandwidth bound;
:func:`zoo.bench.measure.bytes_per_token`): the decoder's active weights (every dense weight, the
chosen ``k`` of each MoE layer's routed experts, the LM head; one embedding row) plus the keys
and values cached at the mean context length."""

from __future__ import annotations

from typing import Any

import torch

from decoders import generate
from zoo.bench.context import BenchContext, comparison, memory_comparison
from zoo.bench.measure import Stats, bytes_per_token, peak_tensor_bytes, sample_interleaved
from zoo.bench.models import greedy_tokens, prompt_embeddings
from zoo.bench.prefill import PAGE, PROMPT_TOKENS


def seconds_per_token(many: list[float], one: list[float], new_tokens: int) -> Stats:
    """Per new token, from paired timings of ``new_tokens + 1`` and of 1 generated token (the
    prefill and the first token cancel out round by round)."""
    return Stats.of(
        [(n - first) / new_tokens for n, first in zip(many, one, strict=True)], "s/token"
    )


def run(ctx: BenchContext) -> dict[str, Any]:
    model, twin = ctx.pair("main")
    # the quick run too: its time per token is the difference of two single samples, and 4
    # tiny tokens (about 12 ms) once came out negative on a busy machine
    new_tokens = 32
    embeds, mask = prompt_embeddings(model, PAGE, PROMPT_TOKENS)

    def zoo(n: int) -> torch.Tensor:
        return generate(model.decoder, embeds, mask, max_new_tokens=n)

    def transformers(n: int) -> torch.Tensor:
        config = greedy_tokens(n)
        return twin.generate(inputs_embeds=embeds, attention_mask=mask, generation_config=config)

    with torch.no_grad():
        same_tokens = torch.equal(
            zoo(new_tokens + 1), transformers(new_tokens + 1)[:, -new_tokens - 1 :]
        )
        samples = sample_interleaved(
            {
                "zoo 1": lambda: zoo(1),
                "zoo n": lambda: zoo(new_tokens + 1),
                "transformers 1": lambda: transformers(1),
                "transformers n": lambda: transformers(new_tokens + 1),
            },
            ctx.repeats,
            ctx.warmup,
        )
        memory = {
            "zoo": peak_tensor_bytes(lambda: zoo(new_tokens + 1)),
            "transformers": peak_tensor_bytes(lambda: transformers(new_tokens + 1)),
        }
    per_token = {
        side: seconds_per_token(samples[f"{side} n"], samples[f"{side} 1"], new_tokens)
        for side in ("zoo", "transformers")
    }
    context = PROMPT_TOKENS + new_tokens / 2
    rows = [
        comparison(
            f"greedy decode after {PROMPT_TOKENS} tokens: time per token",
            per_token["zoo"],
            per_token["transformers"],
            "<= 1.0",
            tokens_per_s={side: 1 / stats.median for side, stats in per_token.items()},
            same_tokens=same_tokens,
        ),
        memory_comparison(
            f"generate {new_tokens + 1} tokens: peak memory",
            memory["zoo"],
            memory["transformers"],
            "<= 1.0",
        ),
    ]
    return {
        "rows": rows,
        "bytes_per_token": bytes_per_token(model.decoder, context),
    }

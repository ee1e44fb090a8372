"""Suite ``ablations``: what two of the zoo's own optimisations buy, each timed against the same
zoo decoder without it, alternating in one process. The reference column of these rows holds
the zoo without the optimisation, not transformers.

* the column-major LM head (``decoders/lm_head.py``) against a row-major copy, in greedy
  decoding with the KV cache (seconds per token as in the ``decode`` suite);
* the LM head on the labelled positions only against every position's logits, in one training
  step (forward + backward) of the decoder over a prompt whose last ``ANSWER_TOKENS`` are
  labelled."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from decoders import generate
from zoo.bench.context import BenchContext, comparison
from zoo.bench.decode import seconds_per_token
from zoo.bench.measure import sample_interleaved, time_interleaved
from zoo.bench.prefill import PROMPT_TOKENS

ANSWER_TOKENS = 64


@contextmanager
def lm_head_swapped(decoder: nn.Module, head: nn.Linear) -> Iterator[None]:
    """``decoder`` with ``head`` as its LM head for the duration."""
    own = decoder.lm_head
    decoder.lm_head = head
    try:
        yield
    finally:
        decoder.lm_head = own


def decode_row(ctx: BenchContext, decoder: nn.Module, prompt: int) -> dict[str, Any]:
    new_tokens = 4 if ctx.tiny else 16
    generator = torch.Generator().manual_seed(0)
    embeds = 0.1 * torch.randn(1, prompt, decoder.hidden_size, generator=generator)
    mask = torch.ones(1, prompt, dtype=torch.long)
    row_major = nn.Linear(decoder.hidden_size, decoder.vocab_size, bias=False)
    row_major.weight = nn.Parameter(decoder.lm_head.weight.detach().contiguous())
    heads = {"column": decoder.lm_head, "row": row_major}

    def decode(layout: str, n: int) -> None:
        with lm_head_swapped(decoder, heads[layout]):
            generate(decoder, embeds, mask, max_new_tokens=n)

    calls = {
        f"{layout} {n}": lambda layout=layout, n=n: decode(layout, n)
        for layout in heads
        for n in (1, new_tokens + 1)
    }
    with torch.no_grad():
        samples = sample_interleaved(calls, ctx.repeats, ctx.warmup)
    per_token = {
        layout: seconds_per_token(
            samples[f"{layout} {new_tokens + 1}"], samples[f"{layout} 1"], new_tokens
        )
        for layout in heads
    }
    return comparison(
        f"column-major LM head vs row-major: greedy decode after {prompt} tokens, per token",
        per_token["column"],
        per_token["row"],
    )


def training_row(ctx: BenchContext, decoder: nn.Module, prompt: int) -> dict[str, Any]:
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(0, decoder.vocab_size, (1, prompt), generator=generator)
    labelled = torch.zeros(1, prompt, dtype=torch.bool)
    labelled[:, -ANSWER_TOKENS:] = True
    targets = torch.randint(0, decoder.vocab_size, (ANSWER_TOKENS,), generator=generator)

    def step(only_labelled: bool) -> None:
        decoder.zero_grad(set_to_none=True)
        out = decoder(decoder.embed(ids), logits_to_keep=labelled if only_labelled else 0)
        logits = out.logits if only_labelled else out.logits[labelled]
        loss = F.cross_entropy(logits, targets)
        (loss if out.aux_loss is None else loss + out.aux_loss).backward()

    decoder.train()
    try:
        times = time_interleaved(
            {"labelled": lambda: step(True), "every": lambda: step(False)}, ctx.repeats, ctx.warmup
        )
    finally:
        decoder.zero_grad(set_to_none=True)
        decoder.eval()
    return comparison(
        f"LM head on the {ANSWER_TOKENS} labelled positions vs all {prompt}: decoder training step",
        times["labelled"],
        times["every"],
    )


def run(ctx: BenchContext) -> dict[str, Any]:
    model, _ = ctx.pair("main")
    prompt = 96 if ctx.tiny else PROMPT_TOKENS
    rows = [decode_row(ctx, model.decoder, prompt), training_row(ctx, model.decoder, prompt)]
    return {"rows": rows}

"""Suite ``ablations``: what the zoo's own optimisations buy, each timed against the same zoo
model without it, alternating in one process. The reference column of these rows holds the zoo
without the optimisation, not transformers.

* one-row products split over the threads (``zoo.layers.linear.threaded_linear``) against
  ``F.linear``, and the column-major LM head (``decoders/lm_head.py``) against a row-major copy,
  in greedy decoding with the KV cache (seconds per token as in the ``decode`` suite);
* the LM head on the labelled positions only against every position's logits, in one training
  step (forward + backward) of the decoder over a prompt whose last ``ANSWER_TOKENS`` are
  labelled;
* SAM's attention in CPU training (``DecomposedRelPosAttention``) against SDPA given the whole
  bias, forward + backward of one global block's attention (time and peak memory);
* generation's prefill as one unpadded forward per prompt length against one forward over the
  padded batch, for the ``eval`` suite's pages."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from decoders import generate
from decoders.generation import prefill
from zoo.bench.context import BenchContext, comparison, memory_comparison
from zoo.bench.decode import seconds_per_token
from zoo.bench.evaluation import INSTRUCTION_TOKENS, PAGE_SIZES
from zoo.bench.measure import peak_tensor_bytes, sample_interleaved, time_interleaved
from zoo.bench.models import prompts, random_pages
from zoo.bench.prefill import PROMPT_TOKENS
from zoo.layers import ThreadedLinear
from zoo.layers.relpos_attention import DecomposedRelPosAttention, relpos_sdpa

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


def row_major_copy(head: nn.Linear) -> ThreadedLinear:
    """The LM head with its weight copied row-major (contiguous)."""
    copy = ThreadedLinear(head.in_features, head.out_features, bias=False, device="meta")
    copy.weight = nn.Parameter(head.weight.detach().contiguous())
    return copy


@contextmanager
def plain_linears(decoder: nn.Module) -> Iterator[None]:
    """``decoder`` with every layer that goes through ``threaded_linear`` run as a plain
    ``nn.Linear`` (same parameters) for the duration."""
    swapped = [m for m in decoder.modules() if isinstance(m, ThreadedLinear)]
    classes = [type(m) for m in swapped]
    try:
        for module in swapped:
            module.__class__ = nn.Linear
        yield
    finally:
        for module, cls in zip(swapped, classes, strict=True):
            module.__class__ = cls


# name -> (decoder -> the context that takes the optimisation away), built before timing
DECODE_ABLATIONS: dict[str, Callable[[nn.Module], Callable[[], AbstractContextManager]]] = {
    "one-row products split over the threads vs F.linear": lambda decoder: partial(
        plain_linears, decoder
    ),
    "column-major LM head vs row-major": lambda decoder: partial(
        lm_head_swapped, decoder, row_major_copy(decoder.lm_head)
    ),
}


def decode_row(ctx: BenchContext, decoder: nn.Module, prompt: int, name: str) -> dict[str, Any]:
    new_tokens = 4 if ctx.tiny else 16
    generator = torch.Generator().manual_seed(0)
    embeds = 0.1 * torch.randn(1, prompt, decoder.hidden_size, generator=generator)
    mask = torch.ones(1, prompt, dtype=torch.long)

    ablation = DECODE_ABLATIONS[name](decoder)

    def decode(ablated: bool, n: int) -> None:
        with ablation() if ablated else nullcontext():
            generate(decoder, embeds, mask, max_new_tokens=n)

    calls = {
        f"{ablated} {n}": lambda ablated=ablated, n=n: decode(ablated, n)
        for ablated in (False, True)
        for n in (1, new_tokens + 1)
    }
    with torch.no_grad():
        samples = sample_interleaved(calls, ctx.repeats, ctx.warmup)
    per_token = [
        seconds_per_token(
            samples[f"{ablated} {new_tokens + 1}"], samples[f"{ablated} 1"], new_tokens
        )
        for ablated in (False, True)
    ]
    return comparison(
        f"{name}: greedy decode after {prompt} tokens, per token", per_token[0], per_token[1]
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


def sam_attention_rows(ctx: BenchContext) -> list[dict[str, Any]]:
    heads, side, dim = (2, 32, 16) if ctx.tiny else (12, 64, 64)  # SAM-B: 12 heads of 64
    generator = torch.Generator().manual_seed(2)
    inputs = [
        (0.1 * torch.randn(shape, generator=generator)).requires_grad_()
        for shape in [(1, heads, side * side, dim)] * 3 + [(1, heads, side, side, side)] * 2
    ]

    def step(attend: Callable[..., torch.Tensor]) -> None:
        for tensor in inputs:
            tensor.grad = None
        attend(*inputs).sum().backward()

    calls = {
        "zoo": lambda: step(DecomposedRelPosAttention.apply),
        "sdpa": lambda: step(relpos_sdpa),
    }
    times = time_interleaved(calls, ctx.repeats, ctx.warmup)
    memory = {name: peak_tensor_bytes(call) for name, call in calls.items()}
    case = (
        f"SAM attention in CPU training, {side * side} tokens x {heads} heads, forward + "
        "backward: DecomposedRelPosAttention vs SDPA given the whole bias"
    )
    return [
        comparison(case, times["zoo"], times["sdpa"]),
        memory_comparison(f"{case}: peak memory", memory["zoo"], memory["sdpa"]),
    ]


def prefill_row(ctx: BenchContext) -> dict[str, Any]:
    model, _ = ctx.pair("eval")
    pages = PAGE_SIZES[:3] if ctx.tiny else PAGE_SIZES
    images = model.preprocess(random_pages(pages))
    ids, mask = prompts(model, images, [INSTRUCTION_TOKENS] * len(pages))
    decoder = model.decoder
    with torch.no_grad():
        embeds = model.embed_inputs(ids, images)
        times = time_interleaved(
            {
                "by length": lambda: prefill(decoder, embeds, mask),
                "padded": lambda: decoder(
                    embeds, attention_mask=mask, use_cache=True, logits_to_keep=1
                ),
            },
            ctx.repeats,
            ctx.warmup,
        )
    return comparison(
        f"prefill of the eval suite's {len(pages)} pages: one unpadded forward per prompt "
        "length vs one padded batch",
        times["by length"],
        times["padded"],
    )


def run(ctx: BenchContext) -> dict[str, Any]:
    model, _ = ctx.pair("main")
    prompt = 96 if ctx.tiny else PROMPT_TOKENS
    rows = [decode_row(ctx, model.decoder, prompt, name) for name in DECODE_ABLATIONS]
    rows.append(training_row(ctx, model.decoder, prompt))
    rows.extend(sam_attention_rows(ctx))
    rows.append(prefill_row(ctx))
    return {"rows": rows}

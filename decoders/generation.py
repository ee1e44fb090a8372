"""Autoregressive generation for any :class:`LanguageDecoder`, starting from prompt embeddings.

The caller has already written image embeddings into the prompt, so generation starts from
``inputs_embeds`` and a ``[B, T]`` attention mask (prompts left-padded in a batch). The prefill
fills the decoder's KV cache (for the zoo's own decoders, one unpadded forward per distinct
prompt length, see :func:`prefill`), then each step feeds one token per row. The logits
processing follows transformers' definitions: ``no_repeat_ngram_size`` bans, then (sampling only)
temperature, top-k and top-p, in that order.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import torch

from decoders.base import DecoderOutput, LanguageDecoder
from decoders.kv_cache import KVCache
from decoders.transformer import TransformerDecoder


def ban_repeated_ngrams(
    scores: torch.Tensor,
    history: torch.Tensor,
    valid: torch.Tensor,
    ngram_size: int,
    window: int | None = None,
    exempt: torch.Tensor | None = None,
) -> torch.Tensor:
    """Set to -inf every token that would complete an n-gram already present in ``history``.

    ``history`` ``[B, L]`` holds each row's tokens so far, ``valid`` marks its real (unpadded)
    positions; n-grams touching padding are ignored, so a left-padded row behaves as unpadded.
    ``window``: only n-grams that start among the last ``window`` tokens count (the official
    scripts' guard, which looks back 90 tokens); ``exempt``: token ids never banned (the
    official scripts exempt ``<td>`` and ``</td>``, which tables repeat legitimately).
    """
    if window is not None:
        history, valid = history[:, -window:], valid[:, -window:]
    length = history.shape[1]
    if length < ngram_size:
        return scores
    windows = history.unfold(1, ngram_size, 1)
    window_valid = valid.unfold(1, ngram_size, 1).all(dim=-1)
    suffix = history[:, length - ngram_size + 1 :]
    suffix_valid = valid[:, length - ngram_size + 1 :].all(dim=-1, keepdim=True)
    matches = (windows[..., :-1] == suffix[:, None]).all(dim=-1) & window_valid & suffix_valid
    vocab = scores.shape[-1]
    banned = torch.zeros(scores.shape[0], vocab + 1, dtype=torch.bool, device=scores.device)
    banned.scatter_(1, torch.where(matches, windows[..., -1].clamp(max=vocab), vocab), True)
    if exempt is not None:
        banned[:, exempt] = False
    return scores.masked_fill(banned[:, :vocab], float("-inf"))


def warp_for_sampling(
    scores: torch.Tensor, temperature: float, top_k: int, top_p: float
) -> torch.Tensor:
    """Temperature, then keep the ``top_k`` best, then the smallest set holding ``top_p`` mass."""
    scores = scores / temperature
    if 0 < top_k < scores.shape[-1]:
        kth_best = scores.topk(top_k, dim=-1).values[..., -1:]
        scores = scores.masked_fill(scores < kth_best, float("-inf"))
    if top_p < 1.0:
        ascending, order = scores.sort(dim=-1)
        drop = ascending.softmax(dim=-1).cumsum(dim=-1) <= 1 - top_p
        drop[..., -1] = False
        scores = scores.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return scores


def _accepts_logits_to_keep(decoder: LanguageDecoder) -> bool:
    return "logits_to_keep" in inspect.signature(decoder.forward).parameters


def is_left_padded(mask: torch.Tensor) -> bool:
    """Whether every row of a ``[B, T]`` padding mask is zeros then ones."""
    lengths = mask.sum(dim=1, keepdim=True)
    columns = torch.arange(mask.shape[1], device=mask.device)
    return bool((mask.bool() == (columns >= mask.shape[1] - lengths)).all())


def prefill(
    decoder: LanguageDecoder, inputs_embeds: torch.Tensor, mask: torch.Tensor
) -> DecoderOutput:
    """The prompt forward that fills the cache: the last position's logits and the cache.

    A :class:`TransformerDecoder` given a left-padded batch of prompts of different lengths runs
    one unpadded forward per distinct length (rows of one length share their matmuls) and merges
    the caches left-padded (:meth:`KVCache.left_padded`). Padding would otherwise cost attention
    and projections on positions no one reads: the ``eval`` bench's 8 mixed pages are 19%
    padding. Any other decoder, or any other mask, gets one forward over the padded batch.
    """
    batch, width = mask.shape
    lengths = mask.sum(dim=1)
    extra = {"logits_to_keep": 1} if _accepts_logits_to_keep(decoder) else {}
    split = (
        isinstance(decoder, TransformerDecoder)
        and bool(lengths.min() > 0)
        and bool(lengths.min() < width)
        and is_left_padded(mask)
    )
    if not split:
        return decoder(inputs_embeds, attention_mask=mask, use_cache=True, **extra)
    logits, parts = None, []
    for length in lengths.unique().tolist():
        rows = (lengths == length).nonzero()[:, 0]
        out = decoder(inputs_embeds[rows, width - length :], use_cache=True, logits_to_keep=1)
        if logits is None:
            logits = out.logits.new_empty(batch, *out.logits.shape[1:])
        logits[rows] = out.logits
        parts.append((out.past_key_values, rows))
    return DecoderOutput(logits, KVCache.left_padded(parts, batch))


@torch.no_grad()
def generate(
    decoder: LanguageDecoder,
    inputs_embeds: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    *,
    max_new_tokens: int = 256,
    eos_token_id: int | Sequence[int] | None = None,
    pad_token_id: int | None = None,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    no_repeat_ngram_size: int = 0,
    ngram_window: int | None = None,
    ngram_exempt_ids: Sequence[int] = (),
    prompt_ids: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """New token ids ``[B, n]`` after each prompt, ``n <= max_new_tokens``.

    Greedy unless ``do_sample``. A row stops at its first ``eos_token_id`` (kept in the output);
    its later positions hold ``pad_token_id`` (default: the first eos id, else 0), and generation
    ends when every row has stopped. ``no_repeat_ngram_size`` bans n-grams over the generated
    tokens, plus the real tokens of ``prompt_ids`` ``[B, T]`` when given (transformers counts the
    prompt when it generates from ``input_ids``); ``ngram_window`` limits the ban to n-grams
    starting among the last that many tokens and ``ngram_exempt_ids`` are never banned (see
    :func:`ban_repeated_ngrams`).
    """
    batch, prompt_len = inputs_embeds.shape[:2]
    device = inputs_embeds.device
    if do_sample and temperature <= 0:
        raise ValueError(f"temperature must be > 0 when sampling, got {temperature}")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    mask = (
        torch.ones(batch, prompt_len, dtype=torch.long, device=device)
        if attention_mask is None
        else attention_mask.long()
    )
    if mask.shape != (batch, prompt_len):
        raise ValueError(
            f"attention_mask has shape {tuple(mask.shape)}; expected {(batch, prompt_len)}"
        )
    if prompt_ids is not None and prompt_ids.shape != (batch, prompt_len):
        raise ValueError(
            f"prompt_ids has shape {tuple(prompt_ids.shape)}; expected {(batch, prompt_len)}"
        )
    if isinstance(eos_token_id, int):
        eos_token_id = [eos_token_id]
    eos = torch.tensor(list(eos_token_id), device=device) if eos_token_id else None
    if pad_token_id is None:
        pad_token_id = int(eos[0]) if eos is not None else 0
    if prompt_ids is None:
        history = torch.empty(batch, 0, dtype=torch.long, device=device)
        history_valid = torch.empty(batch, 0, dtype=torch.bool, device=device)
    else:
        history, history_valid = prompt_ids.long(), mask.bool()

    exempt = torch.tensor(list(ngram_exempt_ids), dtype=torch.long, device=device)
    extra = {"logits_to_keep": 1} if _accepts_logits_to_keep(decoder) else {}
    out = prefill(decoder, inputs_embeds, mask)
    finished = torch.zeros(batch, dtype=torch.bool, device=device)
    new_tokens: list[torch.Tensor] = []
    for step in range(max_new_tokens):
        scores = out.logits[:, -1].float()
        if no_repeat_ngram_size > 0:
            scores = ban_repeated_ngrams(
                scores, history, history_valid, no_repeat_ngram_size, ngram_window, exempt
            )
        if do_sample:
            probs = warp_for_sampling(scores, temperature, top_k, top_p).softmax(dim=-1)
            next_tokens = torch.multinomial(probs, 1, generator=generator)[:, 0]
        else:
            next_tokens = scores.argmax(dim=-1)
        if eos is not None:
            next_tokens = next_tokens.masked_fill(finished, pad_token_id)
            finished |= torch.isin(next_tokens, eos)
        new_tokens.append(next_tokens)
        history = torch.cat((history, next_tokens[:, None]), dim=1)
        history_valid = torch.cat((history_valid, history_valid.new_ones(batch, 1)), dim=1)
        if step + 1 == max_new_tokens or bool(finished.all()):
            break
        mask = torch.cat((mask, mask.new_ones(batch, 1)), dim=1)
        out = decoder(
            decoder.embed(next_tokens[:, None]),
            attention_mask=mask,
            past_key_values=out.past_key_values,
            use_cache=True,
            **extra,
        )
    if not new_tokens:
        return torch.empty(batch, 0, dtype=torch.long, device=device)
    return torch.stack(new_tokens, dim=1)

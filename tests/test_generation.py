"""KV-cache generation against transformers' ``generate`` and logits processors."""

from __future__ import annotations

import pytest
import torch
from transformers.generation.logits_process import (
    NoRepeatNGramLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from decoders import DecoderOutput, LanguageDecoder, generate
from decoders.generation import ban_repeated_ngrams, prefill, warp_for_sampling
from tests.test_decoder import TINY_MLA, left_padded, tiny_dense, transformers_ocr2, zoo_copy


def transformers_generate(reference, ids, mask, **kwargs) -> torch.Tensor:
    out = reference.generate(
        input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=12, **kwargs
    )
    return out[:, ids.shape[1] :]


def zoo_generate(decoder, ids, mask, **kwargs) -> torch.Tensor:
    return generate(decoder, decoder.embed(ids), mask, max_new_tokens=12, **kwargs)


def test_greedy_equals_transformers_generate_unpadded_and_left_padded():
    reference = transformers_ocr2()
    decoder = zoo_copy(reference)
    ids, mask = left_padded()
    kwargs = dict(pad_token_id=0, eos_token_id=None)
    single = zoo_generate(decoder, ids[:1], mask[:1], **kwargs)
    assert torch.equal(single, transformers_generate(reference, ids[:1], mask[:1], **kwargs))
    batched = zoo_generate(decoder, ids, mask, **kwargs)
    assert batched.shape == (3, 12)
    assert torch.equal(batched, transformers_generate(reference, ids, mask, **kwargs))


def test_eos_stops_each_row_as_transformers_does():
    reference = transformers_ocr2()
    decoder = zoo_copy(reference)
    ids, mask = left_padded()
    free_run = zoo_generate(decoder, ids, mask)
    eos = int(free_run[1, 4])  # row 1 stops at step 4 at the latest
    kwargs = dict(eos_token_id=eos, pad_token_id=96)
    stopped = zoo_generate(decoder, ids, mask, **kwargs)
    assert torch.equal(stopped, transformers_generate(reference, ids, mask, **kwargs))
    for row, tokens in zip(free_run, stopped, strict=True):
        hits = (row == eos).nonzero()
        end = int(hits[0]) + 1 if len(hits) else len(tokens)
        assert torch.equal(tokens[:end], row[:end])
        assert (tokens[end:] == 96).all()


def test_no_repeat_ngram_size_equals_transformers():
    reference = transformers_ocr2(vocab_size=11)  # a small vocabulary repeats quickly
    decoder = zoo_copy(reference, vocab_size=11)
    ids = torch.randint(0, 11, (2, 6), generator=torch.Generator().manual_seed(3))
    mask = torch.ones_like(ids)
    free_run = zoo_generate(decoder, ids, mask)
    banned = zoo_generate(decoder, ids, mask, no_repeat_ngram_size=2, prompt_ids=ids)
    expected = transformers_generate(reference, ids, mask, no_repeat_ngram_size=2)
    assert torch.equal(banned, expected)

    def generated_repeats(row: torch.Tensor) -> int:
        """Generated tokens that complete a bigram already present earlier in prompt + output."""
        seq = row.tolist()
        pairs = list(zip(seq, seq[1:], strict=False))
        return sum(pairs[j] in pairs[:j] for j in range(ids.shape[1] - 1, len(pairs)))

    assert sum(generated_repeats(r) for r in torch.cat((ids, free_run), 1)) > 0
    assert sum(generated_repeats(r) for r in torch.cat((ids, banned), 1)) == 0


def test_ngram_ban_equals_transformers_processor():
    generator = torch.Generator().manual_seed(0)
    history = torch.randint(0, 5, (4, 30), generator=generator)
    scores = torch.randn(4, 7, generator=generator)
    for size in (1, 2, 3, 4):
        expected = NoRepeatNGramLogitsProcessor(size)(history, scores)
        valid = torch.ones_like(history, dtype=torch.bool)
        assert torch.equal(ban_repeated_ngrams(scores, history, valid, size), expected)


def test_ngram_ban_ignores_padding_positions():
    history = torch.tensor([[1, 2, 9, 9, 1], [0, 0, 9, 9, 1]])
    valid = torch.tensor([[True] * 5, [False, False, True, True, True]])
    scores = torch.zeros(2, 10)
    banned = ban_repeated_ngrams(scores, history, valid, 2).isinf()
    assert banned[0].nonzero().flatten().tolist() == [2]
    assert not banned[1].any()


def test_sampling_warpers_equal_transformers():
    scores = torch.randn(5, 50, generator=torch.Generator().manual_seed(0))
    for temperature, top_k, top_p in ((0.7, 0, 1.0), (1.0, 10, 1.0), (1.3, 0, 0.8), (0.5, 7, 0.6)):
        expected = TemperatureLogitsWarper(temperature)(None, scores)
        if top_k:
            expected = TopKLogitsWarper(top_k)(None, expected)
        if top_p < 1:
            expected = TopPLogitsWarper(top_p)(None, expected)
        assert torch.equal(warp_for_sampling(scores, temperature, top_k, top_p), expected)


def test_sampling_is_seeded_and_top_k_1_is_greedy():
    decoder = zoo_copy(transformers_ocr2())
    ids, mask = left_padded()

    def sample(seed, **kwargs):
        generator = torch.Generator().manual_seed(seed)
        return zoo_generate(decoder, ids, mask, do_sample=True, generator=generator, **kwargs)

    assert torch.equal(sample(0, temperature=1.5), sample(0, temperature=1.5))
    assert not torch.equal(sample(0, temperature=1.5), sample(1, temperature=1.5))
    greedy = zoo_generate(decoder, ids, mask)
    assert torch.equal(sample(2, top_k=1), greedy)
    assert torch.equal(sample(3, top_p=1e-9), greedy)  # the best token always survives top-p
    with pytest.raises(ValueError, match="temperature"):
        sample(0, temperature=0.0)


def test_batched_left_padded_equals_unbatched_with_eos_and_ngram_ban():
    decoder = zoo_copy(transformers_ocr2(vocab_size=11), vocab_size=11)
    ids, mask = left_padded()
    ids = ids % 11
    kwargs = dict(no_repeat_ngram_size=3, eos_token_id=4)
    batched = zoo_generate(decoder, ids, mask, prompt_ids=ids, **kwargs)
    for row in range(3):
        real = mask[row].bool()
        alone = zoo_generate(
            decoder, ids[row : row + 1, real], None, prompt_ids=ids[row : row + 1, real], **kwargs
        )
        assert torch.equal(batched[row, : alone.shape[1]], alone[0])
        assert (batched[row, alone.shape[1] :] == 4).all()


class WithoutLogitsToKeep(LanguageDecoder):
    """A decoder that follows only the base contract (no ``logits_to_keep``)."""

    def __init__(self, inner: LanguageDecoder) -> None:
        super().__init__()
        self.inner = inner
        self.hidden_size, self.vocab_size = inner.hidden_size, inner.vocab_size

    def embed(self, input_ids):
        return self.inner.embed(input_ids)

    def forward(
        self,
        inputs_embeds,
        attention_mask=None,
        position_ids=None,
        past_key_values=None,
        use_cache=False,
    ) -> DecoderOutput:
        return self.inner(inputs_embeds, attention_mask, position_ids, past_key_values, use_cache)


@pytest.mark.parametrize("attention", ["mha", "mla"])
def test_generate_runs_any_language_decoder(attention):
    dense = tiny_dense(attention, TINY_MLA if attention == "mla" else None)
    ids, mask = left_padded()
    direct = zoo_generate(dense, ids, mask)
    assert torch.equal(zoo_generate(WithoutLogitsToKeep(dense), ids, mask), direct)
    for row in range(3):
        real = mask[row].bool()
        assert torch.equal(zoo_generate(dense, ids[row : row + 1, real], None)[0], direct[row])


def forward_inputs(decoder) -> list[tuple[tuple[int, ...], torch.Tensor | None]]:
    """Records ``(inputs_embeds shape, attention_mask)`` of each forward of ``decoder``."""
    seen = []

    def record(module, args, kwargs) -> None:
        mask = kwargs.get("attention_mask", args[1] if len(args) > 1 else None)
        seen.append((tuple(args[0].shape[:2]), mask))

    decoder.register_forward_pre_hook(record, with_kwargs=True)
    return seen


@pytest.mark.parametrize("attention", ["mha", "mla"])
def test_prefill_runs_each_prompt_length_unpadded_and_equals_the_padded_batch(attention):
    decoder = tiny_dense(attention, TINY_MLA if attention == "mla" else None)
    ids, mask = left_padded(batch=4)  # 0, 3, 6 and 9 padding tokens
    mask[3] = mask[1]  # rows 1 and 3 share a length: one forward
    embeds = decoder.embed(ids)
    seen = forward_inputs(decoder)
    with torch.no_grad():
        split = prefill(decoder, embeds, mask)
        padded = decoder(embeds, attention_mask=mask, use_cache=True)
        assert sorted(seen[:3]) == [((1, 4), None), ((1, 10), None), ((2, 7), None)]
        torch.testing.assert_close(split.logits[:, -1], padded.logits[:, -1], atol=1e-5, rtol=0)
        # the merged cache serves the next step as the padded batch's cache does
        step_mask = torch.cat((mask, mask.new_ones(4, 1)), dim=1)
        step = embeds[:, -1:]
        after_split = decoder(step, attention_mask=step_mask, past_key_values=split.past_key_values)
        after_padded = decoder(
            step, attention_mask=step_mask, past_key_values=padded.past_key_values
        )
    torch.testing.assert_close(after_split.logits, after_padded.logits, atol=1e-5, rtol=0)


def test_prefill_keeps_one_padded_forward_when_rows_are_not_left_padded():
    decoder = tiny_dense()
    ids, mask = left_padded()
    right_padded = mask.flip(1)
    seen = forward_inputs(decoder)
    with torch.no_grad():
        prefill(decoder, decoder.embed(ids), right_padded)
        prefill(WithoutLogitsToKeep(decoder), decoder.embed(ids), mask)
    assert [shape for shape, _ in seen] == [(3, 10), (3, 10)]
    assert all(
        torch.equal(given, expected)
        for (_, given), expected in zip(seen, (right_padded, mask), strict=True)
    )


def official_ngram_bans(ids: list[int], ngram_size: int, window: int, exempt: set[int]) -> set[int]:
    """The official scripts' guard (NoRepeatNGramLogitsProcessor of DeepSeek-OCR's and
    DeepSeek-OCR 2's ``process/ngram_norepeat.py``), written out token by token: the tokens that
    would repeat an n-gram starting among the last ``window`` generated tokens."""
    if len(ids) < ngram_size:
        return set()
    prefix = tuple(ids[len(ids) - ngram_size + 1 :])
    start, end = max(0, len(ids) - window), len(ids) - ngram_size + 1
    banned = {
        ids[i + ngram_size - 1]
        for i in range(start, end)
        if tuple(ids[i : i + ngram_size - 1]) == prefix
    }
    return banned - exempt


@pytest.mark.parametrize(("ngram_size", "window"), [(2, 5), (3, 9), (4, 4), (5, 3), (3, 40)])
def test_windowed_ngram_ban_equals_the_official_guard_on_random_histories(ngram_size, window):
    generator = torch.Generator().manual_seed(ngram_size * 100 + window)
    vocab, exempt = 6, [1, 4]
    for length in range(0, 30, 3):
        # a small vocabulary repeats n-grams often; one row repeats a short cycle
        history = torch.randint(vocab, (5, length), generator=generator)
        history[0] = torch.arange(length) % 3
        scores = torch.zeros(5, vocab)
        valid = torch.ones_like(history, dtype=torch.bool)
        banned = ban_repeated_ngrams(
            scores, history, valid, ngram_size, window, torch.tensor(exempt)
        ).isinf()
        for row, tokens in zip(banned, history.tolist(), strict=True):
            expected = official_ngram_bans(tokens, ngram_size, window, set(exempt))
            assert set(row.nonzero()[:, 0].tolist()) == expected, (tokens, ngram_size, window)


def test_windowed_ngram_ban_in_generation_uses_generated_tokens_only():
    reference = transformers_ocr2(vocab_size=11)
    decoder = zoo_copy(reference, vocab_size=11)
    ids, mask = left_padded()
    ids = ids % 11
    kwargs = dict(no_repeat_ngram_size=2, ngram_window=6, ngram_exempt_ids=[3])
    out = zoo_generate(decoder, ids, mask, **kwargs)
    for row in out.tolist():  # no 2-gram repeats within 6 generated tokens, unless it ends in 3
        for end in range(2, len(row)):
            history, token = row[:end], row[end]
            assert token not in official_ngram_bans(history, 2, 6, {3})

"""Tokenizers: byte by default, a byte-level BPE trained on synthetic pages and cached,
selection from the run config."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from tests.conftest import compose_train
from zoo.data.layout_engine import synthetic_corpus
from zoo.inputs.processor import IGNORE_INDEX, OCRProcessor
from zoo.inputs.text_tokenizer import (
    BOS_TOKEN,
    GROUNDING_TOKEN,
    BPETokenizer,
    ByteTokenizer,
    cache_dir,
    load_text_tokenizer,
)
from zoo.model.build import ComponentMismatchError, build_model
from zoo.run_setup import make_processor, model_config

SMALL_BPE = {"kind": "bpe", "vocab_size": 600, "corpus_pages": 40}
PROMPT = "<image>\n<|grounding|>Convert the document to markdown."


@pytest.fixture(scope="module")
def bpe_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("bpe_cache")


@pytest.fixture(scope="module")
def bpe(bpe_cache: Path) -> BPETokenizer:
    return load_text_tokenizer({**SMALL_BPE, "cache_dir": str(bpe_cache)})


def test_byte_tokenizer_stays_the_default() -> None:
    for spec in (None, "", {"kind": None, "path": None}, {"kind": "byte"}):
        tokenizer = load_text_tokenizer(spec)
        assert isinstance(tokenizer, ByteTokenizer) and tokenizer.vocab_size == 261
    assert isinstance(make_processor(compose_train([])).tokenizer, ByteTokenizer)


def test_bad_tokenizer_specs_are_named(tmp_path) -> None:
    with pytest.raises(ValueError, match="kind 'words' is unknown; valid kinds: byte, bpe"):
        load_text_tokenizer({"kind": "words"})
    with pytest.raises(ValueError, match="unknown keys \\['vocab'\\]"):
        load_text_tokenizer({"kind": "bpe", "vocab": 10})
    with pytest.raises(ValueError, match="needs text_tokenizer.path"):
        load_text_tokenizer({"kind": "pretrained"})
    with pytest.raises(FileNotFoundError, match="no_such_dir"):
        load_text_tokenizer(str(tmp_path / "no_such_dir"))
    with pytest.raises(ValueError, match="at least 261"):
        BPETokenizer.train(["text"], vocab_size=100)


def test_bpe_is_trained_once_and_cached(bpe, bpe_cache) -> None:
    files = list(bpe_cache.glob("bpe-600-40-*.json"))
    assert len(files) == 1
    stamp = files[0].stat().st_mtime_ns
    again = load_text_tokenizer({**SMALL_BPE, "cache_dir": str(bpe_cache)})
    assert files[0].stat().st_mtime_ns == stamp  # read back, not retrained
    text = synthetic_corpus(1, seed=9)[0]
    assert again.encode(text) == bpe.encode(text)


def test_bpe_special_tokens_are_single_ids(bpe) -> None:
    ids = bpe.encode(PROMPT)
    assert ids[0] == bpe.image_id and ids.count(bpe.image_id) == 1
    assert bpe.encode(GROUNDING_TOKEN) == [bpe.encode(GROUNDING_TOKEN)[0]]
    assert bpe.encode(BOS_TOKEN) == [bpe.bos_id]
    assert len({bpe.bos_id, bpe.eos_id, bpe.pad_id, bpe.image_id}) == 4
    assert bpe.decode([bpe.bos_id, *bpe.encode("ab"), bpe.eos_id, bpe.pad_id]) == "ab"


def test_bpe_round_trips_markdown_and_compresses_it(bpe) -> None:
    for text in synthetic_corpus(4, seed=3):
        ids = bpe.encode(text)
        assert bpe.decode(ids) == text
        assert len(ids) < 0.5 * len(text.encode())
    for text in (PROMPT, "中文 ünïcode\t\r\n  😀", "a<image>b<|grounding|>c", "  two  spaces "):
        assert bpe.decode(bpe.encode(text)) == text


@settings(max_examples=60, deadline=None)
@given(text=st.text())
def test_bpe_round_trips_any_text(bpe, text: str) -> None:
    specials = (BOS_TOKEN, "<｜end▁of▁sentence｜>", "<｜▁pad▁｜>")
    if any(token in text for token in specials):
        return  # these are dropped by decode, as with the byte tokenizer
    assert bpe.decode(bpe.encode(text)) == text
    assert all(0 <= i < bpe.vocab_size for i in bpe.encode(text))


def test_bpe_labels_decode_to_the_answer(bpe) -> None:
    processor = OCRProcessor(bpe, image_mode={"name": "v2", "global_size": 256, "local_size": 192})
    answer = "# Title\n\nSome text with $$\nx_{i} = 1\n$$"
    batch = processor([Image.new("RGB", (64, 64))], [PROMPT], [answer])
    labels = batch["labels"][0]
    assert processor.decode(labels[labels != IGNORE_INDEX]) == answer
    assert int((batch["input_ids"][0] == bpe.image_id).sum()) > 1


def test_bpe_from_the_run_config(bpe_cache) -> None:
    overrides = [f"text_tokenizer.{k}={v}" for k, v in SMALL_BPE.items()]
    cfg = compose_train([*overrides, f"text_tokenizer.cache_dir={bpe_cache}"])
    tokenizer = make_processor(cfg).tokenizer
    assert isinstance(tokenizer, BPETokenizer)
    # the tiny decoders are sized for the byte tokenizer; a BPE run must widen decoder.vocab_size
    with pytest.raises(ComponentMismatchError, match="vocab_size"):
        build_model(model_config(cfg))


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("DEEPENCODER_ZOO_CACHE", str(tmp_path / "zoo"))
    assert cache_dir() == tmp_path / "zoo"
    assert cache_dir(tmp_path / "explicit") == tmp_path / "explicit"
    monkeypatch.delenv("DEEPENCODER_ZOO_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "deepencoder-zoo"

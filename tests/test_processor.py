"""OCRProcessor: placeholder expansion, labels on answers only, padding sides, errors."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from zoo.inputs.image_layout import num_image_tokens
from zoo.inputs.processor import IGNORE_INDEX, OCRProcessor
from zoo.inputs.text_tokenizer import ByteTokenizer

TINY_V2 = {"name": "v2", "global_size": 256, "local_size": 192}


@pytest.fixture
def processor() -> OCRProcessor:
    return OCRProcessor(ByteTokenizer(), image_mode=TINY_V2)


def test_image_marker_expands_to_the_page_token_count(processor):
    tok = processor.tokenizer
    wide, small = Image.new("RGB", (600, 200), "white"), Image.new("RGB", (150, 120), "white")
    batch = processor([wide, small], ["<image>\nFree OCR.", "<image>\nFree OCR."])
    for row, page in enumerate((wide, small)):
        n_expected = num_image_tokens(*page.size, TINY_V2)
        assert int((batch["input_ids"][row] == tok.image_id).sum()) == n_expected
    # the wide page gets local crops, the small one only its global view
    assert batch["images"].crop_grids[0] != (0, 0) and batch["images"].crop_grids[1] == (0, 0)
    ids = batch["input_ids"][1][batch["attention_mask"][1].bool()].tolist()
    n_small = num_image_tokens(150, 120, TINY_V2)
    assert ids == [tok.bos_id] + [tok.image_id] * n_small + tok.encode("\nFree OCR.")


def test_labels_cover_the_answer_and_eos_only(processor):
    tok = processor.tokenizer
    page = Image.new("RGB", (64, 64), "white")
    batch = processor([page, page], ["<image>\nFree OCR."] * 2, ["abc", "a much longer answer"])
    labels, mask = batch["labels"], batch["attention_mask"]
    assert labels[0][labels[0] != IGNORE_INDEX].tolist() == tok.encode("abc") + [tok.eos_id]
    # right padding: pad positions are masked out and unlabelled
    assert mask[0, -1] == 0 and labels[0, -1] == IGNORE_INDEX
    assert batch["input_ids"][0, -1] == tok.pad_id
    labelled = labels[1] != IGNORE_INDEX
    assert batch["input_ids"][1][labelled].tolist() == labels[1][labelled].tolist()


def test_left_padding_puts_every_prompt_end_in_the_last_column(processor):
    tok = processor.tokenizer
    batch = processor(None, ["short", "a longer prompt"], padding_side="left")
    assert batch["images"] is None
    assert batch["input_ids"][:, -1].tolist() == [tok.encode("t")[0]] * 2
    assert batch["attention_mask"][0].tolist()[:10] == [0] * 10
    assert torch.equal(batch["attention_mask"][1], torch.ones_like(batch["attention_mask"][1]))


def test_answers_are_cut_to_max_answer_tokens_keeping_eos():
    processor = OCRProcessor(ByteTokenizer(), TINY_V2, max_answer_tokens=4)
    batch = processor(None, ["p"], ["abcdefgh"])
    labels = batch["labels"][0]
    assert labels[labels != IGNORE_INDEX].tolist() == list(b"abc") + [processor.tokenizer.eos_id]


def test_decode_stops_at_eos_and_drops_padding(processor):
    tok = processor.tokenizer
    ids = [tok.pad_id, *tok.encode("hi"), tok.eos_id, *tok.encode("junk")]
    assert processor.decode(torch.tensor(ids)) == "hi"


@pytest.mark.parametrize(
    ("images", "prompts", "answers", "message"),
    [
        ([Image.new("RGB", (8, 8))], ["no marker"], None, "0 <image> markers; expected 1"),
        (None, ["<image> but no page"], None, "1 <image> markers; expected 0"),
        ([Image.new("RGB", (8, 8))] * 2, ["<image>"], None, "2 images for 1 prompts"),
        (None, ["a", "b"], ["only one"], "1 answers for 2 prompts"),
    ],
)
def test_bad_input_is_named(processor, images, prompts, answers, message):
    with pytest.raises(ValueError, match=message):
        processor(images, prompts, answers)

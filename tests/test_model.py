"""build_model and OCRModel: size checks between parts, image splicing, view modes, generation."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from tests.conftest import compose_train
from zoo.model.build import ComponentMismatchError, build_model
from zoo.run_setup import make_processor, model_config


@pytest.fixture(scope="module")
def tiny_v2():
    cfg = compose_train([])
    torch.manual_seed(0)
    return build_model(model_config(cfg)).eval(), make_processor(cfg)


def test_projector_width_mismatch_names_both_parts_and_sizes():
    cfg = model_config(compose_train(["+projector.in_dim=7"]))
    with pytest.raises(ComponentMismatchError, match=r"'causal_flow' outputs 32 .*in_dim=7"):
        build_model(cfg)
    cfg = model_config(compose_train(["+projector.out_dim=7"]))
    with pytest.raises(
        ComponentMismatchError, match=r"out_dim=7 .*'deepseek_moe' has hidden_size=64"
    ):
        build_model(cfg)


def test_decoder_vocabulary_smaller_than_the_tokenizer_is_refused():
    cfg = model_config(compose_train(["decoder.vocab_size=100"]))
    with pytest.raises(ComponentMismatchError, match="261 tokens .* vocab_size=100"):
        build_model(cfg)


def test_image_embeddings_fill_exactly_the_placeholders(tiny_v2):
    model, processor = tiny_v2
    page = Image.new("RGB", (500, 260), "white")
    batch = processor([page], ["<image>\nFree OCR."])
    embeds = model.embed_inputs(batch["input_ids"], batch["images"])
    placeholders = batch["input_ids"][0] == processor.tokenizer.image_id
    (features,) = model.encode(batch["images"])
    assert torch.equal(embeds[0, placeholders], features)
    text = model.decoder.embed(batch["input_ids"])
    assert torch.equal(embeds[0, ~placeholders], text[0, ~placeholders])
    # the last image token is the learned view separator
    assert torch.equal(features[-1], model.view_separator)


def test_placeholder_count_mismatch_is_explained(tiny_v2):
    model, processor = tiny_v2
    page = Image.new("RGB", (64, 64), "white")
    batch = processor([page], ["<image>"])
    with pytest.raises(ValueError, match="placeholder tokens"):
        model.embed_inputs(batch["input_ids"][:, :-3], batch["images"])
    with pytest.raises(ValueError, match="no images were given"):
        model.embed_inputs(batch["input_ids"])


def test_view_mode_of_another_layout_is_refused(tiny_v2):
    model, _ = tiny_v2
    assert model.image_newline is None
    # tiny v2 mode: 4x4 global tokens + 2x2 crops of 3x3 tokens + the separator
    assert model.num_image_tokens(1024, 1024) == 16 + 4 * 9 + 1
    assert model.num_image_tokens(1024, 1024, "v2") == 256 + 4 * 144 + 1
    with pytest.raises(ValueError, match="'gundam' uses newline tokens"):
        model.num_image_tokens(1024, 1024, "gundam")


def test_batched_generation_equals_one_page_at_a_time(tiny_v2):
    model, processor = tiny_v2
    pages = [Image.new("RGB", (300, 200), "white"), Image.new("RGB", (90, 120), "gray")]
    prompts = ["<image>\nFree OCR.", "<image>\nFree OCR."]
    batch = processor(pages, prompts, padding_side="left")
    together = model.generate(
        batch["input_ids"], batch["images"], batch["attention_mask"], max_new_tokens=6
    )
    for row, page in enumerate(pages):
        single = processor([page], prompts[:1], padding_side="left")
        alone = model.generate(
            single["input_ids"], single["images"], single["attention_mask"], max_new_tokens=6
        )
        assert together[row, : alone.shape[1]].tolist() == alone[0].tolist()


def test_labelled_logits_give_the_same_loss_with_a_smaller_head(tiny_v2):
    model, processor = tiny_v2
    pages = [Image.new("RGB", (300, 200), "white"), Image.new("RGB", (90, 120), "gray")]
    batch = processor(pages, ["<image>\nFree OCR."] * 2, ["ab", "a longer answer"])
    args = (batch["input_ids"], batch["images"], batch["attention_mask"], batch["labels"])
    full = model(*args)
    labelled = model(*args, logits="labelled")
    n_labels = int((batch["labels"] != -100).sum())
    assert labelled.logits.shape == (n_labels, model.decoder.vocab_size)
    torch.testing.assert_close(labelled.loss, full.loss)
    # the kept rows are the positions that predict each label, in row-major order
    predicting = torch.zeros_like(batch["labels"], dtype=torch.bool)
    predicting[:, :-1] = batch["labels"][:, 1:] != -100
    torch.testing.assert_close(labelled.logits, full.logits[predicting])
    with pytest.raises(ValueError, match="needs labels"):
        model(batch["input_ids"], batch["images"], logits="labelled")


def test_query_count_and_view_mode_must_agree_at_build_time():
    cfg = model_config(compose_train(["+encoder.query_ratio=0.5"]))
    with pytest.raises(ComponentMismatchError, match=r"gives 8 tokens for a 256-px view .* 16"):
        build_model(cfg)


@pytest.mark.parametrize(
    ("experiment", "ratio"), [("query_ratio_quarter", 0.25), ("query_ratio_double", 2)]
)
def test_query_ratio_experiments_lay_out_the_scaled_token_counts(experiment, ratio):
    """Full size on the meta device: the global view and each crop scale by the ratio."""
    cfg = compose_train([f"experiment={experiment}", "size=full"])
    with torch.device("meta"):
        model = build_model(model_config(cfg))
    assert model.encoder.num_tokens(1024) == 256 * ratio
    assert model.encoder.num_tokens(768) == 144 * ratio
    assert model.num_image_tokens(700, 700) == 256 * ratio + 1  # no crops up to 768 px
    assert model.num_image_tokens(1536, 768) == 256 * ratio + 2 * 144 * ratio + 1


def test_cpu_inference_encodes_views_one_at_a_time_with_the_batch_results(tiny_v2, monkeypatch):
    """Without gradients on a CPU each view goes through the encoder alone, with what the
    batch gives; with gradients, or with an intervention attached (which may mix the batch's
    views; stood in for by the attribute), the batch goes whole."""
    model, _ = tiny_v2
    page = model.preprocess([Image.new("RGB", (300, 200), "white")])
    views = torch.randn(3, *page.global_views.shape[1:], generator=torch.Generator().manual_seed(0))
    batch_sizes = []
    hook = model.encoder.register_forward_pre_hook(
        lambda module, args: batch_sizes.append(args[0].shape[0])
    )
    with torch.no_grad():
        one_by_one = model.encode_views(views)
    assert batch_sizes == [1, 1, 1]
    batch_sizes.clear()
    whole = model.encode_views(views)
    assert batch_sizes == [3]
    torch.testing.assert_close(one_by_one, whole.detach(), rtol=1e-5, atol=1e-5)
    batch_sizes.clear()
    monkeypatch.setattr(model.encoder, "intervention", None, raising=False)
    with torch.no_grad():
        model.encode_views(views)
    assert batch_sizes == [3]
    hook.remove()

"""Whether the decoder reads the page: the rolled-images batch, :class:`ImageReliance`,
:class:`AttentionOnImage` and the decoder's attention observer they read."""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch
from PIL import Image

from lightning_modules.metrics import AttentionOnImage, ImageReliance
from tests.conftest import compose_train
from zoo.data.layout_engine import render_page
from zoo.inputs.page_roll import roll_page_images
from zoo.inputs.processor import predicting_positions
from zoo.run_setup import make_module, make_processor

# tiny v2 view mode (256 px global view, 192 px tiles): 17, 35 and 44 image tokens
PAGE_SIZES = [(150, 150), (400, 200), (200, 600)]
PROMPTS = ["<image>\nFree OCR.", "<image>\nOCR this page.", "<image>\nx"]
ANSWERS = ["# a title", "b", "some longer text of the third page"]
TINY_MLA = (
    "+decoder.mla={kv_lora_rank: 32, qk_nope_head_dim: 16, qk_rope_head_dim: 8, v_head_dim: 12}"
)


def pages(sizes=PAGE_SIZES) -> list[Image.Image]:
    return [Image.new("RGB", size, (40 * i, 100, 200)) for i, size in enumerate(sizes)]


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_rolled_batch_is_what_the_processor_makes_of_the_rolled_pages(padding_side):
    processor = make_processor(compose_train([]))
    tokenizer = processor.tokenizer
    images = pages()
    batch = processor(images, PROMPTS, ANSWERS, padding_side=padding_side)
    counts = (batch["input_ids"] == tokenizer.image_id).sum(dim=1).tolist()
    assert len(set(counts)) == 3  # every page takes its own number of image tokens
    rolled = roll_page_images(batch, tokenizer.image_id, tokenizer.pad_id)
    expected = processor([images[2], images[0], images[1]], PROMPTS, ANSWERS)
    for key in ("input_ids", "attention_mask", "labels"):
        assert torch.equal(rolled[key], expected[key]), key
    assert rolled["images"].crop_grids == expected["images"].crop_grids
    assert torch.equal(rolled["images"].global_views, expected["images"].global_views)
    assert torch.equal(rolled["images"].local_views, expected["images"].local_views)


def test_a_batch_of_one_page_has_no_other_image():
    processor = make_processor(compose_train([]))
    batch = processor(pages()[:1], PROMPTS[:1], ANSWERS[:1])
    with pytest.raises(ValueError, match="one page"):
        roll_page_images(batch, processor.tokenizer.image_id, processor.tokenizer.pad_id)


def test_image_reliance_is_the_mean_loss_difference_per_answer_token():
    metric = ImageReliance()
    metric.update(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.5, 2.0, 4.0]))
    metric.update(torch.tensor([0.0]), torch.tensor([-1.0]))
    assert metric.compute().item() == pytest.approx((0.5 + 0 + 1 - 1) / 4)
    with pytest.raises(ValueError, match="one pair per answer token"):
        metric.update(torch.zeros(2), torch.zeros(3))
    with pytest.warns(UserWarning):  # torchmetrics warns about compute before update
        assert math.isnan(ImageReliance().compute().item())


def test_attention_on_image_is_the_head_mean_mass_on_image_keys_at_answer_positions():
    head_0 = torch.tensor([[1.0, 0, 0], [0.5, 0.5, 0], [0.2, 0.3, 0.5]])
    head_1 = torch.tensor([[1.0, 0, 0], [0.9, 0.1, 0], [0.6, 0.2, 0.2]])
    probs = torch.stack([head_0, head_1])[None].expand(2, 2, 3, 3)
    image_keys = torch.tensor([[True, False, False], [False, True, False]])
    queries = torch.tensor([[False, True, True], [False, False, True]])
    metric = AttentionOnImage()
    metric.update(probs, image_keys, queries)
    # page 0: (0.5 + 0.9) / 2 and (0.2 + 0.6) / 2; page 1, its last position: (0.3 + 0.2) / 2
    assert metric.compute().item() == pytest.approx((0.7 + 0.4 + 0.25) / 3)
    metric.update(probs[:1], torch.ones(1, 3, dtype=torch.bool), queries[:1])  # a second layer
    assert metric.compute().item() == pytest.approx((0.7 + 0.4 + 0.25 + 1 + 1) / 5)


def tiny_module(overrides: list[str] = ()):
    torch.manual_seed(0)
    return make_module(compose_train(["module.val_generate_pages=0", *overrides])).eval()


def randomize(module) -> None:
    """Weights large enough that different pages' images change the answer loss clearly."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in module.model.parameters():
            noise = torch.randn(parameter.shape, generator=generator)
            parameter.copy_(noise * 0.2 if parameter.dim() > 1 else 1 + 0.3 * noise)


@pytest.mark.filterwarnings("ignore:You are trying to")
def test_identical_pages_score_zero_and_other_pages_the_loss_rise_with_another_image():
    module = tiny_module()
    randomize(module)
    processor = module.processor
    rendered = [render_page(0, i, page_size=256) for i in range(3)]
    images, answers = [page.image for page in rendered], [page.markdown for page in rendered]
    blank = [Image.new("RGB", (256, 256), "white")] * 3
    with torch.no_grad():
        module.validation_step(processor(blank, PROMPTS, answers), 0)
        assert module.val_image_reliance.compute().item() == 0
        module.val_image_reliance.reset()
        module.validation_step(processor(images, PROMPTS, answers), 0)
        reliance = module.val_image_reliance.compute().item()
        # the same answer tokens in both batches: the mean difference is the loss difference
        own = module(processor(images, PROMPTS, answers)).loss
        other = module(processor([images[2], images[0], images[1]], PROMPTS, answers)).loss
    assert abs(reliance) > 1e-3
    assert reliance == pytest.approx((other - own).item(), abs=1e-5)
    assert 0 < module.val_attention_on_image.compute().item() < 1


def observed(module, batch: dict, keys: torch.Tensor) -> tuple[float, torch.Tensor]:
    """The attention mass that the positions writing answer tokens put on ``keys``, and the
    logits of that observed forward."""
    metric = AttentionOnImage()
    observer = partial(
        metric.update, image_keys=keys, queries=predicting_positions(batch["labels"])
    )
    with module.model.decoder.observe_attention(observer):
        logits = module(batch).logits
    return metric.compute().item(), logits


@pytest.mark.parametrize(
    "sizes, answers",
    [(PAGE_SIZES[:2], ANSWERS[:2]), (PAGE_SIZES[:1] * 2, ["same", "same"])],
    ids=["padded", "unpadded"],
)
@pytest.mark.parametrize("attention", ["mha", "mla"])
def test_observed_attention_is_causal_sums_to_one_and_leaves_the_logits_as_they_were(
    attention, sizes, answers
):
    module = tiny_module(["decoder.attention=mla", TINY_MLA] if attention == "mla" else [])
    batch = module.processor(pages(sizes), ["<image>\nx"] * 2, answers)
    padded = not bool(batch["attention_mask"].all())
    assert padded == (answers[0] != answers[1])  # unpadded: the decoder's mask is None (causal)
    # each row's last real token (its EOS): no position before it may see it
    last = batch["attention_mask"].sum(dim=1) - 1
    eos = torch.nn.functional.one_hot(last, batch["input_ids"].shape[1]).bool()
    with torch.no_grad():
        plain = module(batch).logits
        on_image, logits = observed(
            module, batch, batch["input_ids"] == module.model.image_token_id
        )
        assert 0 < on_image < 1
        torch.testing.assert_close(logits, plain, rtol=1e-5, atol=1e-5)
        assert observed(module, batch, batch["attention_mask"].bool())[0] == pytest.approx(1)
        assert observed(module, batch, eos)[0] == 0
        assert torch.equal(module(batch).logits, plain)  # the observers are gone

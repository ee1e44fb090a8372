"""Training: the loss falls on a fixed batch, and a whole ``zoo.train`` run writes its outputs."""

from __future__ import annotations

import csv
import json
import math

import pytest
import torch

from lightning_modules.ocr_module import prompts_of
from tests.conftest import compose_train
from zoo.data.layout_engine import render_page
from zoo.run_setup import make_module, make_processor
from zoo.train import train


def fixed_batch(cfg, n_pages: int = 2) -> dict:
    pages = [render_page(0, i, page_size=cfg.data.page_size) for i in range(n_pages)]
    return make_processor(cfg)(
        [p.image for p in pages], [cfg.data.prompt] * n_pages, [p.markdown for p in pages]
    )


@pytest.mark.parametrize("encoder", ["causal_flow", "deepencoder"])
def test_a_few_steps_on_a_fixed_batch_lower_the_loss(encoder):
    torch.manual_seed(0)
    cfg = compose_train([f"encoder={encoder}"])
    module = make_module(cfg)
    batch = fixed_batch(cfg)
    optimizer = torch.optim.AdamW(module.parameters(), lr=2e-3)
    losses = []
    for _ in range(12):
        loss = module(batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses


def test_frozen_parameters_do_not_move():
    cfg = compose_train(["module.freeze=[encoder]"])
    module = make_module(cfg)
    before = {k: v.clone() for k, v in module.model.encoder.state_dict().items()}
    optimizer = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=1e-2)
    loss = module(fixed_batch(cfg)).loss
    loss.backward()
    optimizer.step()
    after = module.model.encoder.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_unknown_freeze_prefix_is_named():
    with pytest.raises(ValueError, match="no_such_module"):
        make_module(compose_train(["module.freeze=[no_such_module]"]))


def test_train_run_writes_checkpoint_and_metrics(tmp_path):
    cfg = compose_train(
        [
            f"paths.output_dir={tmp_path}",
            "trainer.max_steps=4",
            "trainer.val_check_interval=2",
            "callbacks.model_checkpoint.every_n_train_steps=2",
            "data.num_val=2",
            "data.batch_size=2",
            "trainer.log_every_n_steps=1",
            "module.val_generate_pages=2",
            "module.val_max_new_tokens=6",
        ]
    )
    metrics = train(cfg)
    assert {"train/loss", "val/loss", "val/text_edit", "val/reading_order_edit"} <= metrics.keys()
    assert 0 <= metrics["val/text_edit"] <= 1
    assert 0 < metrics["val/attention_on_image"] < 1
    assert math.isfinite(metrics["val/image_reliance"])  # one batch of two pages: one pair
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
    assert json.loads((tmp_path / "metrics.json").read_text()) == metrics
    with (tmp_path / "metrics.csv").open() as file:
        columns = set(csv.DictReader(file).fieldnames)
    layer = "train/expert_load/decoder.layers.1"
    logged = {
        "train/loss", "train/aux_loss", "train/lr", "train/grad_norm", "train/tokens_per_s",
        "train/images_per_s", "train/visual_tokens_per_page", f"{layer}/max_over_mean",
        f"{layer}/entropy", "val/loss", "val/text_edit", "val/reading_order_edit",
        "val/image_reliance", "val/attention_on_image",
    }  # fmt: skip
    assert logged <= columns


def test_expert_load_counts_every_real_token_top_k_times():
    cfg = compose_train([])
    module = make_module(cfg)
    batch = fixed_batch(cfg)
    module.expert_load.reset()
    module(batch)
    ((layer, counts),) = module.expert_load.counts.items()
    top_k = cfg.decoder.num_experts_per_tok
    assert layer == "decoder.layers.1"
    assert int(counts.sum()) == top_k * int(batch["attention_mask"].sum())
    summary = module.expert_load.summary()
    assert 1 <= summary[f"{layer}/max_over_mean"] <= cfg.decoder.n_routed_experts
    assert 0 <= summary[f"{layer}/entropy"] <= 1


def test_activation_checkpointing_keeps_names_and_gradients():
    cfg = compose_train([])
    torch.manual_seed(0)
    plain = make_module(cfg)
    torch.manual_seed(0)
    checkpointed = make_module(compose_train(["module.activation_checkpointing=true"]))
    assert plain.model.state_dict().keys() == checkpointed.model.state_dict().keys()
    batch = fixed_batch(cfg)
    for module in (plain, checkpointed):
        module(batch).loss.backward()
    for (name, a), b in zip(plain.named_parameters(), checkpointed.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, msg=name)


def test_prompts_of_a_training_batch_are_left_padded_prompts():
    cfg = compose_train([])
    processor = make_processor(cfg)
    pages = [render_page(0, i, page_size=cfg.data.page_size) for i in range(2)]
    images, prompts = [p.image for p in pages], ["<image>\nFree OCR.", "<image>\nOCR this page."]
    training = processor(images, prompts, ["a b c", "d"])
    expected = processor(images, prompts, padding_side="left")
    ids, mask = prompts_of(training, processor.tokenizer.pad_id)
    assert torch.equal(ids, expected["input_ids"]) and torch.equal(mask, expected["attention_mask"])

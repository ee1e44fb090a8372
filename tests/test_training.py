"""Training: the loss falls on a fixed batch, and a whole ``zoo.train`` run writes its outputs."""

from __future__ import annotations

import json

import pytest
import torch

from lightning_modules.synthetic_pages import render_page
from tests.conftest import compose_train
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
        ]
    )
    metrics = train(cfg)
    assert {"train/loss", "val/loss"} <= metrics.keys()
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
    assert json.loads((tmp_path / "metrics.json").read_text()) == metrics
    assert "train/loss" in (tmp_path / "metrics.csv").read_text()

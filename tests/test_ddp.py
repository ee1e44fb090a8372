"""Distributed training: two-process data parallel on the CPU (gloo), ``trainer=ddp``; fully
sharded, ``trainer=fsdp``, where Lightning runs it (CUDA only: its FSDPStrategy refuses the CPU,
Lightning-AI/pytorch-lightning#21812)."""

from __future__ import annotations

import csv

import lightning as L
import pytest
import torch

from tests.conftest import compose_train
from zoo.run_setup import make_datamodule, make_module
from zoo.train import train

SHORT_RUN = (
    "trainer.max_steps=3",
    "trainer.val_check_interval=3",
    "trainer.log_every_n_steps=1",
    "data.batch_size=1",
    "data.num_val=2",
    "module.val_generate_pages=1",
    "module.val_max_new_tokens=4",
)


def check_short_run(metrics: dict, tmp_path) -> None:
    assert {"train/loss", "val/loss"} <= metrics.keys()
    with (tmp_path / "metrics.csv").open() as file:
        steps = {row["step"] for row in csv.DictReader(file) if row["train/loss"]}
    assert steps == {"0", "1", "2"}
    assert (tmp_path / "checkpoints" / "last.ckpt").exists()


@pytest.mark.slow
def test_two_process_ddp_on_cpu_trains_a_few_steps(tmp_path):
    cfg = compose_train(
        [
            "trainer=ddp",
            "trainer.accelerator=cpu",
            "trainer.devices=2",
            "trainer.strategy=ddp_spawn",
            "trainer.precision=32-true",
            *SHORT_RUN,
            f"paths.output_dir={tmp_path}",
        ]
    )
    check_short_run(train(cfg), tmp_path)


@pytest.mark.slow
def test_two_process_ddp_trains_a_part_frozen_until_a_step(tmp_path):
    """The study's 2-core recipe: the encoder outside the backward pass until its step, which
    plain DDP refuses (a wrapped parameter without a gradient), hence find_unused_parameters."""
    cfg = compose_train(
        [
            "trainer=ddp",
            "trainer.accelerator=cpu",
            "trainer.devices=2",
            "trainer.strategy=ddp_spawn_find_unused_parameters_true",
            "trainer.precision=32-true",
            *SHORT_RUN,
            "trainer.max_steps=4",
            "trainer.val_check_interval=4",
            "module.frozen_until={encoder: 2}",
            "module.warmup_steps=0",
            "callbacks.model_checkpoint.every_n_train_steps=1",
            f"paths.output_dir={tmp_path}",
        ]
    )
    metrics = train(cfg)

    def weights(step: int, part: str) -> dict[str, torch.Tensor]:
        state = torch.load(tmp_path / f"checkpoints/step_{step:06d}.ckpt", weights_only=True)
        return {k: v for k, v in state["state_dict"].items() if k.startswith(f"model.{part}.")}

    def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
        return all(torch.equal(a[k], b[k]) for k in a)

    assert same(weights(1, "encoder"), weights(2, "encoder"))  # frozen through step 2
    assert not same(weights(1, "decoder"), weights(2, "decoder"))
    assert not same(weights(2, "encoder"), weights(4, "encoder"))  # trains from step 2
    # the logged validation loss is the mean over both ranks' pages, as one process scores it
    module = make_module(cfg)
    last = torch.load(tmp_path / "checkpoints/last.ckpt", weights_only=True)
    module.load_state_dict(last["state_dict"])
    single = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False)
    (scores,) = single.validate(module, datamodule=make_datamodule(cfg), verbose=False)
    assert metrics["val/loss"] == pytest.approx(scores["val/loss"], rel=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="Lightning's FSDP runs on CUDA only")
def test_fsdp_on_the_gpus_trains_a_few_steps(tmp_path):
    cfg = compose_train(["trainer=fsdp", *SHORT_RUN, f"paths.output_dir={tmp_path}"])
    check_short_run(train(cfg), tmp_path)

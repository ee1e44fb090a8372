"""Distributed training: two-process data parallel on the CPU (gloo), ``trainer=ddp``; fully
sharded, ``trainer=fsdp``, where Lightning runs it (CUDA only: its FSDPStrategy refuses the CPU,
Lightning-AI/pytorch-lightning#21812)."""

from __future__ import annotations

import csv

import pytest
import torch

from tests.conftest import compose_train
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


@pytest.mark.skipif(not torch.cuda.is_available(), reason="Lightning's FSDP runs on CUDA only")
def test_fsdp_on_the_gpus_trains_a_few_steps(tmp_path):
    cfg = compose_train(["trainer=fsdp", *SHORT_RUN, f"paths.output_dir={tmp_path}"])
    check_short_run(train(cfg), tmp_path)

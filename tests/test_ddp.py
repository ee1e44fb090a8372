"""Two-process data-parallel training on the CPU (gloo): ``trainer=ddp`` runs and logs."""

from __future__ import annotations

import csv

import pytest

from tests.conftest import compose_train
from zoo.train import train


@pytest.mark.slow
def test_two_process_ddp_on_cpu_trains_a_few_steps(tmp_path):
    cfg = compose_train(
        [
            "trainer=ddp",
            "trainer.accelerator=cpu",
            "trainer.devices=2",
            "trainer.strategy=ddp_spawn",
            "trainer.precision=32-true",
            "trainer.max_steps=3",
            "trainer.val_check_interval=3",
            "trainer.log_every_n_steps=1",
            "data.batch_size=1",
            "data.num_val=2",
            "module.val_generate_pages=1",
            "module.val_max_new_tokens=4",
            f"paths.output_dir={tmp_path}",
        ]
    )
    metrics = train(cfg)
    assert {"train/loss", "val/loss"} <= metrics.keys()
    with (tmp_path / "metrics.csv").open() as file:
        steps = {row["step"] for row in csv.DictReader(file) if row["train/loss"]}
    assert steps == {"0", "1", "2"}
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()

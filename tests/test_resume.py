"""Exact resume: a run stopped after N steps and resumed with ``ckpt_path`` trains on the same
batches with the same weights, learning rates and optimizer state as an uninterrupted run."""

from __future__ import annotations

import csv
from pathlib import Path

import lightning as L
import pytest

from tests.conftest import compose_train
from zoo.train import train

STEPS, STOP_AT = 6, 3


class Crash(RuntimeError):
    """Stands for the run being killed."""


class CrashAtStep(L.Callback):
    """Raises when step ``step`` is about to start (the checkpoint of the step before exists)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            raise Crash(f"stopped at step {self.step}")


def run_config(output_dir: Path, *extra: str):
    return compose_train(
        [
            f"paths.output_dir={output_dir}",
            f"trainer.max_steps={STEPS}",
            "trainer.val_check_interval=1000",
            "trainer.log_every_n_steps=1",
            f"callbacks.model_checkpoint.every_n_train_steps={STOP_AT}",
            "data.batch_size=2",
            "module.warmup_steps=2",
            "module.weight_decay=0.1",
            *extra,
        ]
    )


def losses_by_step(output_dir: Path) -> dict[int, str]:
    with (output_dir / "metrics.csv").open() as file:
        return {
            int(row["step"]): row["train/loss"] for row in csv.DictReader(file) if row["train/loss"]
        }


@pytest.mark.slow
def test_resumed_run_repeats_the_uninterrupted_losses(tmp_path):
    train(run_config(tmp_path / "whole"))
    crash = [
        f"+callbacks.crash._target_={__name__}.CrashAtStep",
        f"+callbacks.crash.step={STOP_AT}",
    ]
    with pytest.raises(Crash):
        train(run_config(tmp_path / "killed", *crash))
    checkpoint = tmp_path / "killed" / "checkpoints" / f"step_{STOP_AT:06d}.ckpt"
    train(run_config(tmp_path / "resumed", f"ckpt_path={checkpoint}"))

    whole, resumed = losses_by_step(tmp_path / "whole"), losses_by_step(tmp_path / "resumed")
    assert sorted(whole) == list(range(STEPS))
    assert sorted(resumed) == list(range(STOP_AT, STEPS))
    assert {step: whole[step] for step in resumed} == resumed

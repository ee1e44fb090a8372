"""``python -m zoo.train [overrides]``: train an OCR model with Lightning from the Hydra configs.

The defaults train the tiny DeepSeek-OCR 2 system on synthetic pages on the CPU; every part is a
Hydra override (``encoder=deepencoder``, ``model=deepseek_ocr``, ``size=full``, ``trainer=gpu``,
``stage=...``, ``experiment=...``). The run directory receives the resolved config, Lightning
checkpoints, ``metrics.csv`` (every logged value) and ``metrics.json`` (the final ones).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

# Idle OpenMP threads sleep instead of spinning: a CPU run sharing its cores with other
# processes is otherwise tens of times slower (measured 7.6 s vs 0.13 s per tiny step on 2
# busy cores). Read when torch loads OpenMP, so it must be set before the first torch import.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import hydra  # noqa: E402
import lightning as L  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from zoo.io.atomic import write_text_atomic  # noqa: E402
from zoo.io.lightning_checkpoint import read_ocr_checkpoint  # noqa: E402
from zoo.run_setup import make_datamodule, make_loggers_and_callbacks, make_module  # noqa: E402

log = logging.getLogger(__name__)


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit the configured model; returns the final logged metrics."""
    L.seed_everything(cfg.seed, workers=True)
    if cfg.get("ckpt_path"):
        read_ocr_checkpoint(cfg.ckpt_path)  # a damaged or foreign file fails naming itself
    datamodule = make_datamodule(cfg)
    module = make_module(cfg)
    loggers, callbacks = make_loggers_and_callbacks(cfg)
    # tensors a validate() made under inference mode (metric states, cached masks) would fail in
    # the fit after it, so validate_first validates under no_grad
    trainer: L.Trainer = hydra.utils.instantiate(
        cfg.trainer,
        logger=loggers,
        callbacks=callbacks,
        inference_mode=not cfg.get("validate_first"),
    )
    metrics = {}
    if cfg.get("validate_first"):
        (before,) = trainer.validate(module, datamodule=datamodule)
        metrics |= {f"before/{k}": float(v) for k, v in before.items()}
    if cfg.get("train", True):
        trainer.fit(
            module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"), weights_only=True
        )
        metrics |= {k: float(v) for k, v in trainer.callback_metrics.items()}
    output_dir = Path(cfg.paths.output_dir)
    write_text_atomic(output_dir / "metrics.json", json.dumps(metrics, indent=2, sort_keys=True))
    log.info("final metrics: %s", metrics)
    log.info("run directory: %s", output_dir)
    return metrics


@hydra.main(version_base="1.3", config_path="pkg://configs", config_name="train")
def main(cfg: DictConfig) -> None:
    log.debug("config:\n%s", OmegaConf.to_yaml(cfg))
    train(cfg)


if __name__ == "__main__":
    main()

"""The LightningModule that trains and validates an OCRModel built from a config."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import lightning as L
import torch

from lightning_modules.optim import parameter_groups, warmup_cosine
from zoo.build import build_model, to_plain


class OCRLightningModule(L.LightningModule):
    """Next-token training on answer tokens, with the MoE balance loss and stage freezing.

    ``model_cfg`` is the config ``build_model`` reads; ``freeze`` lists module-name prefixes
    (e.g. ``encoder.tokenizer``) whose parameters stay fixed in this stage.
    """

    def __init__(
        self,
        model_cfg: Mapping[str, Any],
        lr: float = 1e-4,
        min_lr: float = 1e-6,
        weight_decay: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.95),
        warmup_steps: int = 0,
        aux_loss_weight: float = 0.001,
        freeze: list[str] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(
            {"model_cfg": to_plain(model_cfg)}
            | {
                "lr": lr,
                "min_lr": min_lr,
                "weight_decay": weight_decay,
                "betas": tuple(betas),
                "warmup_steps": warmup_steps,
                "aux_loss_weight": aux_loss_weight,
                "freeze": list(freeze or []),
            }
        )
        self.model = build_model(self.hparams.model_cfg)
        self._freeze(self.hparams.freeze)
        self._step_started = 0.0

    def _freeze(self, prefixes: list[str]) -> None:
        names = {name for name, _ in self.model.named_modules()}
        unknown = [p for p in prefixes if p not in names]
        if unknown:
            raise ValueError(f"freeze: no module named {unknown} in the model")
        for name, param in self.model.named_parameters():
            if any(name == p or name.startswith(p + ".") for p in prefixes):
                param.requires_grad_(False)

    def forward(self, batch: Mapping[str, Any]):
        return self.model(
            batch["input_ids"],
            images=batch.get("images"),
            attention_mask=batch["attention_mask"],
            labels=batch["labels"],
        )

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> torch.Tensor:
        out = self(batch)
        loss = out.loss
        if out.aux_loss is not None and self.hparams.aux_loss_weight:
            loss = loss + self.hparams.aux_loss_weight * out.aux_loss
            self.log("train/aux_loss", out.aux_loss)
        n_pages = batch["input_ids"].shape[0]
        self.log("train/loss", out.loss, prog_bar=True, batch_size=n_pages)
        self.log("train/lr", self.optimizers().param_groups[0]["lr"], batch_size=n_pages)
        elapsed = time.perf_counter() - self._step_started
        if self._step_started and elapsed > 0:
            self.log("train/tokens_per_s", float(batch["attention_mask"].sum()) / elapsed)
            self.log("train/images_per_s", n_pages / elapsed)
        self._step_started = time.perf_counter()
        return loss

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        out = self(batch)
        self.log("val/loss", out.loss, prog_bar=True, batch_size=batch["input_ids"].shape[0])

    def configure_optimizers(self):
        hp = self.hparams
        optimizer = torch.optim.AdamW(
            parameter_groups(self.model, hp.weight_decay), lr=hp.lr, betas=tuple(hp.betas)
        )
        total = self.trainer.max_steps if self.trainer.max_steps > 0 else 10_000
        scheduler = warmup_cosine(optimizer, hp.warmup_steps, total, hp.min_lr / hp.lr)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

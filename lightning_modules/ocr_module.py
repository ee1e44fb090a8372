"""The LightningModule that trains and validates an OCRModel built from a config."""

from __future__ import annotations

import time
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torchmetrics.text import CharErrorRate, WordErrorRate

from lightning_modules.expert_load import ExpertLoadMonitor
from lightning_modules.metrics import (
    AttentionOnImage,
    ImageReliance,
    ReadingOrderEditDistance,
    TextEditDistance,
    markdown_reading_orders,
)
from lightning_modules.optim import is_under, parameter_groups, warmup_cosine
from zoo.inputs.page_roll import roll_page_images
from zoo.inputs.processor import (
    IGNORE_INDEX,
    OCRProcessor,
    predicted_labels,
    predicting_positions,
)
from zoo.inputs.text_tokenizer import load_text_tokenizer
from zoo.model.build import build_model
from zoo.model.config import upgrade_build_config
from zoo.model.lora import add_lora, has_lora, lora_config

# the folder of the run directory the LoRA adapter is saved to at the end of training
ADAPTER_DIR = "adapter"


def prompts_of(batch: Mapping[str, Any], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The prompt part (everything before the first labelled token) of each row of a
    right-padded training batch, left-padded for generation: ``(input_ids, attention_mask)``."""
    labelled = batch["labels"] != IGNORE_INDEX
    lengths = torch.where(
        labelled.any(dim=1), labelled.int().argmax(dim=1), batch["attention_mask"].sum(dim=1)
    )
    width = int(lengths.max())
    columns = torch.arange(width, device=lengths.device)
    shift = (width - lengths)[:, None]
    real = columns[None, :] >= shift
    source = (columns[None, :] - shift).clamp(min=0)
    ids = torch.gather(batch["input_ids"][:, :width], 1, source).masked_fill(~real, pad_id)
    return ids, real.long()


class OCRLightningModule(L.LightningModule):
    """Next-token training on answer tokens, with the MoE balance loss and stage freezing.

    ``model_cfg`` is the config ``build_model`` reads. ``freeze`` lists roles the model's
    components declare (e.g. ``vision_tokenizer``, ``projector``; see ``model.roles()``) or
    module / parameter name prefixes (e.g. ``encoder.tokenizer``) whose parameters stay fixed
    in this stage; they get no gradient and no optimizer state. ``frozen_until`` maps such
    names to the optimizer step from which they train (e.g. ``{encoder: 1200}``: a random
    encoder trained beside a decoder that does not yet read it flattens its outputs, so the
    decoder learns to read it frozen first); before it they take no gradient and no backward
    pass, and from it their rate warms up again (under DDP this needs
    ``strategy=ddp_find_unused_parameters_true``). ``activation_checkpointing``
    has each component checkpoint its own blocks (``set_grad_checkpointing``).
    ``aux_loss_weight`` multiplies the decoder's balance loss (already weighted by its
    ``aux_loss_alpha``). The learning rate warms up
    linearly for ``warmup_steps`` and then follows a cosine from ``lr`` to ``min_lr`` over the
    trainer's estimated optimizer steps; the encoder trains at ``encoder_lr_scale`` times that
    rate (from scratch, a full-rate encoder can drift faster than the decoder learns to read
    it). Validation generates greedily for the first
    ``val_generate_pages`` pages (whole batches, up to ``val_max_new_tokens`` tokens each) and
    scores text and reading-order edit distances, and the character and word error rates users
    of OCR measure, against the batch's answers. Whether the decoder reads the page at all:
    ``val_image_reliance`` compares every batch's answer loss with each page's own image to the
    loss with the previous page's image (one more forward; batches of one page are skipped), and
    ``val_attention_on_image`` measures the attention mass answer positions put on image tokens
    (one more forward, with eager attention).

    ``lora`` (``rank``, ``alpha``, ``dropout``, ``targets``; rank 0 = off) trains peft LoRA
    adapters on the target roles instead of the weights (:mod:`zoo.model.lora`); ``freeze``
    applies to the adapters too, and the adapter folder is saved to ``<run dir>/adapter`` at the
    end of training.
    """

    def __init__(
        self,
        model_cfg: Mapping[str, Any],
        lr: float = 1e-4,
        min_lr: float = 1e-6,
        weight_decay: float = 0.0,
        encoder_lr_scale: float = 1.0,
        betas: tuple[float, float] = (0.9, 0.95),
        warmup_steps: int = 0,
        aux_loss_weight: float = 1.0,
        freeze: list[str] | None = None,
        frozen_until: Mapping[str, int] | None = None,
        activation_checkpointing: bool = False,
        val_generate_pages: int = 4,
        val_max_new_tokens: int = 128,
        val_image_reliance: bool = True,
        val_attention_on_image: bool = True,
        lora: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(
            {"model_cfg": upgrade_build_config(model_cfg)}
            | {
                "lr": lr,
                "min_lr": min_lr,
                "weight_decay": weight_decay,
                "encoder_lr_scale": encoder_lr_scale,
                "betas": tuple(betas),
                "warmup_steps": warmup_steps,
                "aux_loss_weight": aux_loss_weight,
                "freeze": list(freeze or []),
                "frozen_until": dict(frozen_until or {}),
                "activation_checkpointing": activation_checkpointing,
                "val_generate_pages": val_generate_pages,
                "val_max_new_tokens": val_max_new_tokens,
                "val_image_reliance": val_image_reliance,
                "val_attention_on_image": val_attention_on_image,
                "lora": dict(lora) if lora and lora.get("rank") else None,
            }
        )
        tokenizer = load_text_tokenizer(self.hparams.model_cfg.get("text_tokenizer"))
        self.model = build_model(self.hparams.model_cfg, tokenizer=tokenizer)
        self.processor = OCRProcessor(tokenizer, image_mode=self.model.image_mode)
        self.freeze_prefixes(self.hparams.freeze)
        self.frozen_until_steps()  # an unknown name fails at build, not at the first step
        if activation_checkpointing:
            self.model.set_grad_checkpointing()
        self.expert_load = ExpertLoadMonitor(self.model)
        self.val_text_edit = TextEditDistance()
        self.val_reading_order_edit = ReadingOrderEditDistance()
        self.val_cer = CharErrorRate()
        self.val_wer = WordErrorRate()
        self.val_image_reliance = ImageReliance()
        self.val_attention_on_image = AttentionOnImage()
        self._last_batch_end: float | None = None
        self._val_pages_generated = 0

    def role_paths(self, prefixes: list[str], setting: str = "freeze") -> list[str]:
        """The module / parameter paths of ``prefixes``: roles the model's components declare
        (``vision_tokenizer`` -> ``encoder.tokenizer``) or paths already; an error names any
        that the model lacks, under the name of the ``setting`` that gave it."""
        roles = self.model.roles()
        names = {name for name, _ in self.model.named_modules()}
        names |= {name for name, _ in self.model.named_parameters()}
        unknown = [p for p in prefixes if p not in roles and p not in names]
        if unknown:
            top = sorted({name.split(".")[0] for name in names if name})
            raise ValueError(
                f"{setting}: no role, module or parameter named {unknown} in the model; its roles: "
                f"{sorted(roles)}; top-level names: {top} (see model.named_modules())"
            )
        return [roles.get(p, p) for p in prefixes]

    def frozen_until_steps(self) -> dict[str, int]:
        """``frozen_until`` with its roles resolved to module paths: path -> first step."""
        frozen_until = self.hparams.frozen_until
        paths = self.role_paths(list(frozen_until), "frozen_until")
        return dict(zip(paths, frozen_until.values(), strict=True))

    def freeze_prefixes(self, prefixes: list[str]) -> None:
        """Stop training every parameter of each role or under each module / parameter name
        prefix of ``prefixes``."""
        paths = self.role_paths(prefixes)
        for name, param in self.model.named_parameters():
            if any(is_under(name, p) for p in paths):
                param.requires_grad_(False)

    def configure_model(self) -> None:
        """Add the LoRA adapters once: after ``init`` loaded the base weights (``make_module``)
        and before Lightning restores a checkpoint, which then holds them."""
        if self.hparams.lora is None or has_lora(self.model):
            return
        add_lora(self.model, lora_config(self.model, **self.hparams.lora))
        self.freeze_prefixes(self.hparams.freeze)

    def on_train_end(self) -> None:
        """The LoRA adapter alone (peft's format) in ``<run dir>/adapter``."""
        if self.hparams.lora is not None and self.trainer.is_global_zero:
            from zoo.io.adapter import save_adapter

            save_adapter(self.model, Path(self.trainer.default_root_dir) / ADAPTER_DIR)

    def forward(self, batch: Mapping[str, Any]):
        """The model's loss on a batch; logits only at the labelled positions (see OCRModel)."""
        return self.model(
            batch["input_ids"],
            images=batch.get("images"),
            attention_mask=batch["attention_mask"],
            labels=batch["labels"],
            logits="labelled",
        )

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> torch.Tensor:
        self.expert_load.reset()
        out = self(batch)
        n_pages = batch["input_ids"].shape[0]
        loss = out.loss
        if out.aux_loss is not None and self.hparams.aux_loss_weight:
            loss = loss + self.hparams.aux_loss_weight * out.aux_loss
            self.log("train/aux_loss", out.aux_loss, batch_size=n_pages)
        self.log("train/loss", out.loss, prog_bar=True, batch_size=n_pages)
        self.log("train/lr", self.optimizers().param_groups[0]["lr"], batch_size=n_pages)
        visual = (batch["input_ids"] == self.model.image_token_id).sum() / n_pages
        self.log("train/visual_tokens_per_page", visual.float(), batch_size=n_pages)
        for key, value in self.expert_load.summary().items():
            self.log(f"train/expert_load/{key}", value, batch_size=n_pages)
        return loss

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        """The ``frozen_until`` groups take no gradient (and no backward pass) before their
        start step; this also holds after a resume, since it reads the restored step."""
        for group in self.optimizers().optimizer.param_groups:
            trainable = self.global_step >= group.get("start_step", 0)  # older checkpoints: 0
            if group["params"][0].requires_grad != trainable:
                for param in group["params"]:
                    param.requires_grad_(trainable)

    def on_train_batch_end(self, outputs: Any, batch: Mapping[str, Any], batch_idx: int) -> None:
        """Throughput from the wall time between consecutive batch ends (data loading included)."""
        now = time.perf_counter()
        if self._last_batch_end is not None and now > self._last_batch_end:
            elapsed = now - self._last_batch_end
            tokens = float(batch["attention_mask"].sum())
            self.log("train/tokens_per_s", tokens / elapsed)
            self.log("train/images_per_s", batch["input_ids"].shape[0] / elapsed)
        self._last_batch_end = now

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """The total 2-norm of the gradients, before clipping."""
        norms = [p.grad.detach().norm(2) for p in self.parameters() if p.grad is not None]
        if norms:
            self.log("train/grad_norm", torch.linalg.vector_norm(torch.stack(norms)))

    def on_validation_epoch_start(self) -> None:
        self._val_pages_generated = 0

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        out = self(batch)
        n_pages = batch["input_ids"].shape[0]
        # the mean over every rank's pages (torchmetrics sync the other validation figures)
        self.log("val/loss", out.loss, prog_bar=True, batch_size=n_pages, sync_dist=True)
        has_images = batch.get("images") is not None
        if self.hparams.val_image_reliance and has_images and n_pages > 1:
            self._score_image_reliance(batch, out.logits)
            self.log("val/image_reliance", self.val_image_reliance, batch_size=n_pages)
        if self.hparams.val_attention_on_image and has_images:
            self._score_attention_on_image(batch)
            self.log("val/attention_on_image", self.val_attention_on_image, batch_size=n_pages)
        if self._val_pages_generated < self.hparams.val_generate_pages:
            self._score_generation(batch)
            self._val_pages_generated += n_pages
            self.log("val/text_edit", self.val_text_edit, batch_size=n_pages)
            self.log("val/reading_order_edit", self.val_reading_order_edit, batch_size=n_pages)
            self.log("val/cer", self.val_cer, batch_size=n_pages)
            self.log("val/wer", self.val_wer, batch_size=n_pages)

    def _score_image_reliance(self, batch: Mapping[str, Any], own_logits: torch.Tensor) -> None:
        """Per answer token, the loss with each page's own image (``own_logits``: the labelled
        rows of the batch's forward) against the loss with the previous page's image, its
        placeholders laid out for that image (:func:`roll_page_images`)."""
        targets = predicted_labels(batch["labels"])
        rolled = roll_page_images(batch, self.model.image_token_id, self.processor.tokenizer.pad_id)
        own = F.cross_entropy(own_logits.float(), targets, reduction="none")
        other = F.cross_entropy(self(rolled).logits.float(), targets, reduction="none")
        self.val_image_reliance.update(own, other)

    def _score_attention_on_image(self, batch: Mapping[str, Any]) -> None:
        """The batch's forward again, with the decoder's attention observed layer by layer: the
        mass that the positions writing answer tokens put on the image's placeholders."""
        observer = partial(
            self.val_attention_on_image.update,
            image_keys=batch["input_ids"] == self.model.image_token_id,
            queries=predicting_positions(batch["labels"]),
        )
        with self.model.decoder.observe_attention(observer):
            self(batch)

    def _score_generation(self, batch: Mapping[str, Any]) -> None:
        """Greedy answers for the batch's pages, scored against the labelled answers."""
        tokenizer = self.processor.tokenizer
        input_ids, attention_mask = prompts_of(batch, tokenizer.pad_id)
        generated = self.model.generate(
            input_ids,
            images=batch.get("images"),
            attention_mask=attention_mask,
            max_new_tokens=self.hparams.val_max_new_tokens,
            eos_token_id=tokenizer.eos_id,
            pad_token_id=tokenizer.pad_id,
        )
        predictions = [self.processor.decode(row) for row in generated]
        references = [self.processor.decode(row[row != IGNORE_INDEX]) for row in batch["labels"]]
        self.val_text_edit.update(predictions, references)
        self.val_cer.update(predictions, references)
        self.val_wer.update(predictions, references)
        orders = [
            markdown_reading_orders(r, p) for r, p in zip(references, predictions, strict=True)
        ]
        orders = [order for order in orders if order is not None]
        if orders:
            self.val_reading_order_edit.update([p for _, p in orders], [t for t, _ in orders])

    def configure_optimizers(self):
        hp = self.hparams
        total = self.trainer.estimated_stepping_batches
        if not 0 < total < float("inf"):
            raise ValueError(
                f"the cosine schedule needs a finite number of optimizer steps, got {total}; "
                "set trainer.max_steps or trainer.max_epochs"
            )
        groups = parameter_groups(
            self.model, hp.weight_decay, hp.encoder_lr_scale, self.frozen_until_steps()
        )
        optimizer = torch.optim.AdamW(
            [{**group, "lr": hp.lr * group["lr_scale"]} for group in groups],
            lr=hp.lr,
            betas=tuple(hp.betas),
        )
        scheduler = warmup_cosine(optimizer, hp.warmup_steps, int(total), hp.min_lr / hp.lr)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

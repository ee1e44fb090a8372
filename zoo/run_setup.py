"""Turn a composed run config into the Lightning objects: datamodule, module, loggers, callbacks.

Shared by ``zoo.train`` and ``zoo.evaluate`` so both read a config the same way.
"""

from __future__ import annotations

from typing import Any

import hydra
import lightning as L
from omegaconf import DictConfig

from lightning_modules.ocr_module import OCRLightningModule
from zoo.inputs.processor import OCRProcessor
from zoo.inputs.text_tokenizer import load_text_tokenizer
from zoo.io.init_weights import initialize
from zoo.model.config import BUILD_KEYS, split_name, to_plain
from zoo.registry import create_datamodule, import_plugins


def make_processor(cfg: DictConfig) -> OCRProcessor:
    """Tokenizer + image mode of the configured model."""
    return OCRProcessor(
        load_text_tokenizer(to_plain(cfg.get("text_tokenizer"))),
        image_mode=to_plain(cfg.model.image_mode),
        max_answer_tokens=cfg.model.get("max_answer_tokens"),
    )


def make_datamodule(cfg: DictConfig) -> L.LightningDataModule:
    import_plugins(to_plain(cfg.get("plugins")) or [])
    name, kwargs = split_name(cfg.data, "data")
    return create_datamodule(name, processor=make_processor(cfg), **kwargs)


def model_config(cfg: DictConfig) -> dict[str, Any]:
    """The part of a run config that ``build_model`` reads."""
    return {key: to_plain(cfg.get(key)) for key in BUILD_KEYS}


def make_module(cfg: DictConfig) -> OCRLightningModule:
    """The LightningModule of ``cfg.module`` with the weights of ``cfg.init`` loaded (the run
    config's ``plugins``, the user's own choice, are imported first)."""
    import_plugins(to_plain(cfg.get("plugins")) or [])
    module = OCRLightningModule(model_config(cfg), **to_plain(cfg.module))
    initialize(module.model, to_plain(cfg.get("init")))
    return module


def make_loggers_and_callbacks(cfg: DictConfig) -> tuple[list[Any], list[Any]]:
    """Instantiate every ``_target_`` entry of the ``logger`` and ``callbacks`` nodes."""
    loggers = [hydra.utils.instantiate(c) for c in (cfg.get("logger") or {}).values() if c]
    callbacks = [hydra.utils.instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c]
    return loggers, callbacks

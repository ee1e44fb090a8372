"""The build config of a model as plain data: the nodes ``build_model`` reads, OmegaConf nodes
turned into Python containers, and older key names brought up to date. A leaf module, so that
checkpoint folders can read configs without importing the model."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any


def to_plain(cfg: Any) -> Any:
    """A resolved plain-Python copy of a (possibly OmegaConf) config node.

    OmegaConf is looked up, not imported: a node of it exists only once a caller imported it,
    and loading a model stays free of the Hydra stack."""
    omegaconf = sys.modules.get("omegaconf")
    if omegaconf is not None and isinstance(cfg, omegaconf.DictConfig | omegaconf.ListConfig):
        return omegaconf.OmegaConf.to_container(cfg, resolve=True)
    return cfg


def split_name(node: Mapping[str, Any], kind: str) -> tuple[str, dict[str, Any]]:
    """``{"name": n, **kwargs}`` -> ``(n, kwargs)``, with a clear error when the name is missing."""
    node = dict(to_plain(node))
    if "name" not in node:
        raise ValueError(f"the {kind} config needs a 'name' key; got keys {sorted(node)}")
    return node.pop("name"), node


# The config nodes build_model reads.
BUILD_KEYS = ("encoder", "projector", "decoder", "model", "text_tokenizer", "plugins")


def upgrade_build_config(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """A build config in today's key names: zoo folders and Lightning checkpoints written
    before the text tokenizer's node was renamed call it ``tokenizer``."""
    cfg = dict(to_plain(cfg))
    if "tokenizer" in cfg and "text_tokenizer" not in cfg:
        cfg["text_tokenizer"] = cfg.pop("tokenizer")
    return cfg

"""deepencoder-zoo: build, train, evaluate and compare DeepSeek-OCR-family models."""

from zoo.registry import (
    create_datamodule,
    create_decoder,
    create_encoder,
    create_mask,
    create_projector,
    register_datamodule,
    register_decoder,
    register_encoder,
    register_mask,
    register_projector,
)

__all__ = [
    "build_model",
    "from_pretrained",
    "load_processor",
    "save_pretrained",
    "create_datamodule",
    "create_decoder",
    "create_encoder",
    "create_mask",
    "create_projector",
    "register_datamodule",
    "register_decoder",
    "register_encoder",
    "register_mask",
    "register_projector",
]


_LAZY = {
    "build_model": "zoo.model.build",
    "from_pretrained": "zoo.io.load",
    "load_processor": "zoo.io.load",
    "save_pretrained": "zoo.io.save",
}


def __getattr__(name: str):
    # These pull in torch models; keep ``import zoo`` light for the registries.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'zoo' has no attribute {name!r}")

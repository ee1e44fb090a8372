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


def __getattr__(name: str):
    # build_model pulls in torch models; keep ``import zoo`` light for the registries.
    if name == "build_model":
        from zoo.build import build_model

        return build_model
    raise AttributeError(f"module 'zoo' has no attribute {name!r}")

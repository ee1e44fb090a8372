"""Projectors: map encoder tokens to the decoder's embedding width."""

from __future__ import annotations

from torch import nn

from zoo.registry import register_projector


@register_projector("linear")
class LinearProjector(nn.Module):
    """One linear layer, as in both released DeepSeek-OCR checkpoints."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.in_dim, self.out_dim = in_dim, out_dim
        self.layers = nn.Linear(in_dim, out_dim)

    def forward(self, tokens):
        return self.layers(tokens)


@register_projector("mlp_gelu")
class MlpGeluProjector(nn.Module):
    """``depth`` linear layers with GELU between them (the LLaVA-style ablation)."""

    def __init__(self, in_dim: int, out_dim: int, depth: int = 2) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"mlp_gelu projector: depth must be >= 1, got {depth}")
        self.in_dim, self.out_dim = in_dim, out_dim
        layers: list[nn.Module] = [nn.Linear(in_dim, out_dim)]
        for _ in range(depth - 1):
            layers += [nn.GELU(), nn.Linear(out_dim, out_dim)]
        self.layers = nn.Sequential(*layers)

    def forward(self, tokens):
        return self.layers(tokens)

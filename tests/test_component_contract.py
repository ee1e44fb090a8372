"""Components own their contract: the optimiser, checkpointing, ``init``, loading and stages
read what each encoder and decoder declares, so a new encoder is one module and one yaml.

The built-in components' declarations are checked against the central lists they replaced; an
encoder defined only in a test's plugin module goes through a whole run with them."""

from __future__ import annotations

import sys
import textwrap

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from encoders.base import VisionEncoder
from lightning_modules.optim import no_decay_names
from tests.conftest import compose_train, config_options
from zoo.io.convert.pretrained_parts import (
    SAM_PARTS_NOT_IN_SAM,
    clip_from_checkpoint,
    qwen2_from_transformers,
    sam_from_checkpoint,
)
from zoo.io.init_weights import initialize
from zoo.io.load import from_pretrained
from zoo.model.build import build_model
from zoo.model.component import CheckpointedForward, Component, join
from zoo.registry import ENCODERS
from zoo.run_setup import make_module, model_config
from zoo.train import train

# Every tiny encoder variant with its own parameters, buffers or stages.
MODELS = [[f"encoder={name}"] for name in config_options("encoder")] + [
    ["experiment=query_init_shared_resized"],
    ["experiment=query_init_sinusoidal"],
    ["experiment=tokenizer_patch_unshuffle"],
    ["encoder.with_queries=false"],
]

# The lists the optimiser and init kept before the components declared them.
OLD_NO_DECAY_NAMES = {
    "pos_embed", "rel_pos_h", "rel_pos_w", "class_embedding", "position_embedding",
    "view_separator", "image_newline",
}  # fmt: skip
OLD_NO_DECAY_MODULES = {"queries"}
OLD_PARTS = {
    "sam": ("encoder.tokenizer", sam_from_checkpoint, SAM_PARTS_NOT_IN_SAM),
    "clip": ("encoder.clip", clip_from_checkpoint, ()),
    "qwen2": ("encoder.lm", qwen2_from_transformers, ()),
}


def tiny_model(overrides: list[str]) -> nn.Module:
    return build_model(model_config(compose_train(overrides)))


@pytest.mark.parametrize("overrides", MODELS, ids=" ".join)
def test_declared_no_decay_parameters_are_those_of_the_old_central_lists(overrides):
    model = tiny_model(overrides)
    old = {
        join(module_name, param_name)
        for module_name, module in model.named_modules()
        for param_name, param in module.named_parameters(recurse=False)
        if param.ndim < 2
        or isinstance(module, nn.Embedding)
        or param_name in OLD_NO_DECAY_NAMES
        or module_name.rsplit(".", 1)[-1] in OLD_NO_DECAY_MODULES
    }
    assert no_decay_names(model) == old
    assert model.no_weight_decay() <= dict(model.named_parameters()).keys()


def test_each_component_names_its_own_no_decay_parameters():
    v1, v2 = tiny_model(["encoder=deepencoder"]), tiny_model(["encoder=causal_flow"])
    assert {"pos_embed", "blocks.1.attn.rel_pos_h"} <= v1.encoder.tokenizer.no_weight_decay()
    assert v1.encoder.clip.no_weight_decay() == {"class_embedding", "position_embedding"}
    assert {"tokenizer.pos_embed", "clip.class_embedding"} <= v1.encoder.no_weight_decay()
    assert {"queries.256", "queries.192"} <= v2.encoder.no_weight_decay()
    assert v2.decoder.no_weight_decay() == set()  # its norms and embedding: the generic rule
    assert {"view_separator", "image_newline"} <= v1.no_weight_decay()
    assert "image_newline" not in v2.no_weight_decay()


@pytest.mark.parametrize("overrides", MODELS, ids=" ".join)
def test_grad_checkpointing_wraps_the_blocks_every_module_list_held(overrides):
    model = tiny_model(overrides)
    blocks = {id(b) for m in model.modules() if isinstance(m, nn.ModuleList) for b in m}

    def wrapped() -> set[int]:
        return {
            id(m)
            for m in model.modules()
            if isinstance(m.__dict__.get("forward"), CheckpointedForward)
        }

    model.set_grad_checkpointing()
    assert wrapped() == blocks and blocks
    model.set_grad_checkpointing()  # idempotent
    assert wrapped() == blocks
    model.set_grad_checkpointing(False)
    assert not wrapped()


@pytest.mark.parametrize("overrides", MODELS, ids=" ".join)
def test_weight_sources_are_the_old_parts_where_the_part_is_the_one_they_fit(overrides):
    model = tiny_model(overrides)
    sources = {
        key: (s.submodule, s.convert, s.never_in_source)
        for key, s in model.weight_sources().items()
    }
    tokenizer = model.encoder.tokenizer
    fits = {
        "sam": type(tokenizer).__name__ == "SamViTB",
        "clip": hasattr(model.encoder, "clip"),
        "qwen2": hasattr(model.encoder, "lm"),
    }
    assert sources == {key: part for key, part in OLD_PARTS.items() if fits[key]}


@pytest.mark.parametrize("overrides", MODELS, ids=" ".join)
def test_reset_derived_buffers_rebuilds_every_buffer_after_a_meta_build(overrides):
    config = model_config(compose_train(overrides))
    reference = build_model(config)
    with torch.device("meta"):
        model = build_model(config)
    model.load_state_dict(reference.state_dict(), assign=True)
    model.reset_derived_buffers()
    buffers = dict(model.named_buffers())
    assert buffers.keys() == dict(reference.named_buffers()).keys()
    for name, buffer in reference.named_buffers():
        torch.testing.assert_close(buffers[name], buffer, msg=name)


def test_roles_name_the_parts_the_stages_freeze():
    common = {
        "encoder": "encoder", "projector": "projector", "decoder": "decoder",
        "view_separator": "view_separator", "vision_tokenizer": "encoder.tokenizer",
        "token_embedding": "decoder.embed_tokens", "lm_head": "decoder.lm_head",
    }  # fmt: skip
    assert tiny_model(["encoder=causal_flow"]).roles() == common | {
        "lm_encoder": "encoder.lm",
        "queries": "encoder.queries",
    }
    assert "queries" not in tiny_model(["encoder.with_queries=false"]).roles()
    assert tiny_model(["encoder=deepencoder"]).roles() == common | {
        "clip": "encoder.clip",
        "image_newline": "image_newline",
    }
    queries = tiny_model(["encoder=cross_attention_queries"]).roles()
    assert queries["query_decoder"] == "encoder.query_decoder"


def test_an_unknown_freeze_name_lists_the_roles():
    with pytest.raises(ValueError, match=r"no_such_role.*roles: \[.*'vision_tokenizer'"):
        make_module(compose_train(["module.freeze=[no_such_role]"]))


def test_a_role_two_parts_declare_is_refused():
    class Part(Component):
        def roles(self) -> dict[str, str]:
            return {"stem": ""}

    class Both(Component):
        def __init__(self) -> None:
            super().__init__()
            self.left, self.right = Part(), Part()

    with pytest.raises(ValueError, match="role 'stem' is declared by both left and right"):
        Both().roles()


class SquareGrid(VisionEncoder):
    """Tokens of a 2x2 or 2x3 grid, to check the default ``forward_features``."""

    def __init__(self, columns: int) -> None:
        super().__init__()
        self.out_dim, self.columns = 3, columns

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return torch.arange(2 * self.columns * 3.0).view(1, 2 * self.columns, 3)


def test_default_forward_features_folds_square_token_grids():
    pixels = torch.zeros(1, 3, 8, 8)
    grid = SquareGrid(2).forward_features(pixels)
    assert grid.shape == (1, 3, 2, 2)
    assert torch.equal(grid.flatten(2).transpose(1, 2), SquareGrid(2)(pixels))
    with pytest.raises(ValueError, match="6 tokens, not a square grid"):
        SquareGrid(3).forward_features(pixels)


PLUGIN = '''
import torch
from torch import nn

from encoders.base import VisionEncoder
from zoo.model.component import WeightSource
from zoo.registry import register_encoder


def from_toy_format(tensors):
    """A made-up public format that stores the stem under ``patchify.``."""
    return {name.removeprefix("patchify."): tensor for name, tensor in tensors.items()}


class Block(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.mlp = nn.Linear(width, width)

    def forward(self, x):
        return x + self.mlp(self.norm(x))


@register_encoder("contract_patches")
class ContractPatches(VisionEncoder):
    """64-px patches, learned positions, residual blocks and a derived gain."""

    def __init__(self, out_dim=8, depth=2, positions=16):
        super().__init__()
        self.out_dim = out_dim
        self.stem = nn.Conv2d(3, out_dim, kernel_size=64, stride=64)
        self.pos_table = nn.Parameter(torch.zeros(positions, out_dim))
        self.blocks = nn.ModuleList(Block(out_dim) for _ in range(depth))
        self.register_buffer("gain", self.derived_gain(), persistent=False)

    def derived_gain(self):
        return torch.linspace(0.5, 1.5, self.out_dim)

    def forward(self, pixel_values):
        x = self.stem(pixel_values).flatten(2).transpose(1, 2)
        x = x + self.pos_table[: x.shape[1]]
        for block in self.blocks:
            x = block(x)
        return x * self.gain

    def num_tokens(self, view_size):
        return (view_size // 64) ** 2

    def no_weight_decay(self):
        return super().no_weight_decay() | {"pos_table"}

    def roles(self):
        return {**super().roles(), "patch_stem": "stem"}

    def weight_sources(self):
        return {**super().weight_sources(), "toy": WeightSource(from_toy_format, "stem")}

    def reset_derived_buffers(self):
        super().reset_derived_buffers()
        self.gain = self.derived_gain()
'''

CONFIGS = {
    "encoder/contract_patches.yaml": """\
        # @package _global_
        encoder: {name: contract_patches, out_dim: 8}
        model:
          image_mode: {name: v2, global_size: 256, local_size: 192}
        plugins: [contract_plugin]
        """,
    "stage/freeze_patch_stem.yaml": """\
        # @package _global_
        module:
          weight_decay: 0.1
          freeze: [patch_stem]
        """,
}


@pytest.fixture
def plugin_configs(tmp_path, monkeypatch):
    (tmp_path / "contract_plugin.py").write_text(PLUGIN)
    for name, text in CONFIGS.items():
        (tmp_path / "configs" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "configs" / name).write_text(textwrap.dedent(text))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path / "configs"
    ENCODERS._constructors.pop("contract_patches", None)
    sys.modules.pop("contract_plugin", None)


def test_an_encoder_of_a_plugin_module_trains_freezes_checkpoints_and_loads(
    plugin_configs, tmp_path
):
    toy = tmp_path / "toy_weights"
    toy.mkdir()
    stem = {"patchify.weight": torch.randn(8, 3, 64, 64), "patchify.bias": torch.randn(8)}
    save_file(stem, str(toy / "model.safetensors"))
    cfg = compose_train(
        [
            f"hydra.searchpath=[file://{plugin_configs}]",
            "encoder=contract_patches",
            "stage=freeze_patch_stem",
            f"+init.toy={toy}",
            "module.activation_checkpointing=true",
            f"paths.output_dir={tmp_path / 'run'}",
            "trainer.max_steps=2",
            "data.batch_size=2",
            "data.num_val=2",
        ]
    )
    train(cfg)
    checkpoint = torch.load(tmp_path / "run/checkpoints/last.ckpt", weights_only=True)
    state = checkpoint["state_dict"]
    assert torch.equal(state["model.encoder.stem.weight"], stem["patchify.weight"])  # frozen
    optimizer = checkpoint["optimizer_states"][0]
    assert optimizer["state"] and all(s["step"] == 2 for s in optimizer["state"].values())
    groups = optimizer["param_groups"]
    undecayed = {n for g in groups if g["weight_decay"] == 0 for n in g["names"]}
    decayed = {n for g in groups if g["weight_decay"] > 0 for n in g["names"]}
    assert {"encoder.pos_table", "encoder.blocks.0.norm.weight"} <= undecayed
    assert "encoder.blocks.0.mlp.weight" in decayed
    assert not any(n.startswith("encoder.stem") for n in undecayed | decayed)

    module = make_module(cfg)
    assert all(
        isinstance(b.__dict__["forward"], CheckpointedForward) for b in module.model.encoder.blocks
    )
    assert not module.model.encoder.stem.weight.requires_grad
    module.load_state_dict(state)
    module.model.save_pretrained(tmp_path / "saved")
    loaded = from_pretrained(tmp_path / "saved")
    assert loaded.state_dict().keys() == module.model.state_dict().keys()
    for name, tensor in module.model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    torch.testing.assert_close(loaded.encoder.gain, torch.linspace(0.5, 1.5, 8))

    initialize(loaded, {"toy": str(toy)})
    with pytest.raises(ValueError, match=r"\['sam'\] fit no part .*'toy'"):
        initialize(loaded, {"sam": str(toy)})

"""Part-wise initialisation from transformers checkpoints: SAM, CLIP and Qwen2 weights give the
zoo parts the outputs of transformers' own models (tiny random configs)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file
from torch import nn
from transformers import (
    CLIPVisionConfig,
    CLIPVisionModel,
    Qwen2Config,
    Qwen2Model,
    SamVisionConfig,
    SamVisionModel,
)

from encoders.causal_flow import MaskedTransformer
from encoders.clip import ClipOverFeatureMap
from encoders.sam import SamViTB
from tests.conftest import compose_train
from zoo.convert.pretrained_parts import (
    SAM_PARTS_NOT_IN_SAM,
    clip_from_transformers,
    qwen2_from_transformers,
    sam_from_transformers,
)
from zoo.init_weights import InitError, initialize, load_checked
from zoo.run_setup import make_module


def randomized(model: nn.Module) -> nn.Module:
    """Every parameter redrawn, so that zero or unit initialisations cannot hide a mix-up."""
    torch.manual_seed(0)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn_like(param) * 0.2)
    return model.eval()


def test_sam_from_transformers_gives_the_same_neck_features():
    config = SamVisionConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=128,
        patch_size=16, window_size=4, global_attn_indexes=[1], output_channels=16, mlp_dim=128,
    )  # fmt: skip
    reference = randomized(SamVisionModel(config))
    ours = SamViTB(
        img_size=128, width=32, depth=2, num_heads=2, window_size=4, global_attn_indexes=(1,),
        neck_dim=16, downsample_channels=(8, 8),
    ).eval()  # fmt: skip
    load_checked(ours, sam_from_transformers(reference.state_dict()), "sam", SAM_PARTS_NOT_IN_SAM)
    ours.net_2, ours.net_3 = nn.Identity(), nn.Identity()  # compare SAM's own output: the neck
    pixels = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        expected = reference(pixel_values=pixels).last_hidden_state
        torch.testing.assert_close(ours.forward_features(pixels), expected)


def test_clip_from_transformers_gives_the_same_hidden_states():
    config = CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        image_size=56, patch_size=14, hidden_act="quick_gelu",
    )  # fmt: skip
    reference = randomized(CLIPVisionModel(config))
    ours = ClipOverFeatureMap(width=32, depth=2, num_heads=4, mlp_dim=64, native_grid=4).eval()
    load_checked(ours, clip_from_transformers(reference.state_dict()), "clip")
    pixels = torch.randn(2, 3, 56, 56)
    with torch.no_grad():
        # DeepEncoder feeds CLIP a feature map in place of its pixel patchify; give both the same.
        patches = reference.embeddings.patch_embedding(pixels)
        expected = reference(pixel_values=pixels).last_hidden_state
        torch.testing.assert_close(ours(patches), expected)


def test_qwen2_from_transformers_gives_the_same_hidden_states():
    config = Qwen2Config(
        vocab_size=40, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-6,
        rope_parameters={"rope_type": "default", "rope_theta": 1e6},
    )  # fmt: skip
    reference = randomized(Qwen2Model(config))
    ours = MaskedTransformer(32, 2, 4, 2, 64, rms_norm_eps=1e-6, rope_theta=1e6).eval()
    tensors = qwen2_from_transformers({f"model.{k}": v for k, v in reference.state_dict().items()})
    assert not any("embed_tokens" in k for k in tensors)
    load_checked(ours, tensors, "qwen2")
    embeds = torch.randn(2, 7, 32)
    causal = torch.ones(7, 7, dtype=torch.bool).tril()[None, None]
    with torch.no_grad():
        expected = reference(inputs_embeds=embeds).last_hidden_state
        torch.testing.assert_close(ours(embeds, causal), expected)


def test_init_loads_parts_from_folders_and_names_mismatches(tmp_path):
    config = SamVisionConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=1024,
        patch_size=16, window_size=8, global_attn_indexes=[1], output_channels=16, mlp_dim=128,
    )  # fmt: skip
    reference = randomized(SamVisionModel(config))
    save_file(reference.state_dict(), str(tmp_path / "model.safetensors"))
    module = make_module(compose_train(["encoder=causal_flow"]))
    initialize(module.model, {"sam": str(tmp_path)})
    loaded = module.model.encoder.tokenizer.blocks[0].attn.qkv.weight
    assert torch.equal(loaded, reference.vision_encoder.layers[0].attn.qkv.weight)
    with pytest.raises(InitError, match="clip"):
        initialize(module.model, {"clip": str(tmp_path)})
    other = make_module(compose_train(["encoder=deepencoder"]))  # SAM width 16, not 32
    with pytest.raises(
        InitError, match=r"wrong shape: .*'blocks.0.attn.qkv.bias \(96,\) \(expected \(48,\)\)'"
    ):
        initialize(other.model, {"sam": str(tmp_path)})

"""Part-wise initialisation from transformers and timm checkpoints: SAM, CLIP and Qwen2 weights
give the zoo parts the outputs of transformers' own models (tiny random configs), and timm's
names of the same weights load to the same tensors."""

from __future__ import annotations

import re

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
from zoo.io.convert.pretrained_parts import (
    SAM_PARTS_NOT_IN_SAM,
    clip_from_checkpoint,
    clip_from_transformers,
    qwen2_from_transformers,
    sam_from_checkpoint,
    sam_from_transformers,
)
from zoo.io.init_weights import initialize
from zoo.io.tensors import InitError, load_checked
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


# timm names, written out from timm's VisionTransformerSAM / VisionTransformer modules, for the
# tensors of transformers' SamVisionModel and CLIPVisionModel (both hold the same weights).
TIMM_SAM_FROM_TRANSFORMERS = (
    (r"vision_encoder\.patch_embed\.projection\.", "patch_embed.proj."),
    (r"vision_encoder\.pos_embed", "pos_embed"),
    (r"vision_encoder\.layers\.(\d+)\.layer_norm([12])\.", r"blocks.\1.norm\2."),
    (r"vision_encoder\.layers\.(\d+)\.attn\.", r"blocks.\1.attn."),
    (r"vision_encoder\.layers\.(\d+)\.mlp\.lin([12])\.", r"blocks.\1.mlp.fc\2."),
    (r"vision_encoder\.neck\.conv1\.", "neck.0."),
    (r"vision_encoder\.neck\.layer_norm1\.", "neck.1."),
    (r"vision_encoder\.neck\.conv2\.", "neck.2."),
    (r"vision_encoder\.neck\.layer_norm2\.", "neck.3."),
)


def timm_sam_state(reference: nn.Module) -> dict[str, torch.Tensor]:
    out = {}
    for key, tensor in reference.state_dict().items():
        for pattern, replacement in TIMM_SAM_FROM_TRANSFORMERS:
            renamed, hits = re.subn("^" + pattern, replacement, key)
            if hits:
                out[renamed] = tensor
                break
    out["head.fc.weight"] = torch.zeros(3, 3)  # timm's classifier, unused
    return out


def timm_clip_state(reference: CLIPVisionModel) -> dict[str, torch.Tensor]:
    vision = reference  # transformers 5 holds CLIPVisionModel's parts at the top
    width = vision.config.hidden_size
    out = {
        "cls_token": vision.embeddings.class_embedding.reshape(1, 1, width),
        "pos_embed": vision.embeddings.position_embedding.weight[None],
        "patch_embed.proj.weight": vision.embeddings.patch_embedding.weight,
        "norm_pre.weight": vision.pre_layrnorm.weight,
        "norm_pre.bias": vision.pre_layrnorm.bias,
        "norm.weight": vision.post_layernorm.weight,
        "norm.bias": vision.post_layernorm.bias,
    }
    for i, layer in enumerate(vision.encoder.layers):
        attn = layer.self_attn
        for kind in ("weight", "bias"):
            out[f"blocks.{i}.norm1.{kind}"] = getattr(layer.layer_norm1, kind)
            out[f"blocks.{i}.norm2.{kind}"] = getattr(layer.layer_norm2, kind)
            out[f"blocks.{i}.attn.qkv.{kind}"] = torch.cat(
                [getattr(p, kind) for p in (attn.q_proj, attn.k_proj, attn.v_proj)]
            )
            out[f"blocks.{i}.attn.proj.{kind}"] = getattr(attn.out_proj, kind)
            out[f"blocks.{i}.mlp.fc1.{kind}"] = getattr(layer.mlp.fc1, kind)
            out[f"blocks.{i}.mlp.fc2.{kind}"] = getattr(layer.mlp.fc2, kind)
    return out


def test_timm_sam_and_clip_load_as_their_transformers_twins():
    sam = randomized(SamVisionModel(SamVisionConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=128,
        patch_size=16, window_size=4, global_attn_indexes=[1], output_channels=16, mlp_dim=128,
    )))  # fmt: skip
    from_timm, from_transformers = (
        sam_from_checkpoint(timm_sam_state(sam)),
        sam_from_checkpoint(sam.state_dict()),
    )
    assert from_timm.keys() - {"head.fc.weight"} == from_transformers.keys()
    assert all(torch.equal(from_timm[k], v) for k, v in from_transformers.items())
    clip = randomized(CLIPVisionModel(CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        image_size=56, patch_size=14, hidden_act="quick_gelu",
    )))  # fmt: skip
    from_timm = clip_from_checkpoint(timm_clip_state(clip))
    from_transformers = clip_from_checkpoint(clip.state_dict())
    assert from_timm.keys() == from_transformers.keys()
    assert all(torch.equal(from_timm[k], v) for k, v in from_transformers.items())


def test_init_reads_a_timm_sam_folder_and_rejects_unknown_tensors(tmp_path):
    reference = randomized(SamVisionModel(SamVisionConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=1024,
        patch_size=16, window_size=8, global_attn_indexes=[1], output_channels=16, mlp_dim=128,
    )))  # fmt: skip
    state = {k: v for k, v in timm_sam_state(reference).items() if not k.startswith("head.")}
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "model.safetensors"))
    module = make_module(compose_train(["encoder=causal_flow"]))
    initialize(module.model, {"sam": str(tmp_path)})
    loaded = module.model.encoder.tokenizer.blocks[1].mlp.lin2.weight
    assert torch.equal(loaded, reference.vision_encoder.layers[1].mlp.lin2.weight)
    state["blocks.0.attn.extra"] = torch.zeros(1)
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "model.safetensors"))
    with pytest.raises(InitError, match=r"not in the model: \['blocks.0.attn.extra'\]"):
        initialize(module.model, {"sam": str(tmp_path)})

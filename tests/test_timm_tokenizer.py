"""The timm vision tokenizer: timm's SAM against the zoo's (an independent oracle for the SAM
stage), token grids of a ViT and a ConvNeXt, local pretrained weights, the component contract,
the build-time checks, and the tokenizer in both systems."""

from __future__ import annotations

import pytest
import timm
import torch
from safetensors.torch import save_file

from encoders.sam import SamViTB
from encoders.timm_tokenizer import TimmTokenizer
from tests.conftest import compose_train
from tests.test_encoder_ablations import TINY_SAM as TINY_SAM_SPEC
from tests.test_pretrained_parts import randomized
from zoo.io.convert.pretrained_parts import SAM_PARTS_NOT_IN_SAM, sam_from_checkpoint
from zoo.io.load import from_pretrained
from zoo.io.save import save_pretrained
from zoo.list import format_components
from zoo.model.build import build_model
from zoo.registry import create_encoder
from zoo.run_setup import model_config

# the tiny SAM of the ablation tests as SamViTB arguments, and the same SAM in timm's names
TINY_SAM = {k: v for k, v in TINY_SAM_SPEC.items() if k != "name"}
TINY_TIMM_SAM = {
    "embed_dim": 32,
    "depth": 2,
    "num_heads": 2,
    "window_size": 8,
    "global_attn_indexes": [1],
    "neck_chans": 16,
}
TINY_VIT = {"depth": 2, "dynamic_img_size": True}


def timm_sam_and_zoo_sam(img_size: int, timm_kwargs: dict, zoo_kwargs: dict):
    """timm's samvit_base_patch16 with random weights and the zoo's SAM given the same ones."""
    reference = randomized(
        timm.create_model(
            "samvit_base_patch16",
            pretrained=False,
            num_classes=0,
            img_size=img_size,
            **timm_kwargs,
        )
    )
    sam = SamViTB(img_size=img_size, **zoo_kwargs).eval()
    missing, unexpected = sam.load_state_dict(
        sam_from_checkpoint(reference.state_dict()), strict=False
    )
    assert not unexpected and all(k.startswith(SAM_PARTS_NOT_IN_SAM) for k in missing)
    return reference, sam


@pytest.mark.parametrize("view", [256, 192, 320])  # native grid, resized down, window padding
def test_timm_samvit_gives_the_zoo_sam_neck_map(view):
    reference, sam = timm_sam_and_zoo_sam(256, TINY_TIMM_SAM, TINY_SAM)
    pixels = torch.randn(2, 3, view, view)
    with torch.no_grad():
        torch.testing.assert_close(sam.neck_features(pixels), reference.forward_features(pixels))


def full_size_parity(view: int) -> None:
    reference, sam = timm_sam_and_zoo_sam(1024, {}, {})
    pixels = torch.randn(1, 3, view, view)
    with torch.no_grad():
        expected = reference.forward_features(pixels)
        torch.testing.assert_close(sam.neck_features(pixels), expected, atol=1e-4, rtol=1e-4)


def test_full_size_samvit_base_patch16_gives_the_zoo_sam_neck_map_on_a_small_view():
    full_size_parity(256)


@pytest.mark.slow
def test_full_size_samvit_base_patch16_gives_the_zoo_sam_neck_map_at_1024():
    full_size_parity(1024)


def test_timm_tokenizer_over_samvit_is_the_zoo_sam_tokenizer():
    """SAM through timm plus the tokenizer's compressor = the zoo's SAM-B with the same weights."""
    tokenizer = create_encoder(
        "timm",
        model="samvit_base_patch16",
        out_dim=32,
        mid_channels=24,
        model_kwargs={"img_size": 256, **TINY_TIMM_SAM},
    ).eval()
    randomized(tokenizer)
    sam = SamViTB(img_size=256, **TINY_SAM).eval()
    state = sam_from_checkpoint(tokenizer.model.state_dict())
    state["net_2.weight"], state["net_3.weight"] = (
        tokenizer.compressor[0].weight,
        tokenizer.compressor[1].weight,
    )
    sam.load_state_dict(state)
    pixels = torch.randn(1, 3, 192, 192)
    with torch.no_grad():
        torch.testing.assert_close(tokenizer(pixels), sam(pixels))
    assert tokenizer.num_tokens(192) == sam.num_tokens(192) == 9


@pytest.mark.parametrize(
    ("model", "kwargs", "stride", "convs"),
    [
        ("vit_tiny_patch16_224", TINY_VIT, 16, 2),  # patches, then SAM's 16x compressor
        ("convnext_atto", {}, 32, 1),  # last stage, one stride-2 conv
        ("vit_tiny_patch16_224", {**TINY_VIT, "patch_size": 64}, 64, 0),  # a 1x1 projection
    ],
)
def test_any_feature_stride_gives_64_px_per_token(model, kwargs, stride, convs):
    tokenizer = create_encoder("timm", model=model, out_dim=24, model_kwargs=kwargs)
    assert (tokenizer.feature_stride, tokenizer.num_halvings) == (stride, convs)
    convolutions = [m for m in tokenizer.compressor.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.stride for c in convolutions] == [(2, 2)] * convs if convs else [(1, 1)]
    for view, side in ((256, 4), (192, 3), (1024, 16)):
        assert tokenizer.num_tokens(view) == side * side
        if view < 1024:
            assert tokenizer(torch.randn(2, 3, view, view)).shape == (2, side * side, 24)


def test_a_feature_map_already_at_the_token_width_and_stride_goes_through_unchanged():
    tokenizer = create_encoder(
        "timm",
        model="vit_tiny_patch16_224",
        out_dim=192,
        norm=False,
        model_kwargs={**TINY_VIT, "patch_size": 64},
    )
    pixels = torch.randn(1, 3, 128, 128)
    expected = tokenizer.model.forward_intermediates(pixels, indices=[1], intermediates_only=True)
    torch.testing.assert_close(tokenizer.forward_features(pixels), expected[0])


def test_feature_index_reads_an_earlier_stage():
    tokenizer = create_encoder("timm", model="convnext_atto", out_dim=24, feature_index=2)
    assert tokenizer.feature_stride == 16 and tokenizer.num_halvings == 2
    assert len(tokenizer.model.stages) == 3  # the unused last stage is pruned


@pytest.mark.parametrize(("model", "as_folder"), [("resnet18", True), ("convnext_atto", False)])
def test_pretrained_reads_a_local_timm_file_or_folder(tmp_path, model, as_folder):
    """Every tensor arrives, batch-norm statistics too (the build-time probe leaves them)."""
    source = randomized(timm.create_model(model, pretrained=False))  # with its classifier
    for name, buffer in source.named_buffers():
        if name.endswith(("running_mean", "running_var")):
            buffer.uniform_(0.5, 1.5)
    save_file(
        {k: v.contiguous() for k, v in source.state_dict().items()},
        str(tmp_path / "model.safetensors"),
    )
    path = tmp_path if as_folder else tmp_path / "model.safetensors"
    tokenizer = create_encoder("timm", model=model, out_dim=24, pretrained=str(path))
    assert tokenizer.model.training
    expected = source.state_dict()
    for name, tensor in tokenizer.model.state_dict().items():
        assert torch.equal(tensor, expected[name]), name


def test_pretrained_reads_a_torch_checkpoint_of_original_names(tmp_path):
    """timm's family filter runs: a 224 px ViT checkpoint fits a 256 px model (table resized)."""
    source = randomized(timm.create_model("vit_tiny_patch16_224", pretrained=False, depth=2))
    torch.save(source.state_dict(), tmp_path / "pytorch_model.bin")
    tokenizer = create_encoder(
        "timm",
        model="vit_tiny_patch16_224",
        out_dim=24,
        pretrained=str(tmp_path),
        model_kwargs={"depth": 2, "img_size": 256, "dynamic_img_size": True},
    )
    assert tokenizer.model.pos_embed.shape[1] == 1 + 16 * 16
    assert torch.equal(tokenizer.model.blocks[1].mlp.fc2.weight, source.blocks[1].mlp.fc2.weight)


def test_pretrained_errors_name_the_file_and_the_mismatch(tmp_path):
    with pytest.raises(FileNotFoundError, match="do not exist"):
        create_encoder("timm", model="convnext_atto", pretrained=str(tmp_path / "nowhere"))
    (tmp_path / "notes.txt").write_text("")
    with pytest.raises(FileNotFoundError, match=r"none of .*model.safetensors.*notes.txt"):
        create_encoder("timm", model="convnext_atto", pretrained=str(tmp_path))
    other = timm.create_model("vit_tiny_patch16_224", pretrained=False, depth=1)
    save_file(dict(other.state_dict()), str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match=r"does not fit timm model 'convnext_atto'"):
        create_encoder("timm", model="convnext_atto", pretrained=str(tmp_path))


def test_a_saved_model_loads_without_the_pretrained_file(tmp_path):
    """A meta build (loading a saved model) reads the stored tensors, not ``pretrained``."""
    weights = tmp_path / "convnext.safetensors"
    source = timm.create_model("convnext_atto", pretrained=False)
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(weights))
    spec = f"{{name: timm, model: convnext_atto, out_dim: 32, pretrained: '{weights}'}}"
    cfg = compose_train(["experiment=tokenizer_timm_convnext", f"encoder.tokenizer={spec}"])
    model = build_model(model_config(cfg))
    save_pretrained(model, tmp_path / "saved")
    weights.unlink()
    loaded = from_pretrained(tmp_path / "saved")
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name


def test_build_time_checks_name_the_model_and_the_fix():
    with pytest.raises(ValueError, match=r"unknown timm model 'convnext_atom'.*convnext_atto"):
        create_encoder("timm", model="convnext_atom")
    with pytest.raises(ValueError, match="dynamic_img_size"):  # a fixed 224 px input
        create_encoder("timm", model="vit_tiny_patch16_224", model_kwargs={"depth": 1})
    with pytest.raises(ValueError, match="fails on a 256 px view"):  # 14 px patches
        create_encoder(
            "timm", model="vit_tiny_patch16_224", model_kwargs={**TINY_VIT, "patch_size": 14}
        )
    with pytest.raises(ValueError, match="no whole stride"):  # 14 px patches, padded
        create_encoder(
            "timm",
            model="vit_tiny_patch16_224",
            model_kwargs={**TINY_VIT, "patch_size": 14, "dynamic_img_pad": True},
        )
    with pytest.raises(ValueError, match=r"stride 128, which stride-2 convs cannot"):
        create_encoder(
            "timm", model="vit_tiny_patch16_224", model_kwargs={**TINY_VIT, "patch_size": 128}
        )
    tokenizer = create_encoder("timm", model="convnext_atto")
    with pytest.raises(ValueError, match=r"a 200 px view is not a multiple of the 32 px stride"):
        tokenizer.num_tokens(200)
    with pytest.raises(ValueError, match=r"pixel_values must be \[B, 3, H, W\]"):
        tokenizer(torch.zeros(1, 1, 64, 64))


def test_view_sizes_of_the_model_are_checked_when_it_is_built():
    cfg = compose_train(["experiment=tokenizer_timm_convnext", "model.image_mode.local_size=200"])
    with pytest.raises(ValueError, match="200 px view is not a multiple of the 32 px stride"):
        build_model(model_config(cfg))


def test_contract_no_weight_decay_and_grad_checkpointing():
    tokenizer = create_encoder(
        "timm", model="vit_tiny_patch16_224", out_dim=24, model_kwargs=TINY_VIT
    )
    assert tokenizer.no_weight_decay() == {"model.pos_embed", "model.cls_token"}
    pixels = torch.randn(1, 3, 128, 128)
    tokenizer(pixels).sum().backward()
    plain = [p.grad.clone() for p in tokenizer.parameters()]
    tokenizer.zero_grad()
    calls = []
    tokenizer.model.blocks[0].register_forward_pre_hook(lambda *_: calls.append(1))
    tokenizer.set_grad_checkpointing()
    tokenizer(pixels).sum().backward()
    assert len(calls) == 2  # the block ran again in the backward pass
    for grad, param in zip(plain, tokenizer.parameters(), strict=True):
        torch.testing.assert_close(param.grad, grad)
    tokenizer.set_grad_checkpointing(False)
    assert not tokenizer.model.grad_checkpointing


@pytest.mark.parametrize("encoder", ["causal_flow", "deepencoder"])
@pytest.mark.parametrize("experiment", ["tokenizer_timm_convnext", "tokenizer_timm_vit"])
def test_timm_experiments_replace_sam_in_either_system(experiment, encoder):
    model = build_model(
        model_config(compose_train([f"experiment={experiment}", f"encoder={encoder}"]))
    )
    assert isinstance(model.encoder.tokenizer, TimmTokenizer)
    assert "vision_tokenizer" in model.roles()
    assert all(not k.startswith("encoder.tokenizer.") for k in model.weight_sources())


def test_zoo_list_shows_the_timm_tokenizer():
    assert "A timm backbone's feature map" in format_components("timm")

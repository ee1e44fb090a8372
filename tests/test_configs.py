"""Every config in the tree composes and builds: tiny on CPU, full size on the meta device."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import compose_train, config_options
from zoo.model.build import build_model
from zoo.run_setup import make_processor, model_config


def tiny_forward(cfg) -> torch.Tensor:
    """Build the configured tiny model and run one synthetic page through it."""
    from zoo.data.layout_engine import render_page

    model = build_model(model_config(cfg))
    processor = make_processor(cfg)
    page = render_page(0, 0, page_size=cfg.data.page_size)
    batch = processor([page.image], [cfg.data.prompt], [page.markdown])
    out = model(batch["input_ids"], batch["images"], batch["attention_mask"], batch["labels"])
    assert torch.isfinite(out.loss)
    return out.logits


@pytest.mark.parametrize("encoder", config_options("encoder"))
def test_every_encoder_builds_tiny_and_runs(encoder):
    cfg = compose_train([f"encoder={encoder}"])
    logits = tiny_forward(cfg)
    assert logits.shape[-1] == cfg.decoder.vocab_size


@pytest.mark.parametrize("model", config_options("model"))
def test_every_model_preset_builds_tiny_and_runs(model):
    tiny_forward(compose_train([f"model={model}"]))


@pytest.mark.parametrize("name", config_options("decoder") + config_options("projector"))
def test_every_decoder_and_projector_builds_tiny(name):
    group = "decoder" if name in config_options("decoder") else "projector"
    tiny_forward(compose_train([f"{group}={name}"]))


@pytest.mark.parametrize("experiment", config_options("experiment"))
def test_every_experiment_builds_tiny(experiment):
    tiny_forward(compose_train([f"experiment={experiment}"]))


@pytest.mark.parametrize("encoder", ["causal_flow", "deepencoder"])
def test_the_reading_order_demonstration_builds_both_encoders_small(encoder):
    cfg = compose_train(["experiment=synth_reading_order", f"encoder={encoder}"])
    assert cfg.data.page_size == 512 and cfg.module.encoder_lr_scale == 0.1
    assert cfg.encoder.tokenizer.width == 64 and cfg.data.style.table_prob == 0
    tiny_forward(cfg)


def test_the_reading_order_demonstration_pages_are_not_read_in_raster_order():
    """Its large type still leaves room for two columns."""
    from zoo.data.layout_engine import plan_page

    cfg = compose_train(["experiment=synth_reading_order"])
    pages = [plan_page(0, i, cfg.data.page_size, **cfg.data.style) for i in range(60)]
    assert sum(page.attributes["layout"] == "double_column" for page in pages) > len(pages) / 4


@pytest.mark.parametrize("stage", config_options("stage"))
def test_every_stage_composes(stage):
    cfg = compose_train([f"stage={stage}"])
    assert isinstance(list(cfg.module.freeze), list)


@pytest.mark.parametrize("trainer", config_options("trainer"))
def test_every_trainer_composes(trainer):
    cfg = compose_train([f"trainer={trainer}"])
    assert cfg.trainer._target_ == "lightning.pytorch.Trainer"


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize(
    ("model", "encoder_range"),
    [
        # SAM-B (~95M with neck and compressor) + CLIP-L (~300M)
        ("deepseek_ocr", (370e6, 420e6)),
        # SAM-B + Qwen2-0.5B without its token embedding (~360M) + 400 queries
        ("deepseek_ocr2", (430e6, 480e6)),
    ],
)
def test_full_size_presets_on_meta_device(model, encoder_range):
    cfg = compose_train([f"model={model}", "size=full"])
    with torch.device("meta"):
        built = build_model(model_config(cfg))
    encoder = n_params(built.encoder)
    decoder = n_params(built.decoder)
    print(f"{model}: encoder {encoder / 1e6:.1f}M, decoder {decoder / 1e9:.3f}B")
    assert encoder_range[0] < encoder < encoder_range[1]
    assert 2.9e9 < decoder < 3.0e9  # 2.935B total, 0.57B active per token
    assert built.projector.layers.weight.shape == (1280, built.encoder.out_dim)

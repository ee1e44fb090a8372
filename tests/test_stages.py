"""The papers' training stages: every stage config builds with both encoders, frozen parts stay
bit-identical and hold no optimizer state, ``init.encoder_from`` carries only the encoder, and
the AdamW groups leave norms, biases, embeddings, positions and queries undecayed."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from lightning_modules.optim import parameter_groups, warmup_cosine
from tests.conftest import compose_train, config_options
from tests.test_training import fixed_batch
from zoo.run_setup import make_module

ENCODERS = ("causal_flow", "deepencoder")
PAPER_STAGES = (
    "ocr1_deepencoder_pretrain",
    "ocr1_train_clip_decoder",
    "ocr2_encoder_pretrain",
    "ocr2_query_enhancement",
    "ocr2_decoder_only",
)
FROZEN = {
    "ocr1_train_clip_decoder": ("encoder.tokenizer.",),
    "ocr2_query_enhancement": ("encoder.tokenizer.",),
    "ocr2_decoder_only": ("encoder.", "projector.", "view_separator"),
}


def test_every_paper_stage_has_a_config():
    assert set(PAPER_STAGES) <= set(config_options("stage"))


@pytest.mark.parametrize("encoder", ENCODERS)
@pytest.mark.parametrize("stage", config_options("stage"))
def test_stage_builds_and_freezes_what_it_names(stage, encoder):
    module = make_module(compose_train([f"stage={stage}", f"encoder={encoder}"]))
    frozen = {n for n, p in module.model.named_parameters() if not p.requires_grad}
    expected = {
        n for n, _ in module.model.named_parameters() if n.startswith(FROZEN.get(stage, ("-",)))
    }
    assert frozen == expected
    if stage.endswith("pretrain"):
        assert module.hparams.model_cfg["decoder"]["name"] == "dense_lm"


@pytest.mark.parametrize("stage", sorted(FROZEN))
def test_frozen_parameters_stay_identical_and_hold_no_optimizer_state(stage):
    encoder = "deepencoder" if stage.startswith("ocr1") else "causal_flow"
    torch.manual_seed(0)
    cfg = compose_train([f"stage={stage}", f"encoder={encoder}", "module.weight_decay=0.1"])
    module = make_module(cfg)
    before = {n: p.detach().clone() for n, p in module.model.named_parameters()}
    optimizer = torch.optim.AdamW(parameter_groups(module.model, 0.1), lr=1e-2)
    batch = fixed_batch(cfg, n_pages=1)
    for _ in range(2):
        optimizer.zero_grad()
        module(batch).loss.backward()
        optimizer.step()
    params = dict(module.model.named_parameters())
    frozen = [n for n, p in params.items() if not p.requires_grad]
    assert frozen and all(torch.equal(params[n], before[n]) for n in frozen)
    assert all(params[n].grad is None for n in frozen)
    with_state = {id(p) for p in optimizer.state}
    assert not any(id(params[n]) in with_state for n in frozen)
    assert not torch.equal(params["decoder.norm.weight"], before["decoder.norm.weight"])


def test_encoder_from_a_stage_one_checkpoint_carries_only_the_encoder(tmp_path):
    torch.manual_seed(1)
    stage_one = make_module(compose_train(["stage=ocr2_encoder_pretrain"]))
    checkpoint = tmp_path / "last.ckpt"
    torch.save({"state_dict": stage_one.state_dict()}, checkpoint)
    torch.manual_seed(2)
    fresh = make_module(compose_train(["stage=ocr2_query_enhancement"]))
    torch.manual_seed(2)
    stage_two = make_module(
        compose_train(["stage=ocr2_query_enhancement", f"init.encoder_from={checkpoint}"])
    )
    for name, tensor in stage_two.model.encoder.state_dict().items():
        assert torch.equal(tensor, stage_one.model.encoder.state_dict()[name]), name
    for part in ("projector", "decoder"):
        mine = getattr(stage_two.model, part).state_dict()
        assert all(
            torch.equal(t, getattr(fresh.model, part).state_dict()[n]) for n, t in mine.items()
        )
    assert torch.equal(stage_two.model.view_separator, fresh.model.view_separator)


def test_from_pretrained_a_lightning_checkpoint_carries_the_whole_model(tmp_path):
    """The task ladder's next rung starts from the last rung's run (weights only)."""
    torch.manual_seed(1)
    rung = make_module(compose_train([]))
    checkpoint = tmp_path / "last.ckpt"
    torch.save({"state_dict": rung.state_dict()}, checkpoint)
    torch.manual_seed(2)
    next_rung = make_module(compose_train([f"init.from_pretrained={checkpoint}"]))
    mine, theirs = next_rung.model.state_dict(), rung.model.state_dict()
    assert mine.keys() == theirs.keys()
    assert all(torch.equal(tensor, theirs[name]) for name, tensor in mine.items())
    torch.save({"state_dict": {"model.decoder.norm.weight": torch.ones(3)}}, checkpoint)
    with pytest.raises(ValueError, match="init.from_pretrained"):
        make_module(compose_train([f"init.from_pretrained={checkpoint}"]))


def test_encoder_from_refuses_an_encoder_of_another_shape(tmp_path):
    other = make_module(compose_train(["encoder=deepencoder"]))
    checkpoint = tmp_path / "v1.ckpt"
    torch.save({"state_dict": other.state_dict()}, checkpoint)
    with pytest.raises(ValueError, match=r"not in the model: \['clip\."):
        make_module(compose_train([f"init.encoder_from={checkpoint}"]))


@pytest.mark.parametrize("encoder", ENCODERS)
def test_parameter_groups_leave_norms_biases_embeddings_and_queries_undecayed(encoder):
    module = make_module(compose_train([f"encoder={encoder}", "module.freeze=[projector]"]))
    decayed, plain = (set(g["names"]) for g in parameter_groups(module.model, 0.1))
    named = dict(module.model.named_parameters())
    assert decayed | plain == {n for n, p in named.items() if p.requires_grad}
    assert not decayed & plain and not any(n.startswith("projector") for n in decayed | plain)
    assert all(named[n].ndim >= 2 for n in decayed)
    always_plain = {
        "view_separator", "encoder.tokenizer.pos_embed",
        "encoder.tokenizer.blocks.1.attn.rel_pos_h", "decoder.embed_tokens.weight",
        "decoder.norm.weight", "decoder.layers.0.input_layernorm.weight",
    }  # fmt: skip
    always_decayed = {
        "encoder.tokenizer.patch_embed.proj.weight", "decoder.layers.0.self_attn.q_proj.weight",
        "decoder.layers.1.mlp.experts.w_gate_up", "decoder.lm_head.weight",
    }  # fmt: skip
    if encoder == "causal_flow":
        always_plain |= {"encoder.queries.256", "encoder.queries.192", "encoder.lm.norm.weight"}
        always_decayed |= {"encoder.lm.layers.0.self_attn.q_proj.weight"}
    else:
        always_plain |= {"image_newline", "encoder.clip.class_embedding"}
        always_plain |= {"encoder.clip.position_embedding"}
        always_decayed |= {"encoder.clip.blocks.0.attn.qkv.weight"}
    assert always_plain <= plain and always_decayed <= decayed


def test_v2_encoder_pretraining_sees_both_view_sizes():
    cfg = compose_train(["stage=ocr2_encoder_pretrain", "encoder=causal_flow"])
    images = fixed_batch(cfg, n_pages=1)["images"]
    mode = make_module(cfg).model.image_mode
    assert images.global_views.shape[-1] == mode.global_size
    assert images.local_views is not None and images.local_views.shape[-1] == mode.local_size


def test_the_encoder_can_train_at_a_scaled_learning_rate():
    module = make_module(compose_train(["module.encoder_lr_scale=0.1"]))
    groups = parameter_groups(module.model, 0.1, encoder_lr_scale=0.1)
    scale_of = {name: g["lr_scale"] for g in groups for name in g["names"]}
    assert scale_of.keys() == {n for n, p in module.model.named_parameters() if p.requires_grad}
    assert all((scale == 0.1) == name.startswith("encoder.") for name, scale in scale_of.items())
    assert {g["weight_decay"] for g in groups if g["lr_scale"] == 0.1} == {0.0, 0.1}
    assert module.hparams.encoder_lr_scale == 0.1
    with pytest.raises(ValueError, match="encoder_lr_scale must be > 0"):
        parameter_groups(module.model, 0.1, encoder_lr_scale=0)


def test_frozen_until_puts_a_part_in_groups_that_start_at_its_step():
    module = make_module(compose_train(["module.frozen_until={vision_tokenizer: 5}"]))
    assert module.frozen_until_steps() == {"encoder.tokenizer": 5}  # the role's path
    groups = parameter_groups(module.model, 0.1, start_steps=module.frozen_until_steps())
    start_of = {name: g["start_step"] for g in groups for name in g["names"]}
    assert all(
        (start == 5) == name.startswith("encoder.tokenizer.") for name, start in start_of.items()
    )
    assert {g["weight_decay"] for g in groups if g["start_step"] == 5} == {0.0, 0.1}
    with pytest.raises(ValueError, match="frozen_until: the steps must be >= 0"):
        parameter_groups(module.model, 0.1, start_steps={"encoder": -1})
    with pytest.raises(ValueError, match="frozen_until: no role, module or parameter named"):
        make_module(compose_train(["module.frozen_until={no_such_part: 5}"]))


def test_a_delayed_group_trains_at_zero_then_warms_up_into_the_cosine():
    weights = [torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))]
    optimizer = torch.optim.AdamW(
        [{"params": [weights[0]], "start_step": 0}, {"params": [weights[1]], "start_step": 4}],
        lr=1.0,
    )
    scheduler = warmup_cosine(optimizer, warmup_steps=2, total_steps=10, min_lr_ratio=0.0)
    rates = []
    for _ in range(8):
        rates.append([group["lr"] for group in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    plain, delayed = zip(*rates, strict=True)
    assert plain[:2] == (0.5, 1.0) and plain[2] > plain[5] > 0
    assert delayed[:4] == (0.0,) * 4
    assert delayed[4] == pytest.approx(plain[4] / 2) and delayed[5:] == pytest.approx(plain[5:])


class EncoderSnapshots(L.Callback):
    """One weight of the encoder and one of the decoder after every optimizer step, and
    whether the encoder took part in the backward pass."""

    def __init__(self) -> None:
        self.steps: list[tuple[int, torch.Tensor, torch.Tensor]] = []
        self.encoder_had_gradient: list[bool] = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        encoder = next(p for p in module.model.encoder.parameters() if p.ndim == 2)
        decoder = next(p for p in module.model.decoder.parameters() if p.ndim == 2)
        self.steps.append((trainer.global_step, encoder.detach().clone(), decoder.detach().clone()))
        self.encoder_had_gradient.append(encoder.requires_grad)


def fit_steps(module, batch, max_steps: int, ckpt_path=None) -> tuple[L.Trainer, EncoderSnapshots]:
    snapshots = EncoderSnapshots()
    trainer = L.Trainer(
        accelerator="cpu", max_steps=max_steps, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=[snapshots],
    )  # fmt: skip
    loader = torch.utils.data.DataLoader([batch] * max_steps, batch_size=None)
    trainer.fit(module, train_dataloaders=loader, ckpt_path=ckpt_path)
    return trainer, snapshots


def test_a_part_frozen_until_a_step_trains_from_it_also_after_a_resume(tmp_path):
    torch.manual_seed(0)
    cfg = compose_train(["module.frozen_until={encoder: 3}", "module.warmup_steps=0"])
    batch = fixed_batch(cfg, n_pages=1)
    trainer, _ = fit_steps(make_module(cfg), batch, max_steps=1)
    trainer.save_checkpoint(tmp_path / "step1.ckpt")
    resumed = make_module(cfg)
    _, snapshots = fit_steps(resumed, batch, max_steps=5, ckpt_path=tmp_path / "step1.ckpt")
    (s2, enc2, dec2), (s3, enc3, dec3), (s4, enc4, dec4), (s5, enc5, _) = snapshots.steps
    assert (s2, s3, s4, s5) == (2, 3, 4, 5)
    assert torch.equal(enc2, enc3) and not torch.equal(dec2, dec3)  # step 3 is still frozen
    assert not torch.equal(enc3, enc4) and not torch.equal(enc4, enc5)  # from step 3 it trains
    assert snapshots.encoder_had_gradient == [False, False, True, True]  # no backward before
    assert all(p.requires_grad for p in resumed.model.encoder.parameters())

"""LoRA fine-tuning with peft: adapters on exactly the target roles, only they train and are saved,
base + adapter folders load through ``zoo.from_pretrained``, ``zoo.merge`` writes every layout,
a ``data=jsonl`` run reports CER / WER, and bad inputs are named."""

from __future__ import annotations

import json
import re

import pytest
import torch
from peft.tuners.lora import LoraLayer, ParamWrapper
from safetensors.torch import load_file

import zoo
from tests.conftest import compose_train
from tests.test_training import fixed_batch
from zoo.bench import models as bench
from zoo.data.layout_engine import render_page
from zoo.io.adapter import ADAPTER_CONFIG, ADAPTER_WEIGHTS, PEFT_PREFIX, save_adapter
from zoo.io.folder import CheckpointFormatError
from zoo.merge import main as merge_main
from zoo.model.lora import add_lora, lora_config
from zoo.run_setup import make_module
from zoo.train import train

EVERY_TARGET = [
    "decoder_attention",
    "decoder_mlp",
    "shared_experts",
    "routed_experts",
    "projector",
    "lm_encoder",
]
LORA = ["module.lora.rank=4", "module.lora.targets=[decoder_attention,routed_experts,projector]"]


def wrapped(model: torch.nn.Module) -> tuple[set[str], set[str]]:
    """The linear layers and the stacked parameters peft wrapped, by their model paths."""
    linears, parameters = set(), set()
    for name, module in model.named_modules():
        if isinstance(module, ParamWrapper):  # nested per parameter: strip the inner wrappers
            parameters.add(f"{name.replace('.base_layer', '')}.{module.parameter_name}")
        elif isinstance(module, LoraLayer):
            linears.add(name)
    return linears, parameters


def lora_module(overrides: list[str]):
    module = make_module(compose_train(overrides))
    module.configure_model()
    return module


def test_lora_wraps_exactly_the_target_roles_modules():
    module = lora_module(LORA)
    plain = make_module(compose_train([])).model
    names = [name for name, _ in plain.named_modules()]
    attention = {
        n for n in names if re.fullmatch(r"decoder\.layers\.\d+\.self_attn\.[qkvo]_proj", n)
    }
    experts = {n for n in names if n.endswith(".mlp.experts")}
    linears, parameters = wrapped(module.model)
    assert linears == attention | {"projector.layers"}
    assert experts and parameters == {f"{e}.{w}" for e in experts for w in ("w_gate_up", "w_down")}
    # a second configure_model (fit after validate) adds nothing
    module.configure_model()
    assert wrapped(module.model) == (linears, parameters)


def test_only_adapters_train_and_freezing_applies_to_them():
    module = lora_module(LORA)
    trainable = [n for n, p in module.model.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    frozen_decoder = lora_module([*LORA, "module.freeze=[decoder]"])
    trainable = [n for n, p in frozen_decoder.model.named_parameters() if p.requires_grad]
    assert trainable and all(n.startswith("projector.") and ".lora_" in n for n in trainable)


def test_a_training_step_changes_only_adapter_weights():
    torch.manual_seed(0)
    module = lora_module(LORA)
    before = {k: v.clone() for k, v in module.model.state_dict().items()}
    trainable = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-2)
    module(fixed_batch(compose_train(LORA))).loss.backward()
    optimizer.step()
    after = module.model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(".lora_" in k for k in changed)
    assert any(".lora_B." in k and "experts" in k for k in changed)


@pytest.fixture
def trained(tmp_path):
    """A tiny released-layout base folder, and the same model with every adapter role added and
    moved away from its zero start (as training does)."""
    model = bench.build_zoo_model(bench.ModelSize("tiny", bench.TINY_ENCODER, bench.TINY_DECODER))
    base = model.save_pretrained(tmp_path / "base", layout="official")
    add_lora(model, lora_config(model, rank=4, targets=EVERY_TARGET))
    torch.manual_seed(1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if ".lora_B." in name:
                param.normal_(std=0.05)
    return base, model.eval()


def logits(model):
    images = model.preprocess(bench.random_pages([(600, 500)], seed=3))
    ids, mask = bench.prompts(model, images, [5])
    with torch.no_grad():
        return model(ids, images, mask).logits


def test_saving_writes_only_adapter_tensors_and_base_plus_adapter_is_the_trained_model(
    tmp_path, trained
):
    base, model = trained
    adapter = save_adapter(model, tmp_path / "adapter")
    tensors = load_file(adapter / ADAPTER_WEIGHTS)
    adapter_params = [n for n, _ in model.named_parameters() if ".lora_" in n]
    assert len(tensors) == len(adapter_params)
    assert all(k.startswith(PEFT_PREFIX) and ".lora_" in k for k in tensors)
    assert json.loads((adapter / ADAPTER_CONFIG).read_text())["peft_type"] == "LORA"
    loaded = zoo.from_pretrained(base, adapter=adapter)
    assert torch.equal(logits(loaded), logits(model))


@pytest.mark.parametrize("layout", ["zoo", "official", "transformers"])
def test_merge_in_each_layout_reloads_with_the_logits_of_base_plus_adapter(
    tmp_path, trained, layout
):
    base, model = trained
    adapter = save_adapter(model, tmp_path / "adapter")
    out = tmp_path / "merged"
    merge_main([str(base), str(adapter), str(out), "--layout", layout])
    merged = zoo.from_pretrained(out)
    assert not hasattr(merged, "peft_config")
    torch.testing.assert_close(logits(merged), logits(model), rtol=0, atol=1e-5)


def test_a_jsonl_lora_run_logs_cer_wer_and_saves_the_adapter(tmp_path):
    pages = tmp_path / "pages"
    pages.mkdir()
    lines = []
    for index in range(2):
        page = render_page(7, index, page_size=256)
        page.image.save(pages / f"{index}.png")
        lines.append(json.dumps({"image": f"{index}.png", "markdown": page.markdown}))
    (pages / "train.jsonl").write_text("\n".join(lines) + "\n")
    cfg = compose_train(
        [
            *LORA,
            # gradients through the LM encoder after a validate_first pass
            "module.lora.targets=[decoder_attention,lm_encoder]",
            "data=jsonl",
            f"data.train_file={pages / 'train.jsonl'}",
            "data.batch_size=2",
            "data.num_workers=0",
            f"paths.output_dir={tmp_path / 'run'}",
            "trainer.max_steps=2",
            "trainer.val_check_interval=2",
            "module.val_generate_pages=2",
            "module.val_max_new_tokens=6",
            "validate_first=true",
        ]
    )
    metrics = train(cfg)
    assert {"before/val/cer", "before/val/wer", "val/cer", "val/wer", "val/text_edit"} <= set(
        metrics
    )
    assert metrics["val/cer"] >= 0 and metrics["val/wer"] >= 0
    adapter = tmp_path / "run" / "adapter"
    assert all(".lora_" in k for k in load_file(adapter / ADAPTER_WEIGHTS))


def test_unknown_target_role_is_named_with_the_valid_ones():
    with pytest.raises(ValueError, match=r"no_such_role.*decoder_attention"):
        lora_module(["module.lora.rank=4", "module.lora.targets=[no_such_role]"])
    with pytest.raises(ValueError, match="dropout"):
        lora_module(
            [
                "module.lora.rank=4",
                "module.lora.targets=[routed_experts]",
                "module.lora.dropout=0.1",
            ]
        )


def test_an_adapter_for_another_base_is_refused_naming_the_folder(tmp_path, trained):
    _, model = trained
    adapter = save_adapter(model, tmp_path / "adapter")
    other = make_module(compose_train(["encoder=deepencoder"])).model
    other_base = other.save_pretrained(tmp_path / "v1")
    with pytest.raises(CheckpointFormatError, match=f"{adapter}.*does not fit"):
        zoo.from_pretrained(other_base, adapter=adapter)
    with pytest.raises(CheckpointFormatError, match=f"{tmp_path / 'v1'} is not an adapter folder"):
        zoo.from_pretrained(other_base, adapter=other_base)


def test_an_adapter_config_peft_would_import_code_for_is_refused(tmp_path, trained):
    base, model = trained
    adapter = save_adapter(model, tmp_path / "adapter")
    config = json.loads((adapter / ADAPTER_CONFIG).read_text())
    config["megatron_config"] = {"tensor_model_parallel_size": 1}
    (adapter / ADAPTER_CONFIG).write_text(json.dumps(config))
    with pytest.raises(CheckpointFormatError, match="expected a LoRA adapter.*megatron_config"):
        zoo.from_pretrained(base, adapter=adapter)

"""bfloat16 and weight-only int8 inference on CPU: the weight layouts each precision runs in, the
int8 layers against their dequantized float forms, loading that keeps one copy of the weights,
and the numerics of a reduced released-layout model (``zoo.bench.fullsize``'s ``reduced``) on
the shared demo pages.

Bounds chosen here (ours, except the issue's 95% for int8; this machine measured the bracketed
figures):

* bf16 vs fp32 on the 18 demo pages: largest logit error <= 6% of the largest fp32 logit
  [3.2%], greedy agreement >= 97% of positions [98.8%];
* int8 vs bf16 on the demo pages: largest logit error <= 8% of the largest bf16 logit [4.7%],
  greedy agreement >= 95% of positions [96.0%]; on one synthetic page (the fast test) both
  logit errors <= 6% [1.5% and 2.0%];
* loading a released-layout folder, the process's peak RSS above what it held before: bf16 <=
  1.15x the weights' bytes + 16 MiB [1.07x], int8 <= 1.5x its weights' bytes + 16 MiB [1.32x]
  and <= 0.75x bf16's peak [0.64x] (a model whose experts dominate, as the release's do).

Greedy agreement is counted position by position on one sequence, the reference's greedy page:
at each position, whether both models' greedy choices given the same prefix are equal (a free
run diverges for good at its first difference, so it measures where the first one falls).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

import zoo
from decoders import generate
from decoders.moe import Int8RoutedExperts, RoutedExperts
from tests.conftest import compose_train
from zoo.bench.fullsize import FULLSIZE_MODELS
from zoo.bench.models import TINY_ENCODER, ModelSize, random_pages, write_random_release
from zoo.layers import int8 as int8_module
from zoo.layers.int8 import KERNEL_MAX_ROWS, Int8Linear, int8_linear, quantize_per_channel
from zoo.model.build import build_model
from zoo.model.inference import GenerationSettings, load_inference_model
from zoo.model.quantize import quantize_model
from zoo.run_setup import model_config

REDUCED = FULLSIZE_MODELS["reduced"]
# Experts dominate, as in the release (2.7 of 3.39B parameters), in a 170 MB bf16 folder.
MEMORY_TEST_MODEL = ModelSize(
    "memory",
    TINY_ENCODER,
    {
        "vocab_size": 4096,
        "hidden_size": 512,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "intermediate_size": 1024,
        "n_routed_experts": 64,
        "moe_intermediate_size": 256,
    },
)


@pytest.fixture(scope="module")
def reduced_release(tmp_path_factory) -> Path:
    return write_random_release(tmp_path_factory.mktemp("reduced") / "release", REDUCED)


# --- layouts and int8 layers ---------------------------------------------------------------------


def test_each_precision_loads_in_its_own_layout(reduced_release):
    fp32 = zoo.from_pretrained(reduced_release).decoder
    bf16 = zoo.from_pretrained(reduced_release, dtype=torch.bfloat16).decoder
    # float32: the LM head column-major, the experts input-major (BLAS, grouped_mm)
    assert fp32.lm_head.weight.t().is_contiguous()
    assert fp32.layers[1].mlp.experts.w_gate_up.is_contiguous()
    # bfloat16: every expert's [out, in] matrix and the head's rows contiguous (torch.mv)
    assert bf16.lm_head.weight.is_contiguous()
    for name in ("w_gate_up", "w_down"):
        stack = getattr(bf16.layers[1].mlp.experts, name)
        assert stack.transpose(1, 2).is_contiguous() and not stack.is_contiguous()
        assert torch.equal(stack.float(), getattr(fp32.layers[1].mlp.experts, name))


def mapped_ranges(folder: Path) -> list[tuple[int, int]]:
    """Address ranges at which this process maps ``folder``'s files (Linux)."""
    ranges = []
    for line in Path("/proc/self/maps").read_text().splitlines():
        if str(folder.resolve()) in line:
            start, end = (int(n, 16) for n in line.split()[0].split("-"))
            ranges.append((start, end))
    return ranges


@pytest.mark.skipif(not Path("/proc/self/maps").is_file(), reason="reads /proc/self/maps")
def test_bf16_loading_uses_the_stored_tensors_without_a_copy(reduced_release):
    model = zoo.from_pretrained(reduced_release, dtype=torch.bfloat16)
    ranges = mapped_ranges(reduced_release)

    def in_file(tensor: torch.Tensor) -> bool:
        return any(start <= tensor.data_ptr() < end for start, end in ranges)

    decoder = model.decoder
    for tensor in (
        decoder.lm_head.weight,
        decoder.embed_tokens.weight,
        decoder.layers[1].self_attn.q_proj.weight,
        decoder.layers[1].mlp.shared_experts.down_proj.weight,
        model.encoder.tokenizer.pos_embed,
    ):
        assert in_file(tensor)
    # the released per-expert tensors are stacked: the only copy
    assert not in_file(decoder.layers[1].mlp.experts.w_gate_up)


@pytest.mark.parametrize("shape,input_dim", [((48, 40), -1), ((3, 40, 24), -2)])
def test_int8_quantisation_error_is_half_a_step(monkeypatch, shape, input_dim):
    weight = torch.randn(shape, generator=torch.Generator().manual_seed(0)).bfloat16()
    q, scale = quantize_per_channel(weight, input_dim)
    assert q.dtype == torch.int8 and q.shape == weight.shape
    assert q.transpose(-1, input_dim).is_contiguous()  # each output channel one run
    restored = q.float() * scale.float().unsqueeze(input_dim)
    step = scale.float().unsqueeze(input_dim)
    assert bool(((restored - weight.float()).abs() <= step / 2 * (1 + 1e-3)).all())
    monkeypatch.setattr(int8_module, "QUANTIZE_BLOCK_ELEMENTS", weight[0].numel())
    blocked = quantize_per_channel(weight, input_dim)
    assert torch.equal(blocked[0], q) and torch.equal(blocked[1], scale)


def test_int8_quantisation_leaves_a_float32_weight_as_it_was():
    """The working copy is a copy even when the weight is float32 already (quantising a float32
    model in place used to scale its weights)."""
    weight = torch.randn(16, 32, generator=torch.Generator().manual_seed(0))
    before = weight.clone()
    quantize_per_channel(weight, -1)
    assert torch.equal(weight, before)


@pytest.mark.parametrize(
    "rows,in_features",
    [(1, 64), (KERNEL_MAX_ROWS + 1, 64), (1, 24)],
    ids=["kernel", "many rows", "width the kernel cannot read"],
)
def test_int8_linear_equals_the_dequantized_product(rows, in_features):
    generator = torch.Generator().manual_seed(0)
    q, scale = quantize_per_channel(torch.randn(96, in_features, generator=generator), -1)
    x = torch.randn(rows, in_features, generator=generator).bfloat16()
    expected = x.float() @ (q.float() * scale.float()[:, None]).T
    torch.testing.assert_close(int8_linear(x, q, scale).float(), expected, rtol=2e-2, atol=2e-2)


def expert_inputs(tokens: int, experts: int = 8, top_k: int = 2):
    generator = torch.Generator().manual_seed(tokens)
    hidden = torch.randn(tokens, 32, generator=generator)
    ids = torch.stack([torch.randperm(experts, generator=generator)[:top_k] for _ in range(tokens)])
    return hidden, ids, torch.rand(tokens, top_k, generator=generator)


@pytest.mark.parametrize("tokens", [1, 40], ids=["one-token loop", "grouped"])
def test_bf16_output_major_experts_equal_float32(tokens):
    experts = RoutedExperts(8, 32, 24)
    hidden, ids, weights = expert_inputs(tokens)
    expected = experts(hidden, ids, weights)
    experts.to(torch.bfloat16).lay_out()
    assert experts.w_down.transpose(1, 2).is_contiguous()
    out = experts(hidden.bfloat16(), ids, weights)
    torch.testing.assert_close(out.float(), expected, rtol=3e-2, atol=3e-2)


@pytest.mark.parametrize("tokens", [1, 40])
def test_int8_experts_equal_float_experts_holding_the_dequantized_weights(tokens):
    experts = RoutedExperts(8, 32, 24)
    quantized = Int8RoutedExperts.from_float(experts)
    for name in ("w_gate_up", "w_down"):
        q, scale = getattr(quantized, name), getattr(quantized, f"{name}_scale")
        getattr(experts, name).data = q.float() * scale.float()[:, None, :]
    hidden, ids, weights = expert_inputs(tokens)
    expected = experts(hidden, ids, weights)
    out = quantized(hidden.bfloat16(), ids, weights)
    torch.testing.assert_close(out.float(), expected, rtol=3e-2, atol=3e-2)


def test_int8_quantizes_the_decoders_heavy_layers_only(reduced_release):
    model = zoo.from_pretrained(reduced_release, dtype=torch.bfloat16)
    quantize_model(model, "int8")
    decoder = model.decoder
    assert isinstance(decoder.lm_head, Int8Linear)
    assert isinstance(decoder.layers[0].mlp.down_proj, Int8Linear)  # the dense layer
    assert isinstance(decoder.layers[1].self_attn.o_proj, Int8Linear)
    assert isinstance(decoder.layers[1].mlp.shared_experts.gate_proj, Int8Linear)
    assert isinstance(decoder.layers[1].mlp.experts, Int8RoutedExperts)
    assert decoder.layers[1].mlp.router.weight.dtype == torch.bfloat16
    assert decoder.embed_tokens.weight.dtype == torch.bfloat16
    assert not any(isinstance(m, Int8Linear) for m in model.encoder.modules())


def test_int8_loading_equals_quantizing_the_loaded_bf16_model(reduced_release):
    """Quantized while read (expert by expert, from the released per-expert tensors) or after
    loading: the same int8 tensors."""
    loaded = zoo.from_pretrained(reduced_release, quantize="int8").state_dict()
    bf16 = zoo.from_pretrained(reduced_release, dtype=torch.bfloat16)
    after = quantize_model(bf16, "int8").state_dict()
    assert loaded.keys() == after.keys()
    assert all(torch.equal(loaded[k], after[k]) for k in loaded)


def test_bad_quantize_settings_name_the_input_and_the_choices(reduced_release):
    with pytest.raises(ValueError, match=r"quantize='int4' is not supported; valid: None .*'int8'"):
        zoo.from_pretrained(reduced_release, quantize="int4")
    with pytest.raises(ValueError, match="bfloat16 activations.*dtype=torch.float32"):
        zoo.from_pretrained(reduced_release, quantize="int8", dtype=torch.float32)
    with pytest.raises(ValueError, match="quantize='int4'"):
        GenerationSettings.preset("default", quantize="int4")
    with pytest.raises(ValueError, match="merge it into a folder first"):
        zoo.from_pretrained(reduced_release, quantize="int8", adapter=reduced_release)


def test_generation_quantize_loads_an_int8_model(tmp_path):
    folder = build_model(model_config(compose_train())).save_pretrained(tmp_path, "official")
    settings = GenerationSettings.preset("official_v2", quantize="int8")
    model, _ = load_inference_model(folder, quantize=settings.quantize)
    assert isinstance(model.decoder.lm_head, Int8Linear)
    assert settings.to_dict()["quantize"] == "int8"


# --- one copy of the weights ---------------------------------------------------------------------

LOAD_AND_MEASURE = """
import sys
from pathlib import Path

import torch

import zoo
from zoo.io.folder import read_build_config
from zoo.model.build import build_model


def status(key):
    line = next(l for l in Path("/proc/self/status").read_text().splitlines() if l.startswith(key))
    return int(line.split()[1]) * 1024


folder, quantize = Path(sys.argv[1]), sys.argv[2] == "int8"
with torch.device("meta"):
    build_model(read_build_config(folder))  # every module loading imports, imported
Path("/proc/self/clear_refs").write_text("5")  # the peak RSS starts again from here
before = status("VmRSS")
precision = {"quantize": "int8"} if quantize else {"dtype": torch.bfloat16}
model = zoo.from_pretrained(folder, **precision)
tensors = [*model.parameters(), *model.buffers()]
for tensor in tensors:  # read every page, as a forward pass does
    tensor.detach().amax()
print(sum(t.numel() * t.element_size() for t in tensors), status("VmHWM") - before)
"""


@pytest.mark.skipif(
    not Path("/proc/self/clear_refs").is_file(), reason="measures VmHWM, reset through clear_refs"
)
def test_loading_holds_the_weights_once(tmp_path):
    folder = write_random_release(tmp_path / "release", MEMORY_TEST_MODEL, shard_bytes=64 << 20)
    stored = sum(f.stat().st_size for f in folder.glob("*.safetensors"))
    peaks = {}
    for mode, factor in (("bf16", 1.15), ("int8", 1.5)):
        done = subprocess.run(
            [sys.executable, "-c", LOAD_AND_MEASURE, str(folder), mode],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        weights, peak = (int(n) for n in done.stdout.split())
        assert peak <= factor * weights + (16 << 20), (mode, weights, peak)
        peaks[mode] = peak
    assert peaks["bf16"] <= 1.15 * stored
    assert peaks["int8"] <= 0.75 * peaks["bf16"]


# --- numerics on the demo pages ------------------------------------------------------------------

NEW_TOKENS = 32


def page_prompt(model, page: Image.Image):
    images = model.preprocess([page])
    text = torch.arange(10, 20)
    ids = torch.cat((torch.full((model.num_image_tokens(*page.size),), model.image_token_id), text))
    return images, ids[None]


@torch.no_grad()
def teacher_forced_logits(model, embeds: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Logits predicting each of ``tokens`` after the prompt ``embeds`` and the tokens before."""
    full = torch.cat((embeds, model.decoder.embed(tokens)), dim=1)
    return model.decoder(full, logits_to_keep=tokens.shape[1] + 1).logits[0, :-1].float()


def compare(model, reference, model_embeds, reference_embeds) -> tuple[float, float]:
    """(share of positions with the same greedy token, largest logit error / largest logit)
    along the reference's greedy page."""
    tokens = generate(reference.decoder, reference_embeds, max_new_tokens=NEW_TOKENS)
    expected = teacher_forced_logits(reference, reference_embeds, tokens)
    logits = teacher_forced_logits(model, model_embeds, tokens)
    agreement = (logits.argmax(-1) == expected.argmax(-1)).float().mean().item()
    return agreement, ((logits - expected).abs().max() / expected.abs().max()).item()


def demo_page_figures(release: Path, pages: list[Image.Image]) -> dict[str, list[float]]:
    models = {
        "fp32": zoo.from_pretrained(release),
        "bf16": zoo.from_pretrained(release, dtype=torch.bfloat16),
        "int8": zoo.from_pretrained(release, quantize="int8"),
    }
    figures: dict[str, list[float]] = {"bf16": [], "bf16_error": [], "int8": [], "int8_error": []}
    for page in pages:
        images, ids = page_prompt(models["fp32"], page)
        with torch.no_grad():
            fp32 = models["fp32"].embed_inputs(ids, images)
            bf16 = models["bf16"].embed_inputs(ids, images)
        agreement, error = compare(models["bf16"], models["fp32"], bf16, fp32)
        figures["bf16"].append(agreement)
        figures["bf16_error"].append(error)
        # the int8 model's encoder is the bf16 one: the same image embeddings
        agreement, error = compare(models["int8"], models["bf16"], bf16, bf16)
        figures["int8"].append(agreement)
        figures["int8_error"].append(error)
    return figures


def test_bf16_and_int8_logits_on_a_synthetic_page(reduced_release):
    figures = demo_page_figures(reduced_release, random_pages([(900, 700)]))
    assert figures["bf16_error"][0] <= 0.06 and figures["int8_error"][0] <= 0.06


@pytest.mark.slow
def test_bf16_and_int8_agree_with_the_reference_on_the_demo_pages(reduced_release, shared_dir):
    paths = sorted((shared_dir / "omnidocbench_demo" / "images").glob("*.jpg"))
    assert len(paths) == 18
    figures = demo_page_figures(reduced_release, [Image.open(p).convert("RGB") for p in paths])
    mean = {key: sum(values) / len(values) for key, values in figures.items()}
    assert max(figures["bf16_error"]) <= 0.06, figures["bf16_error"]
    assert max(figures["int8_error"]) <= 0.08, figures["int8_error"]
    assert mean["bf16"] >= 0.97, figures["bf16"]
    assert mean["int8"] >= 0.95, figures["int8"]


def test_zoo_ocr_refuses_int8_with_another_dtype(tmp_path):
    from zoo.ocr import parse_args

    with pytest.raises(SystemExit):
        parse_args([str(tmp_path), "--checkpoint", "x", "--quantize", "int8", "--dtype", "float32"])
    assert parse_args([str(tmp_path), "--checkpoint", "x", "--quantize", "int8"]).settings.quantize

"""Released DeepSeek-OCR / OCR-2 folders and transformers' DeepseekOcr2 folders: loading, export,
and whole-model parity with transformers' implementation (the oracle) on the same weights."""

from __future__ import annotations

import json
import re

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import DeepseekOcr2ForConditionalGeneration
from transformers.initialization import no_init_weights

import zoo
from tests.conftest import compose_train
from tests.test_decoder import official_shape
from zoo.bench.models import (
    TINY_DECODER,
    TINY_ENCODER,
    ModelSize,
    build_config,
    build_zoo_model,
    prompts,
    random_pages,
    randomize_,
    reduced_decoder,
    transformers_pixels,
)
from zoo.inputs.preprocessing import get_view_mode
from zoo.io.convert.deepseek_ocr2_vision import OFFICIAL_V2_VISION_SHAPES
from zoo.io.convert.deepseek_ocr_vision import official_clip_shapes, official_sam_shapes
from zoo.io.convert.official_checkpoint import build_config_from_official, official_to_zoo_tensors
from zoo.io.convert.transformers_checkpoint import transformers_config
from zoo.io.folder import WEIGHTS_FILE, CheckpointFormatError, read_build_config
from zoo.io.tensors import InitError
from zoo.model.build import build_model
from zoo.run_setup import model_config

TOLERANCE = 1e-4
PAGES = {
    "no_crops": [(600, 500)],
    "crops": [(900, 700)],
    "two_sizes": [(600, 500), (2000, 1200)],
}


def transformers_folder(tmp_path, size: ModelSize, seed: int = 0):
    """A folder written by transformers' own DeepseekOcr2 (random weights of a visible scale)."""
    with torch.device("meta"):  # only its config is read: no weights to initialise
        shape_donor = build_model(build_config(size))
    config = transformers_config(shape_donor.build_config, shape_donor.image_token_id)
    with no_init_weights():  # randomize_ sets every parameter
        reference = DeepseekOcr2ForConditionalGeneration(config)
    randomize_(reference, seed + 1)
    folder = tmp_path / "transformers"
    reference.save_pretrained(folder)
    return folder, reference.eval()


def compare(model, reference, sizes, text_tokens=5):
    """Max |difference| of the vision embeddings and of the logits at real (unpadded) tokens."""
    images = model.preprocess(random_pages(sizes, seed=3))
    ids, mask = prompts(model, images, [text_tokens] * len(sizes))
    pixels = transformers_pixels(images)
    with torch.no_grad():
        ours, vision = forward_with_image_embeddings(
            model.decoder, lambda: model(ids, images, mask), ids == model.image_token_id
        )
        theirs, reference_vision = forward_with_image_embeddings(
            reference.model.language_model,
            lambda: reference(input_ids=ids, attention_mask=mask, **pixels),
            ids == reference.config.image_token_id,
        )
    real = mask.bool()
    return (
        (vision - reference_vision).abs().max().item(),
        (ours[real] - theirs[real]).abs().max().item(),
    )


def forward_with_image_embeddings(language_model, forward, placeholders):
    """The logits of ``forward()`` and, from the same forward, the input embeddings its
    ``language_model`` got at the image placeholder positions (the vision side's output)."""
    captured = {}

    def keep(_module, args, kwargs):
        captured["embeds"] = kwargs.get("inputs_embeds", args[0] if args else None)

    handle = language_model.register_forward_pre_hook(keep, with_kwargs=True)
    try:
        logits = forward().logits
    finally:
        handle.remove()
    return logits, captured["embeds"][placeholders]


@pytest.fixture(scope="module")
def tiny_pair(tmp_path_factory):
    folder, reference = transformers_folder(
        tmp_path_factory.mktemp("tiny"), ModelSize("tiny", TINY_ENCODER, TINY_DECODER)
    )
    return zoo.from_pretrained(folder), reference


@pytest.mark.parametrize("case", sorted(PAGES))
def test_transformers_folder_loads_with_the_same_outputs(tiny_pair, case):
    model, reference = tiny_pair
    vision, logits = compare(model, reference, PAGES[case])
    assert vision < TOLERANCE and logits < TOLERANCE


def test_greedy_generation_equals_transformers_token_for_token(tiny_pair):
    model, reference = tiny_pair
    images = model.preprocess(random_pages(PAGES["two_sizes"], seed=4))
    ids, mask = prompts(model, images, [3, 6])
    ours = model.generate(ids, images, mask, max_new_tokens=12)
    theirs = reference.generate(
        input_ids=ids,
        attention_mask=mask,
        **transformers_pixels(images),
        max_new_tokens=12,
        do_sample=False,
        eos_token_id=None,
        pad_token_id=0,
    )
    assert torch.equal(ours, theirs[:, ids.shape[1] :])


def test_transformers_layout_export_loads_in_transformers(tmp_path):
    model = build_zoo_model(ModelSize("tiny", TINY_ENCODER, TINY_DECODER), seed=5)
    model.save_pretrained(tmp_path, layout="transformers")
    reference = DeepseekOcr2ForConditionalGeneration.from_pretrained(tmp_path).eval()
    vision, logits = compare(model, reference, PAGES["crops"])
    assert vision < TOLERANCE and logits < TOLERANCE


@pytest.mark.parametrize("encoder", ["causal_flow", "deepencoder"])
def test_official_layout_round_trips_bit_exactly(tmp_path, encoder):
    torch.manual_seed(0)
    model = build_model(model_config(compose_train([f"encoder={encoder}"]))).eval()
    model.save_pretrained(tmp_path, layout="official")
    assert "model.view_seperator" in load_file(tmp_path / WEIGHTS_FILE)
    loaded = zoo.from_pretrained(tmp_path)
    before, after = model.state_dict(), loaded.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert loaded.image_mode == model.image_mode
    # assign-loading keeps the LM head's fast decoding layout
    assert loaded.decoder.lm_head.weight.t().is_contiguous()


@pytest.mark.parametrize(
    ("encoder", "reason"),
    [("deepencoder", "causal_flow encoder"), ("causal_flow", "query_sets")],
)
def test_models_transformers_cannot_build_are_refused(tmp_path, encoder, reason):
    model = build_model(model_config(compose_train([f"encoder={encoder}"])))
    with pytest.raises(CheckpointFormatError, match=reason):
        model.save_pretrained(tmp_path, layout="transformers")


def test_an_ablation_is_refused_by_the_released_layout(tmp_path):
    cfg = model_config(compose_train(["experiment=mask_bidirectional_queries"]))
    model = build_model(cfg)
    with pytest.raises(CheckpointFormatError, match="mask.*save this model in the zoo layout"):
        model.save_pretrained(tmp_path, layout="official")
    with pytest.raises(ValueError, match="unknown checkpoint layout 'hf'.*'official'"):
        model.save_pretrained(tmp_path, layout="hf")


# --- a hand-written official v1 checkpoint ------------------------------------------------------

TINY_GUNDAM = {"name": "gundam", "global_size": 256, "local_size": 128}
V1_LANGUAGE = {
    "vocab_size": 300,
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "intermediate_size": 96,
    "first_k_dense_replace": 1,
    "n_routed_experts": 4,
    "moe_intermediate_size": 16,
    "num_experts_per_tok": 2,
    "n_shared_experts": 1,
    "topk_method": "greedy",
    "use_mla": False,
}


def official_v1_folder(folder):
    """A random DeepSeek-OCR (v1) checkpoint written from the official names and shapes alone:
    ``config.json`` as released (tiny sizes in the extra width keys) + one safetensors file."""
    config = {
        "model_type": "deepseek_vl_v2",
        "vision_config": {
            "model_name": "deeplip_b_l",
            "image_size": 1024,
            "width": {
                "clip-l-14-224": {"width": 32, "layers": 2, "heads": 4, "mlp_dim": 64},
                "sam_vit_b": {
                    "width": 16,
                    "layers": 2,
                    "heads": 2,
                    "global_attn_indexes": [1],
                    "downsample_channels": [16, 32],
                    "window_size": 8,
                    "neck_dim": 8,
                },
            },
        },
        "projector_config": {"projector_type": "linear", "input_dim": 64, "n_embed": 64},
        "language_config": V1_LANGUAGE,
        "image_token_id": 299,
        "zoo_image_mode": TINY_GUNDAM,
    }
    (folder / "config.json").write_text(json.dumps(config))
    shapes = {
        **{
            "model.sam_model." + k: v
            for k, v in official_sam_shapes(
                (16, 32),
                width=16,
                depth=2,
                num_heads=2,
                window_size=8,
                global_attn_indexes=(1,),
                neck_dim=8,
            ).items()
        },
        **{
            "model.vision_model." + k: v
            for k, v in official_clip_shapes(width=32, depth=2, mlp_dim=64).items()
        },
        "model.vision_model.embeddings.patch_embedding.weight": (32, 3, 14, 14),
        "model.projector.layers.weight": (64, 64),
        "model.projector.layers.bias": (64,),
        "model.image_newline": (64,),
        "model.view_seperator": (64,),
        **v1_decoder_shapes(),
    }
    generator = torch.Generator().manual_seed(0)
    tensors = {
        name: 0.2 * torch.randn(shape, generator=generator) for name, shape in shapes.items()
    }
    save_file(tensors, folder / "model.safetensors")
    return tensors


def v1_decoder_shapes():
    h, i, e, moe = 64, 96, 4, 16
    shapes = {"model.embed_tokens.weight": (300, h), "lm_head.weight": (300, h)}
    shapes["model.norm.weight"] = (h,)
    for layer in range(2):
        prefix = f"model.layers.{layer}."
        shapes.update({prefix + f"self_attn.{p}_proj.weight": (h, h) for p in "qkvo"})
        shapes[prefix + "input_layernorm.weight"] = (h,)
        shapes[prefix + "post_attention_layernorm.weight"] = (h,)
        if layer == 0:
            shapes.update(
                {prefix + "mlp.gate_proj.weight": (i, h), prefix + "mlp.up_proj.weight": (i, h)}
            )
            shapes[prefix + "mlp.down_proj.weight"] = (h, i)
            continue
        shapes[prefix + "mlp.gate.weight"] = (e, h)
        for p, shape in (("gate", (moe, h)), ("up", (moe, h)), ("down", (h, moe))):
            shapes[prefix + f"mlp.shared_experts.{p}_proj.weight"] = shape
            shapes.update({prefix + f"mlp.experts.{x}.{p}_proj.weight": shape for x in range(e)})
    return shapes


def test_official_v1_checkpoint_loads_and_runs_a_page(tmp_path):
    tensors = official_v1_folder(tmp_path)
    model = zoo.from_pretrained(tmp_path)
    assert read_build_config(tmp_path)["encoder"]["name"] == "deepencoder"
    assert torch.equal(model.image_newline, tensors["model.image_newline"])
    assert torch.equal(
        model.encoder.clip.blocks[1].attn.qkv.weight,
        tensors["model.vision_model.transformer.layers.1.self_attn.qkv_proj.weight"],
    )
    expert_1_up = tensors["model.layers.1.mlp.experts.1.up_proj.weight"]
    assert torch.equal(model.decoder.layers[1].mlp.experts.w_gate_up[1][:, 16:], expert_1_up.T)
    assert model.image_mode == get_view_mode(TINY_GUNDAM) and model.image_token_id == 299
    images = model.preprocess(random_pages([(300, 160)]))
    assert images.crop_grids == [(2, 1)]
    n_image = sum(t.shape[0] for t in model.encode(images))
    ids = torch.cat([torch.full((n_image,), 299), torch.tensor([5, 6, 7])])[None]
    logits = model(ids, images).logits
    assert logits.shape == (1, n_image + 3, 300) and torch.isfinite(logits).all()


def test_missing_and_unknown_released_tensors_are_listed(tmp_path):
    tensors = official_v1_folder(tmp_path)
    del tensors["model.layers.0.self_attn.q_proj.weight"]
    tensors["model.sam_model.extra.weight"] = torch.zeros(2)
    save_file(tensors, tmp_path / "model.safetensors")
    with pytest.raises(InitError, match=r"missing from the source: \['decoder.layers.0.self_attn"):
        zoo.from_pretrained(tmp_path)
    del tensors["model.sam_model.extra.weight"]
    tensors["model.unknown_part"] = torch.zeros(2)
    save_file(tensors, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointFormatError, match=r"belong to no part.*model.unknown_part"):
        zoo.from_pretrained(tmp_path)


def test_a_folder_without_the_model_tokenizer_cannot_give_a_processor(tmp_path):
    official_v1_folder(tmp_path)
    with pytest.raises(CheckpointFormatError, match="<image> token id is 299"):
        zoo.load_processor(tmp_path)


def test_unknown_config_json_names_the_accepted_ones(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(CheckpointFormatError, match="deeplip_b_l or deepencoderv2.*'llama'"):
        zoo.from_pretrained(tmp_path)


# --- the released DeepSeek-OCR-2 weight index ---------------------------------------------------


def released_file(shared_dir, name):
    path = shared_dir / "checkpoints" / name
    if not path.is_file():
        pytest.skip(f"{path} is absent (the shared data folder is not mounted)")
    return path


def released_shape(name: str) -> tuple[int, ...]:
    """A released tensor's shape from the published architecture alone."""
    fixed = {
        "model.projector.layers.weight": (1280, 896),
        "model.projector.layers.bias": (1280,),
        "model.view_seperator": (1280,),
    }
    if name in fixed:
        return fixed[name]
    if name in OFFICIAL_V2_VISION_SHAPES:
        return OFFICIAL_V2_VISION_SHAPES[name]
    return official_shape(name)


def test_released_index_and_config_cover_the_whole_model_one_to_one(shared_dir):
    names = json.loads(
        released_file(shared_dir, "deepseek_ocr2.safetensors.index.json").read_text()
    )["weight_map"]
    config = json.loads(released_file(shared_dir, "deepseek_ocr2.config.json").read_text())
    build = build_config_from_official(config, "released config")
    with torch.device("meta"):
        model = build_model(build)
    released = {n: torch.empty(released_shape(n), device="meta") for n in names}
    converted = official_to_zoo_tensors(released, "causal_flow")
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in converted.items()} == ours
    # one released tensor per model tensor, except the decoder's per-expert tensors stacked
    per_expert = [n for n in names if re.search(r"experts\.\d+\.", n)]
    assert len(names) - len(per_expert) + 11 * 2 == len(ours)
    total = sum(p.numel() for p in model.parameters())
    print(f"released DeepSeek-OCR-2 built from its config: {total / 1e9:.3f}B parameters")
    assert 3.3e9 < total < 3.45e9
    assert model.image_token_id == 128815 and model.image_mode.name == "v2"


@pytest.mark.slow
def test_full_size_encoders_match_transformers_on_a_page_with_crops(tmp_path):
    size = ModelSize("full_encoders", {}, {**reduced_decoder(2), "vocab_size": 1024})
    folder, reference = transformers_folder(tmp_path, size)
    model = zoo.from_pretrained(folder)
    vision, logits = compare(model, reference, [(1400, 700)])
    assert vision < TOLERANCE and logits < TOLERANCE


def test_sharded_folders_load_through_their_index(tmp_path):
    tensors = official_v1_folder(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    names = sorted(tensors)
    shards = {
        "model-00001-of-00002.safetensors": names[::2],
        "model-00002-of-00002.safetensors": names[1::2],
    }
    for shard, keys in shards.items():
        save_file({k: tensors[k] for k in keys}, tmp_path / shard)
    weight_map = {k: shard for shard, keys in shards.items() for k in keys}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    model = zoo.from_pretrained(tmp_path)
    assert torch.equal(model.view_separator, tensors["model.view_seperator"])
    (tmp_path / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="absent: \\['model-00002-of-00002.safetensors'\\]"):
        zoo.from_pretrained(tmp_path)


def write_tokenizer(folder, vocab_size: int, image_id: int) -> None:
    """A word-level transformers tokenizer with the special tokens the processor needs."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from zoo.inputs.text_tokenizer import BOS_TOKEN, EOS_TOKEN, IMAGE_TOKEN

    special = {BOS_TOKEN: 0, EOS_TOKEN: 1, "<unk>": 2, IMAGE_TOKEN: image_id}
    words = (f"w{i}" for i in range(vocab_size))
    vocab = dict(special)
    for index in range(vocab_size):
        if index not in special.values():
            vocab[next(words)] = index
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        unk_token="<unk>",
        additional_special_tokens=[IMAGE_TOKEN],
    ).save_pretrained(folder)


def test_the_folder_tokenizer_is_used_and_travels_with_a_resave(tmp_path):
    released, resaved = tmp_path / "released", tmp_path / "resaved"
    released.mkdir()
    official_v1_folder(released)
    write_tokenizer(released, vocab_size=300, image_id=299)
    processor = zoo.load_processor(released)
    assert processor.tokenizer.image_id == 299 and processor.mode == get_view_mode(TINY_GUNDAM)
    zoo.from_pretrained(released).save_pretrained(resaved)
    assert (resaved / "tokenizer.json").is_file()
    assert zoo.load_processor(resaved).tokenizer.image_id == 299


def test_a_checkpoint_loads_and_generates_in_bfloat16(tmp_path):
    model = build_zoo_model(ModelSize("tiny", TINY_ENCODER, TINY_DECODER))
    model.save_pretrained(tmp_path, layout="official")
    loaded = zoo.from_pretrained(tmp_path, dtype=torch.bfloat16)
    assert {p.dtype for p in loaded.parameters()} == {torch.bfloat16}
    images = loaded.preprocess(random_pages(PAGES["crops"]))
    ids, mask = prompts(loaded, images, [4])
    assert loaded.generate(ids, images, mask, max_new_tokens=3).shape == (1, 3)

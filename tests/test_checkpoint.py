"""save_pretrained / from_pretrained: bit-exact round trips, tied weights, strict loading."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

import zoo
from tests.conftest import compose_train
from zoo.inputs.text_tokenizer import ByteTokenizer
from zoo.io.folder import CONFIG_FILE, WEIGHTS_FILE, CheckpointFormatError
from zoo.io.tensors import InitError
from zoo.model.build import build_model
from zoo.run_setup import make_module, make_processor, model_config


def tiny_model(overrides: tuple[str, ...] = ()):
    torch.manual_seed(0)
    cfg = compose_train(list(overrides))
    return build_model(model_config(cfg)).eval(), make_processor(cfg)


@pytest.mark.parametrize("encoder", ["causal_flow", "deepencoder"])
def test_round_trip_is_bit_exact(tmp_path, encoder):
    model, processor = tiny_model((f"encoder={encoder}",))
    model.save_pretrained(tmp_path)
    loaded = zoo.from_pretrained(tmp_path)
    before, after = model.state_dict(), loaded.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    batch = processor([Image.new("RGB", (300, 200), "white")], ["<image>\nFree OCR."])
    args = (batch["input_ids"], batch["images"], batch["attention_mask"])
    assert torch.equal(model(*args).logits, loaded(*args).logits)


def test_tied_weights_are_stored_once_and_stay_tied(tmp_path):
    model, _ = tiny_model(("decoder=dense_lm",))
    assert model.decoder.lm_head.weight is model.decoder.embed_tokens.weight
    zoo.save_pretrained(model, tmp_path)
    aliases = json.loads((tmp_path / CONFIG_FILE).read_text())["aliases"]
    assert aliases == {"decoder.lm_head.weight": "decoder.embed_tokens.weight"}
    loaded = zoo.from_pretrained(tmp_path)
    assert torch.equal(loaded.decoder.lm_head.weight, model.decoder.lm_head.weight)


def test_missing_unexpected_and_misshaped_tensors_are_listed(tmp_path):
    from safetensors.torch import load_file, save_file

    model, _ = tiny_model()
    model.save_pretrained(tmp_path)
    tensors = load_file(tmp_path / WEIGHTS_FILE)
    del tensors["view_separator"]
    tensors["decoder.extra.weight"] = torch.zeros(2)
    tensors["projector.layers.bias"] = torch.zeros(3)
    save_file(tensors, tmp_path / WEIGHTS_FILE)
    with pytest.raises(InitError) as error:
        zoo.from_pretrained(tmp_path)
    message = str(error.value)
    assert "not in the model: ['decoder.extra.weight']" in message
    assert "projector.layers.bias (3,) (expected (64,))" in message
    assert "missing from the source: ['view_separator']" in message


def test_folders_of_other_layouts_are_refused_with_a_reason(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        zoo.from_pretrained(tmp_path / "nowhere")
    with pytest.raises(CheckpointFormatError, match="expected zoo_config.json"):
        zoo.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(CheckpointFormatError, match="neither a released DeepSeek-OCR"):
        zoo.from_pretrained(tmp_path)


def test_load_processor_matches_the_model(tmp_path):
    model, processor = tiny_model()
    model.save_pretrained(tmp_path)
    loaded = zoo.load_processor(tmp_path)
    assert isinstance(loaded.tokenizer, ByteTokenizer)
    assert loaded.mode == processor.mode == model.image_mode


def test_training_starts_from_a_saved_model(tmp_path):
    model, _ = tiny_model()
    model.save_pretrained(tmp_path)
    torch.manual_seed(1)  # a different random start, overwritten by init.from_pretrained
    module = make_module(compose_train([f"init.from_pretrained={tmp_path}"]))
    assert torch.equal(module.model.view_separator, model.view_separator)
    assert torch.equal(module.model.decoder.lm_head.weight, model.decoder.lm_head.weight)


def test_ocr_and_evaluation_load_a_saved_folder(tmp_path):
    from zoo.model.inference import GenerationSettings, load_inference_model, transcribe

    model, _ = tiny_model()
    model.save_pretrained(tmp_path)
    loaded, processor = load_inference_model(tmp_path)
    page = Image.new("RGB", (200, 300), "white")
    settings = GenerationSettings(prompt="free", max_new_tokens=4, no_repeat_ngram_size=0)
    texts = [answer.markdown for answer in transcribe(loaded, processor, [page], settings)]
    assert len(texts) == 1 and isinstance(texts[0], str)

"""``python scripts/lora_demo_base.py DIR``: the default run config's model (tiny DeepSeek-OCR 2,
random weights, seed 0) saved in the released layout: the base of the README's LoRA walkthrough,
standing in for a local copy of the released folder."""

import sys

import torch
from hydra import compose, initialize_config_module

from zoo.model.build import build_model
from zoo.run_setup import model_config

with initialize_config_module("configs", version_base="1.3"):
    cfg = compose("train")
torch.manual_seed(0)
build_model(model_config(cfg)).save_pretrained(sys.argv[1], layout="official")

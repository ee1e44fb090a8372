"""Language decoders: DeepSeek-3B-MoE (MHA as released, MLA as an option), a light dense LM, and
KV-cache generation. Importing the package imports each of its modules, which registers the
decoders (a new decoder is one module here, with no list to edit)."""

from decoders.base import DecoderOutput, LanguageDecoder
from decoders.deepseek_moe import DeepseekMoEDecoder
from decoders.dense import DenseDecoder
from decoders.generation import generate
from decoders.kv_cache import KVCache
from decoders.parameter_count import count_parameters
from zoo.registry import import_submodules

import_submodules(__name__)

__all__ = [
    "DecoderOutput",
    "DeepseekMoEDecoder",
    "DenseDecoder",
    "KVCache",
    "LanguageDecoder",
    "count_parameters",
    "generate",
]

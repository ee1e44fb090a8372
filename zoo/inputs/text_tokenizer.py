"""Tokenizers: the official one from a local directory, or ones that need no download.

``byte`` maps UTF-8 bytes to ids (261 tokens, fits the tiny decoders); ``bpe`` is a byte-level
BPE trained once on the synthetic layout engine's markdown and cached on disk; ``pretrained``
loads the official tokenizer from a folder. All three expose the same small surface the zoo
uses (``encode``, ``decode``, ``vocab_size`` and the ids of the special tokens the prompts
need), so data, model and generation code never ask which one they hold.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

IMAGE_TOKEN = "<image>"
GROUNDING_TOKEN = "<|grounding|>"
BOS_TOKEN = "<｜begin▁of▁sentence｜>"
EOS_TOKEN = "<｜end▁of▁sentence｜>"
PAD_TOKEN = "<｜▁pad▁｜>"


class TextTokenizer(Protocol):
    """What the zoo needs of a tokenizer."""

    vocab_size: int
    bos_id: int
    eos_id: int
    pad_id: int
    image_id: int

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...


class ByteTokenizer:
    """UTF-8 bytes as ids 0..255, then the special tokens: lossless for any text, needs no files."""

    SPECIALS = (BOS_TOKEN, EOS_TOKEN, PAD_TOKEN, IMAGE_TOKEN, GROUNDING_TOKEN)

    def __init__(self) -> None:
        self._special_ids = {token: 256 + i for i, token in enumerate(self.SPECIALS)}
        self.vocab_size = 256 + len(self.SPECIALS)
        self.bos_id = self._special_ids[BOS_TOKEN]
        self.eos_id = self._special_ids[EOS_TOKEN]
        self.pad_id = self._special_ids[PAD_TOKEN]
        self.image_id = self._special_ids[IMAGE_TOKEN]

    def encode(self, text: str) -> list[int]:
        """Bytes of ``text``, with the special tokens written in it mapped to their ids."""
        ids: list[int] = []
        rest = text
        while rest:
            position, token = min(
                ((rest.find(t), t) for t in self.SPECIALS if t in rest), default=(-1, "")
            )
            if position < 0:
                ids.extend(rest.encode("utf-8"))
                break
            ids.extend(rest[:position].encode("utf-8"))
            ids.append(self._special_ids[token])
            rest = rest[position + len(token) :]
        return ids

    def decode(self, ids: list[int]) -> str:
        """Text of ``ids``; special tokens other than grounding/image are dropped."""
        names = {v: k for k, v in self._special_ids.items()}
        out, pending = [], bytearray()
        for i in ids:
            if i < 256:
                pending.append(i)
                continue
            out.append(pending.decode("utf-8", errors="replace"))
            pending = bytearray()
            if names.get(i) in (IMAGE_TOKEN, GROUNDING_TOKEN):
                out.append(names[i])
        out.append(pending.decode("utf-8", errors="replace"))
        return "".join(out)


class PretrainedTokenizer:
    """The official DeepSeek-OCR tokenizer (or any transformers tokenizer) from a local folder."""

    def __init__(self, path: str | Path) -> None:
        from transformers import AutoTokenizer

        path = Path(path)
        if not path.is_dir():
            raise FileNotFoundError(f"tokenizer directory {str(path)!r} does not exist")
        self._tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        self.vocab_size = len(self._tok)
        self.bos_id = self._require_id(BOS_TOKEN)
        self.eos_id = self._require_id(EOS_TOKEN)
        self.pad_id = self._tok.pad_token_id if self._tok.pad_token_id is not None else self.eos_id
        self.image_id = self._require_id(IMAGE_TOKEN)

    def _require_id(self, token: str) -> int:
        token_id = self._tok.convert_tokens_to_ids(token)
        if token_id is None or token_id == self._tok.unk_token_id:
            raise ValueError(f"tokenizer {self._tok.name_or_path!r} has no {token!r} token")
        return token_id

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False)

    def decode(self, ids: list[int]) -> str:
        return self._tok.decode(ids, skip_special_tokens=False).replace(EOS_TOKEN, "")


CACHE_ENV = "DEEPENCODER_ZOO_CACHE"


def cache_dir(explicit: str | Path | None = None) -> Path:
    """Where trained tokenizers are kept: ``explicit``, else ``$DEEPENCODER_ZOO_CACHE``, else
    ``$XDG_CACHE_HOME/deepencoder-zoo`` (default ``~/.cache/deepencoder-zoo``)."""
    if explicit:
        return Path(explicit).expanduser()
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "deepencoder-zoo"


class BPETokenizer:
    """Byte-level BPE (the ``tokenizers`` library) with the prompt's special tokens.

    Every byte is in the initial alphabet, so any text round-trips losslessly; the merges are
    learnt from a corpus (by default synthetic pages, see :meth:`cached`).
    """

    SPECIALS = ByteTokenizer.SPECIALS
    _DROPPED_ON_DECODE = (BOS_TOKEN, EOS_TOKEN, PAD_TOKEN)

    def __init__(self, tokenizer: Any) -> None:
        self._tok = tokenizer
        self.vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
        ids = {token: tokenizer.token_to_id(token) for token in self.SPECIALS}
        missing = [token for token, i in ids.items() if i is None]
        if missing:
            raise ValueError(f"BPE tokenizer lacks the special tokens {missing}")
        self.bos_id, self.eos_id = ids[BOS_TOKEN], ids[EOS_TOKEN]
        self.pad_id, self.image_id = ids[PAD_TOKEN], ids[IMAGE_TOKEN]

    @classmethod
    def train(cls, texts: list[str], vocab_size: int) -> BPETokenizer:
        """Learn merges from ``texts``, up to ``vocab_size`` tokens (fewer for a small corpus)."""
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        if vocab_size < 256 + len(cls.SPECIALS):
            raise ValueError(
                f"vocab_size={vocab_size}: a byte-level BPE needs at least "
                f"{256 + len(cls.SPECIALS)} tokens (256 bytes + {len(cls.SPECIALS)} specials)"
            )
        tokenizer = Tokenizer(models.BPE())
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=list(cls.SPECIALS),
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tokenizer.train_from_iterator(texts, trainer=trainer)
        return cls(tokenizer)

    @classmethod
    def load(cls, path: str | Path) -> BPETokenizer:
        from tokenizers import Tokenizer

        return cls(Tokenizer.from_file(str(path)))

    def save(self, path: str | Path) -> None:
        """Write the tokenizer JSON atomically (concurrent ranks may race to create it)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        os.close(handle)
        self._tok.save(temporary)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)

    @classmethod
    def cached(
        cls, vocab_size: int = 2048, corpus_pages: int = 2000, directory: str | Path | None = None
    ) -> BPETokenizer:
        """The BPE trained on ``corpus_pages`` synthetic pages, trained on first use and then
        read from the cache; the file name carries a fingerprint of the corpus, so a changed
        layout engine trains a new one."""
        from zoo.data.layout_engine import synthetic_corpus

        fingerprint = hashlib.sha1("\n".join(synthetic_corpus(8)).encode()).hexdigest()[:12]
        path = cache_dir(directory) / f"bpe-{vocab_size}-{corpus_pages}-{fingerprint}.json"
        if path.is_file():
            return cls.load(path)
        corpus = synthetic_corpus(corpus_pages)
        corpus += ["<image>\n<|grounding|>Convert the document to markdown.", "<image>\nFree OCR."]
        tokenizer = cls.train(corpus, vocab_size)
        tokenizer.save(path)
        return tokenizer

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int]) -> str:
        """Text of ``ids``; BOS, EOS and padding are dropped, image/grounding tokens kept."""
        text = self._tok.decode(list(ids), skip_special_tokens=False)
        for token in self._DROPPED_ON_DECODE:
            text = text.replace(token, "")
        return text


TOKENIZER_KINDS = ("byte", "bpe", "pretrained")
_SPEC_KEYS = {"kind", "path", "vocab_size", "corpus_pages", "cache_dir"}


def load_text_tokenizer(spec: str | Path | Mapping[str, Any] | None = None) -> TextTokenizer:
    """The tokenizer a config asks for.

    ``None`` is the byte tokenizer; a path is the pretrained tokenizer in that folder; a mapping
    (the run config's ``text_tokenizer`` node) has ``kind`` (byte | bpe | pretrained; null means
    pretrained when ``path`` is set, else byte), ``path``, and for bpe ``vocab_size``,
    ``corpus_pages`` and ``cache_dir``.
    """
    if spec is None or spec == "":
        return ByteTokenizer()
    if isinstance(spec, str | Path):
        return PretrainedTokenizer(spec)
    unknown = set(spec) - _SPEC_KEYS
    if unknown:
        raise ValueError(
            f"text_tokenizer config: unknown keys {sorted(unknown)}; valid: {sorted(_SPEC_KEYS)}"
        )
    path = spec.get("path")
    kind = spec.get("kind") or ("pretrained" if path else "byte")
    if kind == "byte":
        return ByteTokenizer()
    if kind == "pretrained":
        if not path:
            raise ValueError(
                "tokenizer kind 'pretrained' needs text_tokenizer.path (a local folder)"
            )
        return PretrainedTokenizer(path)
    if kind == "bpe":
        return BPETokenizer.cached(
            vocab_size=spec.get("vocab_size") or 2048,
            corpus_pages=spec.get("corpus_pages") or 2000,
            directory=spec.get("cache_dir"),
        )
    raise ValueError(
        f"tokenizer kind {kind!r} is unknown; valid kinds: {', '.join(TOKENIZER_KINDS)}"
    )

"""Tokenizers: the official one from a local directory, or a byte-level one that needs no files.

Both expose the same small surface the zoo uses (``encode``, ``decode``, ``vocab_size`` and the
ids of the special tokens the prompts need), so data, model and generation code never ask
which one they hold.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

IMAGE_TOKEN = "<image>"
GROUNDING_TOKEN = "<|grounding|>"
BOS_TOKEN = "<｜begin▁of▁sentence｜>"
EOS_TOKEN = "<｜end▁of▁sentence｜>"
PAD_TOKEN = "<｜▁pad▁｜>"


class Tokenizer(Protocol):
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


def load_tokenizer(path: str | Path | None = None) -> Tokenizer:
    """The tokenizer in ``path`` when given, else the byte-level tokenizer."""
    return ByteTokenizer() if path in (None, "") else PretrainedTokenizer(path)

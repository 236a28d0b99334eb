"""Text <-> token ids for a model, with Qwen's control tokens and stop ids.

Built from an HF `tokenizer.json` or rebuilt from GGUF metadata. `encode` treats control-token
spellings in ordinary text as plain text unless asked, so user code cannot inject them.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any, Iterable

import tokenizers
from tokenizers.decoders import DecodeStream

from .errors import ModelFileError

# Tokens that end a completion when the model emits them (FIM and chat control tokens).
QWEN_STOP_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|fim_prefix|>", "<|fim_middle|>",
    "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>",
)


class Tokenizer:
    def __init__(self, backend: tokenizers.Tokenizer, eos_ids: Iterable[int] = ()):
        self._backend = backend
        # One backend serves both encodings (a second copy of a 151k vocabulary holds ~37 MB): its
        # `encode_special_tokens` flag is set per call, under a lock since the flag is shared.
        self._encode_lock = threading.Lock()
        present = {self._backend.token_to_id(t) for t in QWEN_STOP_TOKENS}
        self.stop_ids = frozenset(i for i in (*present, *eos_ids) if i is not None)
        self.special_tokens = frozenset(
            t.content for t in backend.get_added_tokens_decoder().values() if t.special
        )

    @classmethod
    def from_model_dir(cls, path: Path, config: dict[str, Any]) -> "Tokenizer":
        tokenizer_path = Path(path) / "tokenizer.json"
        if not tokenizer_path.is_file():
            raise ModelFileError(path, "model directory has no tokenizer.json")
        try:
            backend = tokenizers.Tokenizer.from_file(str(tokenizer_path))
        except Exception as exc:
            raise ModelFileError(tokenizer_path, f"cannot read tokenizer ({exc})") from exc
        eos = _as_ids(config.get("eos_token_id"))
        generation_config = Path(path) / "generation_config.json"
        if generation_config.is_file():
            try:
                eos |= _as_ids(json.loads(generation_config.read_text(encoding="utf-8")).get("eos_token_id"))
            except json.JSONDecodeError as exc:
                raise ModelFileError(generation_config, f"invalid JSON ({exc})") from exc
        return cls(backend, eos)

    @classmethod
    def from_gguf_metadata(cls, metadata: dict[str, Any], path: Path) -> "Tokenizer":
        from .gguf_tokenizer import tokenizer_from_gguf_metadata

        backend = tokenizer_from_gguf_metadata(metadata, str(path))
        eos = _as_ids(metadata.get("tokenizer.ggml.eos_token_id")) | _as_ids(metadata.get("tokenizer.ggml.eot_token_id"))
        return cls(backend, eos)

    @property
    def vocab_size(self) -> int:
        return self._backend.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str, *, parse_special: bool = False) -> list[int]:
        """Token ids of `text`; control-token spellings become their ids only with parse_special."""
        with self._encode_lock:
            self._backend.encode_special_tokens = not parse_special
            return self._backend.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Iterable[int], *, skip_special: bool = False) -> str:
        return self._backend.decode(list(ids), skip_special_tokens=skip_special)

    def token_id(self, token: str) -> int | None:
        """The id of a (control) token, or None when the vocabulary lacks it."""
        return self._backend.token_to_id(token)

    def stream_decoder(self) -> "StreamDecoder":
        return StreamDecoder(self._backend)


class StreamDecoder:
    """Turns ids into text pieces one at a time, holding back incomplete UTF-8 sequences."""

    def __init__(self, backend: tokenizers.Tokenizer):
        self._backend = backend
        self._stream = DecodeStream(skip_special_tokens=False)

    def step(self, token_id: int) -> str:
        return self._stream.step(self._backend, token_id) or ""


def _as_ids(value: Any) -> set[int]:
    if value is None:
        return set()
    if isinstance(value, int):
        return {value}
    return {int(v) for v in value}

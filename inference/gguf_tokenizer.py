"""Rebuild a byte-level BPE `tokenizers.Tokenizer` from the tokenizer metadata of a GGUF file.

A GGUF carries no tokenizer.json: it stores the vocabulary, merges and token types under
llama.cpp's ``tokenizer.ggml.*`` keys and names the pre-tokenizer in ``tokenizer.ggml.pre``.
We put back what the family's tokenizer.json holds around them (for Qwen2: its split regex,
NFC, byte-level encoding and decoding) and the control / user-defined tokens matched whole
before BPE. Unlike transformers' GGUF loader, which leaves it out, Qwen2's NFC step is kept.
"""

from __future__ import annotations

from typing import NamedTuple

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

from inference.errors import ModelFileError, UnsupportedModelError

# llama.cpp's token types (gguf.TokenType): control tokens become special added tokens,
# user-defined ones plain added tokens; both are matched whole in the text before BPE.
CONTROL = 3
USER_DEFINED = 4

QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


class PreTokenizer(NamedTuple):
    """What a ``tokenizer.ggml.pre`` name stands for, as in that family's tokenizer.json."""

    split_regex: str
    nfc: bool  # normalize the text to NFC first
    ignore_merges: bool  # a pre-token that is itself in the vocabulary is taken whole


PRE_TOKENIZERS = {
    "qwen2": PreTokenizer(QWEN2_SPLIT, nfc=True, ignore_merges=False),
    "llama-bpe": PreTokenizer(LLAMA3_SPLIT, nfc=False, ignore_merges=True),
}


def tokenizer_from_gguf_metadata(metadata: dict, source: str) -> Tokenizer:
    """The tokenizer described by `metadata` (GGUF key -> python value); `source` names the file in errors."""
    model = _required(metadata, "tokenizer.ggml.model", str, source)
    if model != "gpt2":
        raise UnsupportedModelError(source, f"tokenizer model {model!r} is not supported (only byte-level BPE, 'gpt2')")
    pre = _required(metadata, "tokenizer.ggml.pre", str, source)
    if pre not in PRE_TOKENIZERS:
        raise UnsupportedModelError(
            source, f"pre-tokenizer {pre!r} is not supported (supported: {', '.join(sorted(PRE_TOKENIZERS))})"
        )
    tokens = _required(metadata, "tokenizer.ggml.tokens", list, source)
    merges = _required(metadata, "tokenizer.ggml.merges", list, source)
    token_types = _required(metadata, "tokenizer.ggml.token_type", list, source)
    if len(token_types) != len(tokens):
        raise ModelFileError(source, f"{len(token_types)} token types for {len(tokens)} tokens")

    family = PRE_TOKENIZERS[pre]
    tokenizer = Tokenizer(_bpe_model(tokens, merges, family.ignore_merges, source))
    if family.nfc:
        tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(family.split_regex), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
    ])
    tokenizer.decoder = decoders.ByteLevel()
    _add_whole_tokens(tokenizer, tokens, token_types, source)
    return tokenizer


def _required(metadata: dict, key: str, kind: type, source: str):
    """metadata[key], checked to be a `kind`; ModelFileError when missing or of another type."""
    if key not in metadata:
        raise ModelFileError(source, f"GGUF metadata has no {key!r}, needed to build the tokenizer")
    value = metadata[key]
    if not isinstance(value, kind):
        raise ModelFileError(source, f"GGUF metadata {key!r} is a {type(value).__name__}, expected a {kind.__name__}")
    return value


def _bpe_model(tokens: list, merges: list, ignore_merges: bool, source: str) -> models.BPE:
    """BPE over `tokens` (id = position) and the "left right" merge strings, best first."""
    vocab = {token: index for index, token in enumerate(tokens)}
    pairs = []
    for merge in merges:
        pair = tuple(merge.split(" ")) if isinstance(merge, str) else ()
        if len(pair) != 2 or pair[0] not in vocab or pair[1] not in vocab or pair[0] + pair[1] not in vocab:
            raise ModelFileError(source, f"bad tokenizer merge {merge!r}: expected two vocabulary tokens and a space")
        pairs.append(pair)
    return models.BPE(vocab, pairs, fuse_unk=False, byte_fallback=False, ignore_merges=ignore_merges)


def _add_whole_tokens(tokenizer: Tokenizer, tokens: list, token_types: list, source: str) -> None:
    """Add control (special) and user-defined tokens at their own ids, so the text can spell them."""
    whole = {index: token for index, (token, token_type) in enumerate(zip(tokens, token_types))
             if token_type in (CONTROL, USER_DEFINED)}
    tokenizer.add_special_tokens([AddedToken(whole[i], special=True, normalized=False)
                                  for i in whole if token_types[i] == CONTROL])
    tokenizer.add_tokens([AddedToken(whole[i], special=False, normalized=False)
                          for i in whole if token_types[i] == USER_DEFINED])
    for index, token in whole.items():
        if tokenizer.token_to_id(token) != index:
            raise ModelFileError(source, f"token {token!r} (id {index}) is not unique in the vocabulary")

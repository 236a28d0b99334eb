"""inference.gguf_tokenizer: synthetic metadata mechanics, errors, and parity with transformers on a real GGUF."""

from __future__ import annotations

import os
import unicodedata

import pytest
from tokenizers import pre_tokenizers

from inference.errors import ModelFileError, UnsupportedModelError
from inference.gguf_tokenizer import tokenizer_from_gguf_metadata

SOURCE = "/models/tiny.gguf"
BYTE_ALPHABET = sorted(pre_tokenizers.ByteLevel.alphabet())
MERGED = ["th", "the", "Ġc", "Ġca", "Ġcat", "12", "123", "Ã©", "xyz"]  # "xyz" has no merges
MERGES = ["t h", "th e", "Ġ c", "Ġc a", "Ġca t", "1 2", "12 3", "Ã ©"]
WHOLE = {"<|endoftext|>": 3, "<|fim_prefix|>": 3, "<tool_call>": 4}
TOKENS = BYTE_ALPHABET + MERGED + list(WHOLE)
ID = {token: index for index, token in enumerate(TOKENS)}


def tiny_metadata(**overrides) -> dict:
    """A byte-level BPE vocabulary of 256 bytes, a few merges and three whole tokens."""
    metadata = {
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": "qwen2",
        "tokenizer.ggml.tokens": TOKENS,
        "tokenizer.ggml.merges": MERGES,
        "tokenizer.ggml.token_type": [1] * (len(TOKENS) - len(WHOLE)) + list(WHOLE.values()),
    }
    metadata.update(overrides)
    return {key: value for key, value in metadata.items() if value is not None}


def test_merges_apply_within_pre_tokens():
    tokenizer = tokenizer_from_gguf_metadata(tiny_metadata(), SOURCE)
    assert tokenizer.encode("the cat").ids == [ID["the"], ID["Ġcat"]]
    assert tokenizer.encode("the\tcat").ids == [ID["the"], ID["ĉ"], ID["c"], ID["a"], ID["t"]]


def test_whole_tokens_are_matched_before_bpe_and_decode_back():
    tokenizer = tokenizer_from_gguf_metadata(tiny_metadata(), SOURCE)
    text = "<|fim_prefix|>the<tool_call> cat<|endoftext|>"
    ids = tokenizer.encode(text).ids
    assert ids == [ID["<|fim_prefix|>"], ID["the"], ID["<tool_call>"], ID["Ġcat"], ID["<|endoftext|>"]]
    assert tokenizer.decode(ids, skip_special_tokens=False) == text
    assert tokenizer.decode(ids, skip_special_tokens=True) == "the<tool_call> cat"


def test_qwen2_normalizes_to_nfc_and_splits_digits_one_by_one():
    tokenizer = tokenizer_from_gguf_metadata(tiny_metadata(), SOURCE)
    assert tokenizer.encode("e\u0301").ids == tokenizer.encode("é").ids == [ID["Ã©"]]
    assert tokenizer.encode("123").ids == [ID["1"], ID["2"], ID["3"]]
    assert tokenizer.decode(tokenizer.encode("héllo 世界 🙂").ids) == "héllo 世界 🙂"


def test_qwen2_only_reaches_tokens_through_merges():
    tokenizer = tokenizer_from_gguf_metadata(tiny_metadata(), SOURCE)
    assert tokenizer.encode("xyz").ids == [ID["x"], ID["y"], ID["z"]]


def test_llama_bpe_groups_digits_by_three_without_nfc_and_takes_known_words_whole():
    tokenizer = tokenizer_from_gguf_metadata(tiny_metadata(**{"tokenizer.ggml.pre": "llama-bpe"}), SOURCE)
    assert tokenizer.encode("1231").ids == [ID["123"], ID["1"]]
    assert tokenizer.encode("e\u0301").ids != [ID["Ã©"]]
    assert tokenizer.encode("xyz").ids == [ID["xyz"]]


@pytest.mark.parametrize("key, value, fragment", [
    ("tokenizer.ggml.model", "llama", "'llama'"),
    ("tokenizer.ggml.model", "t5", "'t5'"),
    ("tokenizer.ggml.pre", "falcon", "'falcon'"),
])
def test_unsupported_tokenizer_is_reported(key, value, fragment):
    with pytest.raises(UnsupportedModelError, match=fragment) as caught:
        tokenizer_from_gguf_metadata(tiny_metadata(**{key: value}), SOURCE)
    assert caught.value.path == SOURCE


@pytest.mark.parametrize("key", [
    "tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.tokens",
    "tokenizer.ggml.merges", "tokenizer.ggml.token_type",
])
def test_missing_key_is_a_model_file_error(key):
    metadata = tiny_metadata()
    del metadata[key]
    with pytest.raises(ModelFileError, match=key) as caught:
        tokenizer_from_gguf_metadata(metadata, SOURCE)
    assert caught.value.path == SOURCE


@pytest.mark.parametrize("overrides, fragment", [
    ({"tokenizer.ggml.merges": MERGES + ["t h e"]}, "merge"),
    ({"tokenizer.ggml.merges": MERGES + ["th zz"]}, "merge"),
    ({"tokenizer.ggml.token_type": [1, 1]}, "token types"),
    ({"tokenizer.ggml.tokens": "the"}, "tokenizer.ggml.tokens"),
    ({"tokenizer.ggml.tokens": TOKENS + ["<tool_call>"],
      "tokenizer.ggml.token_type": [1] * (len(TOKENS) - 3) + [3, 3, 4, 4]}, "not unique"),
])
def test_malformed_metadata_is_a_model_file_error(overrides, fragment):
    with pytest.raises(ModelFileError, match=fragment):
        tokenizer_from_gguf_metadata(tiny_metadata(**overrides), SOURCE)


FIM_TOKENS = ["<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>", "<|fim_pad|>",
              "<|repo_name|>", "<|file_sep|>", "<|endoftext|>", "<|im_end|>"]

CORPUS = [
    'def greet(name: str) -> str:\n    """Say hi."""\n    return f"Hello, {name}!"  # 你好，世界\n',
    "class Café:\n\tdef __init__(self):\n\t\tself.naïve = 'ñ'  \n\n\n",
    "const emoji = '👩‍💻🚀🏳️‍🌈👍🏽';\r\nfunction add(a, b) { return a + b; }   // sum\r\n",
    'fn main() {\n    let s = "日本語テキスト, 한국어, Ελληνικά";\n    println!("{}", s.len()); // 12345678\n}\n',
    "Zalgo: z\u0351\u0346a\u0308\u0347l\u0303g\u0301o, Hindi: नमस्ते, Hebrew: שָׁלוֹם, Vietnamese: Tiếng Việt\n",
    "cafe\u0301 vs café, n\u0303 vs ñ, A\u030a vs Å (decomposed and precomposed)\n",
    "    \n        \t  \u00a0\u3000 trailing   \n\n\n\n    x = 1\n",
    "I'LL don't they're WE'VE it's 3.14159 0xDEADBEEF 1_000_000 $$$ ===>>> ...\n",
    "<|fim_prefix|>def fib(n):\n    <|fim_suffix|>\n    return a<|fim_middle|>a, b = 0, 1<|fim_pad|>",
    "<|repo_name|>qwen-lsp\n<|file_sep|>src/main.rs\nfn main() {}\n<|endoftext|><|im_end|>\n<tool_call>",
]


@pytest.fixture(scope="module")
def real_tokenizers(real_gguf_path):
    """(ours, transformers' own GGUF tokenizer) for the real model."""
    gguf = pytest.importorskip("gguf")
    transformers = pytest.importorskip("transformers")
    fields = gguf.GGUFReader(real_gguf_path).fields
    metadata = {key: field.contents() for key, field in fields.items()}
    ours = tokenizer_from_gguf_metadata(metadata, real_gguf_path)
    theirs = transformers.AutoTokenizer.from_pretrained(
        os.path.dirname(os.path.abspath(real_gguf_path)), gguf_file=os.path.basename(real_gguf_path)
    )
    return ours, theirs


@pytest.mark.real_model
@pytest.mark.parametrize("text", CORPUS)
def test_real_ids_match_transformers(real_tokenizers, text):
    ours, theirs = real_tokenizers
    # Qwen2's tokenizer.json normalizes to NFC; transformers' GGUF loader leaves that out, so it gets NFC text.
    nfc = unicodedata.normalize("NFC", text)
    ids = ours.encode(text).ids
    assert ids == theirs.encode(nfc)
    assert ours.decode(ids, skip_special_tokens=False) == nfc


@pytest.mark.real_model
@pytest.mark.parametrize("token", FIM_TOKENS)
def test_real_special_tokens_are_single_ids(real_tokenizers, token):
    ours, theirs = real_tokenizers
    ids = ours.encode(f"x{token}y").ids
    assert len(ids) == 3
    assert ids[1] == ours.token_to_id(token) == theirs.convert_tokens_to_ids(token)

"""Real-model tier: the default Qwen2.5-Coder-0.5B GGUF completes code correctly (CI runs this)."""

from __future__ import annotations

import pytest

from inference import GenerationConfig, load_model

pytestmark = pytest.mark.real_model


@pytest.fixture(scope="module")
def lm(real_gguf):
    return load_model(real_gguf)


def _fim(lm, prefix: str, suffix: str) -> str:
    prompt = f"<|fim_prefix|>{prefix}<|fim_suffix|>{suffix}<|fim_middle|>"
    return lm.generate_text(prompt, GenerationConfig(max_new_tokens=24)).text


def test_fim_completes_the_right_line(lm):
    middle = _fim(
        lm,
        'def is_even(n: int) -> bool:\n    """Return True when n is even."""\n    return ',
        "\n\n\nassert is_even(4)\n",
    )
    assert middle.strip().splitlines()[0].replace(" ", "") == "n%2==0"


def test_fim_fills_a_loop_body(lm):
    middle = _fim(
        lm,
        "def total(values: list[int]) -> int:\n    result = 0\n    for value in values:\n        ",
        "\n    return result\n",
    )
    assert middle.strip().splitlines()[0].replace(" ", "") == "result+=value"


def test_real_tokenizer_keeps_fim_tokens_whole(lm):
    ids = lm.tokenizer.encode("<|fim_prefix|>x<|fim_suffix|>y<|fim_middle|>", parse_special=True)
    assert ids[0] == lm.tokenizer.token_id("<|fim_prefix|>") and len(ids) == 5
    assert lm.config.architecture == "qwen2" and lm.config.num_layers == 24

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


def test_logits_match_transformers_on_the_dequantized_file(lm, real_gguf):
    """Exactness on the real file: transformers dequantizes the GGUF to fp32; our exact path must agree."""
    import torch
    from transformers import AutoModelForCausalLM

    exact = lm
    ids = exact.tokenizer.encode("<|fim_prefix|>def is_even(n):\n    return<|fim_suffix|>\n<|fim_middle|>",
                                 parse_special=True)
    reference = AutoModelForCausalLM.from_pretrained(real_gguf.parent, gguf_file=real_gguf.name,
                                                     dtype=torch.float32).eval()
    with torch.no_grad():
        expected = reference(torch.tensor([ids])).logits[0]
    del reference
    ours = exact.model.forward(torch.tensor(ids), exact.model.new_cache())
    torch.testing.assert_close(ours, expected, atol=2e-3, rtol=0)


def test_fim_fills_a_loop_body(lm):
    middle = _fim(
        lm,
        "def total(values: list[int]) -> int:\n    result = 0\n    for value in values:\n        ",
        "\n    return result\n",
    )
    assert middle.strip().splitlines()[0].replace(" ", "") == "result+=value"


def test_fim_writes_a_whole_body_line(lm):
    middle = _fim(
        lm,
        'import math\n\n\ndef circle_area(radius: float) -> float:\n    """Area of a circle."""\n',
        "\n\n\nprint(circle_area(2.0))\n",
    )
    assert middle.splitlines()[0].replace(" ", "") == "returnmath.pi*radius**2"


def test_real_tokenizer_keeps_fim_tokens_whole(lm):
    ids = lm.tokenizer.encode("<|fim_prefix|>x<|fim_suffix|>y<|fim_middle|>", parse_special=True)
    assert ids[0] == lm.tokenizer.token_id("<|fim_prefix|>") and len(ids) == 5
    assert lm.config.architecture == "qwen2" and lm.config.num_layers == 24

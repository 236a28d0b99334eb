"""qwen3_next's multi-token-prediction head: read from HF safetensors (`mtp.*`), its logits against
transformers' own decoder layer, norms and LM head composed as the head's formula, and drafting with
it: the drafter proposes the head's greedy chain, speculation with it is exact, and the engine
uses it by default, across requests and after losing its context."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import save_file

from inference import GenerationConfig, load_model
from inference.engine import Engine, SpeculationConfig
from inference.generate import generate, prefill
from inference.speculative import MTPDrafter
from tiny_models import load_reference

NORMS = ("mtp.pre_fc_norm_embedding.weight", "mtp.pre_fc_norm_hidden.weight", "mtp.norm.weight")


@pytest.fixture(scope="module")
def mtp_dir(tiny_model_dir, tmp_path_factory):
    """The tiny qwen3_next checkpoint plus a random MTP head (a full-attention MoE layer, as in
    Qwen3-Next), written the way Qwen's checkpoints store it."""
    import transformers
    from transformers.models.qwen3_next.modeling_qwen3_next import Qwen3NextDecoderLayer

    source = tiny_model_dir("qwen3_next")
    out = tmp_path_factory.mktemp("qwen3_next_mtp")
    for path in source.iterdir():
        shutil.copy(path, out / path.name)
    config = json.loads((out / "config.json").read_text())
    config["mtp_num_hidden_layers"] = 1
    (out / "config.json").write_text(json.dumps(config))
    reference_config = transformers.AutoConfig.from_pretrained(source)
    assert reference_config.layer_types[1] == "full_attention" and 1 not in reference_config.mlp_only_layers
    torch.manual_seed(7)
    layer = Qwen3NextDecoderLayer(reference_config, layer_idx=1)
    tensors = {f"mtp.layers.0.{name}": value for name, value in layer.state_dict().items()}
    hidden = reference_config.hidden_size
    tensors["mtp.fc.weight"] = torch.empty(hidden, 2 * hidden)
    tensors.update({name: torch.empty(hidden) for name in NORMS})
    with torch.no_grad():
        for name, value in tensors.items():
            if "norm" in name:
                value.uniform_(-0.5, 0.5)  # zero-centred: the norms scale by 1 + w
            else:
                value.normal_(0, 0.1)
    save_file({name: value.contiguous() for name, value in tensors.items()}, out / "mtp.safetensors")
    return out


@pytest.fixture(scope="module")
def lm(mtp_dir):
    return load_model(mtp_dir)


class ReferenceHead:
    """The head's formula over transformers modules: lm_head(norm(layer(fc(cat(enorm(embed(t_{i+1})),
    hnorm(h_i)))))), attending causally over the entries it is given."""

    def __init__(self, mtp_dir, source_dir):
        import transformers
        from safetensors.torch import load_file
        from transformers.models.qwen3_next.modeling_qwen3_next import Qwen3NextDecoderLayer, Qwen3NextRMSNorm

        self.target = load_reference(source_dir)
        config = transformers.AutoConfig.from_pretrained(source_dir)
        config._attn_implementation = "eager"
        tensors = load_file(mtp_dir / "mtp.safetensors")
        hidden = config.hidden_size
        self.layer = Qwen3NextDecoderLayer(config, layer_idx=1).eval()
        self.layer.load_state_dict({n[len("mtp.layers.0."):]: v for n, v in tensors.items() if n.startswith("mtp.layers.0.")})
        self.fc = torch.nn.Linear(2 * hidden, hidden, bias=False)
        self.fc.weight.data = tensors["mtp.fc.weight"]
        self.norms = []
        for name in NORMS:
            norm = Qwen3NextRMSNorm(hidden, eps=config.rms_norm_eps)
            norm.weight.data = tensors[name]
            self.norms.append(norm)

    @torch.no_grad()
    def target_states(self, ids: torch.Tensor) -> torch.Tensor:
        return self.target.model(ids[None]).last_hidden_state[0]

    @torch.no_grad()
    def __call__(self, states: torch.Tensor, next_tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        enorm, hnorm, norm = self.norms
        x = self.fc(torch.cat([enorm(self.target.model.embed_tokens(next_tokens)), hnorm(states)], dim=-1))[None]
        n = x.shape[1]
        positions = torch.arange(n)[None]
        mask = torch.full((n, n), float("-inf")).triu(1)[None, None]
        x = self.layer(x, position_embeddings=self.target.model.rotary_emb(x, positions), attention_mask=mask,
                       position_ids=positions)
        out = norm(x)[0]
        return out, self.target.lm_head(out)


@pytest.fixture(scope="module")
def reference(mtp_dir, tiny_model_dir):
    return ReferenceHead(mtp_dir, tiny_model_dir("qwen3_next"))


def _ids(lm, n: int, seed: int) -> list[int]:
    return torch.randint(0, lm.config.vocab_size, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


def test_head_matches_the_reference_in_one_pass_and_entry_by_entry(lm, reference):
    assert lm.config.mtp_layers == 1 and lm.model.mtp is not None
    ids = torch.tensor(_ids(lm, 40, seed=3))
    seen = []
    lm.model.forward(ids, lm.model.new_cache(), last_only=True, on_hidden=lambda start, h: seen.append((start, h)))
    [(start, states)] = seen
    assert start == 0
    torch.testing.assert_close(states, reference.target_states(ids), atol=1e-4, rtol=0)
    expected_out, expected_logits = reference(states[:-1], ids[1:])
    head = lm.model.mtp
    cache = head.new_cache(64, torch.float32)
    out, logits = head.forward(states[:-1], ids[1:], cache)
    torch.testing.assert_close(logits, expected_logits, atol=1e-4, rtol=0)
    torch.testing.assert_close(out, expected_out, atol=1e-4, rtol=0)
    cache = head.new_cache(64, torch.float32)
    pieces = [head.forward(states[:30], ids[1:31], cache)[1]]
    pieces += [head.forward(states[i : i + 1], ids[i + 1 : i + 2], cache)[1] for i in range(30, 39)]
    torch.testing.assert_close(torch.cat(pieces), expected_logits, atol=1e-4, rtol=0)


def test_drafter_proposes_the_heads_greedy_chain(lm, reference):
    context = _ids(lm, 25, seed=4)
    drafter = MTPDrafter(lm.model, 128)
    cache = lm.model.new_cache()
    prefill(lm.model, cache, context[:-1], 16, on_hidden=lambda start, h: drafter.observe(context, start, h))
    draft = drafter.propose(context, 4, GenerationConfig())
    states = reference.target_states(torch.tensor(context[:-1]))
    inputs, tokens, expected = list(states), context[1:], []
    for _ in range(4):
        out, logits = reference(torch.stack(inputs), torch.tensor(tokens))
        expected.append(int(logits[-1].argmax()))
        inputs.append(out[-1])
        tokens.append(expected[-1])
    assert draft.tokens == expected
    assert drafter.cache.length == len(context) - 1  # the drafted entries are dropped again


def test_speculation_with_the_head_is_exact(lm):
    prompt = lm.tokenizer.encode("class Point:\n    def __init__(self, x, y):\n        self")
    config = GenerationConfig(max_new_tokens=30, stop_ids=frozenset())
    plain = generate(lm.model, lm.tokenizer, prompt, config, lm.model.new_cache())
    drafter = MTPDrafter(lm.model, lm.config.context_length)
    fast = generate(lm.model, lm.tokenizer, prompt, config, lm.model.new_cache(), drafter=drafter)
    assert fast.token_ids == plain.token_ids
    assert fast.timings["drafted_tokens"] > 0


def test_engine_drafts_with_the_head_across_requests_and_after_losing_its_context(lm):
    config = GenerationConfig(max_new_tokens=20, stop_ids=frozenset(), prefill_chunk=16)  # snapshots every 16
    plain = Engine(lm.model, lm.tokenizer, reuse_prefix=False, speculation=SpeculationConfig(ngram=False, mtp=False))
    engine = Engine(lm.model, lm.tokenizer)
    first = _ids(lm, 60, seed=5)
    second = first[:50] + _ids(lm, 15, seed=6)
    for prompt in (first, second):
        result = engine.generate(prompt, config)
        assert result.token_ids == plain.generate(prompt, config).token_ids
        assert result.timings["drafted_tokens"] > 0
        assert isinstance(engine._draft, MTPDrafter) and engine._draft.context_start == 0
    assert result.timings["reused_prompt_tokens"] > 0
    engine._draft.reset()  # the target serves the prefix from its caches; the head never saw it
    third = second[:55] + _ids(lm, 10, seed=7)
    result = engine.generate(third, config)
    assert result.token_ids == plain.generate(third, config).token_ids
    assert result.timings["drafted_tokens"] > 0 and engine._draft.context_start > 0


def test_no_head_no_mtp_drafter(tiny_model_dir):
    plain = load_model(tiny_model_dir("qwen3_next"))
    assert plain.model.mtp is None
    with pytest.raises(ValueError, match="no MTP head"):
        MTPDrafter(plain.model, 64)

"""The decoder layers of a few-token pass in one native call compute exactly what the Python layers do."""

from __future__ import annotations

import pytest
import torch
from gguf import GGMLQuantizationType as QT

from inference.checkpoint import open_checkpoint
from inference.decoder_stack import NativeDecoderStack
from inference.model import build_model


def _passes(model, ids: list[int]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Logits of a prefill, a one-token step, a pass of 4 and a greedy pass of 3; then the cached keys
    and values."""
    cache = model.new_cache(128)
    logits = [model.forward(torch.tensor(ids[:40]), cache, last_only=True),
              model.forward(torch.tensor(ids[40:41]), cache),
              model.forward(torch.tensor(ids[41:45]), cache),
              model.forward(torch.tensor(ids[45:48]), cache, greedy=True)]
    return logits, [stored[:, :48] for stored in (*cache.keys, *cache.values)]


# (variant, passes the stack takes): MoE layers' routed experts go native for one token only.
@pytest.mark.parametrize("variant, stacked_passes", [("qwen2", [1, 4, 3]), ("qwen2_tied", [1, 4, 3]),
                                                     ("qwen3", [1, 4, 3]), ("qwen3_moe_blocks", [1])])
def test_the_native_stack_computes_what_the_python_layers_do(native_ops, tiny_gguf, variant, stacked_passes):
    model = build_model(open_checkpoint(tiny_gguf(variant, QT.Q8_0)))
    assert isinstance(model.decoder_stack, NativeDecoderStack)
    ids = torch.randint(0, model.config.vocab_size, (48,), generator=torch.Generator().manual_seed(1)).tolist()
    calls = []
    stack_call = NativeDecoderStack.__call__
    model.decoder_stack.__class__ = type("Counted", (NativeDecoderStack,), {
        "__call__": lambda self, *args: calls.append(args[0].shape[0]) or stack_call(self, *args)})
    stacked = _passes(model, ids)
    assert calls == stacked_passes  # the 40-token prefill went through the layers
    model.decoder_stack = None
    layered = _passes(model, ids)
    for a, b in zip(stacked[0] + stacked[1], layered[0] + layered[1]):
        assert torch.equal(a, b)


@pytest.mark.parametrize("variant, qtype, dtype", [("qwen3_moe", QT.F32, torch.float32),  # dense experts
                                                   ("qwen2", QT.F32, torch.float32),  # dense kernels
                                                   ("qwen2", QT.Q8_0, torch.bfloat16)])
def test_models_the_stack_cannot_compute_keep_their_layers(native_ops, tiny_gguf, variant, qtype, dtype):
    assert build_model(open_checkpoint(tiny_gguf(variant, qtype)), dtype=dtype).decoder_stack is None


def test_a_layout_that_does_not_fit_the_layers_is_refused(native_ops, tiny_gguf):
    model = build_model(open_checkpoint(tiny_gguf("qwen2", QT.Q8_0)))
    stack, cache = model.decoder_stack, model.new_cache(16)
    cache.reserve(1)
    cos, sin = stack.rope.tables(1)
    x = torch.zeros(1, model.config.hidden_size)
    with pytest.raises(RuntimeError, match="15 tensors, 8 qtypes, 2 routing numbers, 3 epsilons"):
        native_ops.decoder_stack(x, stack.tensors[:-1], stack.qtypes, stack.routing, stack.eps, cache.keys,
                                 cache.values, cos, sin, 0, stack.heads, stack.kv_heads, stack.scale)

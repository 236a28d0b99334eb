"""The native layer ops (few-token attention, RMS norm, silu * up) against plain tensor code."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from inference.rope import RotaryEmbedding

HEADS, KV_HEADS, HEAD_DIM, CAPACITY = 6, 2, 32, 640
EPS = 1e-6


def _inputs(tokens: int, seed: int = 0, heads: int = HEADS, kv_heads: int = KV_HEADS, head_dim: int = HEAD_DIM):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(tokens, h, head_dim, generator=g) for h in (heads, kv_heads, kv_heads))
    biases = [torch.randn(h * head_dim, generator=g) for h in (heads, kv_heads, kv_heads)]
    norms = [1 + 0.1 * torch.randn(head_dim, generator=g) for _ in range(2)]
    return q, k, v, biases, norms


def _cache(start: int, seed: int = 1, kv_heads: int = KV_HEADS, dtype: torch.dtype = torch.float32,
           head_dim: int = HEAD_DIM):
    g = torch.Generator().manual_seed(seed)
    keys, values = (torch.zeros(kv_heads, CAPACITY, head_dim, dtype=dtype) for _ in range(2))
    keys[:, :start], values[:, :start] = (torch.randn(kv_heads, start, head_dim, generator=g) for _ in range(2))
    return keys, values


def _native(ops, q, k, v, biases, norms, rope, keys, values, start):
    cos, sin = rope.tables(start + q.shape[0])
    return ops.few_token_attention(q, k, v, *biases, *norms, EPS, cos, sin, keys, values, start, q.shape[-1] ** -0.5)


def _rms(x, weight):
    return weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + EPS))


def _reference(q, k, v, biases, norms, rope, keys, values, start):
    """Bias, norm, rotation, cache write (rounded to the cache's dtype) and causal attention in plain
    tensor code, in fp32."""
    n = q.shape[0]
    q = _rms(q + biases[0].view(q.shape[1:]), norms[0])
    k = _rms(k + biases[1].view(k.shape[1:]), norms[1])
    v = v + biases[2].view(v.shape[1:])
    q, k = rope(q.transpose(0, 1), start), rope(k.transpose(0, 1), start)
    keys, values = keys.clone(), values.clone()
    keys[:, start : start + n], values[:, start : start + n] = k, v.transpose(0, 1)
    mask = torch.ones(n, start + n, dtype=torch.bool).tril(diagonal=start)
    out = F.scaled_dot_product_attention(q[None], keys[None, :, : start + n].float(),
                                         values[None, :, : start + n].float(), attn_mask=mask, enable_gqa=True)[0]
    return out.transpose(0, 1).reshape(n, -1), keys, values


@pytest.mark.parametrize("cache_dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("heads, kv_heads", [(HEADS, KV_HEADS), (12, 1)])  # 12 query heads a kv head: 8 + 4
@pytest.mark.parametrize("rotary", [HEAD_DIM, HEAD_DIM // 2])
@pytest.mark.parametrize("start", [0, 250, 517])  # 250 + 12 tokens cross the native op's 256-key chunks
def test_few_token_attention_matches_tensor_code(native_ops, start, rotary, heads, kv_heads, cache_dtype):
    rope = RotaryEmbedding(HEAD_DIM, 10000.0, rotary)
    q, k, v, biases, norms = _inputs(12, heads=heads, kv_heads=kv_heads)
    keys, values = _cache(start, kv_heads=kv_heads, dtype=cache_dtype)
    expected, expected_keys, expected_values = _reference(q, k, v, biases, norms, rope, keys, values, start)
    out = _native(native_ops, q, k, v, biases, norms, rope, keys, values, start)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(keys, expected_keys, rtol=1e-5, atol=1e-5)  # the cache was written in place
    torch.testing.assert_close(values, expected_values, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("head_dim", [8, 40])  # under one 16-channel vector; two and a half
def test_few_token_attention_with_head_dims_off_the_vector_width(native_ops, head_dim):
    rope = RotaryEmbedding(head_dim, 10000.0)
    start = 250
    q, k, v, biases, norms = _inputs(12, head_dim=head_dim)
    keys, values = _cache(start, head_dim=head_dim)
    expected, expected_keys, _ = _reference(q, k, v, biases, norms, rope, keys, values, start)
    out = _native(native_ops, q, k, v, biases, norms, rope, keys, values, start)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(keys, expected_keys, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cache_dtype", [torch.float32, torch.float16])
def test_a_pass_of_tokens_computes_each_as_decoding_it_alone(native_ops, cache_dtype):
    """What makes speculative verification exact: a token's output does not depend on the pass it is in."""
    rope = RotaryEmbedding(HEAD_DIM, 10000.0)
    start, n = 250, 12
    q, k, v, biases, norms = _inputs(n)
    keys, values = _cache(start, dtype=cache_dtype)
    together = _native(native_ops, q, k, v, biases, norms, rope, keys.clone(), values.clone(), start)
    alone = torch.cat([_native(native_ops, q[i : i + 1], k[i : i + 1], v[i : i + 1], biases, norms, rope, keys,
                               values, start + i) for i in range(n)])
    assert torch.equal(together, alone)


def test_few_token_attention_rejects_bad_shapes(native_ops):
    rope = RotaryEmbedding(HEAD_DIM, 10000.0)
    q, k, v, biases, norms = _inputs(2)
    keys, values = _cache(0)
    with pytest.raises(RuntimeError, match="capacity"):
        _native(native_ops, q, k, v, biases, norms, rope, keys, values, CAPACITY - 1)
    with pytest.raises(RuntimeError, match="KVH dividing H"):
        _native(native_ops, q[:, :5], k, v, [None, *biases[1:]], norms, rope, keys, values, 0)


def test_rms_norm_and_silu_mul_in_place_match_tensor_code(native_ops):
    g = torch.Generator().manual_seed(2)
    x, weight = torch.randn(3, 5, 896, generator=g), torch.randn(896, generator=g)
    torch.testing.assert_close(native_ops.rms_norm(x, weight, EPS), _rms(x, weight), rtol=1e-5, atol=1e-6)
    gate, up = 8 * torch.randn(7, 4864, generator=g), torch.randn(7, 4864, generator=g)
    expected = F.silu(gate) * up
    out = native_ops.silu_mul_(gate, up)
    assert out.data_ptr() == gate.data_ptr()  # in place
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("n", [1, 15, 16, 17, 151936])
def test_argmax_rows_picks_as_torch_argmax_does(native_ops, n):
    g = torch.Generator().manual_seed(n)
    x = torch.randn(7, n, generator=g)
    x[1] = float("-inf")  # nothing above -inf: the first entry
    x[2] = 0.5  # all equal: the first entry
    x[3, n // 2] = float("nan")  # a NaN counts as largest
    x[4, -1] = 1e9  # the largest last, past the vector blocks
    x[5, n // 3] = x[5, -1] = 1e9  # equal largest entries: the first
    x[6] = float("-inf")
    x[6, :: max(1, n // 10)] = torch.randn(len(range(0, n, max(1, n // 10))), generator=g)  # a greedy head's output
    assert native_ops.argmax_rows(x).tolist() == torch.argmax(x, dim=-1).tolist()
    with pytest.raises(RuntimeError, match="float32"):
        native_ops.argmax_rows(x.double())

"""Gated DeltaNet: qwen3_next's linear-attention layer, whose memory is a fixed-size recurrent state.

Per layer the state is a short causal-convolution window over the projected q/k/v channels and,
per value head, a [key_dim, value_dim] matrix S. Each token decays S by exp(g), writes its value
with the delta rule (S += beta * k (v - k S)) and reads q S. Prefill uses the chunked form (a
triangular solve per 64-token chunk, one sequential step per chunk); decode and short passes use
the recurrent form. Both give the same outputs and the same final state.

Weights follow llama.cpp's qwen3next naming: attn_qkv (all q heads, all k heads, all v heads, v
heads grouped by their key head), attn_gate (z), ssm_ba (per key head: its value heads' b, then
their a), ssm_conv1d [channels, kernel], ssm_a = -exp(A_log), ssm_dt.bias, ssm_norm, ssm_out.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .config import ModelConfig
from .linear import LinearKernel

CHUNK = 64
# Passes up to this many tokens use the recurrent form (and can be rewound exactly, see HybridCache).
RECURRENT_MAX_TOKENS = 32


@dataclass(frozen=True)
class LinearAttentionState:
    """The state after some tokens: `conv` [channels, kernel - 1] (model dtype), the last inputs of
    the causal convolution, and `recurrent` [value_heads, key_dim, value_dim] (fp32). Never written
    in place, so a snapshot is a reference."""

    conv: torch.Tensor
    recurrent: torch.Tensor

    @property
    def nbytes(self) -> int:
        return self.conv.nbytes + self.recurrent.nbytes


@dataclass(frozen=True)
class MixerInputs:
    """What a pass fed the token mixer after the projections: enough to recompute its state after
    any prefix of the pass without the weights' matmuls."""

    qkv: torch.Tensor  # [n, channels], before the convolution
    g: torch.Tensor  # [n, value_heads], log decay
    beta: torch.Tensor  # [n, value_heads]

    def first(self, n: int) -> "MixerInputs":
        return MixerInputs(self.qkv[:n], self.g[:n], self.beta[:n])


class GatedDeltaNet:
    """One linear-attention layer; `slot` indexes its state in the cache."""

    def __init__(self, config: ModelConfig, slot: int, qkv: LinearKernel, gate: LinearKernel, ba: LinearKernel,
                 conv: torch.Tensor, a: torch.Tensor, dt_bias: torch.Tensor, norm_weight: torch.Tensor,
                 out: LinearKernel, dtype: torch.dtype):
        self.slot = slot
        self.qkv, self.gate, self.ba, self.out = qkv, gate, ba, out
        self.conv_weight = conv.to(dtype)  # [channels, kernel]
        self.a = a.float()
        self.dt_bias = dt_bias.float()
        self.norm_weight = norm_weight.to(dtype)
        self.eps = config.rms_norm_eps
        self.key_heads, self.value_heads = config.linear_num_key_heads, config.linear_num_value_heads
        self.key_dim, self.value_dim = config.linear_key_head_dim, config.linear_value_head_dim
        self.kernel = config.linear_conv_kernel
        self.dtype = dtype

    @property
    def weight_bytes(self) -> int:
        return sum(k.nbytes for k in (self.qkv, self.gate, self.ba, self.out))

    def initial_state(self) -> LinearAttentionState:
        channels = self.conv_weight.shape[0]
        return LinearAttentionState(
            torch.zeros(channels, self.kernel - 1, dtype=self.dtype),
            torch.zeros(self.value_heads, self.key_dim, self.value_dim, dtype=torch.float32),
        )

    def __call__(self, x: torch.Tensor, cache, start: int) -> torch.Tensor:
        n = x.shape[0]
        ba = self.ba(x).view(n, self.key_heads, 2, -1)
        b, a = ba[:, :, 0].reshape(n, -1), ba[:, :, 1].reshape(n, -1)
        inputs = MixerInputs(self.qkv(x), self.a * F.softplus(a.float() + self.dt_bias), torch.sigmoid(b))
        before = cache.linear_state(self.slot)
        core, state = self.mix(inputs, before if before is not None else self.initial_state())
        cache.set_linear_state(self.slot, state, self, before, inputs, start)
        z = self.gate(x).view(n, self.value_heads, self.value_dim)
        return self.out(self._gated_norm(core, z).reshape(n, -1))

    def mix(self, inputs: MixerInputs, state: LinearAttentionState) -> tuple[torch.Tensor, LinearAttentionState]:
        """Convolution and delta rule over a pass: outputs [n, value_heads, value_dim] and the new state."""
        n = inputs.qkv.shape[0]
        window = torch.cat((state.conv, inputs.qkv.t()), dim=1)
        mixed = F.silu(_causal_conv(window, self.conv_weight)).t()
        key_width = self.key_heads * self.key_dim
        q, k, v = mixed.split([key_width, key_width, self.value_heads * self.value_dim], dim=-1)
        q = _l2_normalize(q.reshape(n, self.key_heads, self.key_dim))
        k = _l2_normalize(k.reshape(n, self.key_heads, self.key_dim))
        group = self.value_heads // self.key_heads
        # [heads, n, dim]; each key head serves `group` consecutive value heads.
        q = (q * self.key_dim**-0.5).repeat_interleave(group, dim=1).transpose(0, 1)
        k = k.repeat_interleave(group, dim=1).transpose(0, 1)
        v = v.reshape(n, self.value_heads, self.value_dim).float().transpose(0, 1)
        g, beta = inputs.g.t(), inputs.beta.float().t()
        rule = recurrent_delta_rule if n <= RECURRENT_MAX_TOKENS else chunked_delta_rule
        out, recurrent = rule(q, k, v, g, beta, state.recurrent)
        conv = window[:, window.shape[1] - (self.kernel - 1):].clone()
        return out.transpose(0, 1).to(self.dtype), LinearAttentionState(conv, recurrent)

    def state_after(self, before: LinearAttentionState | None, inputs: MixerInputs, n: int):
        """The state after the first `n` tokens of a pass that started from `before` (None: no tokens)."""
        if n == 0:
            return before
        return self.mix(inputs.first(n), before if before is not None else self.initial_state())[1]

    def _gated_norm(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """RMSNorm over each value head, scaled by the weight, times silu(z)."""
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return (self.norm_weight * x32.to(x.dtype) * F.silu(z.float())).to(x.dtype)


def _causal_conv(window: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Depthwise convolution of window [channels, kernel - 1 + n] -> [channels, n], as a sum of
    shifted products (several times faster on CPU than conv1d with groups=channels)."""
    kernel = weight.shape[1]
    n = window.shape[1] - kernel + 1
    out = window[:, :n] * weight[:, :1]
    for j in range(1, kernel):
        out.addcmul_(window[:, j : j + n], weight[:, j : j + 1])
    return out


def _l2_normalize(x: torch.Tensor) -> torch.Tensor:
    x = x.float()
    return x * torch.rsqrt((x * x).sum(-1, keepdim=True) + 1e-6)


def recurrent_delta_rule(q, k, v, g, beta, state):
    """Token by token. q, k [heads, n, key_dim]; v [heads, n, value_dim]; g, beta [heads, n];
    state [heads, key_dim, value_dim]. Returns (outputs [heads, n, value_dim], final state)."""
    out = torch.empty_like(v)
    for t in range(q.shape[1]):
        state = state * g[:, t].exp()[:, None, None]
        k_t = k[:, t]
        remembered = torch.bmm(k_t.unsqueeze(1), state)[:, 0]
        delta = (v[:, t] - remembered) * beta[:, t, None]
        state = state + k_t.unsqueeze(2) * delta.unsqueeze(1)
        out[:, t] = torch.bmm(q[:, t].unsqueeze(1), state)[:, 0]
    return out, state


def chunked_delta_rule(q, k, v, g, beta, state, chunk: int = CHUNK):
    """The same recurrence in chunks of `chunk` tokens: within a chunk the delta-rule updates
    become one unit-triangular solve (the UT transform); across chunks the state carries over."""
    heads, n, _ = q.shape
    pad = (-n) % chunk
    if pad:
        q, k, v = (F.pad(x, (0, 0, 0, pad)) for x in (q, k, v))
        g, beta = (F.pad(x, (0, pad)) for x in (g, beta))
    chunks = (n + pad) // chunk
    q, k, v = (x.reshape(heads, chunks, chunk, x.shape[-1]) for x in (q, k, v))
    beta = beta.reshape(heads, chunks, chunk, 1)
    decay = g.reshape(heads, chunks, chunk).cumsum(-1)
    upper = torch.ones(chunk, chunk, dtype=torch.bool).triu(1)
    pairwise = (decay.unsqueeze(-1) - decay.unsqueeze(-2)).masked_fill(upper, float("-inf")).exp()
    k_beta = k * beta
    system = (k_beta @ k.transpose(-1, -2)) * pairwise
    values = torch.linalg.solve_triangular(system, v * beta, upper=False, unitriangular=True)
    decayed_keys = torch.linalg.solve_triangular(system, k_beta * decay.exp().unsqueeze(-1), upper=False,
                                                 unitriangular=True)
    intra = (q @ k.transpose(-1, -2)) * pairwise
    q = q * decay.exp().unsqueeze(-1)
    k = k * (decay[..., -1:] - decay).exp().unsqueeze(-1)
    chunk_decay = decay[..., -1].exp()[..., None, None]
    out = torch.empty_like(values)
    for i in range(chunks):
        fresh = values[:, i] - decayed_keys[:, i] @ state
        out[:, i] = q[:, i] @ state + intra[:, i] @ fresh
        state = state * chunk_decay[:, i] + k[:, i].transpose(-1, -2) @ fresh
    return out.reshape(heads, chunks * chunk, -1)[:, :n], state

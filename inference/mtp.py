"""qwen3_next's multi-token-prediction (MTP) head (`speculative.MTPDrafter` drafts with it).

The head is one more decoder layer (gated full attention and MoE) after the model: at position i
it takes the target's final hidden state h_i and the embedding of token i+1, mixes them
(`eh_proj(cat(enorm(embed), hnorm(h)))`), runs the layer over its own keys/values and predicts
token i+2 through the shared LM head. Drafting k tokens runs the head k times, each step feeding
its own output hidden state and the token it just proposed back in. Verification by the target
keeps the output exact (see `speculative`), so the head only decides how many drafts survive.
"""

from __future__ import annotations

import torch

from .kv_cache import KVCache


class MultiTokenPredictor:
    """The MTP head over the target's embedding and LM head (only its first layer is used: further
    layers, where a checkpoint has them, are trained for later steps; reusing the first for every
    step is what the serving engines do with one)."""

    def __init__(self, eh_proj, embedding_norm, hidden_norm, layer, norm, embed, lm_head, config):
        self.eh_proj, self.embedding_norm, self.hidden_norm = eh_proj, embedding_norm, hidden_norm
        self.layer, self.norm, self.embed, self.lm_head = layer, norm, embed, lm_head
        self.config = config

    def new_cache(self, max_length: int, dtype: torch.dtype) -> KVCache:
        return KVCache(1, self.config.num_kv_heads, self.config.head_dim, max_length, dtype)

    @torch.inference_mode()
    def forward(self, hidden: torch.Tensor, next_tokens: torch.Tensor, cache: KVCache) -> tuple[torch.Tensor, torch.Tensor]:
        """Entries for the target's hidden states `hidden` [n, hidden] and the tokens that follow
        each, after the cache's contents. Returns the head's hidden states and fp32 logits [n, vocab]."""
        start = cache.length
        cache.reserve(start + hidden.shape[0])
        x = torch.cat([self.embedding_norm(self.embed.rows(next_tokens)), self.hidden_norm(hidden)], dim=-1)
        x = self.layer(self.eh_proj(x), cache, start)
        cache.length = start + hidden.shape[0]
        out = self.norm(x)
        return out, self.lm_head(out).float()

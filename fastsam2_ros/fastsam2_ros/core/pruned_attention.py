"""SAM 2 memory attention on a subset of tokens, with explicit per-token RoPE angles.

The stock ``RoPEAttention`` derives its rotary angles from the sequence length (it assumes a dense
square grid and tiles key angles per memory frame), so it cannot be called with k < H*W tokens.
Here the same modules (weights, projections, norms) run with angles gathered by token index:
queries use the angles of their own grid positions, keys the angles of each memory frame's own
retained positions. With every index kept this is the stock computation (tested).

Everything is batch-first and batched over objects: each object (row) has its own query indices,
memory tokens and key mask, so several objects run through memory attention as one batch. Shapes
stay static for a fixed keep ratio and bank layout (CUDA-graph friendly: no host syncs).

``attention_backend`` picks which of torch's sdpa kernels runs first (``sdpa_preference``): the
kernel torch picks is not always the fastest one at these one-head shapes.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from sam2.modeling.memory_attention import MemoryAttention, MemoryAttentionLayer
from sam2.modeling.sam.transformer import RoPEAttention

_FREQS_CACHE: Dict[Tuple[int, int, int, float, str], torch.Tensor] = {}


def grid_freqs(attn: RoPEAttention, height: int, width: int, device: torch.device) -> torch.Tensor:
    """Complex RoPE angles [H*W, head_dim/2] of a dense grid, as the stock module computes them
    (cached: made once, outside any CUDA-graph capture)."""
    head_dim = attn.internal_dim // attn.num_heads
    theta = float(attn.compute_cis.keywords.get("theta", 10000.0))
    key = (head_dim, height, width, theta, str(device))
    freqs = _FREQS_CACHE.get(key)
    if freqs is None:
        freqs = attn.compute_cis(end_x=width, end_y=height).to(device)
        _FREQS_CACHE[key] = freqs
    return freqs


def _rotate(x: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """Apply complex rotations ``freqs`` [B, N, d/2] to ``x`` [B, heads, N, d] (sam2's math)."""
    x_c = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
    out = torch.view_as_real(x_c * freqs[:, None]).flatten(3)
    return out.type_as(x)


#: torch's sdpa kernels by the names ``attention_backend`` takes (config.ATTENTION_BACKENDS, which
#: adds "auto": torch's own choice, as SAM 2 and the official predictor run it).
SDPA_KERNELS = {"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION,
                "efficient": SDPBackend.EFFICIENT_ATTENTION, "math": SDPBackend.MATH}


def sdpa_preference(backend: str):
    """A context in which sdpa tries ``backend``'s kernel first and the others after it, so an
    input that kernel does not take (flash takes no key mask: the frames while the bank fills)
    still runs; "auto" (the default) leaves torch's order. Why: on the H200 (torch 2.11) sdpa
    picked cuDNN for memory attention's one-head shapes, and flash ran them 1.3-3x faster
    (attention_probe); in the tracker that was +4% FPS at keep 0.3 and +6% at keep 1.0, but keep
    1.0 no longer equal to the official predictor (min IoU 0.9886), so flash is an option.
    (torch settles its CUDA order at its first sdpa call; the image encoder's attention always
    makes that call before memory attention runs, so the order set here is not overwritten.)"""
    if backend == "auto":
        return nullcontext()
    first = SDPA_KERNELS[backend]
    return sdpa_kernel([first] + [k for k in SDPA_KERNELS.values() if k != first], set_priority=True)


def rope_attention(attn: RoPEAttention, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                   q_freqs: torch.Tensor, k_freqs: torch.Tensor, num_k_exclude_rope: int = 0,
                   key_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``attn``'s forward with explicit angles: q_freqs [B, Nq, d/2], k_freqs [B, Nk - excluded,
    d/2]; ``key_mask`` [B, Nk] bool (False = padding, never attended) or None."""
    q = attn._separate_heads(attn.q_proj(q), attn.num_heads)
    k = attn._separate_heads(attn.k_proj(k), attn.num_heads)
    v = attn._separate_heads(attn.v_proj(v), attn.num_heads)
    num_k_rope = k.size(-2) - num_k_exclude_rope
    if k_freqs.shape[1] != num_k_rope:
        raise ValueError(f"{k_freqs.shape[1]} key angles for {num_k_rope} rotated keys")
    q = _rotate(q, q_freqs)
    if num_k_rope > 0:
        k = torch.cat([_rotate(k[:, :, :num_k_rope], k_freqs), k[:, :, num_k_rope:]], dim=-2)
    dropout_p = attn.dropout_p if attn.training else 0.0
    mask = None if key_mask is None else key_mask[:, None, None, :]
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
    return attn.out_proj(attn._recombine_heads(out))


def _layer_forward(layer: MemoryAttentionLayer, tgt: torch.Tensor, memory: torch.Tensor,
                   pos: torch.Tensor, query_pos: torch.Tensor, q_freqs: torch.Tensor,
                   k_freqs: torch.Tensor, num_k_exclude_rope: int,
                   key_mask: Optional[torch.Tensor]) -> torch.Tensor:
    """One ``MemoryAttentionLayer`` (self-attn, cross-attn, MLP) with explicit RoPE angles."""
    # self-attention among the retained query tokens
    tgt2 = layer.norm1(tgt)
    q = kk = tgt2 + query_pos if layer.pos_enc_at_attn else tgt2
    tgt2 = rope_attention(layer.self_attn, q, kk, tgt2, q_freqs, q_freqs)
    tgt = tgt + layer.dropout1(tgt2)
    # cross-attention to the (pruned) memory + object pointers (pointers are not rotated)
    tgt2 = layer.norm2(tgt)
    tgt2 = rope_attention(
        layer.cross_attn_image,
        tgt2 + query_pos if layer.pos_enc_at_cross_attn_queries else tgt2,
        memory + pos if layer.pos_enc_at_cross_attn_keys else memory,
        memory, q_freqs, k_freqs, num_k_exclude_rope, key_mask)
    tgt = tgt + layer.dropout2(tgt2)
    tgt2 = layer.norm3(tgt)
    tgt2 = layer.linear2(layer.dropout(layer.activation(layer.linear1(tgt2))))
    return tgt + layer.dropout3(tgt2)


def pruned_memory_attention(module: MemoryAttention, curr: torch.Tensor, curr_pos: torch.Tensor,
                            memory: torch.Tensor, memory_pos: torch.Tensor,
                            query_idx: torch.Tensor, memory_idx: torch.Tensor,
                            grid_hw: Tuple[int, int], num_obj_ptr_tokens: int = 0,
                            key_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Memory attention over retained tokens only, batched over objects (batch-first).

    ``curr``/``curr_pos`` [B, k, C] (already gathered), ``memory``/``memory_pos`` [B, M + P, C_mem]
    with the P object-pointer tokens last, ``query_idx`` [B, k] grid indices of the queries,
    ``memory_idx`` [B, M] grid indices of the spatial memory tokens (their own frames'
    positions), ``key_mask`` [B, M + P] (False = padding) or None. Returns normed [B, k, C].
    """
    if not module.layers or not module.batch_first:
        raise ValueError("pruned memory attention needs a batch-first memory attention with layers")
    if memory_idx.shape[1] + num_obj_ptr_tokens != memory.shape[1]:
        raise ValueError("memory_idx must index every spatial memory token")
    height, width = grid_hw
    freqs = grid_freqs(module.layers[0].self_attn, height, width, curr.device)
    q_freqs = freqs[query_idx]
    k_freqs = freqs[memory_idx]
    output = curr
    if module.pos_enc_at_input and curr_pos is not None:
        output = output + 0.1 * curr_pos
    for layer in module.layers:
        if not isinstance(layer.self_attn, RoPEAttention) or not isinstance(
                layer.cross_attn_image, RoPEAttention):
            raise ValueError("pruned memory attention needs RoPE attention layers (SAM 2 configs)")
        output = _layer_forward(layer, output, memory, memory_pos, curr_pos, q_freqs, k_freqs,
                                num_obj_ptr_tokens, key_mask)
    return module.norm(output)

"""SAM 2 video predictor whose memory attention and memory bank work on retained tokens only.

It subclasses the official ``SAM2VideoPredictor`` and overrides two steps of ``SAM2Base``:

* ``_prepare_memory_conditioned_features`` (after the encoder, before memory attention): the
  router picks k token indices of the current frame for this object; memory attention runs on
  those queries against each stored frame's retained tokens (+ unpruned, un-rotated object
  pointers) with explicit gathered RoPE angles; the result is scattered back into a dense map for
  the mask decoder, pruned positions getting a filler (raw features + ``no_mem_embed``, what the
  decoder sees on an initial conditioning frame, or the raw features).
* ``_encode_new_memory``: the convolutional memory encoder runs dense (it is cheap); only k tokens
  are stored — the router's choice with the predicted mask's tokens forced in — as
  ``[B, C_mem, k, 1]`` plus their indices (``PruneContext.memory_idx``, stored by the tracker).

With no PruneContext, or keep ratio 1.0 and a dense memory bank, the stock code runs unchanged.
The memory-frame and pointer selection mirrors ``SAM2Base`` (forward tracking only); a test checks
that the pruned path with every token kept equals the stock path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from sam2.modeling.sam2_utils import get_1d_sine_pe, select_closest_cond_frames
from sam2.sam2_video_predictor import SAM2VideoPredictor

from .pruned_attention import pruned_memory_attention
from .router import RouterOutput, TokenRouter, minmax, num_kept
from .stats import StageTimer
from .text_relevance import TextState


@dataclass
class PruneContext:
    """Per-object, per-call pruning request (inputs) and what the model chose (outputs)."""

    keep_ratio: float
    router: TokenRouter
    timer: StageTimer
    text_state: Optional[TextState] = None
    prev_mask_logits: Optional[torch.Tensor] = None  # the object's latest low-res mask logits
    filler: str = "no_mem_embed"
    memory_mask_boost: float = 1.0
    force_pruned_path: bool = False  # run our path even at keep 1.0 (used by tests)
    # outputs
    router_out: Optional[RouterOutput] = None
    query_idx: Optional[torch.Tensor] = None
    memory_idx: Optional[torch.Tensor] = None
    tokens_total: int = 0
    tokens_kept: int = 0


class PrunedSAM2VideoPredictor(SAM2VideoPredictor):
    """Official predictor + token pruning between the encoder and memory attention."""

    prune_ctx: Optional[PruneContext] = None

    # ------------------------------------------------------------------ memory attention (read)
    def _prepare_memory_conditioned_features(self, frame_idx, is_init_cond_frame,
                                             current_vision_feats, current_vision_pos_embeds,
                                             feat_sizes, output_dict, num_frames,
                                             track_in_reverse=False):
        ctx = self.prune_ctx
        args = (frame_idx, is_init_cond_frame, current_vision_feats, current_vision_pos_embeds,
                feat_sizes, output_dict, num_frames, track_in_reverse)
        if ctx is None:
            return super()._prepare_memory_conditioned_features(*args)
        height, width = feat_sizes[-1]
        ctx.tokens_total = height * width
        if is_init_cond_frame or self.num_maskmem == 0:
            ctx.tokens_kept = ctx.tokens_total  # no memory attention on this frame
            return super()._prepare_memory_conditioned_features(*args)
        if track_in_reverse:
            raise ValueError("the streaming tracker only tracks forward in time")
        memory_is_pruned = any(out.get("maskmem_idx") is not None
                               for d in output_dict.values() for out in d.values())
        if ctx.keep_ratio >= 1.0 and not memory_is_pruned and not ctx.force_pruned_path:
            with ctx.timer.stage("memory_attention"):
                out = super()._prepare_memory_conditioned_features(*args)
            ctx.tokens_kept = ctx.tokens_total
            return out

        feat = current_vision_feats[-1]  # [HW, B, C]
        pos = current_vision_pos_embeds[-1]
        batch = feat.shape[1]
        if batch != 1:
            raise ValueError("pruning runs one object at a time (batch 1)")
        if ctx.keep_ratio >= 1.0:
            query_idx = torch.arange(height * width, device=feat.device)
        else:
            with ctx.timer.stage("router"):
                ctx.router_out = self._route(ctx, feat[:, 0], (height, width))
            query_idx = ctx.router_out.keep_idx
        ctx.query_idx = query_idx
        ctx.tokens_kept = int(query_idx.numel())
        with ctx.timer.stage("memory_attention"):
            memory, memory_pos, memory_idx, num_ptr = self._collect_memory(
                frame_idx, output_dict, num_frames, feat.device, height * width)
            attended = pruned_memory_attention(
                self.memory_attention, feat.index_select(0, query_idx),
                pos.index_select(0, query_idx), memory, memory_pos, query_idx, memory_idx,
                (height, width), num_obj_ptr_tokens=num_ptr)
            dense = feat + self.no_mem_embed if ctx.filler == "no_mem_embed" else feat
            # index_copy is out of place: the encoder features stay untouched
            dense = dense.to(attended.dtype).index_copy(0, query_idx, attended)
        return dense.permute(1, 2, 0).reshape(batch, self.hidden_dim, height, width)

    def _route(self, ctx: PruneContext, tokens: torch.Tensor, grid_hw: Tuple[int, int],
               prev_mask_logits: Optional[torch.Tensor] = None) -> RouterOutput:
        sig = ctx.router.signals(
            tokens, grid_hw, self.memory_attention.layers[0], ctx.text_state,
            prev_mask_logits if prev_mask_logits is not None else ctx.prev_mask_logits)
        return ctx.router.route(sig, num_kept(tokens.shape[0], ctx.keep_ratio))

    def _collect_memory(self, frame_idx: int, output_dict: dict, num_frames, device,
                        num_tokens: int):
        """Stored memories + object pointers as SAM2Base selects them (forward direction),
        with each spatial token's grid index. Returns memory, memory_pos, memory_idx, P."""
        cond_outputs = output_dict["cond_frame_outputs"]
        if not cond_outputs:
            raise ValueError("no conditioning frame in memory")
        selected, unselected = select_closest_cond_frames(
            frame_idx, cond_outputs, self.max_cond_frames_in_attn)
        slots: List[Tuple[int, dict]] = [(0, out) for out in selected.values()]
        stride = self.memory_temporal_stride_for_eval
        for t_pos in range(1, self.num_maskmem):
            t_rel = self.num_maskmem - t_pos
            if t_rel == 1:
                prev_idx = frame_idx - 1
            else:
                prev_idx = ((frame_idx - 2) // stride) * stride - (t_rel - 2) * stride
            out = output_dict["non_cond_frame_outputs"].get(prev_idx)
            if out is None:
                out = unselected.get(prev_idx)
            if out is not None:
                slots.append((t_pos, out))

        mems, poss, idxs = [], [], []
        for t_pos, prev in slots:
            feats = prev["maskmem_features"].to(device, non_blocking=True).flatten(2).permute(2, 0, 1)
            dense_pos = prev["maskmem_pos_enc"][-1].to(device).flatten(2).permute(2, 0, 1)
            idx = prev.get("maskmem_idx")
            if idx is None:
                idx = torch.arange(num_tokens, device=device)
                tok_pos = dense_pos
            else:
                idx = idx.to(device)
                tok_pos = dense_pos.index_select(0, idx)
            mems.append(feats)
            poss.append(tok_pos + self.maskmem_tpos_enc[self.num_maskmem - t_pos - 1])
            idxs.append(idx)

        num_ptr = 0
        if self.use_obj_ptrs_in_encoder:
            ptrs, ptr_pos = self._object_pointers(frame_idx, selected, unselected, output_dict,
                                                  num_frames, device)
            if ptrs is not None:
                mems.append(ptrs)
                poss.append(ptr_pos)
                num_ptr = ptrs.shape[0]
        memory = torch.cat(mems, dim=0)
        memory_pos = torch.cat(poss, dim=0)
        return memory, memory_pos, torch.cat(idxs), num_ptr

    def _object_pointers(self, frame_idx, selected, unselected, output_dict, num_frames, device):
        """Object-pointer tokens and their temporal encodings (never pruned, never rotated)."""
        max_ptrs = min(num_frames, self.max_obj_ptrs_in_encoder)
        if not self.training and self.only_obj_ptrs_in_the_past_for_eval:
            ptr_cond = {t: out for t, out in selected.items() if t <= frame_idx}
        else:
            ptr_cond = selected
        pos_and_ptrs = [((frame_idx - t) if self.use_signed_tpos_enc_to_obj_ptrs
                         else abs(frame_idx - t), out["obj_ptr"]) for t, out in ptr_cond.items()]
        for t_diff in range(1, max_ptrs):
            t = frame_idx - t_diff
            if t < 0 or (num_frames is not None and t >= num_frames):
                break
            out = output_dict["non_cond_frame_outputs"].get(t, unselected.get(t, None))
            if out is not None:
                pos_and_ptrs.append((t_diff, out["obj_ptr"]))
        if not pos_and_ptrs:
            return None, None
        pos_list, ptr_list = zip(*pos_and_ptrs)
        obj_ptrs = torch.stack(ptr_list, dim=0)
        batch, channels = obj_ptrs.shape[1], self.hidden_dim
        if self.add_tpos_enc_to_obj_ptrs:
            tpos_dim = channels if self.proj_tpos_enc_in_obj_ptrs else self.mem_dim
            obj_pos = torch.tensor(pos_list).to(device=device, non_blocking=True)
            obj_pos = get_1d_sine_pe(obj_pos / (max_ptrs - 1), dim=tpos_dim)
            obj_pos = self.obj_ptr_tpos_proj(obj_pos).unsqueeze(1).expand(-1, batch, self.mem_dim)
        else:
            obj_pos = obj_ptrs.new_zeros(len(pos_list), batch, self.mem_dim)
        if self.mem_dim < channels:
            split = channels // self.mem_dim
            obj_ptrs = obj_ptrs.reshape(-1, batch, split, self.mem_dim).permute(0, 2, 1, 3).flatten(0, 1)
            obj_pos = obj_pos.repeat_interleave(split, dim=0)
        return obj_ptrs, obj_pos

    # ------------------------------------------------------------------ memory encoder (write)
    def _encode_new_memory(self, current_vision_feats, feat_sizes, pred_masks_high_res,
                           object_score_logits, is_mask_from_pts):
        ctx = self.prune_ctx
        if ctx is None:
            return super()._encode_new_memory(current_vision_feats, feat_sizes, pred_masks_high_res,
                                              object_score_logits, is_mask_from_pts)
        with ctx.timer.stage("memory_encoder"):
            feats, pos = super()._encode_new_memory(current_vision_feats, feat_sizes,
                                                    pred_masks_high_res, object_score_logits,
                                                    is_mask_from_pts)
        ctx.memory_idx = None
        if ctx.keep_ratio >= 1.0:
            return feats, pos
        height, width = feat_sizes[-1]
        with ctx.timer.stage("router"):
            low_res = F.adaptive_max_pool2d(pred_masks_high_res.float(), (height, width))
            if ctx.router_out is None:  # frames without memory attention (prompt frames)
                ctx.router_out = self._route(ctx, current_vision_feats[-1][:, 0], (height, width),
                                             prev_mask_logits=low_res)
            in_mask = F.max_pool2d((low_res > 0).float(), 3, stride=1, padding=1).flatten()
            score = minmax(ctx.router_out.scores.float()) + ctx.memory_mask_boost * in_mask
            k = num_kept(height * width, ctx.keep_ratio)
            idx = torch.topk(score, k, sorted=False).indices.sort().values
        ctx.memory_idx = idx
        pruned = feats.flatten(2).index_select(2, idx).unsqueeze(-1)  # [B, C_mem, k, 1]
        return pruned, pos

"""SAM 2 video predictor that tracks several objects per frame against a static memory bank,
with memory attention on router-selected tokens only.

It subclasses the official ``SAM2VideoPredictor`` and reuses its per-frame code
(``track_step`` → prompt encoder, mask decoder, object pointer, ``_encode_new_memory``); what
changes is where memory comes from. Like sam2, which passes a frame's memory as ``output_dict``,
the caller passes a :class:`BankRead` in that argument, and the override of
``_prepare_memory_conditioned_features`` (after the encoder, before memory attention):

* asks the router for k query tokens per object (``keep < H*W``) or takes all of them;
* reads each object's memory from the bank as static, padded tensors: conditioning frames, the
  recent frames and object pointers, each frame with its own retained tokens and grid indices
  (the slot rule lives in :class:`~.memory_bank.MemoryBank`);
* runs memory attention for all objects as one batch with explicit gathered RoPE angles and a key
  mask for padding, and scatters the result into a dense map for the decoder (pruned positions
  get the raw features + ``no_mem_embed`` — what the decoder sees on an initial conditioning
  frame — or the raw features).

:meth:`track_objects` is one whole tracking step — uint8 frame in, packed mask bits out, bank
updated in place — with no host synchronisation and fixed shapes, so it can be captured as a
CUDA graph. :meth:`prompt_object` is the (eager) prompt step of one object. With every token kept
the result equals the official predictor (tests).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from sam2.modeling.sam2_utils import get_1d_sine_pe
from sam2.sam2_video_predictor import SAM2VideoPredictor
from sam2.utils.misc import fill_holes_in_mask_scores

from .memory_bank import BankLayout, LayoutShape, MemoryBank, unpack_layout
from .preprocess import model_input
from .pruned_attention import pruned_memory_attention, sdpa_preference
from .router import RouterOutput, TokenRouter, block_max, minmax, router_scores, top_k_indices
from .text_relevance import TextRows


class NullTimer:
    """Stage timer that records nothing (inside a CUDA-graph capture nothing may synchronise)."""

    @contextlib.contextmanager
    def stage(self, name: str, exclude: Tuple[str, ...] = ()):
        yield


@dataclass(frozen=True)
class StepPlan:
    """The static parameters of one step: everything a captured graph is specialised on."""

    shape: LayoutShape
    masked: bool  # the layout has padding: attention takes a key mask
    keep: int  # query tokens per object (== H*W: dense, no router)
    filler: str
    memory_mask_boost: float
    text: Optional[str]  # None, or the text mode when some object has a text signal
    out_hw: Tuple[int, int] = (0, 0)  # input image size of the packed masks
    threshold: float = 0.0
    attention_backend: str = "auto"  # the sdpa kernel memory attention tries first (pruned_attention.sdpa_preference)


@dataclass
class BankRead:
    """One call's view of the bank, passed to sam2's per-frame code as ``output_dict``."""

    bank: MemoryBank
    rows: slice
    plan: StepPlan
    layout: Dict[str, torch.Tensor]  # unpacked device views (memory_bank.unpack_layout)
    router: TokenRouter
    timer: object
    frame_idx: int  # seeds the router's dropout masks on the CPU (one draw per frame)
    router_out: Optional[RouterOutput] = field(default=None)  # filled by the memory read

    def text_rows(self) -> Optional[TextRows]:
        if self.plan.text is None:
            return None
        t = self.bank.text
        r = self.rows
        return TextRows(weight=t["weight"][r], bias=t["bias"][r], mean=t["mean"][r],
                        embedding=t["embedding"][r], vector=t["vector"][r],
                        has_text=t["has_text"][r], scale_by_relevance=self.plan.text != "paper_lsq")


def pack_mask_bits(low_res: torch.Tensor, out_hw: Tuple[int, int], threshold: float) -> torch.Tensor:
    """Low-res mask logits [B, 1, h, w] -> bit planes uint8 [ceil(B/8), H, W] at the input size
    (object b is bit b % 8 of plane b // 8): every object's mask in one small host copy."""
    full = F.interpolate(low_res.float(), size=tuple(out_hw), mode="bilinear", align_corners=False)
    on = (full[:, 0] > threshold).to(torch.uint8)
    shifts = torch.arange(8, device=on.device, dtype=torch.uint8)[:, None, None]
    planes = [torch.bitwise_left_shift(on[s:s + 8], shifts[:on[s:s + 8].shape[0]]).sum(0, dtype=torch.uint8)
              for s in range(0, on.shape[0], 8)]
    return torch.stack(planes)


def memory_token_scores(high_res: torch.Tensor, grid_hw: Tuple[int, int],
                        routed: Optional[torch.Tensor], memory_mask_boost: float) -> torch.Tensor:
    """Scores [B, h*w] of the new memory's tokens: the router's (``routed``, min-max
    normalised) plus ``memory_mask_boost`` on the predicted mask's tokens (dilated by one), which
    go in first."""
    low = block_max(high_res.float(), grid_hw)
    in_mask = TokenRouter.dilated((low > 0).float())
    base = minmax(routed.float()) if routed is not None else torch.zeros_like(in_mask)
    return torch.add(base, in_mask, alpha=memory_mask_boost)  # (scale and sum: one kernel)


def choose_memory_tokens(maskmem: torch.Tensor, score: torch.Tensor, k: int):
    """Which ``k`` tokens of the new memory [B, C_mem, h, w] are stored: the best ``score``.
    Returns feats [B, k, C_mem], idx, score."""
    rows, mem_dim, height, width = maskmem.shape
    flat = maskmem.flatten(2)  # [B, C_mem, N]
    if k >= height * width:  # dense: grid order, as SAM 2 stores it
        idx = torch.arange(height * width, device=maskmem.device).expand(rows, -1)
        return flat.transpose(1, 2), idx, score
    idx = top_k_indices(score, k)
    feats = flat.gather(2, idx[:, None].expand(-1, mem_dim, -1)).transpose(1, 2)
    return feats, idx, score.gather(1, idx)


class PrunedSAM2VideoPredictor(SAM2VideoPredictor):
    """Official predictor + a static multi-object memory bank + token pruning."""

    #: set by ``models.compile_modules`` (torch_compile: all); None = the eager function
    compiled_memory_attention = None
    #: set by ``models.compile_modules`` (torch_compile: router, all): router_scores and
    #: memory_token_scores, the kernels a pruned step adds; None = the eager functions
    compiled_router = None
    compiled_memory_tokens = None
    #: the attributes above, for ``models._compiled_callables``
    COMPILED_FUNCTIONS = ("compiled_memory_attention", "compiled_router", "compiled_memory_tokens")

    # ------------------------------------------------------------------ memory attention (read)
    def _prepare_memory_conditioned_features(self, frame_idx, is_init_cond_frame,
                                             current_vision_feats, current_vision_pos_embeds,
                                             feat_sizes, output_dict, num_frames,
                                             track_in_reverse=False):
        if not isinstance(output_dict, BankRead) or is_init_cond_frame or self.num_maskmem == 0:
            return super()._prepare_memory_conditioned_features(
                frame_idx, is_init_cond_frame, current_vision_feats, current_vision_pos_embeds,
                feat_sizes, output_dict, num_frames, track_in_reverse)
        if track_in_reverse:
            raise ValueError("the streaming tracker only tracks forward in time")
        return self._attend_to_bank(output_dict, current_vision_feats[-1],
                                    current_vision_pos_embeds[-1], feat_sizes[-1])

    def _attend_to_bank(self, read: BankRead, feat: torch.Tensor, pos: torch.Tensor,
                        grid_hw: Tuple[int, int]) -> torch.Tensor:
        """[HW, B, C] features of B objects -> memory-conditioned [B, C, H, W]."""
        height, width = grid_hw
        num_tokens, rows, channels = feat.shape
        plan = read.plan
        dense_queries = plan.keep >= num_tokens
        if not dense_queries:
            with read.timer.stage("router"):
                # compiled (CUDA only), no frame index: it only seeds the CPU's dropout masks,
                # and a new int per frame would be a recompile per frame
                compiled = self.compiled_router
                scores = (compiled or router_scores)(
                    read.router, feat[:, 0], grid_hw, self.memory_attention.layers[0],
                    read.text_rows(), read.bank.prev_logits[read.rows], rows,
                    frame_idx=None if compiled else read.frame_idx)
                read.router_out = RouterOutput(scores, top_k_indices(scores, plan.keep),
                                               read.router.mode)
        with read.timer.stage("memory_attention"):
            memory, memory_pos, memory_idx, key_mask, num_ptr = self._read_memory(read)
            feat_b, pos_b = feat.transpose(0, 1), pos.transpose(0, 1)  # [B, HW, C]
            if dense_queries:
                query_idx = torch.arange(num_tokens, device=feat.device).expand(rows, -1)
                queries, query_pos = feat_b, pos_b
            else:
                query_idx = read.router_out.keep_idx
                gather = query_idx[..., None].expand(-1, -1, channels)
                queries, query_pos = feat_b.gather(1, gather), pos_b.gather(1, gather)
            attend = self.compiled_memory_attention or pruned_memory_attention
            with sdpa_preference(plan.attention_backend):
                attended = attend(
                    self.memory_attention, queries, query_pos, memory, memory_pos, query_idx,
                    memory_idx, grid_hw, num_obj_ptr_tokens=num_ptr,
                    key_mask=key_mask if plan.masked else None)
            if dense_queries:
                dense = attended
            else:
                base = feat_b + self.no_mem_embed if plan.filler == "no_mem_embed" else feat_b
                # scatter is out of place: the encoder features stay untouched
                dense = base.to(attended.dtype).scatter(1, gather, attended)
        return dense.permute(0, 2, 1).reshape(rows, channels, height, width)

    def _read_memory(self, read: BankRead):
        """The bank's memory for ``read.rows`` as SAM 2 orders it: conditioning frames, recent
        frames oldest first, then object pointers. Returns memory [B, M+P, C_mem], its positional
        encoding, grid indices [B, M] of the spatial tokens, key mask [B, M+P], P."""
        bank, lay, rows = read.bank, read.layout, read.rows
        k, mem_dim, channels = bank.k, self.mem_dim, self.hidden_dim
        order = lay["cond_order"]

        def cond_and_ring(name: str) -> torch.Tensor:
            """[B, S, k, ...]: the ordered conditioning slots, then the recent frames."""
            cond = getattr(bank, f"cond_{name}")[rows]
            by_slot = order.view(*order.shape, *[1] * (cond.dim() - 2)).expand(-1, -1, *cond.shape[2:])
            ring = getattr(bank, f"ring_{name}")[rows].index_select(1, lay["ring_order"])
            return torch.cat([torch.gather(cond, 1, by_slot), ring], dim=1)

        feats = cond_and_ring("feat").flatten(1, 2).float()  # [B, S*k, C_mem]
        idx = cond_and_ring("idx").flatten(1)  # [B, S*k]
        slot_valid = torch.cat([lay["cond_valid"], lay["ring_valid"]], dim=1)  # [B, S]
        key_valid = (cond_and_ring("tok_valid") & slot_valid[..., None]).flatten(1)
        tpos = self.maskmem_tpos_enc[:, 0, 0][lay["slot_tpos"]].repeat_interleave(k, dim=0)
        pos = bank.dense_pos[idx] + tpos[None]
        memory, memory_pos, valid = [feats], [pos], [key_valid]
        num_ptr = 0
        if self.use_obj_ptrs_in_encoder:
            cond_ptr = torch.gather(bank.cond_ptr[rows], 1, order[:, :, None].expand(-1, -1, channels))
            ptrs = torch.cat([cond_ptr, bank.ptr_ring[rows].index_select(1, lay["ptr_order"])], dim=1)
            if self.add_tpos_enc_to_obj_ptrs:
                tpos_dim = channels if self.proj_tpos_enc_in_obj_ptrs else mem_dim
                ptr_pos = self.obj_ptr_tpos_proj(get_1d_sine_pe(lay["ptr_pos"], dim=tpos_dim))
            else:
                ptr_pos = ptrs.new_zeros(*ptrs.shape[:2], mem_dim)
            ptr_valid = lay["ptr_valid"]
            if mem_dim < channels:  # a pointer becomes C / C_mem tokens, as in SAM2Base
                split = channels // mem_dim
                ptrs = ptrs.reshape(ptrs.shape[0], -1, split, mem_dim).flatten(1, 2)
                ptr_pos = ptr_pos.repeat_interleave(split, dim=1)
                ptr_valid = ptr_valid.repeat_interleave(split, dim=1)
            memory.append(ptrs.to(feats.dtype))
            memory_pos.append(ptr_pos.to(pos.dtype))
            valid.append(ptr_valid)
            num_ptr = ptrs.shape[1]
        return (torch.cat(memory, 1), torch.cat(memory_pos, 1), idx, torch.cat(valid, 1), num_ptr)

    # ------------------------------------------------------------------ shared pieces
    def _batched_features(self, backbone_out: dict, rows: int):
        """Encoder output expanded to ``rows`` objects, flattened as sam2 does (no copies)."""
        expanded = {"backbone_fpn": [f.expand(rows, -1, -1, -1) for f in backbone_out["backbone_fpn"]],
                    "vision_pos_enc": [p.expand(rows, -1, -1, -1) for p in backbone_out["vision_pos_enc"]]}
        _, feats, pos, sizes = self._prepare_backbone_features(expanded)
        return feats, pos, sizes

    def _run_heads(self, read: BankRead, frame_idx: int, is_init: bool, feats, pos, sizes,
                   point_inputs=None, mask_inputs=None, prev_logits=None) -> dict:
        """sam2's ``track_step`` without the memory encoder; decoder time excludes the router
        and memory attention that run inside it."""
        with read.timer.stage("decoder", exclude=("router", "memory_attention")):
            out = self.track_step(
                frame_idx=frame_idx, is_init_cond_frame=is_init, current_vision_feats=feats,
                current_vision_pos_embeds=pos, feat_sizes=sizes, point_inputs=point_inputs,
                mask_inputs=mask_inputs, output_dict=read, num_frames=read.bank.num_frames,
                run_mem_encoder=False, prev_sam_mask_logits=prev_logits)
            if self.fill_hole_area > 0:  # as _run_single_frame_inference (eager steps only)
                out["pred_masks"] = fill_holes_in_mask_scores(out["pred_masks"], self.fill_hole_area)
        return out

    def _memory_tokens(self, read: BankRead, maskmem: torch.Tensor, high_res: torch.Tensor,
                       routed: Optional[torch.Tensor]):
        """The tokens of the new memory that the bank stores (``choose_memory_tokens``), their
        scores compiled with the router where it is, for pruned frames."""
        grid_hw = tuple(maskmem.shape[-2:])
        pruned = read.bank.k < grid_hw[0] * grid_hw[1]
        score_fn = (self.compiled_memory_tokens if pruned else None) or memory_token_scores
        score = score_fn(high_res, grid_hw, routed, read.plan.memory_mask_boost)
        return choose_memory_tokens(maskmem, score, read.bank.k)

    def _encode_memory(self, read: BankRead, feats, sizes, high_res, object_score_logits,
                       is_mask_from_pts: bool):
        with read.timer.stage("memory_encoder"):
            maskmem, maskmem_pos = self._encode_new_memory(
                current_vision_feats=feats, feat_sizes=sizes, pred_masks_high_res=high_res,
                object_score_logits=object_score_logits, is_mask_from_pts=is_mask_from_pts)
        if read.bank.dense_pos is None:  # constant over frames and objects (sam2 caches it too)
            read.bank.dense_pos = maskmem_pos[-1][0].flatten(1).T.clone()
        return maskmem

    def _route_on_prompt(self, read: BankRead, tokens: torch.Tensor, grid_hw, high_res) -> RouterOutput:
        """Router scores on a frame without memory attention (a new object's first prompt, a mask
        prompt): the prompt's own mask is the prior."""
        prior = block_max(high_res.float(), grid_hw)
        with read.timer.stage("router"):
            sig = read.router.signals(tokens, grid_hw, self.memory_attention.layers[0],
                                      read.text_rows(), prior, read.frame_idx)
            return read.router.route(sig, read.plan.keep, 1)

    # ------------------------------------------------------------------ the per-frame steps
    def track_objects(self, frame: torch.Tensor, layout_ints: torch.Tensor,
                      layout_floats: torch.Tensor, *, bank: MemoryBank, plan: StepPlan,
                      router: TokenRouter, frame_idx: int, timer=None) -> Dict[str, torch.Tensor]:
        """Track every object of ``plan.shape.rows`` on one frame and write its memory.

        No host synchronisation and static shapes (capturable): ``frame`` is the staged frame
        (uint8 [H, W, 3] or normalised float [3, S, S]), the layout tensors come from
        ``bank.layout``. Returns mask bits [ceil(B/8), H, W], presence logits [B], the stored
        token indices [B, k], and the encoder output (for prompts on this frame).
        """
        timer = timer or NullTimer()
        rows = slice(0, plan.shape.rows)
        read = BankRead(bank=bank, rows=rows, plan=plan, router=router, timer=timer,
                        frame_idx=frame_idx,
                        layout=unpack_layout(plan.shape, layout_ints, layout_floats))
        with timer.stage("encoder"):
            backbone = self.encode_frame(frame)
        feats, pos, sizes = self._batched_features(backbone, plan.shape.rows)
        out = self._run_heads(read, frame_idx, False, feats, pos, sizes)
        maskmem = self._encode_memory(read, feats, sizes, out["pred_masks_high_res"],
                                      out["object_score_logits"], is_mask_from_pts=False)
        with timer.stage("router"):
            scores = read.router_out.scores if read.router_out is not None else None
            mem_feats, mem_idx, mem_score = self._memory_tokens(read, maskmem,
                                                                out["pred_masks_high_res"], scores)
        with timer.stage("memory_encoder"):
            write, write_ptr = read.layout["write_ring"], read.layout["write_ptr"]
            bank.ring_feat[rows].index_copy_(1, write, mem_feats[:, None].to(torch.bfloat16))
            bank.ring_idx[rows].index_copy_(1, write, mem_idx[:, None])
            bank.ring_score[rows].index_copy_(1, write, mem_score[:, None].to(torch.float16))
            bank.ring_tok_valid[rows].index_fill_(1, write, True)
            bank.ptr_ring[rows].index_copy_(1, write_ptr, out["obj_ptr"][:, None].float())
            bank.prev_logits[rows].copy_(out["pred_masks"])
            presence = out["object_score_logits"].float().reshape(-1)
            bank.presence[rows].copy_(presence)
        outputs = {"bits": pack_mask_bits(out["pred_masks"], plan.out_hw, plan.threshold),
                   "presence": presence,
                   "memory_idx": mem_idx}
        for level, (fpn, vpe) in enumerate(zip(backbone["backbone_fpn"], backbone["vision_pos_enc"])):
            outputs[f"fpn{level}"], outputs[f"vpe{level}"] = fpn, vpe
        return outputs

    def encode_frame(self, frame: torch.Tensor) -> dict:
        """Encoder output of a staged frame (eager; frames before any object exists)."""
        return self.forward_image(model_input(frame, self.image_size))

    def prompt_object(self, backbone: dict, bank: MemoryBank, row: int, frame_idx: int,
                      is_init: bool, plan: StepPlan, layout: BankLayout, router: TokenRouter,
                      point_inputs=None, mask_inputs=None, prev_logits=None, timer=None) -> dict:
        """sam2's add_new_points_or_box / add_new_mask + the memory encoding that
        propagate_in_video_preflight does, for one object (bank row) on the current frame.
        The frame becomes a conditioning frame of the object. Eager (runs once per prompt), so
        ``layout`` is the compact one (only the slots that hold memories) that ``plan`` describes."""
        timer = timer or NullTimer()
        rows = slice(row, row + 1)
        read = BankRead(bank=bank, rows=rows, plan=plan, router=router, timer=timer,
                        frame_idx=frame_idx,
                        layout=unpack_layout(layout.shape, layout.ints.to(bank.device),
                                             layout.floats.to(bank.device)))
        feats, pos, sizes = self._batched_features(backbone, 1)
        out = self._run_heads(read, frame_idx, is_init, feats, pos, sizes, point_inputs,
                              mask_inputs, prev_logits)
        high_res = F.interpolate(out["pred_masks"], size=(self.image_size, self.image_size),
                                 mode="bilinear", align_corners=False)
        maskmem = self._encode_memory(read, feats, sizes, high_res, out["object_score_logits"],
                                      is_mask_from_pts=True)
        if read.router_out is None and plan.keep < feats[-1].shape[0]:
            read.router_out = self._route_on_prompt(read, feats[-1][:, 0], sizes[-1], high_res)
        scores = read.router_out.scores if read.router_out is not None else None
        mem_feats, mem_idx, mem_score = self._memory_tokens(read, maskmem, high_res, scores)
        bank.write_prompt(row, frame_idx, mem_feats[0], mem_idx[0], mem_score[0],
                          out["obj_ptr"][0], out["pred_masks"][0], out["object_score_logits"][0])
        return out

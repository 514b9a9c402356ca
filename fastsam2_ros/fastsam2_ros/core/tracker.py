"""Streaming multi-object SAM 2 tracker with a bounded memory bank and token pruning.

Frames arrive one at a time (no video preload). Per frame the image encoder runs once, then every
object is tracked with batch 1 through the official predictor's own single-frame inference
(``SAM2VideoPredictor._run_single_frame_inference``) on a per-object output dict that this class
keeps bounded:

* conditioning (prompted) frames: at most ``max_cond_frames`` per object, the first one pinned;
* non-conditioning frames: memory features only for the slots SAM 2 reads for the next frame
  (``num_maskmem - 1``), object pointers only for the last ``max_obj_ptrs - 1`` frames;
* low-res mask logits only for the current frame (needed for refinement and the router prior).

Prompts (clicks, box, mask, text) apply to the current frame, like a click on the image a user
is looking at; a prompt on an already tracked frame refines the object and makes the frame a
conditioning frame (``add_all_frames_to_correct_as_cond``), so corrections persist.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from sam2.utils.misc import concat_points
from scipy import ndimage

from .config import TrackerConfig
from .errors import InputError
from .models import build_predictor
from .prompts import (representative_click, validate_box, validate_image, validate_mask,
                      validate_points, validate_text)
from .pruned_predictor import PruneContext
from .router import TokenRouter, load_router
from .stats import FrameResult, FrameStats, StageTimer, peak_gpu_memory
from .text_relevance import TextState, fit_clip_ridge, fit_paper_lsq

LOG = logging.getLogger(__name__)

IMG_MEAN = torch.tensor([0.485, 0.456, 0.406], dtype=torch.float32)[:, None, None]
IMG_STD = torch.tensor([0.229, 0.224, 0.225], dtype=torch.float32)[:, None, None]
#: SAM 2 reads min(num_frames, max_obj_ptrs) pointers; a stream has no known length.
STREAM_LENGTH = 2 ** 31 - 1
MAX_OBJECT_ID = 65535  # label images are mono16


def preprocess(image: np.ndarray, size: int) -> torch.Tensor:
    """RGB uint8 -> normalised float [3, size, size], exactly as sam2's frame loader does it
    (PIL resize of the whole frame to a square, /255, ImageNet mean/std)."""
    resized = np.asarray(Image.fromarray(image).resize((size, size)))
    tensor = torch.from_numpy(resized / 255.0).permute(2, 0, 1).to(torch.float32)
    return (tensor - IMG_MEAN) / IMG_STD


class _CurrentFrame:
    """Stands in for the predictor's preloaded ``images``: only the current frame exists."""

    def __init__(self) -> None:
        self.index = -1
        self.tensor: Optional[torch.Tensor] = None

    def __getitem__(self, frame_idx: int) -> torch.Tensor:
        if frame_idx != self.index or self.tensor is None:
            raise KeyError(f"frame {frame_idx} is not the current frame ({self.index})")
        return self.tensor


@dataclass
class _ObjectState:
    obj_id: int
    output: Dict[str, Dict[int, dict]] = field(
        default_factory=lambda: {"cond_frame_outputs": {}, "non_cond_frame_outputs": {}})
    text: Optional[str] = None
    text_state: Optional[TextState] = None
    point_inputs: Optional[dict] = None  # clicks accumulated on ``point_frame``
    point_frame: int = -1
    tokens_kept: int = 0
    occluded_frames: int = 0  # consecutive tracked frames with presence logit <= 0
    auto_phrase: Optional[str] = None  # started by auto_prompt: its phrase ("" = phrase-free)

    def current_out(self, frame_idx: int) -> Optional[dict]:
        out = self.output["cond_frame_outputs"].get(frame_idx)
        return out if out is not None else self.output["non_cond_frame_outputs"].get(frame_idx)

    def latest_out(self) -> Optional[dict]:
        frames = [t for d in self.output.values() for t in d]
        return self.current_out(max(frames)) if frames else None


class StreamingTracker:
    """Frame-by-frame multi-object tracker. See ``core/API.md`` for the call contract."""

    def __init__(self, config: TrackerConfig, model=None, num_frames_hint: Optional[int] = None,
                 return_logits: bool = False, force_pruned_path: bool = False) -> None:
        """``num_frames_hint``: length of a finite clip, only to reproduce the official predictor
        (it scales pointer time encodings by min(num_frames, 16)). ``force_pruned_path`` runs
        the gathered-RoPE attention even at keep ratio 1.0 (a test hook)."""
        self.cfg = config.validate()
        self.model = model if model is not None else build_predictor(self.cfg)
        self.model.add_all_frames_to_correct_as_cond = True
        self.device = self.model.device
        self.return_logits = return_logits
        self.force_pruned_path = force_pruned_path
        self._num_frames = int(num_frames_hint) if num_frames_hint else STREAM_LENGTH
        mlp = load_router(self.cfg.router_weights, self.model.hidden_dim) if self.cfg.router_weights else None
        self.router = TokenRouter(self.model.hidden_dim, self.cfg.mc_passes, self.cfg.mc_dropout,
                                  mlp=mlp, seed=self.cfg.seed)
        self.keep_ratio = float(self.cfg.keep_ratio)
        self._clip = None
        self.objects: "OrderedDict[int, _ObjectState]" = OrderedDict()
        self._frame = _CurrentFrame()
        self._image: Optional[np.ndarray] = None
        self._state = self._new_state()
        self._auto_prompter = None  # core.auto_prompt.AutoPrompter, built on first auto_prompt

    # ----------------------------------------------------------------------------- public API
    @property
    def object_ids(self) -> List[int]:
        return list(self.objects)

    @property
    def frame_index(self) -> int:
        return self._frame.index

    def set_keep_ratio(self, keep_ratio: float) -> None:
        """Change the keep ratio between frames (the memory bank may mix ratios; that is fine)."""
        self.cfg.replace(keep_ratio=keep_ratio)  # validates
        self.keep_ratio = float(keep_ratio)

    def reset(self, num_frames_hint: Optional[int] = None) -> None:
        """Forget all objects and memory (the model stays loaded). ``num_frames_hint``: see
        ``__init__``; offline tools pass each clip's length to compare with the official predictor."""
        self._num_frames = int(num_frames_hint) if num_frames_hint else STREAM_LENGTH
        self.objects.clear()
        self._frame = _CurrentFrame()
        self._image = None
        self._state = self._new_state()

    def release(self) -> None:
        """Drop the model and free cached GPU memory (the tracker is unusable afterwards)."""
        self.reset()
        self.model = None
        self._auto_prompter = None
        if self._clip is not None:
            self._clip.release()
            self._clip = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def remove_object(self, obj_id: int) -> None:
        obj_id = self._check_id(obj_id)
        if obj_id not in self.objects:
            raise InputError(f"unknown object id {obj_id}; tracked: {self.object_ids}")
        del self.objects[obj_id]

    def track(self, image: np.ndarray) -> FrameResult:
        """Make ``image`` the current frame and propagate every tracked object onto it."""
        image = validate_image(image)
        self._require_model()
        timer = StageTimer(str(self.device))
        with timer.stage("total"), self._inference():
            self._track_frame(image, timer)
        result = self._result(timer, auto_prompted=[])
        for obj_id, visible in result.visible.items():
            obj = self.objects[obj_id]
            obj.occluded_frames = 0 if visible else obj.occluded_frames + 1
            result.stats.occluded_frames[obj_id] = obj.occluded_frames
        return result

    def add_prompt(self, obj_id: int, points: Optional[Sequence] = None,
                   labels: Optional[Sequence] = None, box: Optional[Sequence] = None,
                   mask: Optional[np.ndarray] = None, text: Optional[str] = None,
                   image: Optional[np.ndarray] = None) -> FrameResult:
        """Add object ``obj_id`` or refine it on the current frame (``image`` first tracks a new
        frame). Clicks on the same frame accumulate; a box or mask replaces earlier clicks."""
        obj_id = self._check_id(obj_id)
        text = validate_text(text, self.cfg.max_text_length)
        if points is None and box is None and mask is None and text is None:
            raise InputError("a prompt needs points, a box, a mask or a text")
        if (points is None) != (labels is None):
            raise InputError("points and labels must be given together")
        if mask is not None and (points is not None or box is not None):
            raise InputError("a mask prompt cannot be combined with points or a box")
        if obj_id not in self.objects and len(self.objects) >= self.cfg.max_objects:
            raise InputError(f"already tracking {len(self.objects)} objects (max_objects)")
        if image is not None:
            validate_image(image)
        elif self._image is None:
            raise InputError("no frame has been tracked yet: pass image= with the first prompt")
        shape = (image if image is not None else self._image).shape[:2]
        pts = lab = None
        if points is not None:
            pts, lab = validate_points(points, labels, shape)
        bbox = validate_box(box, shape) if box is not None else None
        mask_arr = validate_mask(mask, shape) if mask is not None else None
        self._require_model()
        if text is not None and self.cfg.text_mode == "none" and pts is None and bbox is None \
                and mask_arr is None:
            raise InputError("a text-only prompt needs text_mode clip_ridge or paper_lsq")

        timer = StageTimer(str(self.device))
        auto = []
        with timer.stage("total"), self._inference():
            if image is not None:
                self._track_frame(image, timer)
            self._encode(timer)
            known = self.objects.get(obj_id)
            if text is not None and known is not None and text == known.text:
                text_state = known.text_state  # same text again: keep the fitted map
            else:
                text_state = self._fit_text(text) if text is not None else None
            is_new = known is None
            if pts is None and bbox is None and mask_arr is None:
                if not is_new:  # text for an existing object: only the router changes
                    self.objects[obj_id].text, self.objects[obj_id].text_state = text, text_state
                    return self._result(timer, auto_prompted=[])
                click = self._text_click(text)
                pts, lab = np.asarray([click], np.float32), np.asarray([1], np.int32)
                auto = [obj_id]
                LOG.info("object %d started from text %r with an automatic click at %s",
                         obj_id, text, click)
            obj = known or _ObjectState(obj_id)
            if text is not None:
                obj.text, obj.text_state = text, text_state
            self._prompt(obj, pts, lab, bbox, mask_arr, timer)
            self.objects[obj_id] = obj
        return self._result(timer, auto_prompted=auto)

    def auto_prompt(self, obj_id: int, image: Optional[np.ndarray] = None) -> FrameResult:
        """Start ``obj_id`` with no user input (paper §3.3): the most object-like region, its
        caption, a concise phrase, then its distance-transform click + the phrase through
        ``add_prompt``. ``image`` first becomes the current frame. The work and the ``auto_*``
        configuration live in ``core/auto_prompt.py``; ``result.auto_prompt`` says what was chosen."""
        from .auto_prompt import AutoPrompter

        obj_id = self._check_id(obj_id)
        self._require_model()
        if self._auto_prompter is None:
            self._auto_prompter = AutoPrompter(self.cfg, self.model)
        taken = self._result(StageTimer(str(self.device)), []).masks if image is None and self.objects else {}
        result = self._auto_prompter.start(self, obj_id, image, current=self._image, taken=taken)
        self.objects[obj_id].auto_phrase = result.auto_prompt.phrase or ""
        return result

    def frame_tokens(self, image: np.ndarray):
        """Make ``image`` the current frame without tracking and return its top-level encoder
        tokens [N, C] and grid (H, W): what the router scores (router training, inspection)."""
        image = validate_image(image)
        self._require_model()
        if self.objects:
            raise InputError("frame_tokens needs a tracker without objects (call reset())")
        with self._inference():
            self._start_frame(image)
            self._encode(StageTimer(str(self.device)))
            tokens, grid = self._current_tokens()
        return tokens, tuple(grid)

    def text_state(self, text: str) -> Optional[TextState]:
        """The router's text signal for ``text`` fitted on the current frame (None: text_mode none)."""
        text = validate_text(text, self.cfg.max_text_length)
        if self._image is None:
            raise InputError("no current frame")
        with self._inference():
            self._encode(StageTimer(str(self.device)))
            return self._fit_text(text)

    def memory_bank_size(self) -> Dict[str, int]:
        """Frames with stored memory features, stored tokens, and bytes of all stored tensors."""
        frames = tokens = nbytes = 0
        for obj in self.objects.values():
            for outs in obj.output.values():
                for out in outs.values():
                    feats = out.get("maskmem_features")
                    if feats is not None:
                        frames += 1
                        tokens += feats.numel() // feats.shape[1]
                    for key in ("maskmem_features", "maskmem_idx", "obj_ptr", "pred_masks",
                                "object_score_logits"):
                        t = out.get(key)
                        if isinstance(t, torch.Tensor):
                            nbytes += t.numel() * t.element_size()
        return {"frames": frames, "tokens": tokens, "bytes": nbytes}

    # ----------------------------------------------------------------------------- internals
    def _new_state(self) -> dict:
        """The subset of SAM2VideoPredictor's inference_state its per-frame methods read."""
        return {"images": self._frame, "num_frames": self._num_frames,
                "device": self.device, "storage_device": self.device,
                "cached_features": {}, "constants": {}, "video_height": 0, "video_width": 0}

    def _require_model(self) -> None:
        if self.model is None:
            raise InputError("the tracker was released; create a new one")

    @staticmethod
    def _check_id(obj_id) -> int:
        if isinstance(obj_id, bool) or not isinstance(obj_id, (int, np.integer)):
            raise InputError(f"object id must be an integer, got {obj_id!r}")
        if not 1 <= int(obj_id) <= MAX_OBJECT_ID:
            raise InputError(f"object id must be in [1, {MAX_OBJECT_ID}], got {obj_id}")
        return int(obj_id)

    @contextlib.contextmanager
    def _inference(self):
        autocast = (torch.autocast("cuda", dtype=torch.bfloat16)
                    if self.device.type == "cuda" and self.cfg.bf16 else contextlib.nullcontext())
        with torch.inference_mode(), autocast:
            yield

    def _track_frame(self, image: np.ndarray, timer: StageTimer) -> None:
        self._start_frame(image)
        if self.objects:  # with no object the encoder runs lazily, when a prompt arrives
            self._encode(timer)
            for obj in self.objects.values():
                self._propagate(obj, timer)

    def _start_frame(self, image: np.ndarray) -> None:
        t = self._frame.index + 1
        self._frame.index = t
        self._frame.tensor = None
        self._image = image
        self._state["cached_features"] = {}
        self._state["video_height"], self._state["video_width"] = image.shape[:2]
        for obj in self.objects.values():
            self._evict(obj, t)

    def _encode(self, timer: StageTimer) -> None:
        """Run the image encoder on the current frame once (cached in the predictor's state)."""
        t = self._frame.index
        if t in self._state["cached_features"]:
            return
        with timer.stage("encoder"):
            self._frame.tensor = preprocess(self._image, self.model.image_size).to(self.device)
            batch = self._frame.tensor.float().unsqueeze(0)
            self._state["cached_features"] = {t: (batch, self.model.forward_image(batch))}

    def _context(self, obj: _ObjectState, timer: StageTimer) -> PruneContext:
        latest = obj.latest_out()
        prev = latest.get("pred_masks") if latest is not None else None
        return PruneContext(keep_ratio=self.keep_ratio, router=self.router, timer=timer,
                            text_state=obj.text_state, prev_mask_logits=prev,
                            filler=self.cfg.filler, memory_mask_boost=self.cfg.memory_mask_boost,
                            force_pruned_path=self.force_pruned_path)

    def _run(self, ctx: PruneContext, fn, *args, **kwargs):
        """Call into the model with ``ctx`` installed; time what is not router/attention/memory
        encoding as the decoder (prompt encoder + mask decoder + pointer head)."""
        inner = ("router", "memory_attention", "memory_encoder")
        before = sum(ctx.timer.ms[s] for s in inner)
        self.model.prune_ctx = ctx
        t0 = time.perf_counter()
        try:
            result = fn(*args, **kwargs)
        finally:
            self.model.prune_ctx = None
        if ctx.timer.cuda:
            torch.cuda.synchronize()
        spent = (time.perf_counter() - t0) * 1e3 - (sum(ctx.timer.ms[s] for s in inner) - before)
        ctx.timer.ms["decoder"] += max(0.0, spent)
        return result

    def _propagate(self, obj: _ObjectState, timer: StageTimer) -> None:
        t = self._frame.index
        ctx = self._context(obj, timer)
        out, _ = self._run(ctx, self.model._run_single_frame_inference,
                           inference_state=self._state, output_dict=obj.output, frame_idx=t,
                           batch_size=1, is_init_cond_frame=False, point_inputs=None,
                           mask_inputs=None, reverse=False, run_mem_encoder=True)
        out["maskmem_idx"] = ctx.memory_idx
        obj.output["non_cond_frame_outputs"][t] = out
        obj.tokens_kept = ctx.tokens_kept

    def _prompt(self, obj: _ObjectState, pts, lab, bbox, mask_arr, timer: StageTimer) -> None:
        """SAM 2's add_new_points_or_box / add_new_mask + the memory encoding that
        propagate_in_video_preflight would do, for one object on the current frame."""
        t = self._frame.index
        height, width = self._image.shape[:2]
        size = self.model.image_size
        prev_out = obj.current_out(t)
        is_init = prev_out is None
        point_inputs = mask_inputs = None
        if mask_arr is not None:
            m = torch.from_numpy(mask_arr)[None, None].float().to(self.device)
            if m.shape[-2:] != (size, size):
                m = F.interpolate(m, size=(size, size), mode="bilinear", align_corners=False,
                                  antialias=True)
                m = (m >= 0.5).float()
            mask_inputs = m
            obj.point_inputs, obj.point_frame = None, -1
        else:
            coords = np.zeros((0, 2), np.float32) if pts is None else pts
            labels = np.zeros((0,), np.int32) if lab is None else lab
            if bbox is not None:
                coords = np.concatenate([np.asarray(bbox, np.float32).reshape(2, 2), coords])
                labels = np.concatenate([np.asarray([2, 3], np.int32), labels])
            scale = torch.tensor([width, height], dtype=torch.float32)
            new_pts = (torch.from_numpy(coords)[None] / scale * size).to(self.device)
            new_lab = torch.from_numpy(labels)[None].to(self.device)
            old = obj.point_inputs if (obj.point_frame == t and bbox is None) else None
            point_inputs = concat_points(old, new_pts, new_lab)
            obj.point_inputs, obj.point_frame = point_inputs, t
        prev_logits = None
        if prev_out is not None and prev_out.get("pred_masks") is not None:
            prev_logits = torch.clamp(prev_out["pred_masks"].to(self.device), -32.0, 32.0)
        ctx = self._context(obj, timer)
        out, _ = self._run(ctx, self.model._run_single_frame_inference,
                           inference_state=self._state, output_dict=obj.output, frame_idx=t,
                           batch_size=1, is_init_cond_frame=is_init, point_inputs=point_inputs,
                           mask_inputs=mask_inputs, reverse=False, run_mem_encoder=False,
                           prev_sam_mask_logits=prev_logits if mask_inputs is None else None)
        high_res = F.interpolate(out["pred_masks"].to(self.device), size=(size, size),
                                 mode="bilinear", align_corners=False)
        feats, pos = self._run(ctx, self.model._run_memory_encoder, inference_state=self._state,
                               frame_idx=t, batch_size=1, high_res_masks=high_res,
                               object_score_logits=out["object_score_logits"],
                               is_mask_from_pts=True)
        out["maskmem_features"], out["maskmem_pos_enc"] = feats, pos
        out["maskmem_idx"] = ctx.memory_idx
        obj.output["cond_frame_outputs"][t] = out
        obj.output["non_cond_frame_outputs"].pop(t, None)
        obj.tokens_kept = ctx.tokens_kept
        self._cap_cond_frames(obj)

    def _cap_cond_frames(self, obj: _ObjectState) -> None:
        cond = obj.output["cond_frame_outputs"]
        limit = int(self.cfg.max_cond_frames)
        if len(cond) <= limit:
            return
        frames = sorted(cond)
        keep = {frames[0], *frames[len(frames) - (limit - 1):]} if limit > 1 else {frames[-1]}
        for t in frames:
            if t not in keep:
                del cond[t]

    def _evict(self, obj: _ObjectState, t: int) -> None:
        """Drop what frame ``t`` (and any later frame) can no longer read."""
        model = self.model
        stride = model.memory_temporal_stride_for_eval
        mem_slots = {t - 1}
        for t_rel in range(2, model.num_maskmem):
            mem_slots.add(((t - 2) // stride) * stride - (t_rel - 2) * stride)
        oldest_ptr = t - (min(self._num_frames, model.max_obj_ptrs_in_encoder) - 1)
        non_cond = obj.output["non_cond_frame_outputs"]
        for idx in list(non_cond):
            out = non_cond[idx]
            if idx < oldest_ptr:
                del non_cond[idx]
                continue
            if idx not in mem_slots and out.get("maskmem_features") is not None:
                non_cond[idx] = {"obj_ptr": out["obj_ptr"], "maskmem_features": None,
                                 "maskmem_pos_enc": None, "pred_masks": None,
                                 "object_score_logits": out["object_score_logits"]}
        latest = max((i for d in obj.output.values() for i in d), default=None)
        for outs in obj.output.values():
            for idx, out in outs.items():
                if idx != latest and out.get("pred_masks") is not None:
                    out["pred_masks"] = None
        if obj.point_frame != t:
            obj.point_inputs, obj.point_frame = None, -1

    # ------------------------------------------------------------------------------- text
    def _clip_encoder(self):
        if self._clip is None:
            from .clip_text import ClipTextEncoder

            self._clip = ClipTextEncoder(self.cfg.clip_model, self.cfg.clip_weights,
                                         device=str(self.device),
                                         allow_random_weights=self.cfg.allow_random_weights,
                                         max_text_length=self.cfg.max_text_length)
        return self._clip

    def _current_tokens(self) -> torch.Tensor:
        _, _, feats, _, sizes = self.model._get_image_feature(self._state, self._frame.index, 1)
        return feats[-1][:, 0].float(), sizes[-1]

    def _fit_text(self, text: str) -> Optional[TextState]:
        if self.cfg.text_mode == "none":
            return None
        clip = self._clip_encoder()
        emb = clip.encode_text([text])[0].to(self.device)
        tokens, grid = self._current_tokens()
        if self.cfg.text_mode == "paper_lsq":
            return fit_paper_lsq(tokens, emb, text)
        dense = clip.dense_image_features(self._image, grid=tuple(grid)).to(self.device)
        return fit_clip_ridge(tokens, dense.flatten(1).T, emb, text)

    def _text_click(self, text: str):
        """Text-only start: CLIP relevance on this frame -> best region -> distance-transform click."""
        clip = self._clip_encoder()
        emb = clip.encode_text([text])[0]
        dense = clip.dense_image_features(self._image)  # [D, h, w]
        rel = torch.einsum("dhw,d->hw", dense.float(), emb.float().to(dense.device)).cpu().numpy()
        region = rel >= np.quantile(rel, 0.95)
        labels, _ = ndimage.label(region)
        peak = np.unravel_index(int(np.argmax(rel)), rel.shape)
        region = labels == labels[peak]
        height, width = self._image.shape[:2]
        full = np.asarray(Image.fromarray(region.astype(np.uint8) * 255).resize(
            (width, height), Image.NEAREST)) > 0
        if not full.any():
            full[min(height - 1, int((peak[0] + 0.5) * height / rel.shape[0])),
                 min(width - 1, int((peak[1] + 0.5) * width / rel.shape[1]))] = True
        return representative_click(full)

    # ------------------------------------------------------------------------------- output
    def _result(self, timer: StageTimer, auto_prompted: List[int]) -> FrameResult:
        t = self._frame.index
        masks, scores, logits, kept_grids = {}, {}, {}, {}
        height, width = self._image.shape[:2] if self._image is not None else (0, 0)
        feat_hw = self.model.image_size // 16
        tokens_kept = {}
        for obj_id, obj in self.objects.items():
            out = obj.current_out(t)
            if out is None or out.get("pred_masks") is None:
                continue
            low = out["pred_masks"].to(self.device).float()
            full = F.interpolate(low, size=(height, width), mode="bilinear", align_corners=False)[0, 0]
            masks[obj_id] = (full > self.cfg.mask_threshold).cpu().numpy()
            scores[obj_id] = float(out["object_score_logits"].float().reshape(-1)[0])
            if self.return_logits:
                logits[obj_id] = full.cpu().numpy()
            tokens_kept[obj_id] = obj.tokens_kept
            if out.get("maskmem_idx") is not None:
                grid = np.zeros(feat_hw * feat_hw, dtype=bool)
                grid[out["maskmem_idx"].cpu().numpy()] = True
                kept_grids[obj_id] = grid.reshape(feat_hw, feat_hw)
        bank = self.memory_bank_size()
        cuda = self.device.type == "cuda"
        stats = FrameStats(
            frame_index=t, stage_ms=dict(timer.ms), tokens_total=feat_hw * feat_hw,
            tokens_kept=tokens_kept, keep_ratio=self.keep_ratio, bank_frames=bank["frames"],
            bank_tokens=bank["tokens"], bank_bytes=bank["bytes"],
            peak_gpu_memory_bytes=peak_gpu_memory(self.device),
            gpu_memory_bytes=int(torch.cuda.memory_allocated(self.device)) if cuda else 0,
            object_ids=list(self.objects),
            router_mode="dense" if self.keep_ratio >= 1.0 else self.router.mode,
            text_mode=self.cfg.text_mode if any(o.text_state for o in self.objects.values()) else "none",
            auto_prompted=auto_prompted, device=str(self.device),
            auto_phrases={i: o.auto_phrase for i, o in self.objects.items() if o.auto_phrase is not None})
        return FrameResult(frame_index=t, masks=masks, scores=scores, stats=stats,
                           logits=logits if self.return_logits else None, kept_tokens=kept_grids)

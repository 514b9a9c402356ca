"""Streaming multi-object SAM 2 tracker with a bounded, static memory bank and token pruning.

Frames arrive one at a time (no video preload). Per frame the image encoder runs once and every
object is tracked in one batch by ``PrunedSAM2VideoPredictor.track_objects``: memory attention on
router-selected tokens against the :class:`~.memory_bank.MemoryBank`, sam2's decoder and memory
encoder, the new memory written into the bank, and every object's mask packed into one uint8
bit image at the input resolution. On CUDA that step is captured once per static signature and
replayed as a CUDA graph (:class:`~.step_runner.StepRunner`); the frame goes up as uint8 from a
pinned buffer and is resized and normalised on the GPU; one small copy brings the masks back.

The bank holds, per object, the conditioning (prompted) frames a frame reads (at most
``max_cond_frames``: the first, pinned, and the latest) plus a spare, the memories SAM 2 reads
next and the object pointers; its size never grows.

Prompts (clicks, box, mask, text) apply to the current frame, like a click on the image a user
is looking at; a prompt on an already tracked frame refines the object and makes the frame a
conditioning frame (``add_all_frames_to_correct_as_cond``), so corrections persist.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
import weakref
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from sam2.utils.misc import concat_points
from scipy import ndimage

from .config import TrackerConfig
from .cuda_device import on_device, record_event, synchronize
from .errors import CheckpointError, InputError
from .memory_bank import MemoryBank, token_grid
from .models import build_predictor, release_compile_workers, uses_compiled_modules
from .preprocess import FrameStager, prepare_device_constants, resolve_preprocess
from .prompts import (MAX_POINTS, check_prompt_kinds, representative_click, validate_box,
                      validate_image, validate_image_shape, validate_mask, validate_num_frames_hint,
                      validate_object_id, validate_points, validate_text)
from .pruned_predictor import StepPlan, pack_mask_bits
from .router import (TokenRouter, load_router, num_kept, read_router_file, router_inputs,
                     router_setting_mismatches)
from .stats import BitMasks, FrameResult, FrameStats, StageTimer, peak_gpu_memory
from .step_runner import StepRunner
from .text_relevance import TextState, fit_clip_ridge, fit_paper_lsq

LOG = logging.getLogger(__name__)

#: SAM 2 reads min(num_frames, max_obj_ptrs) pointers; a stream has no known length.
STREAM_LENGTH = 2 ** 31 - 1
#: Submitted frames queued before the whole queue is searched for gone ones (not only its front).
IN_FLIGHT_PRUNE_AT = 64


@dataclass
class _ObjectState:
    obj_id: int
    row: int  # the object's row in the memory bank
    first_frame: int  # the frame its first prompt was on (clicks there are initial clicks)
    text: Optional[str] = None
    text_state: Optional[TextState] = None
    text_frame: int = -1  # frame the text map was fitted on
    point_inputs: Optional[dict] = None  # clicks accumulated on ``point_frame``
    point_frame: int = -1
    tokens_kept: int = 0  # query tokens of its memory attention on the current frame
    prompt_frame: int = -1  # the last frame a prompt ran on (it supersedes that frame's tracking)
    occluded_frames: int = 0  # consecutive tracked frames with presence logit <= 0
    auto_phrase: Optional[str] = None  # started by auto_prompt: its phrase ("" = phrase-free)


class PendingFrame:
    """A submitted frame whose masks are on their way to the host (see ``StreamingTracker.submit``).

    ``result()`` waits for the copy (if not done yet) and builds the :class:`FrameResult`. The
    tracker's state follows the frames in order: collecting a later frame first (or a prompt with
    ``image=``, which tracks a new frame) builds the results of the earlier ones, kept for their
    own ``result()``.
    """

    def __init__(self, tracker: "StreamingTracker", frame_index: int, shape, t0: float) -> None:
        # a weak reference: the tracker keeps its last pending frames, which must not keep it alive
        self._tracker = weakref.ref(tracker)
        self.frame_index = frame_index
        self.epoch = tracker._epoch  # a frame from before a reset() must not touch the new stream
        self._context: dict = {}  # the tracker's side of the stats, as when the frame was tracked
        self._shape = shape
        self._t0 = t0
        self._event = None
        self._host: Dict[str, torch.Tensor] = {}
        self._arrays: Optional[Dict[str, np.ndarray]] = None
        #: the objects tracked on this frame, by id: the instances, so that a result collected after
        #: an id was removed and added again (or restarted) leaves the new object's state alone
        self._objects: Dict[int, _ObjectState] = {}
        self._tokens: Dict[int, int] = {}
        self._timer: Optional[StageTimer] = None
        self._gpu_events = None  # CUDA events around the step (its device time)
        self._result: Optional[FrameResult] = None

    def _materialize(self) -> None:
        """Wait for the device copy and take the data out of the shared pinned buffers."""
        if self._arrays is not None:
            return
        if self._event is not None:
            self._event.synchronize()
        self._arrays = {k: v.numpy().copy() for k, v in self._host.items()}
        self._host = {}

    def result(self) -> FrameResult:
        if self._result is None:
            tracker = self._tracker()
            if tracker is None:
                raise InputError("the tracker of this frame no longer exists")
            with on_device(tracker.device):  # (its events and syncs are the tracker's device's)
                self._materialize()
                self._result = tracker._finish(self)
        return self._result


def check_tracker_files(cfg: TrackerConfig, with_texts: bool = False) -> None:
    """What a tracker built from ``cfg`` refuses, checked without building a model: the CLIP
    settings (given CLIP weights must be of ``clip_model``, and are required when ``with_texts``
    reach the router), the router file (see ``check_router_origin``) and the automatic prompt's
    weights (see ``check_auto_prompt_files``). The tracker runs it
    when built; tools run it before their long work (fastsam2-eval's official mode, router
    training's data), so a typo is not found hours in."""
    from .auto_prompt import check_auto_prompt_files
    from .clip_text import check_clip_settings, check_clip_weights, require_clip_weights

    if cfg.text_mode != "none" and (cfg.clip_weights or with_texts):
        check_clip_settings(cfg.clip_model, cfg.clip_weights)
        if cfg.clip_weights:
            check_clip_weights(cfg.clip_model, cfg.clip_weights)
        if with_texts:
            require_clip_weights(cfg.clip_model, cfg.clip_weights, cfg.allow_random_weights)
    if cfg.router_weights:
        _, blob = read_router_file(cfg.router_weights)
        check_router_origin(cfg, blob.get("meta"))
    check_auto_prompt_files(cfg)


def check_router_origin(cfg: TrackerConfig, meta) -> None:
    """A router trained on a randomly initialised SAM 2 (``fastsam2-train-router
    --random-weights``, a smoke run; its file's meta says so) learned the tokens of noise: with a
    checkpoint it is refused unless ``allow_random_weights`` (then warned), like random SAM 2
    weights — unlike a settings mismatch, it is never the router the user meant to deploy."""
    if not (isinstance(meta, dict) and meta.get("random_weights") is True and cfg.checkpoint):
        return
    message = (f"router {cfg.router_weights} was trained on a randomly initialised SAM 2 "
               "(fastsam2-train-router --random-weights, a smoke run): its scores mean nothing "
               "for the tokens of checkpoint weights. Train it with --checkpoint, or leave "
               "router_weights empty for the training-free fusion")
    if not cfg.allow_random_weights:
        raise CheckpointError(message)
    LOG.warning("%s (loaded: allow_random_weights is set)", message)


class StreamingTracker:
    """Frame-by-frame multi-object tracker. See ``core/API.md`` for the call contract."""

    def __init__(self, config: TrackerConfig, model=None, num_frames_hint: Optional[int] = None,
                 return_logits: bool = False, static_buffers: bool = False,
                 profile_stages: bool = False) -> None:
        """``num_frames_hint``: length of a finite clip, only to reproduce the official predictor
        (it scales pointer time encodings by min(num_frames, 16)). ``static_buffers`` runs the
        eager step through the CUDA-graph buffer protocol (tests, on the CPU). ``profile_stages``:
        time each stage of an eager step on CUDA too, synchronising around each, and name each
        stage in a torch.profiler trace (a profiling pass; a tracked frame otherwise never waits
        for the GPU between stages, and off CUDA the stages are always timed, which costs
        nothing)."""
        self.profile_stages = bool(profile_stages)
        self.cfg = config.validate()
        check_tracker_files(self.cfg)  # a wrong clip_* fails now, not at the first text prompt
        self._warn_without_clip_weights()
        self.model = model if model is not None else build_predictor(self.cfg)
        self.model.add_all_frames_to_correct_as_cond = True
        self.device = self.model.device
        self.return_logits = return_logits
        mlp = load_router(self.cfg.router_weights, self.model.hidden_dim) if self.cfg.router_weights else None
        if mlp is not None:
            self._warn_router_mismatches(mlp.meta)
            # moved once, here, outside inference mode: moved by the first route() (which runs in
            # it) its weights would become inference tensors for good
            with torch.inference_mode(False):
                mlp = mlp.to(self.device)
        self.router = TokenRouter(self.model.hidden_dim, self.cfg.mc_passes, self.cfg.mc_dropout,
                                  mlp=mlp, seed=self.cfg.seed)
        self.keep_ratio = float(self.cfg.keep_ratio)
        self._clip = None
        self.objects: "OrderedDict[int, _ObjectState]" = OrderedDict()
        grid = self.model.image_size // 16
        self._num_tokens = grid * grid
        num_frames = validate_num_frames_hint(num_frames_hint) or STREAM_LENGTH
        self.bank = MemoryBank(self.model, self.cfg.max_objects, self.cfg.max_cond_frames,
                               num_kept(self._num_tokens, self.keep_ratio), self.device, num_frames)
        self.preprocess_mode = resolve_preprocess(self.cfg.preprocess, self.device)
        self.stager = FrameStager(self.preprocess_mode, self.model.image_size, self.device)
        graphs = self.cfg.cuda_graphs and self.model.fill_hole_area <= 0
        if self.cfg.cuda_graphs and not graphs and self.device.type == "cuda":
            LOG.warning("cuda_graphs: the step runs eagerly because the model given fills holes "
                        "(fill_hole_area %d), which cannot be captured; build it with "
                        "cuda_graphs: true to turn hole filling off", self.model.fill_hole_area)
        self.runner = StepRunner(self.device, graphs, static_buffers=static_buffers)
        if self.device.type == "cuda":
            prepare_device_constants(self.device)
        self._bank_generation = 0
        # two sets of pinned host buffers for the outputs, used in turn (see _to_host)
        self._pinned: List[Dict[str, torch.Tensor]] = [{}, {}]
        self._host_slots: List[Optional[PendingFrame]] = [None, None]
        self._host_turn = 0
        self._auto_prompter = None  # core.auto_prompt.AutoPrompter, built on first auto_prompt
        self._epoch = 0  # reset() count: frames submitted before a reset belong to an old stream
        self._reset_frame_state()

    # ----------------------------------------------------------------------------- public API
    @property
    def object_ids(self) -> List[int]:
        return list(self.objects)

    @property
    def frame_index(self) -> int:
        return self._t

    @property
    def step_mode(self) -> str:
        """``cuda_graph`` (captured per-frame step) or ``eager``."""
        return self.runner.mode

    def set_keep_ratio(self, keep_ratio: float) -> None:
        """Change the keep ratio between frames. Stored memories keep their best tokens."""
        self._require_model()
        self.cfg.replace(keep_ratio=keep_ratio)  # validates
        self.keep_ratio = float(keep_ratio)
        if self.bank.resize_tokens(num_kept(self._num_tokens, self.keep_ratio)):
            self._bank_changed()

    def reset(self, num_frames_hint: Optional[int] = None) -> None:
        """Forget all objects and memory (the model and the captured steps stay); the frame count
        restarts, and with it, on the CPU, the Monte-Carlo dropout masks (seeded by ``seed`` and
        the frame), as in a new tracker. ``num_frames_hint``:
        see ``__init__``; offline tools pass each clip's length to compare with the official predictor.
        Frames still in flight can be collected afterwards; they leave the new stream alone."""
        self._require_model()
        num_frames = validate_num_frames_hint(num_frames_hint) or STREAM_LENGTH
        self.objects.clear()
        self.bank.clear()
        self.bank.set_num_frames(num_frames)
        self._epoch += 1
        self._reset_frame_state()

    def release_graphs(self) -> None:
        """Free the captured steps and their memory pools (they are captured again on demand)."""
        self.runner.clear()
        if self.device.type == "cuda":
            synchronize(self.device)
            torch.cuda.empty_cache()

    def release(self) -> None:
        """Drop the model and free cached GPU memory (the tracker is unusable afterwards; a
        second call does nothing)."""
        if self.model is None:
            return
        self.reset()
        self.model = None
        self.runner.clear()
        self.bank = None
        if self._auto_prompter is not None:
            self._auto_prompter.release()
            self._auto_prompter = None
        if self._clip is not None:
            self._clip.release()
            self._clip = None
        self._clip_patches = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def remove_object(self, obj_id: int) -> None:
        obj_id = validate_object_id(obj_id)
        if obj_id not in self.objects:
            raise InputError(f"unknown object id {obj_id}; tracked: {self.object_ids}")
        row = self.objects.pop(obj_id).row
        self.bank.remove_row(row)
        for obj in self.objects.values():
            if obj.row > row:
                obj.row -= 1

    def track(self, image: np.ndarray) -> FrameResult:
        """Make ``image`` the current frame and propagate every tracked object onto it."""
        return self.submit(image).result()

    def submit(self, image: np.ndarray) -> PendingFrame:
        """Start tracking ``image`` and return without waiting for the masks: the host can stage
        the next frame while the GPU works on this one. ``track(image)`` is ``submit(image).result()``."""
        image = validate_image(image)
        self._require_model()
        t0 = time.perf_counter()
        self._start_frame(image)
        pending = PendingFrame(self, self._t, image.shape[:2], t0)
        self._forget_gone_frames()
        self._in_flight.append(weakref.ref(pending))  # (a frame dropped uncollected just goes)
        if not self.objects:  # the encoder runs lazily, when a prompt arrives
            pending._context = self._frame_context()
            return pending
        rows = slice(0, self.bank.rows)
        plan, layout = self._plan(rows)
        staged = self._staged_frame()
        eager = self.runner.mode == "eager"
        timer = self._step_timer(eager)
        step = functools.partial(self.model.track_objects, bank=self.bank, plan=plan,
                                 router=self.router, frame_idx=self._t)
        new_steps = self.runner.new_steps
        with self._inference():
            start = (record_event(self.device, enable_timing=True)  # the step's gpu_ms
                     if self.device.type == "cuda" else None)
            outs = self.runner.run(
                (plan, tuple(staged.shape), staged.dtype, self._bank_generation),
                step, {"frame": staged, **layout.inputs()}, preserve=self.bank.preserved,
                eager_fn=functools.partial(step, timer=timer) if eager else None)
            self.stager.mark_consumed(staged)
            self.bank.commit_tracked(self._t, rows)
            self._backbone = {"backbone_fpn": [outs[f"fpn{i}"] for i in range(3) if f"fpn{i}" in outs],
                              "vision_pos_enc": [outs[f"vpe{i}"] for i in range(3) if f"vpe{i}" in outs]}
            pending._objects = dict(self.objects)
            pending._tokens = {o: plan.keep for o in self.objects}
            pending._timer = timer
            if start is not None:
                pending._gpu_events = (start, record_event(self.device, enable_timing=True))
            self._to_host(pending, outs, with_memory_idx=self.bank.k < self._num_tokens)
            pending._context = dict(self._frame_context(), step_mode=self.runner.last_mode,
                                    bank_full=self.bank.reads_full(layout))
            self._refresh_texts()
        if self.runner.new_steps != new_steps and uses_compiled_modules(self.model):
            release_compile_workers()  # a new step was just compiled and captured
        return pending

    def add_prompt(self, obj_id: int, points: Optional[Sequence] = None,
                   labels: Optional[Sequence] = None, box: Optional[Sequence] = None,
                   mask: Optional[np.ndarray] = None, text: Optional[str] = None,
                   image: Optional[np.ndarray] = None, restart: bool = False) -> FrameResult:
        """Add object ``obj_id`` or refine it on the current frame (``image`` first tracks a new
        frame). Clicks on the same frame accumulate; a box or mask replaces earlier clicks.
        ``restart=True`` starts a tracked ``obj_id`` over from this prompt alone (its memory is
        dropped), but only once the prompt is accepted: a refused prompt leaves it as it was."""
        self._require_model()
        obj_id = validate_object_id(obj_id)
        text = validate_text(text, self.cfg.max_text_length)
        if not isinstance(restart, (bool, np.bool_)):  # ("no" would be truthy: a restart)
            raise InputError(f"restart must be True or False, got {type(restart).__name__}")
        if points is None and box is None and mask is None and text is None:
            raise InputError("a prompt needs points, a box, a mask or a text")
        if (points is None) != (labels is None):
            raise InputError("points and labels must be given together")
        check_prompt_kinds(points is not None, box is not None, mask is not None)
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
        mask_input = self._mask_input(mask_arr) if mask_arr is not None else None
        if text is not None and self.cfg.text_mode == "none" and pts is None and bbox is None \
                and mask_arr is None:
            raise InputError("a text-only prompt needs text_mode clip_ridge or paper_lsq")
        known = None if restart else self.objects.get(obj_id)
        if pts is not None and known is not None and bbox is None and image is None \
                and known.point_frame == self._t and known.point_inputs is not None:
            total = known.point_inputs["point_labels"].shape[1] + pts.shape[0]
            if total > MAX_POINTS:
                raise InputError(f"object {obj_id} would have {total} clicks on this frame; at most "
                                 f"{MAX_POINTS} (start a new frame or send a box)")

        if image is not None:
            if text is not None and self.cfg.text_mode != "none":
                # encoded before the frame is taken: a text CLIP refuses (over its context, no
                # weights) leaves the stream as it was; the fit below finds it in the text cache
                with self._inference():
                    self._clip_encoder().encode_text([text])
            self.track(image)
        timer = StageTimer(str(self.device))
        auto = []
        with timer.stage("total"), self._inference():
            backbone = self._current_backbone(timer)
            known = None if restart else self.objects.get(obj_id)
            if text is not None and known is not None and text == known.text:
                text_state = known.text_state  # same text again: keep the fitted map
            else:
                text_state = self._fit_text(text) if text is not None else None
            if pts is None and bbox is None and mask_input is None:
                if known is not None:  # text for an existing object: only the router changes
                    self._set_text(known, text, text_state)
                    return self._current_result(timer, auto_prompted=[])
                click = self._text_click(text)
                pts, lab = np.asarray([click], np.float32), np.asarray([1], np.int32)
                auto = [obj_id]
                LOG.info("object %d started from text %r with an automatic click at %s",
                         obj_id, text, click)
            if restart and obj_id in self.objects:  # the prompt is accepted: drop the old one
                self.remove_object(obj_id)
            obj = known or _ObjectState(obj_id, row=self.bank.add_row(), first_frame=self._t)
            try:
                if text is not None:
                    self._set_text(obj, text, text_state)
                self._prompt(obj, backbone, pts, lab, bbox, mask_input, timer)
            except Exception:
                if known is None:
                    self.bank.remove_row(obj.row)
                raise
            self.objects[obj_id] = obj
        return self._current_result(timer, auto_prompted=auto)

    def auto_prompt(self, obj_id: int, image: Optional[np.ndarray] = None) -> FrameResult:
        """Start ``obj_id`` with no user input (paper §3.3): the most object-like region, its
        caption, a concise phrase, then its distance-transform click + the phrase through
        ``add_prompt``. ``image`` first becomes the current frame. The work and the ``auto_*``
        configuration live in ``core/auto_prompt.py``; ``result.auto_prompt`` says what was chosen."""
        from .auto_prompt import AutoPrompter

        obj_id = validate_object_id(obj_id)
        self._require_model()
        if self._auto_prompter is None:
            self._auto_prompter = AutoPrompter(self.cfg, self.model)
        taken = ({} if image is not None or not self.objects
                 else self._current_result(StageTimer(str(self.device)), []).masks)
        result = self._auto_prompter.start(self, obj_id, image, current=self._image, taken=taken)
        self.objects[obj_id].auto_phrase = result.auto_prompt.phrase or ""
        return result

    def _step_timer(self, eager: bool) -> Optional[StageTimer]:
        """The stage timer of a tracked frame's step: a replayed graph has no stages to time, and
        on CUDA the timer synchronises around every stage, so only a profiling pass uses it."""
        if eager and (self.device.type != "cuda" or self.profile_stages):
            return StageTimer(str(self.device), annotate=self.profile_stages)
        return None

    def frame_tokens(self, image: np.ndarray):
        """Make ``image`` the current frame without tracking and return its top-level encoder
        tokens [N, C] and grid (H, W): what the router scores (router training, inspection)."""
        image = validate_image(image)
        self._require_model()
        if self.objects:
            raise InputError("frame_tokens needs a tracker without objects (call reset())")
        self._start_frame(image)
        with self._inference():
            self._current_backbone(StageTimer(str(self.device)))
            tokens, grid = self._current_tokens()
        return tokens, tuple(grid)

    def current_result(self, image_shape: Optional[Sequence[int]] = None) -> FrameResult:
        """The current frame's result as the tracker holds it now, without inference: every
        tracked object's mask (after ``remove_object``: without it). With no current frame (none
        tracked yet, or after ``reset()``) a result without objects of ``image_shape`` (H, W)
        (InputError if not given), so a caller can show that frame emptied."""
        self._require_model()
        shape = validate_image_shape(image_shape) if image_shape is not None else None
        if self._image is None:
            if shape is None:
                raise InputError("no current frame: pass image_shape for an empty result")
            return self._make_result(self._t, {}, {}, dict(StageTimer(str(self.device)).ms), {},
                                     {}, None, [], shape=shape)
        return self._current_result(StageTimer(str(self.device)), auto_prompted=[])

    def text_state(self, text: str) -> Optional[TextState]:
        """The router's text signal for ``text`` fitted on the current frame (None: text_mode none)."""
        self._require_model()
        text = validate_text(text, self.cfg.max_text_length)
        if self._image is None:
            raise InputError("no current frame")
        with self._inference():
            self._current_backbone(StageTimer(str(self.device)))
            return self._fit_text(text)

    def memory_bank_size(self) -> Dict[str, int]:
        """Frames with stored memory features, stored tokens, and bytes of the bank's tensors
        for the tracked objects (constant while the objects and the keep ratio stay)."""
        self._require_model()
        frames, tokens = self.bank.stored()
        return {"frames": frames, "tokens": tokens, "bytes": self.bank.nbytes()}

    # ----------------------------------------------------------------------------- internals
    def _reset_frame_state(self) -> None:
        self._t = -1
        self._image: Optional[np.ndarray] = None
        self._clip_patches: Optional[Tuple[int, torch.Tensor]] = None  # (frame, CLIP patch features)
        self._staged: Optional[torch.Tensor] = None
        self._backbone: Optional[dict] = None
        self._last_finished = -1
        self._in_flight: "deque[weakref.ref]" = deque()  # submitted frames of this stream, in order

    def _warn_without_clip_weights(self) -> None:
        """Texts need CLIP weights; clicks, boxes and masks do not, so a tracker without them is
        built, and says now (the node's configure) that text prompts will be refused."""
        from .clip_text import require_clip_weights

        if self.cfg.text_mode == "none":
            return
        try:
            require_clip_weights(self.cfg.clip_model, self.cfg.clip_weights,
                                 self.cfg.allow_random_weights)
        except CheckpointError as exc:
            LOG.warning("text prompts will be refused: %s", exc)

    def _warn_router_mismatches(self, meta: dict) -> None:
        """A router trained on other inputs still loads (it may be what the user has), warned."""
        running = router_inputs(self.cfg.model_cfg, self.cfg.mc_passes, self.cfg.mc_dropout,
                                self.cfg.text_mode, self.cfg.clip_model, self.cfg.image_size)
        for mismatch in router_setting_mismatches(meta, running):
            LOG.warning("router %s was trained with other inputs: %s (its scores do not fit these "
                        "settings; retrain it with them)", self.cfg.router_weights, mismatch)

    def _require_model(self) -> None:
        if self.model is None:
            raise InputError("the tracker was released; create a new one")

    def _bank_changed(self) -> None:
        """The bank's tensors were reallocated: captured steps point at the old ones."""
        self._bank_generation += 1
        self.runner.clear()

    @contextlib.contextmanager
    def _inference(self):
        # cache_enabled=False: cached bf16 weight copies must not outlive a CUDA-graph capture
        autocast = (torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False)
                    if self.device.type == "cuda" and self.cfg.bf16 else contextlib.nullcontext())
        # on_device: the CUDA calls that name no device (torch's, sam2's) target the tracker's
        # cuda:N, not the thread's current device (cuda:0)
        with on_device(self.device), torch.inference_mode(), autocast:
            yield

    def _start_frame(self, image: np.ndarray) -> None:
        self._t += 1
        # a copy (0.04 ms for 960x540): prompts on this frame read it later (the lazy encoder
        # run, CLIP, the automatic prompt), and a caller may refill its buffer meanwhile
        self._image = image.copy()
        self._backbone = None
        self._staged = None  # staged on first use: a frame before any prompt costs nothing
        for obj in self.objects.values():
            if obj.point_frame != self._t:
                obj.point_inputs, obj.point_frame = None, -1

    def _staged_frame(self) -> torch.Tensor:
        """The current frame ready for the device (sam2's preprocessing in pil mode), made once."""
        if self._staged is None:
            self._staged = self.stager.stage(self._image)
        return self._staged

    def _plan(self, rows: slice, compact: Optional[bool] = None,
              prompting: Optional[_ObjectState] = None):
        """The step's static plan and the bank layout it reads; ``compact`` (default: the step runs
        eagerly) reads only the slots that hold memories, a captured step keeps static shapes.
        ``prompting``: an object being prompted, which may not be in ``objects`` yet (its text
        counts too: its first prompt's router call picks the tokens of its conditioning frame)."""
        compact = not self.runner.static_buffers if compact is None else compact
        layout = self.bank.layout(self._t, rows, compact=compact)
        objects = list(self.objects.values()) + ([prompting] if prompting is not None else [])
        has_text = bool(self.bank.text) and any(o.text_state is not None for o in objects)
        plan = StepPlan(shape=layout.shape, masked=layout.masked,
                        keep=num_kept(self._num_tokens, self.keep_ratio),
                        filler=self.cfg.filler, memory_mask_boost=float(self.cfg.memory_mask_boost),
                        text=self.cfg.text_mode if has_text else None,
                        out_hw=tuple(self._image.shape[:2]),
                        threshold=float(self.cfg.mask_threshold),
                        attention_backend=self.cfg.attention_backend)
        return plan, layout

    def _current_backbone(self, timer: StageTimer) -> dict:
        """Encoder output of the current frame (from its tracking step, or computed now)."""
        if self._backbone is None:
            with timer.stage("encoder"):
                self._backbone = self.model.encode_frame(self._staged_frame().to(self.device))
        return self._backbone

    def _current_tokens(self):
        _, feats, _, sizes = self.model._prepare_backbone_features(self._backbone)
        return feats[-1][:, 0].float(), sizes[-1]

    def _mask_input(self, mask_arr: np.ndarray) -> torch.Tensor:
        """A mask prompt at the model's resolution [1, 1, S, S] (as sam2's ``add_new_mask``
        resizes it); one that vanishes there is refused, as an empty mask is."""
        size = self.model.image_size
        m = torch.from_numpy(mask_arr)[None, None].float().to(self.device)
        if m.shape[-2:] != (size, size):
            m = F.interpolate(m, size=(size, size), mode="bilinear", align_corners=False,
                              antialias=True)
            m = (m >= 0.5).float()
        if not bool(m.any()):
            raise InputError(f"the mask prompt ({int(mask_arr.sum())} pixels) vanishes when resized "
                             f"to the model's {size} px input: draw a larger mask or click")
        return m

    def _prompt(self, obj: _ObjectState, backbone: dict, pts, lab, bbox, mask_inputs,
                timer: StageTimer) -> None:
        """One object's prompt on the current frame (see ``PrunedSAM2VideoPredictor.prompt_object``);
        ``mask_inputs`` is a mask already at the model's resolution (``_mask_input``)."""
        t = self._t
        height, width = self._image.shape[:2]
        size = self.model.image_size
        is_init = obj.first_frame == t
        has_output = obj.obj_id in self.objects  # tracked on (or prompted earlier on) this frame
        point_inputs = None
        if mask_inputs is not None:
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
        if has_output and mask_inputs is None:
            prev_logits = torch.clamp(self.bank.prev_logits[obj.row:obj.row + 1], -32.0, 32.0)
        plan, layout = self._plan(slice(obj.row, obj.row + 1), compact=True,  # an eager step
                                  prompting=obj)
        self.model.prompt_object(backbone, self.bank, obj.row, t, is_init, plan, layout, self.router,
                                 point_inputs=point_inputs, mask_inputs=mask_inputs,
                                 prev_logits=prev_logits, timer=timer)
        obj.tokens_kept = self._num_tokens if is_init or mask_inputs is not None else plan.keep
        obj.prompt_frame = t
        if float(self.bank.presence[obj.row]) > 0:  # found on the prompted frame: seen now
            obj.occluded_frames = 0

    # ------------------------------------------------------------------------------- text
    def _clip_encoder(self):
        if self._clip is None:
            from .clip_text import ClipTextEncoder

            self._clip = ClipTextEncoder(self.cfg.clip_model, self.cfg.clip_weights,
                                         device=str(self.device),
                                         allow_random_weights=self.cfg.allow_random_weights,
                                         max_text_length=self.cfg.max_text_length,
                                         seed=self.cfg.seed)
        return self._clip

    @property
    def text_mode(self) -> str:
        """The text mode the router reads: ``cfg.text_mode``, or ``none`` for a loaded router
        trained without texts (``RouterMLP.reads_text``: its text input stays zero, so no text
        map is fitted for it; texts still start objects, from CLIP's own relevance)."""
        mlp = self.router.mlp
        return "none" if mlp is not None and not mlp.reads_text else self.cfg.text_mode

    def _fit_text(self, text: str) -> Optional[TextState]:
        if self.text_mode == "none":
            return None
        clip = self._clip_encoder()
        emb = clip.encode_text([text])[0].to(self.device)
        tokens, grid = self._current_tokens()
        if self.text_mode == "paper_lsq":
            return fit_paper_lsq(tokens, emb, text)
        dense = self._clip_dense(grid=tuple(grid)).to(self.device)
        return fit_clip_ridge(tokens, dense.flatten(1).T.float(), emb, text)

    def _clip_dense(self, grid: Optional[Tuple[int, int]] = None) -> torch.Tensor:
        """The current frame's dense CLIP map (``ClipTextEncoder.dense_image_features``) from one
        CLIP image pass per frame, which a text start, every object's fit and their refreshes
        share."""
        clip = self._clip_encoder()
        if self._clip_patches is None or self._clip_patches[0] != self._t:
            self._clip_patches = (self._t, clip.patch_features(self._image))
        return clip.dense_image_features(self._image, grid=grid, patches=self._clip_patches[1])

    def _set_text(self, obj: _ObjectState, text: Optional[str], state: Optional[TextState]) -> None:
        if state is not obj.text_state or state is None:  # the same map again keeps its age, so
            obj.text_frame = self._t  # clip_refresh_interval still refits it (one fit per frame)
        obj.text, obj.text_state = text, state
        if state is None:
            self.bank.clear_text(obj.row)
            return
        if self.bank.set_text(obj.row, **state.rows(self.model.hidden_dim)):
            self._bank_changed()

    def _refresh_texts(self) -> None:
        """``clip_refresh_interval``: refit an object's SAM2->CLIP map on the current frame every
        N frames (a CLIP image pass), so the text signal follows appearance changes."""
        every = int(self.cfg.clip_refresh_interval)
        if every <= 0:
            return
        for obj in self.objects.values():
            if obj.text_state is not None and self._t - obj.text_frame >= every:
                self._set_text(obj, obj.text, self._fit_text(obj.text))

    def _text_click(self, text: str):
        """Text-only start: CLIP relevance on this frame -> best region -> distance-transform click."""
        emb = self._clip_encoder().encode_text([text])[0]
        dense = self._clip_dense()  # [D, h, w]
        rel = torch.einsum("dhw,d->hw", dense.float(), emb.float().to(dense.device))
        rel = rel.float().cpu().numpy()  # autocast may hand back bf16, which numpy cannot take
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
    def _to_host(self, pending: PendingFrame, outs: Dict[str, torch.Tensor],
                 with_memory_idx: bool) -> None:
        """Enqueue the copy of the frame's outputs into pinned host buffers (two sets, used in
        turn) and record an event; off CUDA just keep references."""
        names = ["bits", "presence"] + (["memory_idx"] if with_memory_idx else [])
        if self.device.type != "cuda":
            pending._host = {n: outs[n] for n in names}
            return
        self._host_turn ^= 1
        previous = self._host_slots[self._host_turn]
        if previous is not None:
            previous._materialize()  # its data leaves the buffers we are about to reuse
        slot = self._pinned[self._host_turn]
        for n in names:
            src = outs[n]
            buf = slot.get(n)
            if buf is None or buf.shape != src.shape or buf.dtype != src.dtype:
                buf = slot[n] = torch.empty(src.shape, dtype=src.dtype).pin_memory()
            buf.copy_(src, non_blocking=True)
            pending._host[n] = buf
        pending._event = record_event(self.device)  # on the stream of the copies above
        self._host_slots[self._host_turn] = pending

    def _finish(self, pending: PendingFrame) -> FrameResult:
        """Build a tracked frame's result from its host arrays."""
        self._require_model()
        current = pending.epoch == self._epoch  # else submitted before a reset(): its objects are gone
        if current:
            self._finish_earlier(pending)
        if current and pending.frame_index <= self._last_finished:
            raise InputError("collect frame results in the order the frames were submitted")
        if current:
            self._last_finished = pending.frame_index
        arrays = pending._arrays or {}
        ids = list(pending._objects)
        masks = BitMasks(arrays["bits"], ids) if ids else {}
        scores = {o: float(arrays["presence"][i]) for i, o in enumerate(ids)}
        kept = ({o: token_grid(arrays["memory_idx"][i], self.bank.grid) for i, o in enumerate(ids)}
                if "memory_idx" in arrays else {})
        stage_ms = dict(pending._timer.ms) if pending._timer is not None else {}
        stage_ms["total"] = (time.perf_counter() - pending._t0) * 1e3
        # the objects of this frame still tracked: not removed since, nor added again under their id
        live = [o for o in ids if self.objects.get(o) is pending._objects[o]]
        logits = (self._logits(live, pending._shape) if self.return_logits and live and current
                  else None)
        result = self._make_result(pending.frame_index, masks, scores, stage_ms, pending._tokens,
                                   kept, logits, auto_prompted=[], shape=pending._shape,
                                   context=pending._context)
        if pending._gpu_events is not None:
            result.stats.gpu_ms = float(pending._gpu_events[0].elapsed_time(pending._gpu_events[1]))
        if not current:
            return result
        visible = result.visible
        for obj_id in live:
            obj = self.objects[obj_id]
            if obj.prompt_frame >= pending.frame_index:
                continue  # a prompt on this frame came after its tracking and holds the newer state
            obj.occluded_frames = 0 if visible[obj_id] else obj.occluded_frames + 1
            # what a prompt's result on this frame reports for it
            obj.tokens_kept = pending._tokens.get(obj_id, obj.tokens_kept)
        result.stats.occluded_frames.update({o: self.objects[o].occluded_frames for o in live})
        return result

    @staticmethod
    def _gone(ref: weakref.ref) -> bool:
        """A queued frame dropped uncollected, or whose result is already built."""
        frame = ref()
        return frame is None or frame._result is not None

    def _forget_gone_frames(self) -> None:
        """Drop the queue's entries of gone frames: a caller that never collects results (only
        prompts, say) would grow it by one entry a frame. From the front every time; the whole
        queue once it is long (a live uncollected frame at the front stops the front's cleanup)."""
        while self._in_flight and self._gone(self._in_flight[0]):
            self._in_flight.popleft()
        if len(self._in_flight) > IN_FLIGHT_PRUNE_AT:
            self._in_flight = deque(r for r in self._in_flight if not self._gone(r))

    def _finish_earlier(self, pending: PendingFrame) -> None:
        """Build the results of the frames submitted before ``pending`` and not collected yet
        (each keeps its own for its ``result()``): occlusion counts follow the frames in order."""
        while self._in_flight:
            earlier = self._in_flight[0]()
            if earlier is pending or self._gone(self._in_flight[0]):
                self._in_flight.popleft()
                if earlier is pending:
                    return
                continue
            earlier.result()  # (its own _finish takes it off the queue: it is first)

    def _logits(self, ids: List[int], shape) -> Dict[int, np.ndarray]:
        """Full-resolution mask logits of the current frame (tests and offline comparisons)."""
        rows = [self.objects[o].row for o in ids]
        with self._inference():
            low = self.bank.prev_logits[rows].float()
            full = F.interpolate(low, size=tuple(shape), mode="bilinear", align_corners=False)
            full = full[:, 0].float().cpu().numpy()
        return {o: full[i] for i, o in enumerate(ids)}

    def _current_result(self, timer: StageTimer, auto_prompted: List[int]) -> FrameResult:
        """Every object's current mask on the current frame (after a prompt), eagerly."""
        ids = list(self.objects)
        masks, scores = {}, {}
        shape = self._image.shape[:2]
        if ids:
            with self._inference():
                low = self.bank.prev_logits[:self.bank.rows]
                bits = pack_mask_bits(low, shape, float(self.cfg.mask_threshold)).cpu().numpy()
                presence = self.bank.presence[:self.bank.rows].float().cpu().numpy()
            masks = BitMasks(bits, ids)
            scores = {o: float(presence[self.objects[o].row]) for o in ids}
        logits = self._logits(ids, shape) if self.return_logits and ids else None
        tokens = {o: self.objects[o].tokens_kept for o in ids}
        rows = {self.objects[o].row: o for o in ids}
        kept = {rows[r]: g for r, g in self.bank.frame_token_grids(self._t, len(rows)).items()}
        result = self._make_result(self._t, masks, scores, dict(timer.ms), tokens, kept, logits,
                                   auto_prompted, shape=shape)
        result.stats.occluded_frames.update({o: self.objects[o].occluded_frames for o in ids})
        return result

    def _frame_context(self) -> dict:
        """The tracker's side of a frame's stats (objects, keep ratio, bank, modes), taken when
        the frame is tracked: a result collected later must not report a later state."""
        bank = self.memory_bank_size()
        return dict(
            tokens_total=self._num_tokens, keep_ratio=self.keep_ratio, bank_frames=bank["frames"],
            bank_tokens=bank["tokens"], bank_bytes=bank["bytes"], object_ids=list(self.objects),
            router_mode="dense" if num_kept(self._num_tokens, self.keep_ratio) >= self._num_tokens
            else self.router.mode,
            text_mode=self.cfg.text_mode if any(o.text_state for o in self.objects.values()) else "none",
            step_mode="eager",  # (a tracked frame's step says how it ran: see submit)
            auto_phrases={i: o.auto_phrase for i, o in self.objects.items()
                          if o.auto_phrase is not None})

    def _make_result(self, t, masks, scores, stage_ms, tokens_kept, kept_grids, logits,
                     auto_prompted, shape, context: Optional[dict] = None) -> FrameResult:
        cuda = self.device.type == "cuda"
        for name in ("encoder", "router", "memory_attention", "decoder", "memory_encoder"):
            stage_ms.setdefault(name, 0.0)
        stats = FrameStats(
            frame_index=t, stage_ms=stage_ms, tokens_kept=dict(tokens_kept),
            peak_gpu_memory_bytes=peak_gpu_memory(self.device),
            gpu_memory_bytes=int(torch.cuda.memory_allocated(self.device)) if cuda else 0,
            auto_prompted=auto_prompted, device=str(self.device),
            **(context or self._frame_context()))
        return FrameResult(frame_index=t, masks=masks, scores=scores, stats=stats,
                           logits=logits, kept_tokens=kept_grids, image_shape=tuple(shape))

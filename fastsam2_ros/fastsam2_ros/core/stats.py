"""Per-frame results and statistics of the streaming tracker (plain data, no torch tensors)."""

from __future__ import annotations

import dataclasses
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple

import numpy as np

STAGES = ("encoder", "router", "memory_attention", "decoder", "memory_encoder", "total")
#: The name a profiling pass's stage carries in a torch.profiler trace (``STAGE_ANNOTATION +
#: stage``): the bench sums the kernels launched under it.
STAGE_ANNOTATION = "fastsam2::"


@dataclass
class FrameStats:
    """What one call of the tracker cost and what it kept.

    ``stage_ms`` has every key of ``STAGES`` (ms, wall clock). A tracked frame's stages are timed
    off CUDA only (a CUDA graph has no stages, and timing an eager CUDA step synchronises around
    each one: ``StreamingTracker(profile_stages=True)`` does that for a profiling pass); prompts
    are always timed, synchronised;
    an automatic prompt adds ``auto_proposals``, ``auto_caption``, ``auto_refinement`` (in ``total``).
    Token counts are per object; ``tokens_total`` is the top-level grid size (H*W).
    """

    frame_index: int = -1
    stage_ms: Dict[str, float] = field(default_factory=lambda: {s: 0.0 for s in STAGES})
    tokens_total: int = 0
    tokens_kept: Dict[int, int] = field(default_factory=dict)
    keep_ratio: float = 1.0
    bank_frames: int = 0
    bank_tokens: int = 0
    bank_bytes: int = 0
    peak_gpu_memory_bytes: int = 0
    gpu_memory_bytes: int = 0
    object_ids: List[int] = field(default_factory=list)
    router_mode: str = "dense"  # dense | mlp | training_free
    text_mode: str = "none"  # clip_ridge | paper_lsq | none (per the objects that have text)
    step_mode: str = "eager"  # cuda_graph (replayed captured step: only "total" is timed) | eager
    gpu_ms: float = 0.0  # device time of the tracking step (CUDA events; 0 off CUDA)
    #: a tracking step that read a full memory bank: no empty or padded slot, attention without a
    #: key mask (the steady state of a stream; False while the bank fills and for prompts)
    bank_full: bool = False
    auto_prompted: List[int] = field(default_factory=list)  # objects started on this call without a click
    #: obj_id -> phrase of objects started by the automatic prompt (every frame, while tracked;
    #: "" = started without a phrase: no caption model)
    auto_phrases: Dict[int, str] = field(default_factory=dict)
    #: obj_id -> consecutive frames the object has been invisible (presence logit <= 0); 0 = visible
    occluded_frames: Dict[int, int] = field(default_factory=dict)
    device: str = "cpu"

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        for key in ("tokens_kept", "auto_phrases", "occluded_frames"):
            d[key] = {str(k): v for k, v in getattr(self, key).items()}
        return d

    def add_stage_times(self, earlier: "FrameStats") -> None:
        """Count the stages of an ``earlier`` call made for the same frame (a tracking call before
        a prompt, prompts that waited for the frame) into these stats, ``total`` included."""
        for k, v in earlier.stage_ms.items():
            self.stage_ms[k] = self.stage_ms.get(k, 0.0) + v

    @property
    def tokens_kept_mean(self) -> float:
        return float(np.mean(list(self.tokens_kept.values()))) if self.tokens_kept else 0.0


class BitMasks(Mapping):
    """obj_id -> bool [H, W], decoded on access from packed bit planes uint8 [ceil(B/8), H, W]
    (object i of ``ids`` is bit i % 8 of plane i // 8): the tracker copies one small image per
    frame to the host, and a consumer that only needs the label image never decodes masks."""

    def __init__(self, bits: np.ndarray, ids: List[int]) -> None:
        self.bits = bits
        self.ids = list(ids)
        self._row = {obj_id: i for i, obj_id in enumerate(self.ids)}
        self._cache: Dict[int, np.ndarray] = {}

    @classmethod
    def pack(cls, masks: Mapping[int, np.ndarray]) -> "BitMasks":
        """Pack bool [H, W] masks (objects in the mapping's order) the way the tracker's step
        does on the device: test doubles and the node benchmark's stand-in tracker use it."""
        ids = list(masks)
        first = np.asarray(masks[ids[0]])
        bits = np.zeros(((len(ids) + 7) // 8,) + first.shape, np.uint8)
        for i, obj_id in enumerate(ids):
            bits[i // 8] |= np.asarray(masks[obj_id], dtype=np.uint8) << np.uint8(i % 8)
        return cls(bits, ids)

    def __getitem__(self, obj_id: int) -> np.ndarray:
        mask = self._cache.get(obj_id)
        if mask is None:
            row = self._row[obj_id]
            plane = self.bits[row // 8]
            mask = plane.view(np.bool_) if len(self.ids) == 1 else (plane & (1 << (row % 8))) != 0
            self._cache[obj_id] = mask
        return mask

    def __iter__(self):
        return iter(self.ids)

    def __len__(self) -> int:
        return len(self.ids)

    def union_image(self, out: Optional[np.ndarray] = None) -> np.ndarray:
        """uint8 [H, W] 255 where any object is, 0 elsewhere, written into ``out`` if given
        (e.g. a message's buffer), from the (OR-ed) bit planes."""
        plane = self.bits[0] if self.bits.shape[0] == 1 else np.bitwise_or.reduce(self.bits, axis=0)
        out = np.empty(plane.shape, np.uint8) if out is None else out
        np.not_equal(plane, 0, out=out.view(np.bool_))
        np.multiply(out, np.uint8(255), out=out)
        return out

    def label_image(self, out: Optional[np.ndarray] = None) -> np.ndarray:
        """uint16 [H, W]: the highest id among the objects on a pixel, 0 where there is none —
        the pixels of painting the decoded masks in ascending id order, read from the bits
        without decoding them: one object is its plane times its id; several are, per plane,
        a table look-up (a byte of bits -> the highest id among its set bits), then the maximum
        over planes. Written into ``out`` if given."""
        out = np.empty(self.bits.shape[1:], np.uint16) if out is None else out
        if len(self.ids) == 1:  # the plane holds 0/1
            return np.multiply(self.bits[0], np.uint16(self.ids[0]), out=out)
        import cv2

        for p in range(self.bits.shape[0]):
            table = self._label_table(p)
            if p == 0:
                cv2.LUT(self.bits[0], table, dst=out)
            else:
                np.maximum(out, cv2.LUT(self.bits[p], table), out=out)
        return out

    def _label_table(self, plane: int) -> np.ndarray:
        """uint16 [256]: byte value of ``plane`` -> the highest id among the objects of its set bits."""
        ids = self.ids[plane * 8:(plane + 1) * 8]
        values = np.arange(256)
        table = np.zeros(256, np.uint16)
        for bit, obj_id in enumerate(ids):
            has = (values >> bit) & 1 == 1
            table[has] = np.maximum(table[has], obj_id)
        return table


@dataclass
class FrameResult:
    """Masks of every tracked object on one frame, at the input image's resolution."""

    frame_index: int
    masks: Mapping[int, np.ndarray]  # obj_id -> bool [H, W] (a dict or lazily decoded BitMasks)
    scores: Dict[int, float]  # obj_id -> object-presence logit (> 0: visible)
    stats: FrameStats
    logits: Optional[Dict[int, np.ndarray]] = None  # obj_id -> float32 [H, W] (only if asked)
    #: obj_id -> bool [gh, gw]: top-level tokens stored in the memory bank for this frame
    #: (objects tracked densely on this frame are absent)
    kept_tokens: Dict[int, np.ndarray] = field(default_factory=dict)
    #: the call that auto-prompted: region, click, caption, phrase, stage times
    #: (``core.auto_prompt.AutoPromptResult``); None otherwise
    auto_prompt: Optional[Any] = None
    #: (H, W) of the input image: the size of the empty images of a frame without objects
    image_shape: Optional[Tuple[int, int]] = None

    @property
    def object_ids(self) -> List[int]:
        return sorted(self.masks)

    @property
    def visible(self) -> Dict[int, bool]:
        """obj_id -> SAM 2 says the object is present (presence logit > 0); an occluded object
        keeps its id and gets an empty mask."""
        return {obj_id: score > 0.0 for obj_id, score in self.scores.items()}

    def union_mask(self, shape: Optional[tuple] = None, out: Optional[np.ndarray] = None) -> np.ndarray:
        """uint8 0/255 union of all object masks (written into ``out`` [H, W] if given)."""
        if self._bits_fit(shape):
            return self.masks.union_image(out)
        out = _zeroed(out, shape or self._shape(), np.uint8)
        for m in self.masks.values():
            out[m] = 255
        return out

    def label_image(self, shape: Optional[tuple] = None, out: Optional[np.ndarray] = None) -> np.ndarray:
        """uint16 label image: pixel = object id, 0 = background. Higher ids win overlaps.
        Written into ``out`` [H, W] if given."""
        if self._bits_fit(shape):
            return self.masks.label_image(out)
        out = _zeroed(out, shape or self._shape(), np.uint16)
        for obj_id in sorted(self.masks):
            out[self.masks[obj_id]] = obj_id
        return out

    def _bits_fit(self, shape: Optional[tuple]) -> bool:
        """The masks are packed bits of the requested size (the fast paths read the bits)."""
        return isinstance(self.masks, BitMasks) and (
            shape is None or tuple(shape) == self.masks.bits.shape[1:])

    def _shape(self) -> tuple:
        if self.image_shape is not None:
            return tuple(self.image_shape)
        for m in self.masks.values():
            return m.shape
        raise ValueError("no masks and no image_shape: pass shape= explicitly")


def _zeroed(out: Optional[np.ndarray], shape: tuple, dtype) -> np.ndarray:
    if out is None:
        return np.zeros(shape, dtype=dtype)
    out[...] = 0
    return out


class StageTimer:
    """Accumulates wall-clock milliseconds per stage; synchronises CUDA so GPU time is counted.
    ``annotate``: each stage is also a ``torch.profiler.record_function`` range named
    ``STAGE_ANNOTATION + stage`` (a profiling pass: the bench sums each stage's kernels)."""

    def __init__(self, device: str = "cpu", annotate: bool = False) -> None:
        self.device = str(device)
        self.cuda = self.device.startswith("cuda")
        self.annotate = bool(annotate)
        self.ms: Dict[str, float] = {s: 0.0 for s in STAGES}

    def _sync(self) -> None:
        if self.cuda:  # the timer's device (cuda:N), not the thread's current one
            from .cuda_device import synchronize

            synchronize(self.device)

    @contextmanager
    def stage(self, name: str, exclude: tuple = ()) -> Iterator[None]:
        """Time the block as ``name``, minus the time of the ``exclude`` stages nested in it."""
        self._sync()
        nested = sum(self.ms.get(s, 0.0) for s in exclude)
        t0 = time.perf_counter()
        try:
            if self.annotate:
                from torch.profiler import record_function

                with record_function(STAGE_ANNOTATION + name):
                    yield
            else:
                yield
        finally:
            self._sync()
            spent = (time.perf_counter() - t0) * 1e3 - (sum(self.ms.get(s, 0.0) for s in exclude) - nested)
            self.ms[name] = self.ms.get(name, 0.0) + max(0.0, spent)


def _is_cuda(device) -> bool:
    return str(device).startswith("cuda")


def reset_peak_gpu_memory(device) -> None:
    """Start a new peak-memory measurement on a CUDA device (no-op elsewhere)."""
    if _is_cuda(device):
        import torch

        from .cuda_device import synchronize

        synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_gpu_memory(device) -> int:
    """Peak allocated CUDA bytes since the last reset; 0 off CUDA."""
    if not _is_cuda(device):
        return 0
    import torch

    return int(torch.cuda.max_memory_allocated(device))

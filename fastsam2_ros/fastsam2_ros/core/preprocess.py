"""Frame preprocessing: RGB uint8 -> SAM 2's normalised square input.

Two paths with one meaning (resize the whole frame to ``size`` x ``size``, scale to [0, 1],
ImageNet mean/std):

* ``pil`` — exactly sam2's JPEG loader (``Image.resize``, whose default filter is bicubic, then
  float64 normalisation); used on the CPU and by the equivalence tests.
* ``device`` — PIL's resize as integer tensor ops on the model's device, bit for bit: PIL's
  bicubic coefficients in fixed point (22 fractional bits), one pass per axis clipped to uint8
  levels, in the order the installed Pillow takes, then sam2's float normalisation (looked up:
  a table of the 256 levels' normalised values, computed by the same float ops). It runs
  inside the captured per-frame step, so a frame costs one uint8 upload instead of ~25 ms of
  host work. Exactness
  matters under bf16: a float resize that is off by one level on 0.001% of the values moved SAM 2
  large's masks by up to 1.2% IoU on a GPU, where the exact resize gives 0 differing pixels.

``FrameStager`` owns the host side of the upload: a pair of pinned buffers per frame size, so the
copy of frame t+1 can start while frame t is still in flight.
"""

from __future__ import annotations

import functools
import logging
from collections import OrderedDict
from typing import Dict, Optional, Tuple

import numpy as np
import torch
from PIL import Image

from .cuda_device import record_event
from .step_runner import read_by_captured_step

LOG = logging.getLogger(__name__)
IMG_MEAN = (0.485, 0.456, 0.406)
IMG_STD = (0.229, 0.224, 0.225)
_PIL_MEAN = torch.tensor(IMG_MEAN, dtype=torch.float32)[:, None, None]
_PIL_STD = torch.tensor(IMG_STD, dtype=torch.float32)[:, None, None]
_DEVICE_CONSTANTS: Dict[str, Tuple[torch.Tensor, torch.Tensor]] = {}


def resolve_preprocess(mode: str, device: torch.device) -> str:
    """``auto`` -> ``device`` on CUDA (the fast path), ``pil`` elsewhere (faster on a CPU)."""
    if mode == "auto":
        return "device" if device.type == "cuda" else "pil"
    return mode


def preprocess_pil(image: np.ndarray, size: int) -> torch.Tensor:
    """RGB uint8 -> normalised float [3, size, size], exactly as sam2's frame loader does it
    (PIL resize of the whole frame to a square, /255, ImageNet mean/std)."""
    resized = np.asarray(Image.fromarray(image).resize((size, size)))
    tensor = torch.from_numpy(resized / 255.0).permute(2, 0, 1).to(torch.float32)
    return (tensor - _PIL_MEAN) / _PIL_STD


def _constants(device: torch.device) -> Tuple[torch.Tensor, torch.Tensor]:
    """The normalised value of every level per channel, [3, 256] float32, and the channel index
    [3, 1, 1] that picks a row, on ``device``, made once (never inside a CUDA-graph capture: no
    host copies there). The table holds what sam2's loader computes for a level, the same float
    ops in the same order (float64 level/255 cast to float32, minus mean, over std), so one
    lookup replaces three full-frame kernels and equals them bit for bit."""
    key = str(device)
    if key not in _DEVICE_CONSTANTS:
        levels = torch.from_numpy(np.arange(256) / 255.0).to(torch.float32)
        table = (levels[None, None, :] - _PIL_MEAN) / _PIL_STD  # [3, 1, 256], as preprocess_pil
        _DEVICE_CONSTANTS[key] = (table[:, 0].contiguous().to(device),
                                  torch.arange(3).view(3, 1, 1).to(device))
    return _DEVICE_CONSTANTS[key]


def prepare_device_constants(device: torch.device) -> None:
    """Create the device constants ahead of a capture."""
    _constants(device)


#: PIL's fixed-point precision of 8-bit resampling (Resample.c: 32 - 8 - 2)
_PRECISION_BITS = 22
#: Frame sizes whose resize taps, pass order and pinned buffers are kept (least recently used go
#: first): a camera whose size keeps changing must not grow them without bound.
SIZES_KEPT = 8


def _bicubic(x: np.ndarray) -> np.ndarray:
    """PIL's bicubic filter (a = -0.5), same operations in the same order (float64)."""
    a = -0.5
    x = np.abs(x)
    near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1
    far = (((x - 5) * x + 8) * x - 4) * a
    return np.where(x < 1.0, near, np.where(x < 2.0, far, 0.0))


def pil_bicubic_coefficients(in_size: int, out_size: int) -> Tuple[np.ndarray, np.ndarray]:
    """PIL's resampling taps for one axis (``precompute_coeffs`` + ``normalize_coeffs_8bpc``):
    source indices [out, ksize] (clamped; unused taps weigh 0) and int32 weights in fixed point."""
    scale = float(in_size) / out_size
    filterscale = max(scale, 1.0)
    support = 2.0 * filterscale
    ksize = int(np.ceil(support)) * 2 + 1
    center = (np.arange(out_size) + 0.5) * scale
    xmin = np.maximum(np.trunc(center - support + 0.5), 0).astype(np.int64)
    xmax = np.minimum(np.trunc(center + support + 0.5), in_size).astype(np.int64) - xmin
    taps = np.arange(ksize)[None, :]
    used = taps < xmax[:, None]
    w = np.where(used, _bicubic(((taps + xmin[:, None]) - center[:, None] + 0.5) * (1.0 / filterscale)), 0.0)
    total = np.zeros(out_size)
    for t in range(ksize):  # sequential sum, as PIL's loop does it
        total = total + w[:, t]
    w = np.where(total[:, None] != 0.0, w / np.where(total == 0.0, 1.0, total)[:, None], w)
    fixed = w * (1 << _PRECISION_BITS)
    weights = np.trunc(np.where(w < 0, fixed - 0.5, fixed + 0.5)).astype(np.int32)
    index = np.minimum(xmin[:, None] + taps, in_size - 1)
    return index, np.where(used, weights, 0).astype(np.int32)


def _coefficients(in_size: int, out_size: int, device: torch.device):
    """The taps of one axis on ``device``, made once per size (during the warm-up before a capture)
    and kept by every captured step that reads them (the cache drops the least recently used)."""
    taps = _device_coefficients(in_size, out_size, str(device))
    read_by_captured_step(*taps)
    return taps


@functools.lru_cache(maxsize=2 * SIZES_KEPT)  # two axes per size
def _device_coefficients(in_size: int, out_size: int, device: str):
    index, weights = pil_bicubic_coefficients(in_size, out_size)
    return torch.as_tensor(index, device=device), torch.as_tensor(weights, device=device)


def _resample_last_axis(x: torch.Tensor, out_size: int) -> torch.Tensor:
    """One 8-bit pass of PIL's bicubic resample over the last axis of int32 levels ``x``: a gather
    and a fused multiply-add per tap (gathering every tap at once would take a kernel less per tap
    but hold taps x the output: 0.4 GB for a 4K frame). Integer sums are exact in any order:
    |sum| < 1.2 * 255 * 2^22 < 2^31."""
    index, weights = _coefficients(x.shape[-1], out_size, x.device)
    acc = torch.full((*x.shape[:-1], out_size), 1 << (_PRECISION_BITS - 1), dtype=torch.int32,
                     device=x.device)
    for t in range(index.shape[1]):
        acc.addcmul_(x[..., index[:, t]], weights[:, t])
    return torch.bitwise_right_shift(acc, _PRECISION_BITS).clamp_(0, 255)


def _two_passes(x: torch.Tensor, size: int, width_first: bool) -> torch.Tensor:
    """Resample int32 levels [C, H, W] to [C, size, size], one axis after the other."""
    def width(t):
        return t if t.shape[2] == size else _resample_last_axis(t, size)

    def height(t):
        return t if t.shape[1] == size else _resample_last_axis(t.transpose(1, 2), size).transpose(1, 2)

    return height(width(x)) if width_first else width(height(x))


@functools.lru_cache(maxsize=SIZES_KEPT)
def pil_width_first(height: int, width: int, size: int) -> bool:
    """Which pass the installed Pillow runs first for this shape (each pass rounds to uint8, so the
    order changes values). Pillow up to 12 always resamples the width first; Pillow 13 chooses per
    shape. Asked once per frame shape with a noise image of that shape, and cached."""
    noise = np.random.default_rng(0).integers(0, 256, (height, width), dtype=np.uint8)
    want = torch.from_numpy(np.asarray(Image.fromarray(noise).resize((size, size))).astype(np.int32))
    probe = torch.from_numpy(noise).to(torch.int32)[None]
    first = torch.equal(_two_passes(probe, size, True)[0], want)
    if not first and not torch.equal(_two_passes(probe, size, False)[0], want):
        LOG.warning("device preprocessing: neither pass order reproduces this Pillow's resize of "
                    "%dx%d to %d; frames of this shape differ slightly from sam2's loader "
                    "(preprocess: pil is exact)", width, height, size)
        first = True
    return first


def resize_like_pil(frame: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 [H, W, 3] -> int32 levels [3, size, size], equal to the installed Pillow's
    ``Image.resize((size, size))`` (bicubic): two passes, each clipped to uint8 levels."""
    x = frame.permute(2, 0, 1).to(torch.int32)
    return _two_passes(x, size, pil_width_first(x.shape[1], x.shape[2], size))


def preprocess_on_device(frame: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 [H, W, 3] on the device -> normalised float [1, 3, size, size], equal to
    :func:`preprocess_pil` (PIL's resize, then sam2's float64 /255 cast to float32, mean, std)."""
    table, channel = _constants(frame.device)
    return table[channel, resize_like_pil(frame, size).long()][None]


def model_input(frame: torch.Tensor, size: int) -> torch.Tensor:
    """The encoder's [1, 3, size, size] input from a staged frame of either kind: a uint8 [H, W, 3]
    frame (device path) or an already normalised float [3, size, size] tensor (pil path)."""
    if frame.dtype == torch.uint8:
        return preprocess_on_device(frame, size)
    return frame.float().unsqueeze(0)


class FrameStager:
    """Host side of a frame's upload: numpy -> (pinned) tensor that the step copies to the device.

    On CUDA each frame size gets two pinned buffers used in turn; before a buffer is refilled we
    wait for the copy that last read it (an event), so frame t+1 can be staged while frame t's
    copy and step run. Off CUDA the tensor is a zero-copy view of the array, unless ``buffered``
    asks for the CUDA path's buffers (unpinned, no events), so that tests run its logic on the CPU.
    """

    def __init__(self, mode: str, size: int, device: torch.device,
                 buffered: Optional[bool] = None) -> None:
        self.mode = mode
        self.size = int(size)
        self.device = device
        self.pinned = device.type == "cuda"
        self.buffered = self.pinned if buffered is None else bool(buffered)
        self._buffers: "OrderedDict[Tuple[int, ...], list]" = OrderedDict()
        self._turn = 0

    def stage(self, image: np.ndarray) -> torch.Tensor:
        # device mode: the uint8 frame as it is (a ROS message's data is a read-only array)
        host = (np.ascontiguousarray(image) if self.mode == "device"
                else preprocess_pil(image, self.size))
        if not self.buffered:
            return torch.from_numpy(host) if isinstance(host, np.ndarray) else host
        shape = tuple(host.shape)
        pair = self._buffers.get(shape)
        if pair is None:
            dtype = torch.uint8 if isinstance(host, np.ndarray) else host.dtype  # (validate_image)
            pair = [[self._new_buffer(shape, dtype), None] for _ in range(2)]
            self._buffers[shape] = pair
            while len(self._buffers) > SIZES_KEPT:  # the oldest size, once its copies are done
                for _, event in self._buffers.popitem(last=False)[1]:
                    if event is not None:
                        event.synchronize()
        self._buffers.move_to_end(shape)
        self._turn ^= 1
        slot = pair[self._turn]
        if slot[1] is not None:
            slot[1].synchronize()  # the copy that last read this buffer is done
        if isinstance(host, np.ndarray):  # copied by numpy: torch warns on a view of a read-only array
            slot[0].numpy()[...] = host
        else:
            slot[0].copy_(host)
        return slot[0]

    def _new_buffer(self, shape: Tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        """A staging buffer outlives the call that made it, which may run under inference mode (a
        frame's first use can be a prompt). Made as a normal tensor, it can be refilled in either
        mode: an inference tensor refuses an in-place copy outside inference mode."""
        with torch.inference_mode(False):
            buffer = torch.empty(shape, dtype=dtype)
            return buffer.pin_memory() if self.pinned else buffer

    def mark_consumed(self, staged: torch.Tensor) -> None:
        """Record (on the device's current stream, where the copy runs) that the device copy of
        ``staged`` has been enqueued."""
        if not self.pinned:
            return
        for pair in self._buffers.values():
            for slot in pair:
                if slot[0] is staged:
                    slot[1] = record_event(self.device)
                    return

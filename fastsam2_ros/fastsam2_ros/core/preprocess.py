"""Frame preprocessing: RGB uint8 -> SAM 2's normalised square input.

Two paths with one meaning (resize the whole frame to ``size`` x ``size``, scale to [0, 1],
ImageNet mean/std):

* ``pil`` — exactly sam2's JPEG loader (``Image.resize``, whose default filter is bicubic, then
  float64 normalisation); used on the CPU and by the equivalence tests.
* ``device`` — the same resize as tensor ops on the model's device, done like PIL does it: an
  antialiased bicubic pass over the width, rounded and clipped to uint8 levels, then one over the
  height (it matches PIL to within one level on 0.001% of the values of a 960x540 frame). It runs
  inside the captured per-frame step, so a frame costs one uint8 upload instead of ~25 ms of host
  work.

``FrameStager`` owns the host side of the upload: a pair of pinned buffers per frame size, so the
copy of frame t+1 can start while frame t is still in flight.
"""

from __future__ import annotations

from typing import Dict, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

IMG_MEAN = (0.485, 0.456, 0.406)
IMG_STD = (0.229, 0.224, 0.225)
_PIL_MEAN = torch.tensor(IMG_MEAN, dtype=torch.float32)[:, None, None]
_PIL_STD = torch.tensor(IMG_STD, dtype=torch.float32)[:, None, None]
_DEVICE_CONSTANTS: Dict[str, Tuple[torch.Tensor, torch.Tensor]] = {}


def resolve_preprocess(mode: str, device: torch.device) -> str:
    """``auto`` -> ``device`` on CUDA (the fast path), ``pil`` elsewhere (bit-exact with sam2)."""
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
    """Mean/std on ``device``, made once (never inside a CUDA-graph capture: no host copies there)."""
    key = str(device)
    if key not in _DEVICE_CONSTANTS:
        _DEVICE_CONSTANTS[key] = (_PIL_MEAN.to(device)[None], _PIL_STD.to(device)[None])
    return _DEVICE_CONSTANTS[key]


def prepare_device_constants(device: torch.device) -> None:
    """Create the device constants ahead of a capture."""
    _constants(device)


def _resize_like_pil(x: torch.Tensor, size) -> torch.Tensor:
    """One pass of PIL's bicubic resample: antialiased, rounded and clipped to uint8 levels."""
    x = F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=True)
    return x.round().clamp(0.0, 255.0)


def preprocess_on_device(frame: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 [H, W, 3] on the device -> normalised float [1, 3, size, size] (PIL's resize)."""
    mean, std = _constants(frame.device)
    x = frame.permute(2, 0, 1)[None].float()
    x = _resize_like_pil(x, (x.shape[-2], size))  # PIL resamples the width first ...
    x = _resize_like_pil(x, (size, size))  # ... then the height
    return (x / 255.0 - mean) / std


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
    copy and step run. Off CUDA the tensor is a zero-copy view of the array.
    """

    def __init__(self, mode: str, size: int, device: torch.device) -> None:
        self.mode = mode
        self.size = int(size)
        self.device = device
        self.pinned = device.type == "cuda"
        self._buffers: Dict[Tuple[int, ...], list] = {}
        self._turn = 0

    def stage(self, image: np.ndarray) -> torch.Tensor:
        host = (torch.from_numpy(np.ascontiguousarray(image)) if self.mode == "device"
                else preprocess_pil(image, self.size))
        if not self.pinned:
            return host
        pair = self._buffers.get(tuple(host.shape))
        if pair is None:
            pair = [[torch.empty(host.shape, dtype=host.dtype).pin_memory(), None] for _ in range(2)]
            self._buffers[tuple(host.shape)] = pair
        self._turn ^= 1
        slot = pair[self._turn]
        if slot[1] is not None:
            slot[1].synchronize()  # the copy that last read this buffer is done
        slot[0].copy_(host)
        return slot[0]

    def mark_consumed(self, staged: torch.Tensor) -> None:
        """Record (on the current stream) that the device copy of ``staged`` has been enqueued."""
        if not self.pinned:
            return
        for pair in self._buffers.values():
            for slot in pair:
                if slot[0] is staged:
                    event = torch.cuda.Event()
                    event.record()
                    slot[1] = event
                    return

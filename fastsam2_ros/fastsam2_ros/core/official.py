"""The official ``SAM2VideoPredictor`` as a baseline session over a list of frames.

Benchmarks and the evaluation tool run it on exactly the frames the streaming tracker sees: the
frames are preprocessed by the same function the tracker uses (which equals sam2's own JPEG
loader, see the equivalence test) and handed to the predictor's unmodified ``init_state`` in place
of its file loader. Everything else — prompts, propagation, memory — is sam2's code. Its state
grows with the video (every frame's outputs are kept), which is what the memory numbers show.
"""

from __future__ import annotations

import contextlib
import time
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch

from .cuda_device import on_device, synchronize
from .errors import InputError
from .prompts import validate_box, validate_image, validate_mask, validate_points
from .preprocess import preprocess_pil


@contextlib.contextmanager
def _frames_as_video(images: torch.Tensor, height: int, width: int):
    """Make sam2's ``init_state`` take ``images`` instead of loading files."""
    import sam2.sam2_video_predictor as svp

    original = svp.load_video_frames
    svp.load_video_frames = lambda **_: (images, height, width)
    try:
        yield
    finally:
        svp.load_video_frames = original


@contextlib.contextmanager
def _sam2_progress_bars(enabled: bool):
    """Without ``enabled``, sam2's own tqdm bars ("propagate in video") are created disabled: its
    video predictor calls the ``tqdm`` it imported, which is swapped for the time of the call."""
    if enabled:
        yield
        return
    import functools

    import sam2.sam2_video_predictor as svp

    original = svp.tqdm
    svp.tqdm = functools.partial(original, disable=True)
    try:
        yield
    finally:
        svp.tqdm = original


def _memory_in_weight_dtype(module, args, kwargs):
    """sam2 stores memory features in bf16 (its CUDA runs are under autocast). Without autocast,
    ``torch.cat`` with the fp32 object pointers usually promotes them back to fp32, but an object
    whose only memory is a later conditioning frame has no pointer yet and memory attention gets
    bf16 memory with fp32 weights. Cast it as that promotion would (same values)."""
    memory = kwargs.get("memory")
    dtype = next(module.parameters()).dtype
    if memory is not None and memory.dtype != dtype:
        kwargs["memory"] = memory.to(dtype)
    return args, kwargs


class OfficialVideoSession:
    """sam2's predictor on a finite clip, with prompts per frame and resumable propagation."""

    def __init__(self, predictor, frames: Sequence[np.ndarray], autocast_bf16: bool = False,
                 progress: bool = True) -> None:
        """``progress``: show sam2's own progress bar while propagating."""
        if len(frames) == 0:
            raise InputError("no frames")
        first = validate_image(frames[0])
        self.shape = first.shape[:2]
        for i, f in enumerate(frames):
            if validate_image(f).shape[:2] != self.shape:
                raise InputError(f"frame {i} has size {f.shape[:2]}, frame 0 has {self.shape}")
        self.predictor = predictor
        self.num_frames = len(frames)
        self.autocast_bf16 = autocast_bf16 and predictor.device.type == "cuda"
        self.progress = progress
        t0 = time.perf_counter()
        images = torch.stack([preprocess_pil(f, predictor.image_size) for f in frames]).to(predictor.device)
        with _frames_as_video(images, *self.shape), self._inference():
            self.state = predictor.init_state(video_path="<frames>")
        self.load_ms = (time.perf_counter() - t0) * 1e3
        self.frame_ms: Dict[int, float] = {}

    def reset(self) -> None:
        """Forget prompts and outputs; the loaded frames stay (sam2's ``reset_state``)."""
        self.predictor.reset_state(self.state)
        self.frame_ms.clear()

    def _inference(self):
        stack = contextlib.ExitStack()
        stack.enter_context(on_device(self.predictor.device))  # sam2's own CUDA calls: its device
        stack.enter_context(torch.inference_mode())
        if self.autocast_bf16:
            stack.enter_context(torch.autocast("cuda", dtype=torch.bfloat16))
        else:
            hook = self.predictor.memory_attention.register_forward_pre_hook(
                _memory_in_weight_dtype, with_kwargs=True)
            stack.callback(hook.remove)
        return stack

    def add_prompt(self, frame_idx: int, obj_id: int, points=None, labels=None, box=None,
                   mask=None) -> Dict[int, np.ndarray]:
        """Clicks (replacing earlier clicks on that frame), a box, or a mask for one object."""
        if not 0 <= frame_idx < self.num_frames:
            raise InputError(f"frame {frame_idx} outside the clip of {self.num_frames} frames")
        with self._inference():
            if mask is not None:
                m = validate_mask(mask, self.shape)
                _, ids, logits = self.predictor.add_new_mask(self.state, frame_idx, obj_id, m)
            else:
                pts = lab = None
                if points is not None:
                    pts, lab = validate_points(points, labels, self.shape)
                b = validate_box(box, self.shape) if box is not None else None
                _, ids, logits = self.predictor.add_new_points_or_box(
                    self.state, frame_idx, obj_id, points=pts, labels=lab, box=b)
        return self._masks(ids, logits)

    def propagate(self, start_idx: int = 0, max_frames: Optional[int] = None
                  ) -> Iterator[Tuple[int, Dict[int, np.ndarray]]]:
        """Track forward from ``start_idx``; stop iterating to add refinement prompts."""
        gen = self.predictor.propagate_in_video(self.state, start_frame_idx=start_idx,
                                                max_frame_num_to_track=max_frames)
        cuda = self.predictor.device.type == "cuda"
        while True:
            t0 = time.perf_counter()
            with self._inference(), _sam2_progress_bars(self.progress):
                try:
                    frame_idx, ids, logits = next(gen)
                except StopIteration:
                    return
                if cuda:
                    synchronize(self.predictor.device)
            self.frame_ms[frame_idx] = (time.perf_counter() - t0) * 1e3
            yield frame_idx, self._masks(ids, logits)

    def state_bytes(self) -> int:
        """Bytes of sam2's memory: the tensors of every frame's per-object outputs
        (``output_dict_per_obj``: memory features, object pointer, low-resolution mask, object
        score), what its memory attention reads: the counterpart of the streaming tracker's
        memory bank. Not counted: the rest of the inference state (the preprocessed frames
        ``images``, cached image features, and the memory positional encoding, one copy that
        sam2 shares between frames and objects)."""
        total = 0
        for per_obj in self.state["output_dict_per_obj"].values():
            for outs in per_obj.values():
                for out in outs.values():
                    for value in out.values():
                        if isinstance(value, torch.Tensor):
                            total += value.numel() * value.element_size()
        return total

    @staticmethod
    def _masks(ids: List[int], logits: torch.Tensor) -> Dict[int, np.ndarray]:
        arr = (logits[:, 0] > 0).cpu().numpy()
        return {int(i): arr[k] for k, i in enumerate(ids)}

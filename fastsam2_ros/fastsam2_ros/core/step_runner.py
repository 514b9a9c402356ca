"""Runs the tracker's per-frame step eagerly, or as a replayed CUDA graph per static signature.

At batch 1 on a GPU, SAM 2's per-frame step is bound by kernel launches and Python, not by
arithmetic (memory attention costs the same for 4096 or 1229 queries). With a fixed keep ratio
and a padded bank every shape of the step is static, so it can be captured once per signature
(objects, conditioning slots, masked or not, token counts, frame size) and replayed: one launch
per frame, and the FLOPs that pruning removes turn into time.

Capture protocol (``torch.cuda.graph``): copy inputs into static buffers, warm up twice on a side
stream (the warm-up writes to the memory bank, so the bank is restored afterwards), capture, then
replay for every frame after copying that frame's inputs into the same buffers. Warm-up and
capture run with the runner's device current, and the capture on the runner's own stream of that
device (torch's default capture stream is made once per process, on whichever device was current
at the first capture: a tracker on cuda:1 would capture on a cuda:0 stream). A capture that
fails (an op that synchronises, an unsupported kernel) is logged once and that signature runs
eagerly. Off CUDA the step runs eagerly; ``static_buffers=True`` keeps the graph's buffer
discipline there, so the CPU tests exercise the same input/output plumbing.

A graph reads every tensor by address, so a tensor that the step takes from a cache which may
free it (the resize taps of a frame size) is handed to :func:`read_by_captured_step`: the
captured entry keeps it alive as long as the graph.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import OrderedDict
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Callable, ContextManager, Dict, Hashable, List, Optional, Tuple

import torch

from .cuda_device import on_device, synchronize

LOG = logging.getLogger(__name__)

StepFn = Callable[..., Dict[str, torch.Tensor]]

#: Step signatures kept (captured graphs with their memory, eager signatures, capture failures):
#: the least recently used go first. A signature holds the frame size, so a camera whose size
#: keeps changing (ROI crops, mode switches) would otherwise add one captured graph per size.
MAX_STEPS = 64


def _remember(cache: "OrderedDict", key: Hashable, value) -> None:
    """Put ``key`` last in an LRU OrderedDict and drop the oldest beyond MAX_STEPS."""
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > MAX_STEPS:
        cache.popitem(last=False)


#: While a step is captured: the cached tensors it reads (see read_by_captured_step).
_READ_BY_CAPTURE: ContextVar[Optional[List[torch.Tensor]]] = ContextVar("read_by_capture",
                                                                        default=None)


def read_by_captured_step(*tensors: torch.Tensor) -> None:
    """Say that the step being run reads ``tensors``, which come from a cache that may free them:
    when the step is being captured, its graph keeps them (it reads them by address on replay)."""
    held = _READ_BY_CAPTURE.get()
    if held is not None:
        held.extend(tensors)


@dataclass
class _Captured:
    graph: Optional["torch.cuda.CUDAGraph"]
    inputs: Dict[str, torch.Tensor]
    outputs: Optional[Dict[str, torch.Tensor]]
    held: Tuple[torch.Tensor, ...] = ()  # cached tensors the graph reads (kept alive with it)


class StepRunner:
    """Graph cache + replay for one tracker (see module docstring)."""

    def __init__(self, device: torch.device, use_graphs: bool, static_buffers: bool = False,
                 warmup_runs: int = 2) -> None:
        self.device = device
        self.use_graphs = bool(use_graphs) and device.type == "cuda"
        self.static_buffers = static_buffers or self.use_graphs
        self.warmup_runs = int(warmup_runs)
        self._entries: "OrderedDict[Hashable, _Captured]" = OrderedDict()
        self._eager_keys: "OrderedDict[Hashable, None]" = OrderedDict()  # plain eager signatures
        self.new_steps = 0  # grows by one whenever a signature runs for the first time (a compile)
        self.failures: "OrderedDict[Hashable, str]" = OrderedDict()
        self.capture_s = 0.0  # total time spent warming up and capturing
        self._capture_stream: Optional["torch.cuda.Stream"] = None  # on ``device``, made once
        #: how the last run() ran: "cuda_graph" (replayed) or "eager" (also a signature whose
        #: capture failed, though graphs are on)
        self.last_mode = "eager"

    @property
    def mode(self) -> str:
        return "cuda_graph" if self.use_graphs else "eager"

    def clear(self) -> None:
        """Drop every captured step (the buffers they reference were reallocated)."""
        self._entries.clear()
        self._eager_keys.clear()

    def __len__(self) -> int:
        return sum(1 for e in self._entries.values() if e.graph is not None)

    def run(self, key: Hashable, fn: StepFn, inputs: Dict[str, torch.Tensor],
            preserve: Callable[[], ContextManager] = contextlib.nullcontext,
            eager_fn: Optional[StepFn] = None) -> Dict[str, torch.Tensor]:
        """Run ``fn(**inputs)`` for signature ``key``; ``preserve()`` protects state that warm-up
        runs would change; ``eager_fn`` (e.g. with a synchronising stage timer) replaces ``fn``
        when the step runs eagerly."""
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
        elif self.static_buffers:
            entry = self._prepare(key, fn, inputs, preserve)
        self.last_mode = "cuda_graph" if entry is not None and entry.graph is not None else "eager"
        if entry is None:  # plain eager call
            if key not in self._eager_keys:
                self.new_steps += 1
            _remember(self._eager_keys, key, None)
            return (eager_fn or fn)(**{k: v.to(self.device, non_blocking=True) for k, v in inputs.items()})
        for name, buf in entry.inputs.items():
            buf.copy_(inputs[name], non_blocking=True)
        if entry.graph is None:
            return (eager_fn or fn)(**entry.inputs)
        entry.graph.replay()
        return entry.outputs

    def _prepare(self, key, fn, inputs, preserve) -> _Captured:
        static = {k: torch.empty_like(v, device=self.device) for k, v in inputs.items()}
        entry = _Captured(graph=None, inputs=static, outputs=None)
        self.new_steps += 1
        if self.use_graphs and key not in self.failures:
            t0 = time.perf_counter()
            for name, buf in static.items():
                buf.copy_(inputs[name])
            try:
                entry.graph, entry.outputs, entry.held = self._capture(fn, static, preserve)
            except Exception as exc:  # a step that cannot be captured still runs, eagerly
                _remember(self.failures, key, f"{type(exc).__name__}: {exc}")
                LOG.warning("CUDA graph capture failed for step %s (%s); it runs eagerly",
                            key, self.failures[key])
                synchronize(self.device)
            self.capture_s += time.perf_counter() - t0
        _remember(self._entries, key, entry)
        return entry

    def _capture(self, fn, static, preserve):
        # the device current: torch.cuda.graph synchronises, frees the cache and begins the
        # capture on the current device
        with on_device(self.device):
            with preserve():
                side = torch.cuda.Stream(self.device)
                side.wait_stream(torch.cuda.current_stream(self.device))
                with torch.cuda.stream(side):
                    for _ in range(self.warmup_runs):
                        fn(**static)
                torch.cuda.current_stream(self.device).wait_stream(side)
            synchronize(self.device)
            if self._capture_stream is None:
                self._capture_stream = torch.cuda.Stream(self.device)
            graph = torch.cuda.CUDAGraph()
            held: List[torch.Tensor] = []
            token = _READ_BY_CAPTURE.set(held)
            try:
                with torch.cuda.graph(graph, stream=self._capture_stream):
                    outputs = fn(**static)
            finally:
                _READ_BY_CAPTURE.reset(token)
        return graph, outputs, tuple(held)

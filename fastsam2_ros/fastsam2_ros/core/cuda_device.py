"""CUDA work tied to a given device, not to the thread's *current* one.

A tracker on ``cuda:N`` (N > 0) runs in threads whose current device is cuda:0 (a new thread's
default): ``torch.cuda.Event().record()``, ``torch.cuda.synchronize()`` and a capture stream made
with no device all target cuda:0, so an event meant to say "the copy on cuda:N is done" said
nothing about it. Every such call goes through here, naming the device. Off CUDA these are
no-ops (a null context, no synchronisation).
"""

from __future__ import annotations

import contextlib
from typing import ContextManager, Union

import torch

Device = Union[torch.device, str]


def is_cuda(device: Device) -> bool:
    return torch.device(device).type == "cuda"


def on_device(device: Device) -> ContextManager:
    """``torch.cuda.device(device)`` on CUDA (the calls inside that name no device, sam2's and
    torch's own included, target it); a null context elsewhere."""
    device = torch.device(device)
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def current_stream(device: Device) -> "torch.cuda.Stream":
    """The current stream of ``device`` (where the work enqueued on it runs)."""
    return torch.cuda.current_stream(torch.device(device))


def record_event(device: Device, **kwargs) -> "torch.cuda.Event":
    """A ``torch.cuda.Event(**kwargs)`` recorded on ``device``'s current stream: it completes
    when the work enqueued there so far has run."""
    event = torch.cuda.Event(**kwargs)
    event.record(current_stream(device))
    return event


def synchronize(device: Device) -> None:
    """Wait for ``device``'s work (CUDA only)."""
    if is_cuda(device):
        torch.cuda.synchronize(torch.device(device))

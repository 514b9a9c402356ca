"""Checks shared by every loader of weights by path (SAM 2 checkpoints, CLIP weights, router
files): what a torch.save file looks like before it is unpickled, and that what was read holds
only finite numbers (a NaN weight gives NaN scores, and top-k / argmax on NaN pick arbitrary
tokens and clicks without any error)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Mapping

import torch

from .errors import CheckpointError

#: How a file saved by ``torch.save`` starts: a zip archive (the default since torch 1.6) or a
#: pickle stream (protocol 2+ starts with 0x80).
TORCH_FILE_MAGIC = (b"PK\x03\x04", b"\x80")


def looks_like_text(path: Path) -> bool:
    """True when the first KiB decodes as UTF-8 without NUL bytes (e.g. an HTML error page)."""
    with open(path, "rb") as f:
        head = f.read(1024)
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return b"\0" not in head


def check_torch_file(path: Path, what: str, help_text: str = "") -> None:
    """CheckpointError unless ``path`` starts like a torch.save file (a text or HTML file, e.g. a
    failed download, would otherwise reach torch.load and its advice to unpickle unsafely)."""
    with open(path, "rb") as f:
        head = f.read(4)
    if not head.startswith(TORCH_FILE_MAGIC):
        kind = "a text file" if looks_like_text(path) else "not a PyTorch file"
        raise CheckpointError(f"{path} is {kind}, not {what} saved by torch.save "
                              f"(it starts with {head!r}). {help_text}".rstrip())


def nonfinite_tensors(state: Mapping[str, torch.Tensor]) -> List[str]:
    """Names of the floating-point tensors of ``state`` holding NaN or infinity."""
    return [name for name, t in state.items()
            if isinstance(t, torch.Tensor) and t.is_floating_point() and not bool(torch.isfinite(t).all())]


def require_finite(state: Mapping[str, torch.Tensor], path, what: str) -> None:
    """CheckpointError naming the file and the first tensors with NaN or infinity."""
    bad = nonfinite_tensors(state)
    if bad:
        raise CheckpointError(f"{what} {path} holds NaN or infinite values in {len(bad)} tensor(s) "
                              f"(e.g. {bad[:3]}): a diverged training run or a corrupted file")


__all__ = ["TORCH_FILE_MAGIC", "looks_like_text", "check_torch_file", "nonfinite_tensors",
           "require_finite"]

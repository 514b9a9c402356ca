"""Checks shared by every loader of weights by path (SAM 2 checkpoints, CLIP weights, router
files, RPN weights): that the path is a readable file, what a torch.save file looks like before
it is unpickled, that its zip CRCs hold, and that what was read holds only finite numbers (a NaN
weight gives NaN scores, and top-k / argmax on NaN pick arbitrary tokens and clicks without any
error)."""

from __future__ import annotations

import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import List, Mapping

import torch

from .errors import CheckpointError

#: How a file saved by ``torch.save`` starts: a zip archive (the default since torch 1.6) or a
#: pickle stream (protocol 2+ starts with 0x80).
TORCH_FILE_MAGIC = (b"PK\x03\x04", b"\x80")


def require_readable_file(path: Path, what: str) -> None:
    """CheckpointError unless ``path`` (which exists) is a file this process may read: a folder
    (the one a download was unpacked into) or a file without read permission each have their own
    fix, and reached torch.load as a bare OSError or a misleading "not found"."""
    if path.is_dir():
        raise CheckpointError(f"{path} is a directory, not {what}: give the file inside it")
    if not path.is_file():
        raise CheckpointError(f"{path} is not a regular file, so not {what}")
    if not os.access(path, os.R_OK):
        raise CheckpointError(f"{path} is not readable by this process (wanted: {what}): "
                              "check its permissions")


def _read_head(path: Path, size: int) -> bytes:
    """The first ``size`` bytes; a file that cannot be read (permissions, I/O error) is a
    CheckpointError naming it, as CheckpointError promises for an unreadable weight file."""
    try:
        with open(path, "rb") as f:
            return f.read(size)
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror or exc}") from exc


def looks_like_text(path: Path) -> bool:
    """True when the first KiB decodes as UTF-8 without NUL bytes (e.g. an HTML error page)."""
    head = _read_head(path, 1024)
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return b"\0" not in head


def check_zip_crc(path: Path, what: str) -> None:
    """CheckpointError when an entry of a zip-format torch.save file fails its CRC-32: torch.load
    does not check it, so a file changed by bit rot or a bad copy loads as other weights without
    an error. (An archive zipfile cannot open is left to torch.load, which says why.)"""
    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
    except (zipfile.BadZipFile, EOFError):
        return
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if bad is not None:
        raise CheckpointError(f"{path} ({what}) is corrupt: CRC mismatch in {bad}, it changed "
                              "since it was saved (a bad copy or disk); get it again")


def check_torch_file(path: Path, what: str, help_text: str = "", verify: bool = True) -> None:
    """CheckpointError unless ``path`` is a readable file that starts like a torch.save file (a
    text or HTML file, e.g. a failed download, would otherwise reach torch.load and its advice
    to unpickle unsafely) and, with ``verify``, whose zip CRCs hold (reads the whole file: off
    for the cheap checks made before the weights are needed)."""
    require_readable_file(path, what)
    head = _read_head(path, 4)
    if not head.startswith(TORCH_FILE_MAGIC):
        kind = "a text file" if looks_like_text(path) else "not a PyTorch file"
        raise CheckpointError(f"{path} is {kind}, not {what} saved by torch.save "
                              f"(it starts with {head!r}). {help_text}".rstrip())
    if verify and head.startswith(TORCH_FILE_MAGIC[0]):
        check_zip_crc(path, what)


def load_failure(path: Path, exc: BaseException) -> str:
    """Why ``torch.load(path, weights_only=True)`` raised ``exc``, in the user's terms: torch
    calls every failure a possibly corrupt file, and advises weights_only=False (running the
    file's code, which a file set over DDS must never get) for one holding Python objects."""
    if isinstance(exc, pickle.UnpicklingError):
        found = re.search(r"GLOBAL (\S+) was not an allowed global", str(exc))
        what = f" (e.g. {found.group(1)})" if found else ""
        return (f"it holds Python objects besides tensors{what}, which are not loaded: re-save it "
                "as {'model': state_dict} (tensors only), or it is not complete")
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, EOFError, OSError):
        names = None
    if names is not None and not any(n.endswith("/data.pkl") for n in names):
        return (f"it is a zip archive (of {', '.join(names[:3]) or 'nothing'}), not a torch.save "
                "file: unpack it and give the file inside")
    return f"{type(exc).__name__}: {str(exc)[:300]}; is the file complete?"


def load_torch_file(path: Path, what: str, map_location="cpu"):
    """``torch.load`` with ``weights_only`` (a weight file set by path may come from anywhere);
    a failure is a CheckpointError saying why (see ``load_failure``)."""
    try:
        return torch.load(str(path), map_location=map_location, weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"cannot read {what} {path}: {load_failure(path, exc)}") from exc


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


__all__ = ["TORCH_FILE_MAGIC", "require_readable_file", "looks_like_text", "check_zip_crc",
           "check_torch_file", "load_failure", "load_torch_file", "nonfinite_tensors", "require_finite"]

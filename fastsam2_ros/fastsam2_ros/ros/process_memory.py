"""Keep freed image-sized buffers inside the process (glibc malloc), so that a process which
receives and publishes megabyte images every frame does not fault fresh pages in for each one.

glibc hands a freed block above its mmap threshold (128 KiB at first) back to the kernel, and
trims the top of the heap when more than its trim threshold is free. The next image message of
the same size then faults its pages in again, each one zero-filled by the kernel. Measured on
the development machine (2-core VM, Fast DDS over shared memory, from the middleware receiving a
frame to the rclpy callback): 4.9 ms -> 0.9-1.0 ms for a 1280x720 rgb8 image, 10.7-14.7 ms ->
1.5-1.9 ms for a 1920x1080 one, once those blocks are reused. Raising both thresholds
(``mallopt``) does that; it is what
``GLIBC_TUNABLES=glibc.malloc.mmap_threshold=...:glibc.malloc.trim_threshold=...`` does when set
before the process starts.

Process-wide, so only process entry points call it (``tracker_node.main``, the node benchmark),
never a node constructor. ``FASTSAM2_KEEP_FREED_MEMORY=0`` turns it off.

The opposite is wanted once, when a model is released (deactivate): the model was built on one
of the executor's threads, in that thread's malloc arena, and a freed model left there stays in
the process; the next one is built in another thread's arena. Measured on the development
machine (tiny model on the CPU, 20 deactivate/activate cycles, test_ros_model_memory.py): RSS
+822 to +910 MB without :func:`give_back_freed_memory`, +67 to +125 MB with it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

#: glibc's mallopt parameter numbers (malloc.h)
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
#: Blocks up to this size come from the heap and are reused (a 3840x2160 rgb8 image is 24 MiB).
MMAP_THRESHOLD = 64 * 1024 * 1024
#: Free memory kept at the top of the heap before it is given back to the kernel.
TRIM_THRESHOLD = 256 * 1024 * 1024


def _glibc_function(name: str):
    """The C library's function ``name``, or None where there is none (macOS, musl, Windows)."""
    try:
        return getattr(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6"), name)
    except (OSError, AttributeError):
        return None


def keep_freed_memory(mmap_threshold: int = MMAP_THRESHOLD,
                      trim_threshold: int = TRIM_THRESHOLD) -> bool:
    """Raise glibc's mmap and trim thresholds; False (nothing changed) off glibc or when
    ``FASTSAM2_KEEP_FREED_MEMORY=0``."""
    if os.environ.get("FASTSAM2_KEEP_FREED_MEMORY", "1") == "0":
        return False
    mallopt = _glibc_function("mallopt")
    if mallopt is None:
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    return bool(mallopt(M_MMAP_THRESHOLD, int(mmap_threshold))
                and mallopt(M_TRIM_THRESHOLD, int(trim_threshold)))


def give_back_freed_memory() -> bool:
    """Collect garbage and return the free memory of every malloc arena to the kernel (glibc's
    ``malloc_trim``); False off glibc. For rare moments (a released model), not per frame."""
    import gc

    gc.collect()
    trim = _glibc_function("malloc_trim")
    if trim is None:
        return False
    trim.argtypes = (ctypes.c_size_t,)
    trim(0)
    return True


__all__ = ["keep_freed_memory", "give_back_freed_memory", "MMAP_THRESHOLD", "TRIM_THRESHOLD"]

"""sensor_msgs/Image <-> numpy, following cv_bridge's semantics (cv_bridge is not on PyPI).

What cv_bridge does, and what this module does the same way:

* ``image_to_numpy(msg)`` is ``imgmsg_to_cv2(msg, "passthrough")``: an array of the encoding's dtype,
  shape ``[H, W]`` for one channel and ``[H, W, C]`` otherwise; rows are read with ``msg.step``
  bytes each, so row padding (``step > width * bytes_per_pixel``) is dropped; multi-byte data is
  byte-swapped when ``is_bigendian`` differs from this machine's byte order.
* ``numpy_to_image(array, encoding)`` is ``cv2_to_imgmsg``: tightly packed rows
  (``step = width * bytes_per_pixel``), ``is_bigendian`` = this machine's byte order.
* ``image_to_rgb(msg)`` is ``imgmsg_to_cv2(msg, "rgb8")`` for the colour encodings the tracker
  accepts (rgb8, bgr8, rgba8, bgra8, mono8, and mono16 scaled to 8 bits like cv_bridge does).

Unlike cv_bridge, malformed messages never reach numpy: every inconsistency (zero size, ``step``
smaller than a row, ``len(data) != step * height``, unknown encoding) raises
:class:`~fastsam2_ros.core.errors.InputError` with a message that names the field.

This module imports only numpy (and cv2/PIL lazily for compressed images), so it can be tested
without ROS; message classes are imported lazily too.
"""

from __future__ import annotations

import array
import sys
from typing import Any, Dict, Optional, Tuple

import numpy as np

from ..core.errors import InputError

#: encoding -> (numpy dtype, channels); names as in sensor_msgs/image_encodings.hpp.
ENCODINGS: Dict[str, Tuple[str, int]] = {
    "rgb8": ("uint8", 3),
    "bgr8": ("uint8", 3),
    "rgba8": ("uint8", 4),
    "bgra8": ("uint8", 4),
    "mono8": ("uint8", 1),
    "mono16": ("uint16", 1),
    "rgb16": ("uint16", 3),
    "bgr16": ("uint16", 3),
    "rgba16": ("uint16", 4),
    "bgra16": ("uint16", 4),
    "8UC1": ("uint8", 1),
    "8UC3": ("uint8", 3),
    "8UC4": ("uint8", 4),
    "8SC1": ("int8", 1),
    "16UC1": ("uint16", 1),
    "16SC1": ("int16", 1),
    "32SC1": ("int32", 1),
    "32FC1": ("float32", 1),
    "64FC1": ("float64", 1),
}
#: encodings the tracker accepts as input images.
INPUT_ENCODINGS = ("rgb8", "bgr8", "rgba8", "bgra8", "mono8", "mono16")
#: Largest image accepted (pixels); protects the node from absurd width/height fields.
MAX_PIXELS = 64 * 1024 * 1024


def _native_bigendian() -> int:
    return 1 if sys.byteorder == "big" else 0


def encoding_info(encoding: str) -> Tuple[np.dtype, int]:
    """(dtype, channels) of a sensor_msgs encoding; InputError if unknown."""
    try:
        dtype, channels = ENCODINGS[encoding]
    except KeyError:
        raise InputError(
            f"unsupported image encoding {encoding!r}; supported: {', '.join(ENCODINGS)}") from None
    return np.dtype(dtype), channels


def check_image(msg: Any) -> Tuple[np.dtype, int]:
    """Validate the size fields of a sensor_msgs/Image; return (dtype, channels)."""
    dtype, channels = encoding_info(msg.encoding)
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    if h <= 0 or w <= 0:
        raise InputError(f"empty image: {w}x{h} ({msg.encoding})")
    if h * w > MAX_PIXELS:
        raise InputError(f"image too large: {w}x{h} > {MAX_PIXELS} pixels")
    row = w * channels * dtype.itemsize
    if step < row:
        raise InputError(f"step {step} is smaller than one row of {w} {msg.encoding} pixels ({row} bytes)")
    if step % dtype.itemsize:
        raise InputError(f"step {step} is not a multiple of the {msg.encoding} element size {dtype.itemsize}")
    n = len(msg.data)
    if n != step * h:
        raise InputError(f"image data has {n} bytes, expected step*height = {step}*{h} = {step * h}")
    return dtype, channels


def image_to_numpy(msg: Any) -> np.ndarray:
    """sensor_msgs/Image -> numpy in its own encoding (cv_bridge "passthrough"); a copy."""
    dtype, channels = check_image(msg)
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    buf = np.frombuffer(_as_bytes(msg.data), dtype=np.uint8)
    rows = buf.reshape(h, step)[:, : w * channels * dtype.itemsize]
    arr = np.ascontiguousarray(rows).view(dtype)
    if dtype.itemsize > 1 and bool(msg.is_bigendian) != bool(_native_bigendian()):
        arr = arr.byteswap()
    arr = arr.reshape(h, w, channels) if channels > 1 else arr.reshape(h, w)
    return arr.copy() if not arr.flags.owndata else arr


def image_to_rgb(msg: Any) -> np.ndarray:
    """sensor_msgs/Image -> RGB uint8 [H, W, 3] (cv_bridge ``imgmsg_to_cv2(msg, "rgb8")``)."""
    if msg.encoding not in INPUT_ENCODINGS:
        raise InputError(
            f"image encoding {msg.encoding!r} is not supported as tracker input; "
            f"use one of {', '.join(INPUT_ENCODINGS)}")
    arr = image_to_numpy(msg)
    return to_rgb8(arr, msg.encoding)


def to_rgb8(arr: np.ndarray, encoding: str) -> np.ndarray:
    """Convert an array in ``encoding`` to contiguous RGB uint8 [H, W, 3]."""
    if encoding == "mono16":
        # cv_bridge scales 16-bit to 8-bit by 1/256 when converting to an 8-bit encoding.
        arr = (arr >> 8).astype(np.uint8)
        encoding = "mono8"
    if encoding == "mono8":
        return np.ascontiguousarray(np.repeat(arr[:, :, None], 3, axis=2))
    if encoding == "rgb8":
        return np.ascontiguousarray(arr)
    if encoding == "rgba8":
        return np.ascontiguousarray(arr[:, :, :3])
    if encoding == "bgr8":
        return np.ascontiguousarray(arr[:, :, ::-1])
    if encoding == "bgra8":
        return np.ascontiguousarray(arr[:, :, 2::-1])
    raise InputError(f"cannot convert {encoding!r} to rgb8")


def numpy_to_image(arr: np.ndarray, encoding: str, header: Any = None, msg: Any = None) -> Any:
    """numpy -> sensor_msgs/Image (cv_bridge ``cv2_to_imgmsg``): packed rows, native byte order.

    ``header`` is copied into the message (pass the input image's header so stamps line up).
    """
    dtype, channels = encoding_info(encoding)
    arr = np.asarray(arr)
    if arr.dtype != dtype:
        raise InputError(f"encoding {encoding} needs dtype {dtype}, got {arr.dtype}")
    if arr.ndim == 2:
        got = 1
    elif arr.ndim == 3:
        got = arr.shape[2]
    else:
        raise InputError(f"image array must be 2-D or 3-D, got shape {arr.shape}")
    if got != channels:
        raise InputError(f"encoding {encoding} has {channels} channel(s), array has {got}")
    if msg is None:
        from sensor_msgs.msg import Image

        msg = Image()
    if header is not None:
        msg.header = header
    msg.height, msg.width = int(arr.shape[0]), int(arr.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = _native_bigendian()
    msg.step = int(arr.shape[1] * channels * dtype.itemsize)
    msg.data = array.array("B", np.ascontiguousarray(arr).tobytes())  # no per-byte check
    return msg


def mask_from_image(msg: Any, shape: Optional[Tuple[int, int]] = None) -> np.ndarray:
    """A prompt mask (mono8/8UC1, non-zero = object; or mono16/16UC1) -> bool [H, W]."""
    if msg.encoding not in ("mono8", "8UC1", "mono16", "16UC1"):
        raise InputError(f"prompt mask must be mono8 (non-zero = object), got {msg.encoding!r}")
    arr = image_to_numpy(msg) != 0
    if shape is not None and arr.shape != tuple(shape):
        raise InputError(f"prompt mask is {arr.shape[1]}x{arr.shape[0]}, image is {shape[1]}x{shape[0]}")
    return arr


def compressed_to_rgb(msg: Any) -> np.ndarray:
    """sensor_msgs/CompressedImage (jpeg/png) -> RGB uint8 [H, W, 3]."""
    data = _as_bytes(msg.data)
    if not data:
        raise InputError("empty compressed image")
    if len(data) > 256 * 1024 * 1024:
        raise InputError("compressed image larger than 256 MiB")
    try:
        import cv2

        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if img is None:
            raise InputError(f"cannot decode compressed image (format {msg.format!r})")
        return np.ascontiguousarray(img[:, :, ::-1])
    except ImportError:  # pragma: no cover - cv2 is a requirement; PIL fallback
        import io

        from PIL import Image as PILImage

        try:
            with PILImage.open(io.BytesIO(data)) as im:
                return np.asarray(im.convert("RGB")).copy()
        except Exception as exc:  # noqa: BLE001 - PIL raises many types
            raise InputError(f"cannot decode compressed image (format {msg.format!r}): {exc}") from exc


def rgb_to_compressed(rgb: np.ndarray, fmt: str = "jpeg", header: Any = None) -> Any:
    """RGB uint8 -> sensor_msgs/CompressedImage (used by tests and the demo)."""
    import cv2
    from sensor_msgs.msg import CompressedImage

    ext = ".png" if fmt == "png" else ".jpg"
    ok, buf = cv2.imencode(ext, np.ascontiguousarray(rgb[:, :, ::-1]))
    if not ok:
        raise InputError("cannot encode image")
    msg = CompressedImage()
    if header is not None:
        msg.header = header
    msg.format = "png" if fmt == "png" else "jpeg"
    msg.data = array.array("B", buf.tobytes())
    return msg


def _as_bytes(data: Any) -> bytes:
    if isinstance(data, (bytes, bytearray)):
        return bytes(data)
    if isinstance(data, memoryview):
        return data.tobytes()
    if isinstance(data, np.ndarray):
        return data.astype(np.uint8, copy=False).tobytes()
    # rclpy gives array.array('B') for uint8[] fields
    try:
        return memoryview(data).tobytes()
    except TypeError:
        return bytes(data)


__all__ = [
    "ENCODINGS", "INPUT_ENCODINGS", "MAX_PIXELS", "encoding_info", "check_image", "image_to_numpy",
    "image_to_rgb", "to_rgb8", "numpy_to_image", "mask_from_image", "compressed_to_rgb",
    "rgb_to_compressed",
]

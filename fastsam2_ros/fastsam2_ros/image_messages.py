"""sensor_msgs/Image and CompressedImage <-> numpy, with cv_bridge's semantics (cv_bridge is not on
PyPI). The one image decoder of the project: the node and ``frame_sources`` (videos, rosbags) both
use it, so a frame is decoded the same way whichever path it takes.

What cv_bridge does, and what this module does the same way:

* ``image_to_numpy(msg)`` = ``imgmsg_to_cv2(msg, "passthrough")``: an array of the encoding's
  dtype, ``[H, W]`` for one channel and ``[H, W, C]`` otherwise; rows are read with ``msg.step``
  bytes each (row padding dropped); multi-byte data is byte-swapped when ``is_bigendian`` differs
  from this machine's byte order. ``height * step`` must equal ``len(data)``, as in cv_bridge.
* ``image_to_rgb(msg)`` = ``imgmsg_to_cv2(msg, "rgb8")``: the encodings cv_bridge can convert to
  rgb8 (:data:`RGB_CONVERSIONS`: mono, rgb/bgr with or without alpha, 8 or 16 bit, UYVY/YUYV 4:2:2,
  the four Bayer patterns in 8 and 16 bit); 16-bit values are scaled by 255/65535 and rounded, as
  cv_bridge's ``convertTo`` does. Encodings without a colour meaning (``8UC3``, ``32FC1`` ...)
  are refused, as cv_bridge refuses them ("not a color format").
* ``compressed_to_rgb(msg)`` = ``compressed_imgmsg_to_cv2`` followed by the channel-order rule of
  compressed_image_transport: the decoded payload is BGR unless the format string says the
  original colour image was compressed in RGB order (``"rgb8; jpeg compressed rgb8"``). The
  original encoding of the format decides the rest as for a raw image: a Bayer mosaic (PNG keeps
  it as it is) is demosaiced, an original without colour meaning (``"16UC1; png compressed "``,
  a depth image) is refused.
* ``numpy_to_image(array, encoding)`` = ``cv2_to_imgmsg``: packed rows, native byte order;
  ``empty_image`` gives the message and a numpy view of its data, to compute an image in place.

Malformed messages never reach numpy: every inconsistency (zero size, ``step`` smaller than a row,
``len(data) != step * height``, unknown encoding) raises
:class:`~fastsam2_ros.core.errors.InputError` naming the field. No ROS import is needed; message
classes are imported lazily, so rosbag messages from the ``rosbags`` package work too.
"""

from __future__ import annotations

import array
import io
import reprlib
import sys
from typing import Any, Dict, Optional, Tuple

import numpy as np

from .core.errors import InputError


def _cv_types() -> Dict[str, Tuple[str, int]]:
    """The generic OpenCV encodings of sensor_msgs/image_encodings.hpp (8UC1 ... 64FC4)."""
    depths = {"8U": "uint8", "8S": "int8", "16U": "uint16", "16S": "int16", "32S": "int32",
              "32F": "float32", "64F": "float64"}
    return {f"{d}C{c}": (dtype, c) for d, dtype in depths.items() for c in (1, 2, 3, 4)}


#: encoding -> (numpy dtype, channels): every encoding of sensor_msgs/image_encodings.hpp that
#: cv_bridge can read (nv21/nv24 are planar and unknown to cv_bridge too).
ENCODINGS: Dict[str, Tuple[str, int]] = {
    "rgb8": ("uint8", 3), "rgba8": ("uint8", 4), "rgb16": ("uint16", 3), "rgba16": ("uint16", 4),
    "bgr8": ("uint8", 3), "bgra8": ("uint8", 4), "bgr16": ("uint16", 3), "bgra16": ("uint16", 4),
    "mono8": ("uint8", 1), "mono16": ("uint16", 1),
    **_cv_types(),
    **{f"bayer_{p}{b}": ("uint8" if b == 8 else "uint16", 1)
       for p in ("rggb", "bggr", "gbrg", "grbg") for b in (8, 16)},
    # 4:2:2, two bytes per pixel. uyvy/yuyv are Jazzy's names of yuv422/yuv422_yuy2.
    "yuv422": ("uint8", 2), "uyvy": ("uint8", 2), "yuv422_yuy2": ("uint8", 2), "yuyv": ("uint8", 2),
}

#: colour encoding -> how cv_bridge reaches rgb8 from it (its getConversionCodes table).
RGB_CONVERSIONS: Dict[str, str] = {
    "mono8": "gray", "mono16": "gray",
    "rgb8": "rgb", "rgb16": "rgb", "rgba8": "rgba", "rgba16": "rgba",
    "bgr8": "bgr", "bgr16": "bgr", "bgra8": "bgra", "bgra16": "bgra",
    "yuv422": "uyvy", "uyvy": "uyvy", "yuv422_yuy2": "yuyv", "yuyv": "yuyv",
    **{f"bayer_{p}{b}": f"bayer_{p}" for p in ("rggb", "bggr", "gbrg", "grbg") for b in (8, 16)},
}
#: Largest image accepted (pixels); protects against absurd width/height fields.
MAX_PIXELS = 64 * 1024 * 1024
#: Largest compressed payload accepted (bytes).
MAX_COMPRESSED_BYTES = 256 * 1024 * 1024
#: Bytes of a compressed payload searched for its size (JPEG headers can follow 64 KiB of EXIF).
_HEADER_BYTES = 1024 * 1024


def _native_bigendian() -> int:
    return 1 if sys.byteorder == "big" else 0


def encoding_info(encoding: str) -> Tuple[np.dtype, int]:
    """(dtype, channels) of a sensor_msgs encoding; InputError if unknown."""
    try:
        dtype, channels = ENCODINGS[encoding]
    except KeyError:
        raise InputError(f"unsupported image encoding {reprlib.repr(encoding)}; "
                         f"colour encodings: {', '.join(RGB_CONVERSIONS)}") from None
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


def image_to_numpy(msg: Any, copy: bool = True) -> np.ndarray:
    """sensor_msgs/Image -> numpy in its own encoding (cv_bridge "passthrough").

    ``copy=False``: a view of the message's data where no conversion is needed (packed rows in
    this machine's byte order), so the array lives as long as it and shares its bytes; the node
    decodes this way (a 1920x1080 rgb8 frame costs nothing instead of two copies)."""
    dtype, channels = check_image(msg)
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    buf = _byte_view(msg.data)
    rows = buf.reshape(h, step)[:, : w * channels * dtype.itemsize]
    arr = np.ascontiguousarray(rows).view(dtype)
    if dtype.itemsize > 1 and bool(msg.is_bigendian) != bool(_native_bigendian()):
        arr = arr.byteswap()
    arr = arr.reshape(h, w, channels) if channels > 1 else arr.reshape(h, w)
    if copy and not np.may_share_memory(arr, buf):
        return arr  # already converted into an array of its own
    return arr.copy() if copy else arr


def image_to_rgb(msg: Any, copy: bool = True) -> np.ndarray:
    """sensor_msgs/Image -> RGB uint8 [H, W, 3] (cv_bridge ``imgmsg_to_cv2(msg, "rgb8")``).
    ``copy=False``: an rgb8 message's packed data is returned as a view (see image_to_numpy)."""
    if msg.encoding not in RGB_CONVERSIONS:
        known = msg.encoding in ENCODINGS
        raise InputError(
            f"image encoding {reprlib.repr(msg.encoding)} "
            + ("has no colour meaning (cv_bridge cannot convert it to rgb8)" if known else "is unknown")
            + f"; use one of {', '.join(RGB_CONVERSIONS)}")
    return to_rgb8(image_to_numpy(msg, copy=copy), msg.encoding)


def to_rgb8(arr: np.ndarray, encoding: str) -> np.ndarray:
    """An array in colour ``encoding`` -> contiguous RGB uint8 [H, W, 3] (cv_bridge's colour
    conversion, then its 16 -> 8 bit scaling)."""
    import cv2

    kind = RGB_CONVERSIONS[encoding]
    if kind == "gray":
        out = np.repeat(arr[:, :, None], 3, axis=2)
    elif kind in ("rgb", "rgba"):
        out = arr[:, :, :3]
    elif kind in ("bgr", "bgra"):
        out = arr[:, :, 2::-1]
    elif kind in ("uyvy", "yuyv"):
        if arr.shape[1] % 2:  # (OpenCV would fail inside the worker: an error, not a bad input)
            raise InputError(f"{encoding} image is {arr.shape[1]} pixels wide: 4:2:2 needs an even "
                             "width (two pixels share one U and one V sample)")
        out = cv2.cvtColor(np.ascontiguousarray(arr), cv2.COLOR_YUV2RGB_UYVY if kind == "uyvy"
                           else cv2.COLOR_YUV2RGB_YUY2)
    else:  # OpenCV names a Bayer pattern by the 2x2 block starting at pixel (1, 1)
        code = {"bayer_rggb": cv2.COLOR_BayerBG2RGB, "bayer_bggr": cv2.COLOR_BayerRG2RGB,
                "bayer_gbrg": cv2.COLOR_BayerGR2RGB, "bayer_grbg": cv2.COLOR_BayerGB2RGB}[kind]
        out = cv2.cvtColor(np.ascontiguousarray(arr), code)
    if out.dtype == np.uint16:
        out = np.rint(out.astype(np.float32) * (255.0 / 65535.0)).astype(np.uint8)
    return np.ascontiguousarray(out, dtype=np.uint8)


def numpy_to_image(arr: np.ndarray, encoding: str, header: Any = None, msg: Any = None) -> Any:
    """numpy -> sensor_msgs/Image (cv_bridge ``cv2_to_imgmsg``): packed rows, native byte order.

    ``header`` is copied into the message (pass the input image's header so stamps line up).
    """
    dtype, channels = encoding_info(encoding)
    arr = np.asarray(arr)
    if arr.dtype != dtype:
        raise InputError(f"encoding {encoding} needs dtype {dtype}, got {arr.dtype}")
    if arr.ndim not in (2, 3):
        raise InputError(f"image array must be 2-D or 3-D, got shape {arr.shape}")
    got = 1 if arr.ndim == 2 else arr.shape[2]
    if got != channels:
        raise InputError(f"encoding {encoding} has {channels} channel(s), array has {got}")
    msg, data = empty_image(int(arr.shape[0]), int(arr.shape[1]), encoding, header, msg)
    np.copyto(data, arr.reshape(data.shape))
    return msg


def empty_image(height: int, width: int, encoding: str, header: Any = None,
                msg: Any = None) -> Tuple[Any, np.ndarray]:
    """A sensor_msgs/Image of that size and encoding (packed rows, native byte order) and a numpy
    view of its ``data`` ([H, W] or [H, W, C] of the encoding's dtype) to compute the image into.

    The view is of the message's own ``array.array('B')`` (grown in place: the field's setter
    would copy), which rclpy reads through the buffer protocol when publishing; so the pixels
    are written once, where rclpy reads them (no ``tobytes()``, no per-byte conversion)."""
    dtype, channels = encoding_info(encoding)
    if msg is None:
        from sensor_msgs.msg import Image

        msg = Image()
    if header is not None:
        msg.header = header
    msg.height, msg.width = int(height), int(width)
    msg.encoding = encoding
    msg.is_bigendian = _native_bigendian()
    msg.step = int(width) * channels * dtype.itemsize
    data = msg.data
    try:
        del data[:]
    except (TypeError, BufferError):  # not an array.array, or a view of it is still alive
        msg.data = array.array("B")
        data = msg.data
    data.append(0)
    data *= msg.step * msg.height
    shape = (msg.height, msg.width) + ((channels,) if channels > 1 else ())
    return msg, np.frombuffer(data, dtype=dtype).reshape(shape)


def mask_from_image(msg: Any, shape: Optional[Tuple[int, int]] = None) -> np.ndarray:
    """A prompt mask (mono8/8UC1 or mono16/16UC1, non-zero = object) -> bool [H, W]."""
    if msg.encoding not in ("mono8", "8UC1", "mono16", "16UC1"):
        raise InputError("prompt mask must be mono8 (non-zero = object), got "
                         f"{reprlib.repr(msg.encoding)}")
    arr = image_to_numpy(msg) != 0
    if shape is not None and arr.shape != tuple(shape):
        raise InputError(f"prompt mask is {arr.shape[1]}x{arr.shape[0]}, image is {shape[1]}x{shape[0]}")
    return arr


def compressed_topic(resolved: str) -> str:
    """image_transport's name of the compressed stream of a (resolved) image topic: it hangs below
    the resolved name, so it follows a remap of the base name."""
    return resolved.rstrip("/") + "/compressed"


def compressed_original_encoding(fmt: str) -> str:
    """The original image's encoding that compressed_image_transport writes before ``;`` in the
    format (``"bayer_rggb8; png compressed "`` -> ``"bayer_rggb8"``); "" when the format names none
    (``"jpeg"``)."""
    original, sep, _ = str(fmt).partition(";")
    return original.strip() if sep else ""


def compressed_target_encoding(fmt: str) -> str:
    """What compressed_image_transport converted the original to before compressing it, after
    "compressed" in the format (``"bayer_rggb8; jpeg compressed mono8"`` -> ``"mono8"``: JPEG
    takes a Bayer original demosaiced to grey); "" when it names none (``"bayer_rggb8; png
    compressed "``: PNG keeps the mosaic)."""
    return str(fmt).partition(";")[2].rpartition("compressed")[2].strip()


def compressed_payload_is_rgb(fmt: str) -> bool:
    """compressed_image_transport's rule: the payload holds RGB channel order when the format names
    a colour original (``"rgb8; jpeg compressed rgb8"``) that was not compressed as BGR."""
    original = compressed_original_encoding(fmt)
    colour = original in RGB_CONVERSIONS and RGB_CONVERSIONS[original] != "gray"
    return colour and not compressed_target_encoding(fmt).startswith("bgr")


def compressed_size(data: np.ndarray) -> Optional[Tuple[int, int]]:
    """(width, height) from a compressed payload's header, without decoding it: a small PNG can
    claim gigapixels. None when the header cannot be read (such a payload is refused)."""
    from PIL import Image

    def header_size(payload: bytes) -> Optional[Tuple[int, int]]:
        try:  # (PIL warns only above its limit, which is above ours: refused anyway)
            with Image.open(io.BytesIO(payload)) as img:  # reads the markers, decodes nothing
                return tuple(int(v) for v in img.size)
        except Image.DecompressionBombError:  # PIL's own limit is above ours: too large either way
            return (MAX_PIXELS + 1, 1)
        except Exception:  # noqa: BLE001 - not an image PIL knows: refused by the caller
            return None

    size = header_size(data[:_HEADER_BYTES].tobytes())
    if size is None and data.size > _HEADER_BYTES:
        # a legal JPEG can put any number of 64 KiB APPn segments before its size (SOF marker)
        size = header_size(data.tobytes())
    return size


def compressed_to_rgb(msg: Any) -> np.ndarray:
    """sensor_msgs/CompressedImage (jpeg/png) -> RGB uint8 [H, W, 3]."""
    import cv2

    fmt = str(getattr(msg, "format", ""))
    quoted = reprlib.repr(fmt)  # (errors quote it cut short: a client may send megabytes)
    if "compresseddepth" in fmt.lower():
        raise InputError(f"compressedDepth images ({quoted}) are depth, not colour")
    original = compressed_original_encoding(fmt)
    if original in ENCODINGS and original not in RGB_CONVERSIONS:  # refused as the raw image is
        raise InputError(f"compressed image of a {original} original ({quoted}) has no colour "
                         f"meaning; use one of {', '.join(RGB_CONVERSIONS)}")
    data = _byte_view(msg.data)  # no copy of the payload
    if not data.size:
        raise InputError("empty compressed image")
    if data.size > MAX_COMPRESSED_BYTES:
        raise InputError(f"compressed image larger than {MAX_COMPRESSED_BYTES // 2 ** 20} MiB")
    size = compressed_size(data)
    if size is None:  # cv2 would decode it whatever it claims (HDR, PAM ...): no size, no decoding
        raise InputError(f"cannot decode compressed image (format {quoted}): no image size in its "
                         "header (only formats whose size is checked before decoding, such as JPEG "
                         "and PNG, are read)")
    if size[0] * size[1] > MAX_PIXELS:
        raise InputError(f"image too large: {size[0]}x{size[1]} > {MAX_PIXELS} pixels")
    try:
        img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:  # a header cv2 itself refuses: bad input, not a tracker failure
        raise InputError(f"cannot decode compressed image (format {quoted}): "
                         f"{str(exc).strip().splitlines()[-1]}") from exc
    if img is None or img.size == 0:
        raise InputError(f"cannot decode compressed image (format {quoted})")
    if img.dtype not in (np.uint8, np.uint16):
        raise InputError(f"unsupported decoded pixel type {img.dtype} (format {quoted})")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    bits = "16" if img.dtype == np.uint16 else "8"
    if img.ndim == 2:  # PNG keeps a Bayer original's mosaic as it is: demosaic it like the raw
        kind = RGB_CONVERSIONS.get(original, "gray")  # one (JPEG takes it demosaiced to grey)
        mosaic = kind.startswith("bayer_") and compressed_target_encoding(fmt) in ("", original)
        return to_rgb8(img, f"{kind}{bits}" if mosaic else f"mono{bits}")
    order = "rgb" if compressed_payload_is_rgb(fmt) else "bgr"
    alpha = "a" if img.shape[2] == 4 else ""
    return to_rgb8(img, f"{order}{alpha}{bits}")


def rgb_to_compressed(rgb: np.ndarray, fmt: str = "jpeg", header: Any = None,
                      jpeg_quality: Optional[int] = None) -> Any:
    """RGB uint8 -> sensor_msgs/CompressedImage as image_transport writes it (BGR payload);
    ``jpeg_quality`` 1..100 (None: OpenCV's default, 95)."""
    import cv2
    from sensor_msgs.msg import CompressedImage

    ext = ".png" if fmt == "png" else ".jpg"
    params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)] if ext == ".jpg" and jpeg_quality else []
    ok, buf = cv2.imencode(ext, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise InputError("cannot encode image")
    msg = CompressedImage()
    if header is not None:
        msg.header = header
    msg.format = "png" if fmt == "png" else "jpeg"
    msg.data = array.array("B", buf.tobytes())
    return msg


def _as_bytes(data: Any) -> bytes:
    """Message ``data`` (bytes, array.array, numpy array, list of ints) as bytes."""
    if isinstance(data, (bytes, bytearray)):
        return bytes(data)
    if isinstance(data, memoryview):
        return data.tobytes()
    if isinstance(data, np.ndarray):
        return data.astype(np.uint8, copy=False).tobytes()
    try:  # rclpy gives array.array('B') for uint8[] fields
        return memoryview(data).tobytes()
    except TypeError:
        return bytes(data)


def _byte_view(data: Any) -> np.ndarray:
    """Message ``data`` as a 1-D uint8 array, without a copy where it has the buffer protocol
    (rclpy's array.array, bytes, a uint8 numpy array); anything else goes through _as_bytes."""
    if isinstance(data, np.ndarray):
        if data.dtype == np.uint8:
            return data.reshape(-1)
        return np.frombuffer(_as_bytes(data), dtype=np.uint8)
    try:
        return np.frombuffer(data, dtype=np.uint8)
    except (TypeError, ValueError):  # a list of ints, or a buffer that is not bytes
        return np.frombuffer(_as_bytes(data), dtype=np.uint8)


__all__ = [
    "ENCODINGS", "RGB_CONVERSIONS", "MAX_PIXELS", "encoding_info", "check_image",
    "image_to_numpy", "image_to_rgb", "to_rgb8", "numpy_to_image", "empty_image", "mask_from_image",
    "compressed_topic", "compressed_original_encoding", "compressed_payload_is_rgb",
    "compressed_to_rgb", "rgb_to_compressed",
]

"""sensor_msgs/Image <-> numpy conversions (cv_bridge semantics), without a node; the node and the
frame sources decode through the same module.

Messages are real ``sensor_msgs.msg.Image`` objects when the ROS message packages are importable
(they are in the project's environment); the pure-numpy checks also run on a stand-in object.
"""

import array
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from fastsam2_ros.core.errors import InputError
from fastsam2_ros import image_messages as cv
from fastsam2_ros.frame_sources import FrameSourceError, ros_msg_to_rgb

try:
    from sensor_msgs.msg import CompressedImage, Image
except ImportError:  # pragma: no cover - the project environment has sensor_msgs
    Image = CompressedImage = None

NATIVE_BE = 1 if sys.byteorder == "big" else 0


def make_msg(height, width, encoding, step, data, is_bigendian=NATIVE_BE):
    if Image is not None:
        m = Image()
        m.height, m.width, m.encoding, m.step, m.is_bigendian = height, width, encoding, step, is_bigendian
        m.data = array.array("B", bytes(data))
        return m
    return SimpleNamespace(height=height, width=width, encoding=encoding, step=step,
                           is_bigendian=is_bigendian, data=bytes(data),
                           header=SimpleNamespace(frame_id=""))


needs_msgs = pytest.mark.skipif(Image is None, reason="sensor_msgs not importable")


@needs_msgs
@pytest.mark.parametrize("encoding", list(cv.ENCODINGS))
def test_roundtrip_every_encoding_packed_native(encoding):
    dtype, ch = cv.encoding_info(encoding)
    rng = np.random.default_rng(0)
    shape = (5, 7) if ch == 1 else (5, 7, ch)
    if dtype.kind == "f":
        arr = rng.standard_normal(shape).astype(dtype)
    else:
        info = np.iinfo(dtype)
        arr = rng.integers(info.min, info.max, size=shape, endpoint=True).astype(dtype)
    msg = cv.numpy_to_image(arr, encoding)
    assert isinstance(msg, Image)
    assert (msg.height, msg.width, msg.encoding) == (5, 7, encoding)
    assert msg.step == 7 * ch * dtype.itemsize  # cv2_to_imgmsg: packed rows
    assert msg.is_bigendian == NATIVE_BE
    assert len(msg.data) == msg.step * msg.height
    back = cv.image_to_numpy(msg)
    assert back.dtype == dtype and back.shape == shape
    np.testing.assert_array_equal(back, arr)


@needs_msgs
def test_header_is_copied():
    from std_msgs.msg import Header

    h = Header(frame_id="cam")
    h.stamp.sec, h.stamp.nanosec = 12, 345
    msg = cv.numpy_to_image(np.zeros((2, 3), np.uint8), "mono8", h)
    assert msg.header.frame_id == "cam" and msg.header.stamp.nanosec == 345


def test_row_padding_is_dropped():
    h, w, pad = 4, 5, 7
    rgb = np.arange(h * w * 3, dtype=np.uint8).reshape(h, w, 3)
    bgr = rgb[:, :, ::-1]
    rows = [bytes(bgr[r].tobytes()) + bytes([0xEE] * pad) for r in range(h)]
    msg = make_msg(h, w, "bgr8", w * 3 + pad, b"".join(rows))
    out = cv.image_to_rgb(msg)
    assert out.shape == (h, w, 3) and out.dtype == np.uint8 and out.flags.c_contiguous
    np.testing.assert_array_equal(out, rgb)


@pytest.mark.parametrize("big", [0, 1])
def test_mono16_endianness(big):
    vals = np.array([[1, 256, 65535], [4660, 0, 43981]], dtype=np.uint16)
    data = vals.astype(">u2" if big else "<u2").tobytes()
    msg = make_msg(2, 3, "mono16", 6, data, is_bigendian=big)
    np.testing.assert_array_equal(cv.image_to_numpy(msg), vals)


def test_mono16_padded_big_endian():
    vals = np.array([[1, 2], [3, 4]], dtype=np.uint16) * 300
    rows = [vals[r].astype(">u2").tobytes() + b"\x00\x00" for r in range(2)]
    msg = make_msg(2, 2, "mono16", 6, b"".join(rows), is_bigendian=1)
    np.testing.assert_array_equal(cv.image_to_numpy(msg), vals)


def test_mono16_to_rgb_scales_like_cv_bridge():
    # cv_bridge: convertTo(CV_8U, 255/65535), rounded to nearest
    vals = np.array([[0, 128, 129, 255, 256, 385, 386, 65535]], dtype=np.uint16)
    msg = make_msg(1, 8, "mono16", 16, vals.astype("<u2").tobytes(), is_bigendian=0)
    rgb = cv.image_to_rgb(msg)
    np.testing.assert_array_equal(rgb[0, :, 0], [0, 0, 1, 1, 1, 1, 2, 255])
    assert (rgb[..., 0] == rgb[..., 2]).all()


@pytest.mark.parametrize("encoding,order", [("rgb8", [0, 1, 2]), ("bgr8", [2, 1, 0]),
                                            ("rgba8", [0, 1, 2, 3]), ("bgra8", [2, 1, 0, 3])])
def test_color_orders(encoding, order):
    rgb = np.array([[[10, 20, 30], [40, 50, 60]]], dtype=np.uint8)
    rgba = np.concatenate([rgb, np.full((1, 2, 1), 99, np.uint8)], axis=2)
    src = rgba[:, :, order] if len(order) == 4 else rgb[:, :, order]
    msg = make_msg(1, 2, encoding, 2 * len(order), src.tobytes())
    np.testing.assert_array_equal(cv.image_to_rgb(msg), rgb)


def test_mono8_to_rgb():
    g = np.array([[0, 128, 255]], dtype=np.uint8)
    out = cv.image_to_rgb(make_msg(1, 3, "mono8", 3, g.tobytes()))
    assert out.shape == (1, 3, 3)
    np.testing.assert_array_equal(out[..., 1], g)


@pytest.mark.parametrize("kwargs,match", [
    (dict(height=0, width=0, encoding="rgb8", step=0, data=b""), "empty image"),
    (dict(height=2, width=0, encoding="mono8", step=0, data=b""), "empty image"),
    (dict(height=2, width=3, encoding="rgb8", step=8, data=b"\0" * 16), "smaller than one row"),
    (dict(height=2, width=3, encoding="rgb8", step=9, data=b"\0" * 17), "expected step"),
    (dict(height=2, width=3, encoding="rgb8", step=9, data=b"\0" * 19), "expected step"),
    (dict(height=2, width=2, encoding="mono16", step=5, data=b"\0" * 10), "multiple"),
    (dict(height=2, width=2, encoding="8UC3", step=6, data=b"\0" * 12), "no colour meaning"),
    (dict(height=2, width=2, encoding="nv21", step=4, data=b"\0" * 8), "unknown"),
    (dict(height=2, width=2, encoding="", step=4, data=b"\0" * 8), "unknown"),
    (dict(height=100000, width=100000, encoding="mono8", step=100000, data=b""), "too large"),
    (dict(height=2, width=3, encoding="yuv422", step=6, data=b"\0" * 12), "even width"),
    (dict(height=9, width=9, encoding="yuyv", step=18, data=b"\0" * 162), "even width"),
])
def test_malformed_images_raise_input_error(kwargs, match):
    with pytest.raises(InputError, match=match):
        cv.image_to_rgb(make_msg(**kwargs))


def test_non_color_encoding_rejected_as_tracker_input():
    msg = make_msg(1, 1, "32FC1", 4, b"\0" * 4)
    assert cv.image_to_numpy(msg).dtype == np.float32  # passthrough works
    with pytest.raises(InputError, match="no colour meaning"):
        cv.image_to_rgb(msg)


@needs_msgs
def test_numpy_to_image_checks_dtype_and_channels():
    with pytest.raises(InputError, match="dtype"):
        cv.numpy_to_image(np.zeros((2, 2), np.uint16), "mono8")
    with pytest.raises(InputError, match="channel"):
        cv.numpy_to_image(np.zeros((2, 2, 3), np.uint8), "mono8")
    with pytest.raises(InputError, match="unsupported"):
        cv.numpy_to_image(np.zeros((2, 2), np.uint8), "nope")


def test_mask_from_image():
    m = np.array([[0, 1, 255], [0, 0, 7]], dtype=np.uint8)
    msg = make_msg(2, 3, "mono8", 3, m.tobytes())
    np.testing.assert_array_equal(cv.mask_from_image(msg, (2, 3)), m != 0)
    with pytest.raises(InputError, match="is 3x2, image is 4x2"):
        cv.mask_from_image(msg, (2, 4))
    with pytest.raises(InputError, match="mono8"):
        cv.mask_from_image(make_msg(1, 1, "rgb8", 3, b"\0\0\0"), (1, 1))


@needs_msgs
def test_compressed_roundtrip_and_garbage():
    rgb = (np.random.default_rng(1).random((9, 11, 3)) * 255).astype(np.uint8)
    msg = cv.rgb_to_compressed(rgb, "png")
    assert isinstance(msg, CompressedImage) and msg.format == "png"
    np.testing.assert_array_equal(cv.compressed_to_rgb(msg), rgb)
    jpg = cv.rgb_to_compressed(rgb, "jpeg")
    assert cv.compressed_to_rgb(jpg).shape == rgb.shape
    bad = CompressedImage(format="jpeg")
    bad.data = array.array("B", b"not an image")
    with pytest.raises(InputError, match="cannot decode"):
        cv.compressed_to_rgb(bad)
    with pytest.raises(InputError, match="empty"):
        cv.compressed_to_rgb(CompressedImage(format="jpeg"))


def test_compressed_image_too_large_is_refused_from_its_header_before_decoding(monkeypatch):
    """A 94 kB PNG can claim 81 megapixels; the raw path refuses such sizes from the message
    fields, the compressed one must not decode them first."""
    import cv2

    side = int((cv.MAX_PIXELS + 1) ** 0.5) + 1
    ok, png = cv2.imencode(".png", np.zeros((side, side), np.uint8))
    assert ok and png.size < 2 ** 20
    msg = CompressedImage(format="png")
    msg.data = array.array("B", png.tobytes())
    monkeypatch.setattr(cv2, "imdecode", lambda *a: pytest.fail("decoded a too large image"))
    with pytest.raises(InputError, match="too large"):
        cv.compressed_to_rgb(msg)
    assert cv.compressed_size(np.frombuffer(b"not an image", np.uint8)) is None


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_a_jpeg_that_hides_its_size_behind_a_mebibyte_of_app_segments_is_refused(monkeypatch):
    """A legal JPEG may carry any number of 64 KiB APPn segments before its size (SOF marker);
    only the first MiB used to be read for the size, so 144 Mpx were decoded."""
    import struct

    import cv2

    ok, buf = cv2.imencode(".jpg", np.full((8, 8, 3), 128, np.uint8))
    jpg = bytearray(buf.tobytes())
    sof = jpg.index(b"\xff\xc0")
    struct.pack_into(">HH", jpg, sof + 5, 12000, 12000)
    app = b"\xff\xe1" + struct.pack(">H", 65535) + bytes(65533)
    data = bytes(jpg[:2]) + app * 17 + bytes(jpg[2:])
    assert len(data) > 2 ** 20
    assert cv.compressed_size(np.frombuffer(data, np.uint8)) == (12000, 12000)
    msg = CompressedImage(format="jpeg")
    msg.data = array.array("B", data)
    monkeypatch.setattr(cv2, "imdecode", lambda *a: pytest.fail("decoded a too large image"))
    with pytest.raises(InputError, match="too large"):
        cv.compressed_to_rgb(msg)


# ------------------------------------------------------------------------ one decoder, cv_bridge table
def _encode(rgb, encoding):
    """RGB uint8 -> the raw array of ``encoding`` (the inverse of what cv_bridge decodes)."""
    rgb16 = rgb.astype(np.uint16) * 257
    alpha = np.full(rgb.shape[:2] + (1,), 255, np.uint8)
    table = {
        "rgb8": rgb, "bgr8": rgb[:, :, ::-1], "rgba8": np.dstack([rgb, alpha]),
        "bgra8": np.dstack([rgb[:, :, ::-1], alpha]), "rgb16": rgb16, "bgr16": rgb16[:, :, ::-1],
        "rgba16": np.dstack([rgb16, alpha.astype(np.uint16) * 257]),
        "bgra16": np.dstack([rgb16[:, :, ::-1], alpha.astype(np.uint16) * 257]),
        "mono8": rgb[:, :, 0], "mono16": rgb16[:, :, 0],
    }
    if encoding in table:
        return np.ascontiguousarray(table[encoding])
    if encoding in ("yuv422", "uyvy", "yuv422_yuy2", "yuyv"):
        r, g, b = (rgb[:, :, i].astype(np.float64) for i in range(3))  # BT.601, video range
        y = np.rint(16 + 0.257 * r + 0.504 * g + 0.098 * b).astype(np.uint8)
        u = np.rint(128 - 0.148 * r - 0.291 * g + 0.439 * b).astype(np.uint8)[:, 0::2]
        v = np.rint(128 + 0.439 * r - 0.368 * g - 0.071 * b).astype(np.uint8)[:, 0::2]
        out = np.zeros(rgb.shape[:2] + (2,), np.uint8)
        uyvy = encoding in ("yuv422", "uyvy")
        out[:, :, 1 if uyvy else 0] = y
        out[:, 0::2, 0 if uyvy else 1] = u
        out[:, 1::2, 0 if uyvy else 1] = v
        return out
    mosaic = np.zeros(rgb.shape[:2], np.uint8)  # bayer: the pattern's channel at each pixel
    pattern = encoding[6:10]
    for k, (dy, dx) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):
        ch = "rgb".index(pattern[k])
        mosaic[dy::2, dx::2] = rgb[dy::2, dx::2, ch]
    return mosaic.astype(np.uint16) * 257 if encoding.endswith("16") else mosaic


@pytest.mark.parametrize("encoding", list(cv.RGB_CONVERSIONS))
def test_every_colour_encoding_decodes_the_same_in_node_and_frame_sources(encoding):
    rng = np.random.default_rng(3)
    flat = np.full((8, 8, 3), (200, 90, 30), np.uint8)  # uniform: exact for 4:2:2 and Bayer
    rgb = flat if not encoding.startswith(("rgb", "bgr")) else \
        rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    if encoding.startswith("mono"):
        rgb = np.repeat(rng.integers(0, 256, (8, 8, 1), dtype=np.uint8), 3, axis=2)
    arr = _encode(rgb, encoding)
    dtype, ch = cv.encoding_info(encoding)
    msg = make_msg(8, 8, encoding, 8 * ch * dtype.itemsize, arr.astype(dtype).tobytes())
    node = cv.image_to_rgb(msg)
    bag = ros_msg_to_rgb(SimpleNamespace(**{k: getattr(msg, k) for k in (
        "height", "width", "encoding", "step", "is_bigendian")}, data=np.frombuffer(
        bytes(msg.data), np.uint8)), "sensor_msgs/msg/Image")
    np.testing.assert_array_equal(node, bag)
    tol = 2 if encoding in ("yuv422", "uyvy", "yuv422_yuy2", "yuyv") else 0
    core = (slice(2, -2), slice(2, -2)) if encoding.startswith("bayer") else (slice(None), slice(None))
    assert np.abs(node[core].astype(int) - rgb[core]).max() <= tol, encoding


def test_frame_sources_refuse_what_the_node_refuses():
    m = SimpleNamespace(height=2, width=2, encoding="8UC3", step=6, is_bigendian=0, data=bytes(12))
    with pytest.raises(FrameSourceError, match="bag topic 3: image encoding '8UC3' has no colour"):
        ros_msg_to_rgb(m, "sensor_msgs/msg/Image", "bag topic 3")
    with pytest.raises(InputError, match="no colour meaning"):
        cv.image_to_rgb(m)


@needs_msgs
@pytest.mark.parametrize("fmt,payload_order", [
    ("jpeg", "bgr"), ("png", "bgr"), ("rgb8; png compressed bgr8", "bgr"),
    ("bgr8; png compressed bgr8", "bgr"), ("rgb8; png compressed rgb8", "rgb"),
])
def test_compressed_channel_order_follows_compressed_image_transport(fmt, payload_order):
    import cv2

    rgb = (np.random.default_rng(2).random((6, 7, 3)) * 255).astype(np.uint8)
    stored = rgb[:, :, ::-1] if payload_order == "bgr" else rgb  # what cv2.imencode receives
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(stored))
    msg = CompressedImage(format=fmt)
    msg.data = array.array("B", buf.tobytes())
    np.testing.assert_array_equal(cv.compressed_to_rgb(msg), rgb)
    assert cv.compressed_payload_is_rgb(fmt) is (payload_order == "rgb")


@needs_msgs
def test_compressed_16_bit_png_and_depth_refused():
    import cv2

    grey = np.array([[0, 65535], [257, 32768]], np.uint16)
    ok, buf = cv2.imencode(".png", grey)
    msg = CompressedImage(format="mono16; png compressed mono16")
    msg.data = array.array("B", buf.tobytes())
    np.testing.assert_array_equal(cv.compressed_to_rgb(msg)[:, :, 0], [[0, 255], [1, 128]])
    msg.format = "16UC1; compressedDepth png"
    with pytest.raises(InputError, match="compressedDepth"):
        cv.compressed_to_rgb(msg)


@needs_msgs
@pytest.mark.parametrize("encoding", ["bayer_rggb8", "bayer_gbrg8", "bayer_bggr16", "bayer_grbg16"])
def test_a_bayer_image_through_png_compression_decodes_like_the_raw_one(encoding):
    """compressed_image_transport's PNG keeps a Bayer mosaic as it is ("bayer_rggb8; png
    compressed "); it was decoded as a grey image, the raw topic's same frame in colour."""
    import cv2

    dtype = np.uint16 if encoding.endswith("16") else np.uint8
    mosaic = (np.random.default_rng(3).random((12, 16)) * np.iinfo(dtype).max).astype(dtype)
    raw = cv.numpy_to_image(mosaic, encoding)
    ok, buf = cv2.imencode(".png", mosaic)
    msg = CompressedImage(format=f"{encoding}; png compressed ")
    msg.data = array.array("B", buf.tobytes())
    decoded = cv.compressed_to_rgb(msg)
    assert not np.array_equal(decoded[:, :, 0], decoded[:, :, 2])  # colour, not grey
    np.testing.assert_array_equal(decoded, cv.image_to_rgb(raw))


@needs_msgs
def test_a_bayer_image_through_jpeg_compression_is_the_grey_image_jpeg_got():
    """JPEG takes a Bayer original demosaiced to grey ("bayer_rggb8; jpeg compressed mono8",
    compressed_image_transport converts it with cv_bridge to mono8): it was demosaiced a second
    time, false colours on every edge."""
    import cv2

    mosaic = (np.random.default_rng(4).random((16, 20)) * 255).astype(np.uint8)
    grey = cv2.cvtColor(mosaic, cv2.COLOR_BayerBG2GRAY)  # what the publisher compresses
    ok, buf = cv2.imencode(".png", grey)  # (lossless, so the pixels can be compared)
    msg = CompressedImage(format="bayer_rggb8; jpeg compressed mono8")
    msg.data = array.array("B", buf.tobytes())
    np.testing.assert_array_equal(cv.compressed_to_rgb(msg), np.repeat(grey[:, :, None], 3, axis=2))
    assert cv.compressed_target_encoding("bayer_rggb8; jpeg compressed mono8") == "mono8"
    assert cv.compressed_target_encoding("bayer_rggb8; png compressed ") == ""


@needs_msgs
@pytest.mark.parametrize("original", ["16UC1", "8UC1", "32FC1"])
def test_a_compressed_image_of_an_original_without_colour_is_refused_like_the_raw_one(original):
    """compressed_image_transport sends a depth image as "16UC1; png compressed ": it was decoded
    as mono16 and tracked, while the same image on the raw topic is refused."""
    import cv2

    ok, buf = cv2.imencode(".png", np.full((6, 8), 1200, np.uint16))
    msg = CompressedImage(format=f"{original}; png compressed ")
    msg.data = array.array("B", buf.tobytes())
    with pytest.raises(InputError, match="no colour meaning"):
        cv.compressed_to_rgb(msg)
    with pytest.raises(InputError, match="no colour meaning"):
        cv.image_to_rgb(cv.numpy_to_image(np.zeros((6, 8), cv.encoding_info(original)[0]), original))


@needs_msgs
def test_compressed_single_channel_float_is_refused_not_cast():
    """A one-channel float payload (a TIFF) used to be cast to uint8 (300.7 -> 44)."""
    import cv2

    ok, buf = cv2.imencode(".tiff", np.array([[300.7, -1.2], [0.5, 2.0]], np.float32))
    assert ok
    msg = CompressedImage(format="tiff")
    msg.data = array.array("B", buf.tobytes())
    with pytest.raises(InputError, match="unsupported decoded pixel type float32"):
        cv.compressed_to_rgb(msg)


# ------------------------------------------------------------------ in place and without copies
@needs_msgs
@pytest.mark.parametrize("encoding,shape,dtype", [("mono8", (5, 7), np.uint8),
                                                   ("mono16", (5, 7), np.uint16),
                                                   ("rgb8", (5, 7, 3), np.uint8)])
def test_empty_image_view_is_the_message_data(encoding, shape, dtype):
    from rclpy.serialization import deserialize_message, serialize_message

    msg, view = cv.empty_image(shape[0], shape[1], encoding)
    assert view.shape == shape and view.dtype == dtype and not view.any()
    values = np.arange(np.prod(shape)).reshape(shape).astype(dtype) * 3
    view[...] = values  # written in place: what rclpy serialises is what was computed
    back = deserialize_message(serialize_message(msg), Image)
    assert (back.height, back.width, back.encoding, back.step) == (
        shape[0], shape[1], encoding, shape[1] * (shape[2] if len(shape) == 3 else 1) * dtype().itemsize)
    np.testing.assert_array_equal(cv.image_to_numpy(back), values)
    np.testing.assert_array_equal(cv.image_to_numpy(cv.numpy_to_image(values, encoding)), values)


@needs_msgs
def test_empty_image_reuses_a_message_even_while_an_old_view_lives():
    msg, old = cv.empty_image(4, 6, "mono8")
    msg2, new = cv.empty_image(3, 5, "mono16", msg=msg)  # the old view pins the old buffer
    assert msg2 is msg and new.shape == (3, 5) and len(msg.data) == 30
    new[...] = 7
    np.testing.assert_array_equal(cv.image_to_numpy(msg), np.full((3, 5), 7, np.uint16))
    assert old.shape == (4, 6)


@needs_msgs
def test_rgb8_decodes_without_a_copy_only_when_asked():
    rgb = np.random.default_rng(0).integers(0, 256, (6, 9, 3), dtype=np.uint8)
    msg = cv.numpy_to_image(rgb, "rgb8")
    data = np.frombuffer(msg.data, np.uint8)
    view = cv.image_to_rgb(msg, copy=False)
    np.testing.assert_array_equal(view, rgb)
    assert np.shares_memory(view, data)
    copied = cv.image_to_rgb(msg)
    np.testing.assert_array_equal(copied, rgb)
    assert not np.shares_memory(copied, data)
    # conversions (channel order, padding, byte order) always give an array of their own
    for encoding, arr in (("bgr8", rgb[:, :, ::-1]), ("mono16", rgb[:, :, 0].astype(np.uint16))):
        m = cv.numpy_to_image(np.ascontiguousarray(arr), encoding)
        assert not np.shares_memory(cv.image_to_rgb(m, copy=False), np.frombuffer(m.data, np.uint8))


def test_decoding_works_on_bytes_and_lists_too():
    rgb = (np.arange(4 * 5 * 3) % 256).astype(np.uint8).reshape(4, 5, 3)
    for data in (rgb.tobytes(), list(rgb.tobytes()), bytearray(rgb.tobytes())):
        msg = SimpleNamespace(height=4, width=5, encoding="rgb8", step=15, is_bigendian=NATIVE_BE,
                              data=data)
        np.testing.assert_array_equal(cv.image_to_rgb(msg, copy=False), rgb)
        out = cv.image_to_rgb(msg)
        out[0, 0, 0] = 99  # a copy is writable and independent
        np.testing.assert_array_equal(cv.image_to_rgb(msg), rgb)


@pytest.mark.parametrize("payload", [
    # PAM (P7) and Radiance HDR: cv2 decodes them, PIL cannot read their size
    b"P7\nWIDTH 9000\nHEIGHT 8000\nDEPTH 1\nMAXVAL 255\nTUPLTYPE GRAYSCALE\nENDHDR\n" + bytes(64),
    b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y 40000 +X 32000\n" + bytes(100),
], ids=["pam", "hdr"])
def test_a_compressed_payload_whose_size_cannot_be_read_is_refused_before_decoding(payload, monkeypatch):
    """The size limit must hold for every payload cv2 would decode: one whose header PIL cannot
    read (it used to be decoded anyway, gigabytes for a HDR of a few MB, or a cv2.error that the
    node counted as an inference failure) is an InputError, and the decoder is never called."""
    import cv2

    msg = CompressedImage(format="jpeg")
    msg.data = array.array("B", payload)
    monkeypatch.setattr(cv2, "imdecode", lambda *a: pytest.fail("decoded an image of unchecked size"))
    with pytest.raises(InputError, match="no image size in its header"):
        cv.compressed_to_rgb(msg)


def test_a_cv2_error_while_decoding_is_an_input_error(monkeypatch):
    """cv2.imdecode raises (not returns None) for headers it refuses: that is a bad input."""
    import cv2

    ok, png = cv2.imencode(".png", np.zeros((4, 4), np.uint8))

    def refuse(*_):
        raise cv2.error("OpenCV(4.x) error: (-215:Assertion failed) pixels <= CV_IO_MAX_IMAGE_PIXELS")

    monkeypatch.setattr(cv2, "imdecode", refuse)
    msg = CompressedImage(format="png")
    msg.data = array.array("B", png.tobytes())
    with pytest.raises(InputError, match="cannot decode compressed image"):
        cv.compressed_to_rgb(msg)


HUGE = "x" * 1_000_000


@pytest.mark.parametrize("decode", [
    lambda: cv.image_to_rgb(SimpleNamespace(encoding=HUGE, width=8, height=8, step=24,
                                            is_bigendian=0, data=bytes(192))),
    lambda: cv.image_to_numpy(SimpleNamespace(encoding="mono8" + HUGE, width=8, height=8, step=8,
                                              is_bigendian=0, data=bytes(64))),
    lambda: cv.mask_from_image(SimpleNamespace(encoding=HUGE, width=2, height=2, step=2,
                                               is_bigendian=0, data=bytes(4))),
    lambda: cv.compressed_to_rgb(SimpleNamespace(format=HUGE, data=b"not an image")),
    lambda: cv.compressed_to_rgb(SimpleNamespace(format="compressedDepth" + HUGE, data=b"x")),
], ids=["image", "known_prefix", "mask", "compressed", "compressed_depth"])
def test_a_huge_encoding_or_format_gets_a_short_error(decode):
    """A message's encoding or format went whole into the InputError, and from there into the
    node's log line, the AddObject reply and /diagnostics: a megabyte each, once a second."""
    with pytest.raises(InputError) as exc:
        decode()
    assert len(str(exc.value)) < 300, len(str(exc.value))

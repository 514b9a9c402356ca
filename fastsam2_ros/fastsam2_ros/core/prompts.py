"""Prompt validation (the one place for ids, clicks, boxes, masks and texts) and the
distance-transform representative click (paper §3.7).

The tracker and the ROS adapters both call these checks, so a prompt is judged the same way
whichever way it arrives; every rejection is an :class:`InputError` with a message for the user.
"""

from __future__ import annotations

import numbers
import reprlib
import unicodedata
from typing import Callable, Optional, Sequence, Tuple

import numpy as np
from scipy import ndimage

from .errors import InputError

#: Largest object id: the label image is mono16 and its pixel value is the object id.
MAX_OBJECT_ID = 65535
#: Most clicks accepted in one prompt.
MAX_POINTS = 64


def validate_object_id(obj_id, allow_zero: bool = False) -> int:
    """An object id in [1, MAX_OBJECT_ID] (or 0 = "pick the next free id" when ``allow_zero``)."""
    if isinstance(obj_id, bool) or not isinstance(obj_id, numbers.Integral):
        raise InputError(f"object id must be an integer, got {obj_id!r}")
    lo = 0 if allow_zero else 1
    if not lo <= int(obj_id) <= MAX_OBJECT_ID:
        raise InputError(f"object id {int(obj_id)} out of range [{lo}, {MAX_OBJECT_ID}] "
                         "(ids are label-image pixel values)")
    return int(obj_id)


#: Longest clip a ``num_frames_hint`` may announce (sam2 only uses min(num_frames, 16) of it).
MAX_NUM_FRAMES_HINT = 10 ** 9


def validate_num_frames_hint(hint) -> Optional[int]:
    """A clip length (positive integer) or None/0 for an open-ended stream."""
    if hint is None:
        return None
    if isinstance(hint, bool) or not isinstance(hint, numbers.Integral):
        raise InputError(f"num_frames_hint must be an integer number of frames, got {hint!r}"[:200])
    if not 0 <= int(hint) <= MAX_NUM_FRAMES_HINT:
        raise InputError(f"num_frames_hint {int(hint)} out of range [0, {MAX_NUM_FRAMES_HINT}]")
    return int(hint) or None


def next_free_id(used) -> int:
    """Smallest object id not in ``used``."""
    used_set = {int(i) for i in used}
    for i in range(1, MAX_OBJECT_ID + 1):
        if i not in used_set:
            return i
    raise InputError("no free object id")


def _float_array(values, what: str) -> np.ndarray:
    """``values`` as a float64 array; ragged lists and non-numbers become InputError."""
    if isinstance(values, (str, bytes)):
        raise InputError(f"{what} must be numbers, got {reprlib.repr(values)}")
    problem = f"{what} must be a rectangular list of numbers, got {{}}"  # (repr only on failure)
    try:
        raw = np.asarray(values)
    except (TypeError, ValueError) as exc:
        raise InputError(problem.format(reprlib.repr(values))) from exc
    if raw.dtype.kind not in "biuf":  # numpy would parse "12" as a number; refuse strings, objects
        raise InputError(problem.format(reprlib.repr(values)))
    return raw.astype(np.float64)


def _inside_image(x: np.ndarray, y: np.ndarray, shape: Tuple[int, int]) -> np.ndarray:
    """Pixel i is centred at coordinate i, so the image spans [-0.5, W - 0.5] x [-0.5, H - 0.5]:
    a click anywhere on the last pixel (an RViz click projected through camera_info lands there
    at sub-pixel positions) is on the image."""
    h, w = shape
    return (x >= -0.5) & (x <= w - 0.5) & (y >= -0.5) & (y <= h - 0.5)


def representative_click(mask: np.ndarray, central_ties: bool = False) -> Tuple[int, int]:
    """Pixel (x, y) deepest inside ``mask`` (maximum of the Euclidean distance transform).

    Unlike the centroid it always lies on the object, also for rings and C shapes. The largest
    connected component is used so a speck elsewhere cannot win. Ties go to the first pixel in
    row-major order (the evaluation's documented click protocol), or with ``central_ties`` to the
    tied pixel nearest the component's centroid: a box's maxima are a ridge along its long axis,
    whose first pixel is at one end of the box, its centre in the middle (automatic prompt).
    """
    m = np.asarray(mask)
    if m.ndim != 2:
        raise InputError(f"mask must be 2-D, got shape {m.shape}")
    m = m.astype(bool)
    if not m.any():
        raise InputError("mask is empty: no representative click")
    labels, count = ndimage.label(m)
    if count > 1:
        sizes = ndimage.sum(m, labels, index=np.arange(1, count + 1))
        m = labels == (int(np.argmax(sizes)) + 1)
    dist = ndimage.distance_transform_edt(np.pad(m, 1))[1:-1, 1:-1]
    if not central_ties:
        y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
        return int(x), int(y)
    ys, xs = np.nonzero(dist == dist.max())  # row-major order: equal distances keep the first
    cy, cx = ndimage.center_of_mass(m)
    i = int(np.argmin((ys - cy) ** 2 + (xs - cx) ** 2))
    return int(xs[i]), int(ys[i])



def validate_points(points, labels, shape: Tuple[int, int]) -> Tuple[np.ndarray, np.ndarray]:
    """Check clicks: finite, inside the image, labels 0/1 of the same count."""
    h, w = shape
    pts = _float_array(points, "points")
    if pts.ndim == 1 and pts.size == 2:
        pts = pts[None]
    if pts.ndim != 2 or pts.shape[1] != 2 or pts.shape[0] == 0:
        raise InputError(f"points must be a non-empty list of (x, y), got shape {pts.shape}")
    if pts.shape[0] > MAX_POINTS:
        raise InputError(f"too many points ({pts.shape[0]}); at most {MAX_POINTS} per prompt")
    if not np.all(np.isfinite(pts)):
        raise InputError("points contain NaN or infinity")
    if labels is None:
        raise InputError("labels are required with points (1 = positive, 0 = negative)")
    lab = _float_array(labels, "labels").reshape(-1)
    if lab.shape[0] != pts.shape[0]:
        raise InputError(f"{pts.shape[0]} points but {lab.shape[0]} labels")
    if not np.all(np.isin(lab, (0, 1))):
        raise InputError(f"labels must be 0 (negative) or 1 (positive), got {lab.tolist()}")
    outside = ~_inside_image(pts[:, 0], pts[:, 1], shape)
    if outside.any():
        bad = pts[outside][0].tolist()
        raise InputError(f"point {bad} is outside the {w}x{h} image")
    pts = np.stack([pts[:, 0].clip(0, w - 1), pts[:, 1].clip(0, h - 1)], axis=1)  # onto a pixel
    return pts.astype(np.float32), lab.astype(np.int32)


def validate_box(box, shape: Tuple[int, int]) -> Tuple[float, float, float, float]:
    """Box (x0, y0, x1, y1) in pixels, finite, non-empty, overlapping the image (clipped)."""
    h, w = shape
    b = _float_array(box, "box").reshape(-1)
    if b.shape[0] != 4:
        raise InputError(f"box must be (x0, y0, x1, y1), got {b.shape[0]} numbers: "
                         f"{reprlib.repr(b.tolist())}")
    if not np.all(np.isfinite(b)):
        raise InputError("box contains NaN or infinity")
    x0, y0, x1, y1 = b.tolist()
    if x1 <= x0 or y1 <= y0:
        raise InputError(f"box {b.tolist()} is empty (need x1 > x0 and y1 > y0)")
    if x1 < -0.5 or x0 > w - 0.5 or y1 < -0.5 or y0 > h - 0.5:  # (the image's edges: _inside_image)
        raise InputError(f"box {b.tolist()} lies outside the {w}x{h} image")
    # clipped to the border pixels; a box on the last column alone keeps that column (x0 == x1)
    x0, x1 = min(max(0.0, x0), float(w - 1)), max(min(float(w - 1), x1), 0.0)
    y0, y1 = min(max(0.0, y0), float(h - 1)), max(min(float(h - 1), y1), 0.0)
    return x0, y0, x1, y1


def validate_mask(mask, shape: Tuple[int, int]) -> np.ndarray:
    """Boolean [H, W] mask of the image's shape with at least one pixel set."""
    try:
        m = np.asarray(mask)
    except (TypeError, ValueError) as exc:
        raise InputError(f"mask must be a 2-D array, got {type(mask).__name__}") from exc
    if m.shape != tuple(shape):
        raise InputError(f"mask shape {m.shape} does not match the image {tuple(shape)}")
    if m.dtype != bool:
        if m.dtype.kind not in "biuf" or not np.all(np.isfinite(m)):
            raise InputError("mask must be boolean or numeric without NaN")
        m = m > 0
    if not m.any():
        raise InputError("mask prompt is empty")
    return np.ascontiguousarray(m)  # a flipped view has negative strides, which torch refuses


def validate_text(text: Optional[str], max_length: int) -> Optional[str]:
    """Stripped text of at most ``max_length`` characters, without control characters (Unicode
    category Cc but tab: C0, DEL and C1), and not made only of invisible format characters (Cf:
    byte-order mark, zero-width space ...), which a text encoder reads as the empty text."""
    if text is None:
        return None
    if not isinstance(text, str):
        raise InputError(f"text must be a string, got {type(text).__name__}")
    if len(text) > max_length:  # before strip(): a huge string is not even scanned
        raise InputError(f"text prompt has {len(text)} characters; at most {max_length}")
    text = text.strip()
    if not "".join(ch for ch in text if unicodedata.category(ch) != "Cf").strip():
        why = " (only invisible format characters)" if text else ""
        raise InputError(f"text prompt is empty{why}")
    if any(unicodedata.category(ch) == "Cc" and ch != "\t" for ch in text):
        raise InputError("text prompt contains control characters")
    refuse_surrogates(text, "text prompt")
    return text


def refuse_surrogates(text: str, what: str) -> None:
    """InputError for a lone surrogate (a str no UTF-8 encoder takes: the tokenizers fail on it
    with a TypeError)."""
    if any(unicodedata.category(ch) == "Cs" for ch in text):
        raise InputError(f"{what} contains lone surrogates (not valid Unicode text)")


def check_prompt_kinds(has_points: bool, has_box: bool, has_mask: bool) -> None:
    """The one rule on combining prompt kinds (sam2 takes a mask alone): InputError otherwise."""
    if has_mask and (has_points or has_box):
        raise InputError("a mask prompt cannot be combined with points or a box")


#: Smallest and largest side of a frame the tracker takes, in pixels.
MIN_IMAGE_SIDE, MAX_IMAGE_SIDE = 8, 8192


def longest_prefix(n: int, fits: Callable[[int], bool]) -> int:
    """Largest k in [0, n] for which ``fits(k)`` holds (0 when none): a binary search, so
    ``fits`` must not turn true again once a shorter prefix failed (a token count)."""
    lo, hi = 0, n
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


def leading_words_within(words: Sequence[str], fits: Callable[[str], bool]) -> str:
    """The most leading ``words`` (joined by spaces) for which ``fits`` holds (see
    :func:`longest_prefix`)."""
    return " ".join(words[:longest_prefix(len(words), lambda k: fits(" ".join(words[:k])))])


def leading_text_within(text: str, max_words: int, fits: Callable[[str], bool]) -> str:
    """The longest start of ``text`` for which ``fits`` holds: its leading words (of the first
    ``max_words``), or, when the first word alone does not fit (a text without spaces, e.g. CJK),
    its leading characters."""
    words = text.split()
    return leading_words_within(words[:max_words], fits) or (
        leading_chars_within(words[0], fits) if words else "")


def leading_chars_within(text: str, fits: Callable[[str], bool]) -> str:
    """The longest start of ``text`` for which ``fits`` holds, cut between characters: for a
    single word too long to fit (a caption without spaces has no word boundary to cut at)."""
    return text[:longest_prefix(len(text), lambda k: fits(text[:k]))]


def shorten_text(text: str, max_length: int) -> str:
    """``text`` cut to at most ``max_length`` characters, at the last word boundary that fits
    (a generated text, e.g. a caption, must still be a valid text prompt)."""
    if len(text) <= max_length:
        return text
    cut = text[:max_length]
    if not text[max_length].isspace() and " " in cut:
        cut = cut[:cut.rfind(" ")]
    return cut.strip()


def validate_image(image) -> np.ndarray:
    """RGB uint8 [H, W, 3] (a contiguous copy is not made unless needed)."""
    if not isinstance(image, np.ndarray):
        raise InputError(f"image must be a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise InputError(f"image must be uint8 RGB, got dtype {image.dtype}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise InputError(f"image must be HxWx3 RGB, got shape {image.shape}")
    _check_image_sides(image.shape[0], image.shape[1])
    return image


def validate_image_shape(shape) -> Tuple[int, int]:
    """(H, W) of a frame that is not given (an empty result of that size): two integers within
    the sides a frame may have."""
    try:
        sides = tuple(shape)
    except TypeError:
        sides = ()
    if len(sides) != 2 or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool)
                                  for v in sides):
        raise InputError(f"image shape must be (height, width) integers, got {reprlib.repr(shape)}")
    _check_image_sides(int(sides[0]), int(sides[1]))
    return int(sides[0]), int(sides[1])


def _check_image_sides(height: int, width: int) -> None:
    if height < MIN_IMAGE_SIDE or width < MIN_IMAGE_SIDE:
        raise InputError(f"image is too small: {width}x{height} "
                         f"(min {MIN_IMAGE_SIDE}x{MIN_IMAGE_SIDE})")
    if height > MAX_IMAGE_SIDE or width > MAX_IMAGE_SIDE:
        raise InputError(f"image is too large: {width}x{height} (max {MAX_IMAGE_SIDE})")

"""Prompt validation and the distance-transform representative click (paper §3.7)."""

from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple

import numpy as np
from scipy import ndimage

from .errors import InputError


def representative_click(mask: np.ndarray) -> Tuple[int, int]:
    """Pixel (x, y) deepest inside ``mask`` (maximum of the Euclidean distance transform).

    Unlike the centroid it always lies on the object, also for rings and C shapes. The largest
    connected component is used so a speck elsewhere cannot win; ties go to the first pixel in
    row-major order (deterministic).
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
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return int(x), int(y)


def box_click(box: Sequence[float], shape: Tuple[int, int]) -> Tuple[int, int]:
    """Representative click of a box prompt: its distance-transform peak (the clipped centre)."""
    h, w = shape
    x0, y0, x1, y1 = validate_box(box, shape)
    m = np.zeros((h, w), dtype=bool)
    m[int(math.floor(y0)):int(math.ceil(y1)) + 1, int(math.floor(x0)):int(math.ceil(x1)) + 1] = True
    return representative_click(m)


def validate_points(points, labels, shape: Tuple[int, int]) -> Tuple[np.ndarray, np.ndarray]:
    """Check clicks: finite, inside the image, labels 0/1 of the same count."""
    h, w = shape
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim == 1 and pts.size == 2:
        pts = pts[None]
    if pts.ndim != 2 or pts.shape[1] != 2 or pts.shape[0] == 0:
        raise InputError(f"points must be a non-empty list of (x, y), got shape {pts.shape}")
    if pts.shape[0] > 64:
        raise InputError(f"too many points ({pts.shape[0]}); at most 64 per prompt")
    if not np.all(np.isfinite(pts)):
        raise InputError("points contain NaN or infinity")
    if labels is None:
        raise InputError("labels are required with points (1 = positive, 0 = negative)")
    lab = np.asarray(labels).reshape(-1)
    if lab.shape[0] != pts.shape[0]:
        raise InputError(f"{pts.shape[0]} points but {lab.shape[0]} labels")
    if not np.all(np.isin(lab, (0, 1))):
        raise InputError(f"labels must be 0 (negative) or 1 (positive), got {lab.tolist()}")
    outside = (pts[:, 0] < 0) | (pts[:, 0] > w - 1) | (pts[:, 1] < 0) | (pts[:, 1] > h - 1)
    if outside.any():
        bad = pts[outside][0].tolist()
        raise InputError(f"point {bad} is outside the {w}x{h} image")
    return pts.astype(np.float32), lab.astype(np.int32)


def validate_box(box, shape: Tuple[int, int]) -> Tuple[float, float, float, float]:
    """Box (x0, y0, x1, y1) in pixels, finite, non-empty, overlapping the image (clipped)."""
    h, w = shape
    b = np.asarray(box, dtype=np.float64).reshape(-1)
    if b.shape[0] != 4:
        raise InputError(f"box must be (x0, y0, x1, y1), got {b.tolist()}")
    if not np.all(np.isfinite(b)):
        raise InputError("box contains NaN or infinity")
    x0, y0, x1, y1 = b.tolist()
    if x1 <= x0 or y1 <= y0:
        raise InputError(f"box {b.tolist()} is empty (need x1 > x0 and y1 > y0)")
    x0, x1 = max(0.0, x0), min(float(w - 1), x1)
    y0, y1 = max(0.0, y0), min(float(h - 1), y1)
    if x1 <= x0 or y1 <= y0:
        raise InputError(f"box {b.tolist()} lies outside the {w}x{h} image")
    return x0, y0, x1, y1


def validate_mask(mask, shape: Tuple[int, int]) -> np.ndarray:
    m = np.asarray(mask)
    if m.shape != tuple(shape):
        raise InputError(f"mask shape {m.shape} does not match the image {tuple(shape)}")
    if m.dtype != bool:
        if not np.issubdtype(m.dtype, np.number) or not np.all(np.isfinite(m)):
            raise InputError("mask must be boolean or numeric without NaN")
        m = m > 0
    if not m.any():
        raise InputError("mask prompt is empty")
    return m


def validate_text(text: Optional[str], max_length: int) -> Optional[str]:
    if text is None:
        return None
    if not isinstance(text, str):
        raise InputError(f"text must be a string, got {type(text).__name__}")
    text = text.strip()
    if not text:
        raise InputError("text prompt is empty")
    if len(text) > max_length:
        raise InputError(f"text prompt has {len(text)} characters; at most {max_length}")
    if any(ord(ch) < 32 and ch not in "\t" for ch in text):
        raise InputError("text prompt contains control characters")
    return text


def validate_image(image) -> np.ndarray:
    """RGB uint8 [H, W, 3] (a contiguous copy is not made unless needed)."""
    if not isinstance(image, np.ndarray):
        raise InputError(f"image must be a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise InputError(f"image must be uint8 RGB, got dtype {image.dtype}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise InputError(f"image must be HxWx3 RGB, got shape {image.shape}")
    if image.shape[0] < 8 or image.shape[1] < 8:
        raise InputError(f"image is too small: {image.shape[1]}x{image.shape[0]} (min 8x8)")
    if image.shape[0] > 8192 or image.shape[1] > 8192:
        raise InputError(f"image is too large: {image.shape[1]}x{image.shape[0]} (max 8192)")
    return image

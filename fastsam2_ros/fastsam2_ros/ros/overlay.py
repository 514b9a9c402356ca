"""Overlay image: the input frame with coloured object masks (and optionally the retained tokens).

Pure numpy, shared by the node (``overlay`` topic) and the demo.
"""

from __future__ import annotations

import colorsys
from functools import lru_cache
from typing import Dict, Mapping, Optional

import numpy as np

#: Distinct colours (RGB) for object ids 1..16; higher ids get colours of their own (color_of).
PALETTE = np.array([
    [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
    [145, 30, 180], [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212],
    [0, 128, 128], [220, 190, 255], [170, 110, 40], [255, 250, 200], [128, 0, 0],
    [170, 255, 195],
], dtype=np.uint8)


#: Hue step between consecutive ids past the palette: the golden ratio's fraction spreads any run of
#: ids evenly around the colour wheel, so neighbouring ids never look alike.
_GOLDEN_HUE_STEP = 0.6180339887498949


@lru_cache(maxsize=1024)
def _generated_colour(obj_id: int) -> np.ndarray:
    """A colour for an id past the palette: golden-ratio hue steps, saturation and value cycled."""
    n = obj_id - len(PALETTE) - 1
    hue = (0.05 + n * _GOLDEN_HUE_STEP) % 1.0
    sat, val = (0.85, 0.65, 0.75)[n % 3], (0.95, 0.85, 0.70)[(n // 3) % 3]
    rgb = np.round(np.array(colorsys.hsv_to_rgb(hue, sat, val)) * 255.0).astype(np.uint8)
    rgb.setflags(write=False)
    return rgb


def color_of(obj_id: int) -> np.ndarray:
    """The RGB colour of an object id (ids 1..16 from the palette; the colours used to repeat
    after 16, so objects 1 and 17 looked like one)."""
    obj_id = int(obj_id)
    if 1 <= obj_id <= len(PALETTE):
        return PALETTE[obj_id - 1]
    return _generated_colour(obj_id)


def _boundary(mask: np.ndarray) -> np.ndarray:
    inner = mask.copy()
    inner[1:, :] &= mask[:-1, :]
    inner[:-1, :] &= mask[1:, :]
    inner[:, 1:] &= mask[:, :-1]
    inner[:, :-1] &= mask[:, 1:]
    return mask & ~inner


def token_grid_to_pixels(grid: np.ndarray, shape: tuple) -> np.ndarray:
    """Nearest-neighbour upsampling of a [gh, gw] bool token grid to an [H, W] image."""
    gh, gw = grid.shape
    h, w = shape
    rows = np.minimum((np.arange(h) * gh) // max(h, 1), gh - 1)
    cols = np.minimum((np.arange(w) * gw) // max(w, 1), gw - 1)
    return grid[rows][:, cols]


def draw_overlay(rgb: np.ndarray, masks: Mapping[int, np.ndarray], alpha: float = 0.5,
                 kept_tokens: Optional[Dict[int, np.ndarray]] = None,
                 out: Optional[np.ndarray] = None) -> np.ndarray:
    """RGB uint8 [H, W, 3]: masks blended in their colours with a solid boundary (written into
    ``out``, e.g. a message's buffer, if given).

    Objects are drawn in ascending id order: each blends ``alpha`` of its colour over what is
    there (in float32, rounded once at the end) and then paints its boundary. ``kept_tokens``:
    optional {obj_id: bool [gh, gw]} grid of tokens the router kept; the pruned-away tokens are
    darkened (x 0.45) first so the retained ones stand out.

    Fast and exact: a pixel's result depends only on its input value, whether it is darkened and
    which objects cover it. Where one object covers it, that is a 256-entry table per object and
    channel (built with the float32 arithmetic above) applied inside the object's bounding box;
    the few pixels where objects overlap run the float32 sequence itself. So the cost follows
    the objects' size, not the frame's.
    """
    import cv2

    h, w = rgb.shape[:2]
    out = np.empty_like(rgb) if out is None else out
    if out.shape != rgb.shape or out.dtype != np.uint8 or not out.flags.c_contiguous:
        raise ValueError(f"out must be a contiguous uint8 array of shape {rgb.shape}")
    a = float(np.clip(alpha, 0.0, 1.0))
    dark = _pruned_pixels(kept_tokens, (h, w)) if kept_tokens else None
    np.copyto(out, rgb)
    if dark is not None:
        cv2.copyTo(cv2.LUT(rgb, _blend_table(None, a, darkened=True)), dark.view(np.uint8), out)
    objects = []
    for obj_id in sorted(masks):
        m = np.asarray(masks[obj_id], dtype=bool)
        if m.shape != (h, w):
            continue
        x, y, bw, bh = cv2.boundingRect(np.ascontiguousarray(m).view(np.uint8))
        if bw == 0:
            continue
        # one pixel of margin, so that the boundary at the box's edge is found as in the frame
        box = (slice(max(y - 1, 0), min(y + bh + 1, h)), slice(max(x - 1, 0), min(x + bw + 1, w)))
        objects.append((obj_id, m, box, _boundary(m[box])))
    overlap = None
    if len(objects) > 1:
        count = np.zeros((h, w), np.uint8)
        for _, m, box, _ in objects:
            count[box] += m[box]
        overlap = count > 1
    for obj_id, m, box, edge in objects:
        alone = m[box] if overlap is None else m[box] & ~overlap[box]
        target = out[box]
        for darkened in ((False, True) if dark is not None else (False,)):
            where = alone if dark is None else alone & (dark[box] == darkened)
            blended = cv2.LUT(rgb[box], _blend_table(color_of(obj_id), a, darkened))
            cv2.copyTo(blended, where.view(np.uint8), target)
        target[edge & alone] = color_of(obj_id)
    if overlap is not None and overlap.any():
        _draw_overlaps(rgb, out, objects, overlap, dark, a)
    return out


def _pruned_pixels(kept_tokens: Dict[int, np.ndarray], shape: tuple) -> np.ndarray:
    """bool [H, W]: pixels of tokens no object kept."""
    kept = np.zeros(shape, dtype=bool)
    for grid in kept_tokens.values():
        grid = np.asarray(grid, dtype=bool)
        if grid.ndim == 2 and grid.size:
            kept |= token_grid_to_pixels(grid, shape)
    return ~kept


def _blend_table(colour: Optional[np.ndarray], a: float, darkened: bool) -> np.ndarray:
    """uint8 [256, 1, 3]: input value -> drawn value, per channel: darkened or not, then blended
    with ``colour`` (None: not blended), in the float32 arithmetic of the overlap path."""
    v = np.arange(256, dtype=np.float32)[:, None].repeat(3, axis=1)
    if darkened:
        v *= _DARKEN
    if colour is not None:
        v = v * (1.0 - a) + colour.astype(np.float32) * a
    return np.clip(v + 0.5, 0, 255).astype(np.uint8).reshape(256, 1, 3)


def _draw_overlaps(rgb, out, objects, overlap, dark, a: float) -> None:
    """The pixels covered by more than one object, in float32, objects in ascending id order."""
    h, w = overlap.shape
    flat = np.flatnonzero(overlap)
    ys, xs = np.divmod(flat, w)
    values = rgb.reshape(-1, 3)[flat].astype(np.float32)
    if dark is not None:
        values = np.where(dark.ravel()[flat][:, None], values * np.float32(_DARKEN), values)
    for obj_id, m, box, edge in objects:
        c = color_of(obj_id).astype(np.float32)
        inside = m.ravel()[flat][:, None]
        values = np.where(inside, values * (1.0 - a) + c * a, values)
        by, bx = ys - box[0].start, xs - box[1].start
        in_box = (by >= 0) & (by < edge.shape[0]) & (bx >= 0) & (bx < edge.shape[1])
        on_edge = np.zeros(flat.size, dtype=bool)
        on_edge[in_box] = edge[by[in_box], bx[in_box]]
        values = np.where(on_edge[:, None], c, values)
    out.reshape(-1, 3)[flat] = np.clip(values + 0.5, 0, 255).astype(np.uint8)


#: factor of the pruned-away tokens' pixels (overlay_show_tokens)
_DARKEN = 0.45


__all__ = ["PALETTE", "color_of", "draw_overlay", "token_grid_to_pixels"]

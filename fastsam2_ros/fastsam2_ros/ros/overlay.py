"""Overlay image: the input frame with coloured object masks (and optionally the retained tokens).

Pure numpy, shared by the node (``overlay`` topic) and the demo.
"""

from __future__ import annotations

from typing import Dict, Mapping, Optional

import numpy as np

#: Distinct colours (RGB) for object ids 1, 2, ... (cycled).
PALETTE = np.array([
    [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
    [145, 30, 180], [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212],
    [0, 128, 128], [220, 190, 255], [170, 110, 40], [255, 250, 200], [128, 0, 0],
    [170, 255, 195],
], dtype=np.uint8)


def color_of(obj_id: int) -> np.ndarray:
    return PALETTE[(int(obj_id) - 1) % len(PALETTE)]


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
                 kept_tokens: Optional[Dict[int, np.ndarray]] = None) -> np.ndarray:
    """RGB uint8 [H, W, 3]: masks blended in their colours with a solid boundary.

    ``kept_tokens``: optional {obj_id: bool [gh, gw]} grid of tokens the router kept; drawn as a
    darkened view of the pruned-away tokens so the retained ones stand out.
    """
    out = rgb.astype(np.float32, copy=True)
    h, w = rgb.shape[:2]
    if kept_tokens:
        kept = np.zeros((h, w), dtype=bool)
        for grid in kept_tokens.values():
            grid = np.asarray(grid, dtype=bool)
            if grid.ndim == 2 and grid.size:
                kept |= token_grid_to_pixels(grid, (h, w))
        out[~kept] *= 0.45
    a = float(np.clip(alpha, 0.0, 1.0))
    for obj_id in sorted(masks):
        m = np.asarray(masks[obj_id], dtype=bool)
        if m.shape != (h, w) or not m.any():
            continue
        c = color_of(obj_id).astype(np.float32)
        out[m] = out[m] * (1.0 - a) + c * a
        out[_boundary(m)] = c
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


__all__ = ["PALETTE", "color_of", "draw_overlay", "token_grid_to_pixels"]

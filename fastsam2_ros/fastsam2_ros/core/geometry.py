"""Per-object geometry of a binary mask: pixel area, bounding box and centroid.

What a downstream node (a grasp planner, a follower) needs without decoding the label image.
Plain numpy, so the ROS layer and offline tools share one definition.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import numpy as np


@dataclass(frozen=True)
class MaskGeometry:
    """Geometry of one mask, in pixels of the image (x right, y down).

    ``bbox`` is (x, y, width, height) of the tightest box holding every mask pixel, so a one-pixel
    mask at (5, 7) has the box (5, 7, 1, 1); ``centroid`` is the mean (x, y) of the mask pixels.
    An empty mask (an occluded object) has area 0, box (0, 0, 0, 0) and centroid (nan, nan).
    """

    area: int
    bbox: Tuple[int, int, int, int]
    centroid: Tuple[float, float]

    @property
    def empty(self) -> bool:
        return self.area == 0


EMPTY = MaskGeometry(0, (0, 0, 0, 0), (float("nan"), float("nan")))


def mask_geometry(mask: np.ndarray) -> MaskGeometry:
    """Area, bounding box and centroid of a 2-D boolean mask."""
    m = np.asarray(mask, dtype=bool)
    if m.ndim != 2:
        raise ValueError(f"mask must be 2-D, got shape {m.shape}")
    ys, xs = np.nonzero(m)
    if xs.size == 0:
        return EMPTY
    x0, x1 = int(xs.min()), int(xs.max())
    y0, y1 = int(ys.min()), int(ys.max())
    return MaskGeometry(area=int(xs.size), bbox=(x0, y0, x1 - x0 + 1, y1 - y0 + 1),
                        centroid=(float(xs.mean()), float(ys.mean())))


__all__ = ["MaskGeometry", "mask_geometry", "EMPTY"]

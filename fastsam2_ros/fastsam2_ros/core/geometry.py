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
    """Area, bounding box and centroid of a 2-D boolean mask.

    Reads the whole mask once (row and column ``any``), then only its bounding box: per-column
    and per-row pixel counts give the area and exact integer coordinate sums, so the centroid is
    the same float as the mean of the pixel coordinates, without listing the pixels."""
    m = np.asarray(mask, dtype=bool)
    if m.ndim != 2:
        raise ValueError(f"mask must be 2-D, got shape {m.shape}")
    rows = m.any(axis=1)
    if not rows.any():
        return EMPTY
    cols = m.any(axis=0)
    y0, y1 = _first_last(rows)
    x0, x1 = _first_last(cols)
    box = m[y0:y1 + 1, x0:x1 + 1]
    per_col = np.count_nonzero(box, axis=0)
    per_row = np.count_nonzero(box, axis=1)
    area = int(per_col.sum())
    sum_x = int(per_col @ np.arange(x0, x1 + 1, dtype=np.int64))
    sum_y = int(per_row @ np.arange(y0, y1 + 1, dtype=np.int64))
    return MaskGeometry(area=area, bbox=(x0, y0, x1 - x0 + 1, y1 - y0 + 1),
                        centroid=(sum_x / area, sum_y / area))


def _first_last(flags: np.ndarray):
    """Indices of the first and the last True of a 1-D bool array that has one."""
    return int(np.argmax(flags)), int(flags.size - 1 - np.argmax(flags[::-1]))


__all__ = ["MaskGeometry", "mask_geometry", "EMPTY"]

"""DAVIS region (J) and boundary (F) measures with the conventions of the DAVIS 2017 evaluation.

Written from the definitions used by ``davisvideochallenge/davis2017-evaluation`` (semi-supervised
task), which is the number every VOS paper reports. The conventions matched (see
``docs/evaluation.md``):

* **J** = |pred & gt| / |pred | gt| over non-void pixels; an empty union (both masks empty) is 1.
* **Boundaries** (``seg2bmap``): a pixel is on the boundary when it differs from its right, lower
  or lower-right neighbour, with pixels outside the image counted as background *except* that the
  last column is only compared downwards and the last row only rightwards (a mask touching the
  right or bottom image border has no boundary there), and the bottom-right pixel is never a
  boundary pixel. Computed at the mask's own size (the reference's rescaling branch is never used).
* **F**: boundaries of both masks (void pixels set to background first) are dilated with a disk of
  radius ``ceil(0.008 * image diagonal)`` pixels; precision = predicted boundary pixels within the
  dilated GT boundary / predicted boundary pixels, recall likewise; F = 2PR/(P+R), 0 when P+R=0.
  No predicted boundary and a GT boundary -> P=1, R=0 (F=0); a predicted boundary and none in the
  GT -> P=0, R=1 (F=0); neither -> F=1. Note an all-foreground mask has *no* boundary.
* **Statistics** per object over its frames: mean (NaN-ignoring), recall = fraction of frames with
  value > 0.5, decay = mean of the first minus mean of the last of 4 overlapping quantile bins
  (bin edges ``round(linspace(1, n, 5)) - 1``, bin i = values[e_i : e_{i+1} + 1]).
"""

from __future__ import annotations

import math
import warnings
from typing import Optional, Tuple

import numpy as np

#: boundary tolerance as a fraction of the image diagonal (DAVIS default)
BOUND_TH = 0.008
#: threshold of the recall statistic
RECALL_TH = 0.5
#: number of quantile bins of the decay statistic
DECAY_BINS = 4


def _bool(a: np.ndarray) -> np.ndarray:
    return np.asarray(a).astype(bool, copy=False)


def _check_shapes(gt: np.ndarray, pred: np.ndarray, void: Optional[np.ndarray]) -> None:
    if gt.shape != pred.shape:
        raise ValueError(f"ground truth {gt.shape} and prediction {pred.shape} have different shapes")
    if gt.ndim != 2:
        raise ValueError(f"masks must be 2-D, got shape {gt.shape}")
    if void is not None and void.shape != gt.shape:
        raise ValueError(f"void mask {void.shape} and ground truth {gt.shape} have different shapes")


def region_j(gt: np.ndarray, pred: np.ndarray, void: Optional[np.ndarray] = None) -> float:
    """Jaccard index of two binary masks, void pixels ignored; 1.0 when both are empty."""
    gt, pred = _bool(gt), _bool(pred)
    _check_shapes(gt, pred, void)
    valid = ~_bool(void) if void is not None else np.ones_like(gt)
    inter = np.count_nonzero(gt & pred & valid)
    union = np.count_nonzero((gt | pred) & valid)
    return 1.0 if union == 0 else inter / union


def seg2bmap(seg: np.ndarray) -> np.ndarray:
    """One-pixel-wide boundary map of a binary mask (same size), DAVIS/Berkeley convention.

    The boundary lies on the foreground/background pixel pairs, shifted half a pixel towards the
    origin: pixel (y, x) is set when it differs from (y, x+1), (y+1, x) or (y+1, x+1), where
    neighbours beyond the right/bottom border are background, except that the last column ignores
    its right neighbour, the last row ignores its lower neighbour, and pixel (H-1, W-1) is 0.
    """
    s = _bool(seg)
    if s.ndim != 2:
        raise ValueError(f"seg2bmap needs a 2-D mask, got shape {s.shape}")
    h, w = s.shape
    right = np.zeros_like(s)
    down = np.zeros_like(s)
    diag = np.zeros_like(s)
    right[:, : w - 1] = s[:, 1:]
    down[: h - 1, :] = s[1:, :]
    diag[: h - 1, : w - 1] = s[1:, 1:]
    b = (s != right) | (s != down) | (s != diag)
    b[h - 1, :] = s[h - 1, :] != right[h - 1, :]  # last row: right neighbour only
    b[:, w - 1] = s[:, w - 1] != down[:, w - 1]  # last column: lower neighbour only
    b[h - 1, w - 1] = False
    return b


def boundary_radius(shape: Tuple[int, int], bound_th: float = BOUND_TH) -> int:
    """Tolerance in pixels: ``bound_th`` itself when >= 1, else ceil(bound_th * diagonal)."""
    if bound_th >= 1:
        return int(bound_th)
    return int(math.ceil(bound_th * math.hypot(shape[0], shape[1])))


def disk(radius: int) -> np.ndarray:
    """Disk structuring element: offsets (dy, dx) in [-r, r]^2 with dx^2 + dy^2 <= r^2 (uint8)."""
    r = int(radius)
    yy, xx = np.mgrid[-r: r + 1, -r: r + 1]
    return ((xx * xx + yy * yy) <= r * r).astype(np.uint8)


def _dilate(b: np.ndarray, se: np.ndarray) -> np.ndarray:
    import cv2

    if se.shape == (1, 1):
        return b.copy()
    # pixels outside the image do not contribute (OpenCV's default dilation border)
    return cv2.dilate(b.astype(np.uint8), se).astype(bool)


def boundary_prf(gt: np.ndarray, pred: np.ndarray, void: Optional[np.ndarray] = None,
                 bound_th: float = BOUND_TH) -> Tuple[float, float, float]:
    """(precision, recall, F) of the predicted boundary against the GT boundary."""
    gt, pred = _bool(gt), _bool(pred)
    _check_shapes(gt, pred, void)
    if void is not None:
        keep = ~_bool(void)
        gt, pred = gt & keep, pred & keep
    se = disk(boundary_radius(gt.shape, bound_th))
    pb, gb = seg2bmap(pred), seg2bmap(gt)
    n_p, n_g = int(np.count_nonzero(pb)), int(np.count_nonzero(gb))
    if n_p == 0 and n_g == 0:
        precision, recall = 1.0, 1.0
    elif n_p == 0:
        precision, recall = 1.0, 0.0
    elif n_g == 0:
        precision, recall = 0.0, 1.0
    else:
        precision = np.count_nonzero(pb & _dilate(gb, se)) / n_p
        recall = np.count_nonzero(gb & _dilate(pb, se)) / n_g
    f = 0.0 if precision + recall == 0 else 2.0 * precision * recall / (precision + recall)
    return float(precision), float(recall), float(f)


def boundary_f(gt: np.ndarray, pred: np.ndarray, void: Optional[np.ndarray] = None,
               bound_th: float = BOUND_TH) -> float:
    """Boundary F-measure (DAVIS ``F``) of one frame."""
    return boundary_prf(gt, pred, void, bound_th)[2]


def frame_jf(gt: np.ndarray, pred: np.ndarray, void: Optional[np.ndarray] = None) -> Tuple[float, float]:
    """(J, F) of one object on one frame."""
    return region_j(gt, pred, void), boundary_f(gt, pred, void)


def decay_bin_edges(n: int, n_bins: int = DECAY_BINS) -> np.ndarray:
    """Inclusive bin edges of the decay statistic: ``round(linspace(1, n, n_bins + 1)) - 1``.

    Halves round up (the reference adds 1e-10 before numpy's round-half-to-even).
    """
    return (np.round(np.linspace(1, n, n_bins + 1) + 1e-10) - 1).astype(np.int64)


def db_statistics(values) -> Tuple[float, float, float]:
    """(mean, recall, decay) of one object's per-frame values (J or F), DAVIS definitions.

    mean ignores NaN; recall is the fraction of *all* frames whose value is > 0.5 (a NaN frame
    counts as a miss); decay = nanmean(first bin) - nanmean(last bin) of 4 overlapping bins.
    No frames -> (nan, nan, nan).
    """
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    n = v.size
    if n == 0:
        return float("nan"), float("nan"), float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        mean = float(np.nanmean(v))
        recall = float(np.mean(v > RECALL_TH))
        e = decay_bin_edges(n)
        first = v[e[0]: e[1] + 1]
        last = v[e[DECAY_BINS - 1]: e[DECAY_BINS] + 1]
        decay = float(np.nanmean(first) - np.nanmean(last))
    return mean, recall, decay


__all__ = [
    "region_j", "seg2bmap", "boundary_radius", "disk", "boundary_prf", "boundary_f", "frame_jf",
    "db_statistics", "decay_bin_edges", "BOUND_TH", "RECALL_TH", "DECAY_BINS",
]

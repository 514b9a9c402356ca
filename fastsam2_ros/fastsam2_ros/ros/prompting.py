"""ROS prompt messages -> tracker prompts, and camera projection of RViz clicks.

Plain Python + numpy: testable without a running node. The checks themselves (ids, texts, point
counts, finiteness) are the core's (:mod:`fastsam2_ros.core.prompts`), so a prompt is judged the
same whether it comes over ROS or through the Python API; what is checked here is only what the
message format adds (one label per point, a mask image). Every invalid input raises
:class:`~fastsam2_ros.core.errors.InputError` with a message for the log.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..core.errors import InputError
from ..core.prompts import MAX_POINTS, check_prompt_kinds, validate_object_id, validate_text
from ..image_messages import mask_from_image


class ClickNotUsable(InputError):
    """A /clicked_point that cannot be projected (no camera_info, no TF, behind the camera): the
    user clicked somewhere the camera does not see, logged as a warning, not a prompt error."""


@dataclass
class PromptRequest:
    """One prompt for one object, in the tracker's terms."""

    obj_id: int = 0  # 0 = next free id (only with new_object)
    #: True: start; False: refine; None: start if not tracked, refine if tracked (clicks)
    new_object: Optional[bool] = True
    text: Optional[str] = None
    points: List[Tuple[float, float]] = field(default_factory=list)
    labels: List[int] = field(default_factory=list)
    box: Optional[Tuple[float, float, float, float]] = None
    mask_msg: Any = None  # sensor_msgs/Image (decoded against the frame it is applied to)
    restart: bool = False  # new_object on a tracked id: start it over once accepted (text_object_id)
    #: (width, height) of the images the coordinates were made for (a projected /clicked_point:
    #: camera_info's); applied to a frame of another size the request is refused
    image_size: Optional[Tuple[int, int]] = None
    source: str = "prompt"

    def describe(self) -> str:
        parts = []
        if self.text:
            parts.append(f"text={self.text[:60]!r}")
        if self.points:
            parts.append(f"points={[(round(x, 1), round(y, 1)) for x, y in self.points]} labels={self.labels}")
        if self.box is not None:
            parts.append(f"box={[round(v, 1) for v in self.box]}")
        if self.mask_msg is not None:
            parts.append(f"mask={self.mask_msg.width}x{self.mask_msg.height}")
        return ", ".join(parts) or "(empty)"

    def tracker_kwargs(self, shape: Tuple[int, int]) -> Dict[str, Any]:
        """Keyword arguments of ``StreamingTracker.add_prompt`` for an image of ``shape`` (H, W)."""
        if self.image_size is not None and tuple(self.image_size) != (shape[1], shape[0]):
            raise InputError(f"{self.source}: projected for {self.image_size[0]}x{self.image_size[1]} "
                             f"images (camera_info), but the current image is {shape[1]}x{shape[0]}: "
                             "is camera_info the one of this image topic?")
        kw: Dict[str, Any] = {}
        if self.points:
            kw["points"] = [[float(x), float(y)] for x, y in self.points]
            kw["labels"] = [int(v) for v in self.labels]
        if self.box is not None:
            kw["box"] = [float(v) for v in self.box]
        if self.mask_msg is not None:
            kw["mask"] = mask_from_image(self.mask_msg, shape)
        if self.text:
            kw["text"] = self.text
        if not kw:
            raise InputError("empty prompt: give text, points, a box or a mask")
        return kw


def _finite(values: Sequence[float], what: str) -> None:
    if not all(math.isfinite(float(v)) for v in values):
        raise InputError(f"{what} contains NaN or infinity: {list(values)}")


def from_prompt_msg(msg: Any, max_text_length: int, source: str = "prompt") -> PromptRequest:
    """fastsam2_msgs/Prompt -> PromptRequest (checks ids, finiteness, label count/values)."""
    req = PromptRequest(obj_id=validate_object_id(int(msg.object_id), allow_zero=bool(msg.new_object)),
                        new_object=bool(msg.new_object), source=source)
    if msg.text:
        req.text = validate_text(msg.text, max_text_length)
    if len(msg.points) > MAX_POINTS:
        raise InputError(f"too many points ({len(msg.points)}); at most {MAX_POINTS}")
    pts = [(float(p.x), float(p.y)) for p in msg.points]
    for p in pts:
        _finite(p, "points")
    labels = [int(v) for v in msg.labels]
    if len(labels) != len(pts):
        raise InputError(f"{len(pts)} points but {len(labels)} labels (one label per point: 1 fg, 0 bg)")
    if any(v not in (0, 1) for v in labels):
        raise InputError(f"labels must be 1 (foreground) or 0 (background), got {labels}")
    req.points, req.labels = pts, labels
    if msg.has_box:
        box = tuple(float(v) for v in msg.box)
        _finite(box, "box")
        req.box = box  # type: ignore[assignment]
    if int(msg.mask.width) or int(msg.mask.height) or len(msg.mask.data):
        req.mask_msg = msg.mask
    # refused here, not after the prompt waited for the worker (or for the first image)
    check_prompt_kinds(bool(req.points), req.box is not None, req.mask_msg is not None)
    if not (req.text or req.points or req.box is not None or req.mask_msg is not None):
        raise InputError("empty prompt: give text, points, a box or a mask")
    return req


def click_request(x: float, y: float, z: float, obj_id: int, new_object: Optional[bool],
                  source: str) -> PromptRequest:
    """A single click (pixels). ``z < 0`` makes it a background (negative) click.
    ``new_object`` None: start ``obj_id`` if it is not tracked when the click is applied, else
    refine it."""
    _finite((x, y, z), f"{source} point")
    return PromptRequest(obj_id=obj_id, new_object=new_object, points=[(float(x), float(y))],
                         labels=[0 if z < 0 else 1], source=source)


def project_to_pixel(k: Sequence[float], point_xyz: Sequence[float],
                     binning: Tuple[int, int] = (1, 1),
                     roi_offset: Tuple[int, int] = (0, 0),
                     p: Sequence[float] = ()) -> Tuple[float, float]:
    """Pinhole projection of a point in the camera's optical frame (x right, y down, z forward)
    into the published image, as image_geometry's PinholeCameraModel.project3dToPixel and RViz
    project: with camera_info's 3x4 ``p`` (row-major; the rectified image's matrix, stereo
    offsets Tx/Ty included) when it is set, else with the 3x3 intrinsic matrix ``k``. Both are
    calibrated at full resolution, so the pixel is shifted by the ROI's offset and divided by the
    binning (camera_info's binning_x/y, 0 meaning 1)."""
    x, y, z = (float(v) for v in point_xyz)
    _finite((x, y, z), "clicked point")
    matrix = _click_matrix(k, p)
    if z <= 1e-6:
        raise ClickNotUsable(f"clicked point ({x:.3f}, {y:.3f}, {z:.3f}) is behind the camera (z <= 0)")
    u, v, w = matrix @ np.array([x, y, z, 1.0])
    if not w > 1e-12:
        raise InputError("camera_info's projection matrix P puts the clicked point at infinity")
    bx, by = _binning(binning)
    return float((u / w - roi_offset[0]) / bx), float((v / w - roi_offset[1]) / by)


def _click_matrix(k: Sequence[float], p: Sequence[float]) -> np.ndarray:
    """camera_info's P as 3x4 when set (not all zero: an uncalibrated driver leaves it so), else
    the pinhole matrix of K (fx, skew, cx, fy, cy; its last row taken as 0 0 1); InputError when
    the one chosen cannot project."""
    pp = np.asarray(p, dtype=np.float64).reshape(-1)
    if pp.size and np.any(pp != 0):
        if pp.size != 12 or not np.all(np.isfinite(pp)) or pp[0] == 0 or pp[5] == 0:
            raise InputError("camera_info has no valid projection matrix P")
        return pp.reshape(3, 4)
    kk = np.asarray(k, dtype=np.float64).reshape(-1)
    if kk.size != 9 or not np.all(np.isfinite(kk)) or kk[0] == 0 or kk[4] == 0:
        raise InputError("camera_info has no valid intrinsic matrix K")
    return np.array([[kk[0], kk[1], kk[2], 0.0], [0.0, kk[4], kk[5], 0.0], [0.0, 0.0, 1.0, 0.0]])


def _binning(binning: Tuple[int, int]) -> Tuple[int, int]:
    """camera_info's binning_x/y, 0 meaning 1 (no binning), as image_geometry reads them."""
    return max(int(binning[0]), 1), max(int(binning[1]), 1)


def camera_info_image_size(width: int, height: int, binning: Tuple[int, int] = (1, 1),
                           roi_size: Tuple[int, int] = (0, 0)) -> Optional[Tuple[int, int]]:
    """(width, height) of the images a camera_info describes: its ROI (or the full sensor) divided
    by the binning, as image_geometry computes it; None when camera_info gives no size."""
    full_w, full_h = int(roi_size[0]) or int(width), int(roi_size[1]) or int(height)
    if full_w <= 0 or full_h <= 0:
        return None
    bx, by = _binning(binning)
    return full_w // bx, full_h // by


def transform_point(translation: Sequence[float], rotation_xyzw: Sequence[float],
                    point: Sequence[float]) -> Tuple[float, float, float]:
    """Apply a TF transform (translation + unit quaternion x, y, z, w) to a point."""
    qx, qy, qz, qw = (float(v) for v in rotation_xyzw)
    p = np.asarray(point, dtype=np.float64)
    q = np.array([qx, qy, qz])
    t = 2.0 * np.cross(q, p)
    rotated = p + qw * t + np.cross(q, t)
    out = rotated + np.asarray(translation, dtype=np.float64)
    return float(out[0]), float(out[1]), float(out[2])


__all__ = ["ClickNotUsable", "PromptRequest", "from_prompt_msg", "click_request",
           "project_to_pixel", "transform_point"]

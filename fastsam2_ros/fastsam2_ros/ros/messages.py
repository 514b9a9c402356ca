"""Tracker results -> ROS messages: small named converters, one per message type.

* :func:`stats_to_msg` is the one place that maps :class:`~fastsam2_ros.core.stats.FrameStats`
  onto ``fastsam2_msgs/TrackerStats``; the diagnostics (:data:`DIAGNOSTIC_STATS_FIELDS`) and the
  demo (:func:`msg_to_dict`) read the message instead of listing the stats fields again.
* :func:`auto_prompt_summary`: the one line that reports an automatic start (service reply, log).
* :func:`tracked_objects_to_msg` builds ``fastsam2_msgs/TrackedObjectArray`` (per object: id, text,
  presence score, visible, bbox, centroid, area), :func:`detections_to_msg` the
  ``vision_msgs/Detection2DArray`` of the visible objects where vision_msgs is installed.

Message classes are imported when a converter runs, so this module imports without ROS.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, Optional

from ..core.auto_prompt import AUTO_STAGES
from ..core.geometry import mask_geometry
from ..core.stats import STAGES

#: The node's own stages of a frame, next to the tracker's (``STAGES``): ``<stage>_ms`` fields of
#: TrackerStats (from ``FrameContext.node_ms``), ``<stage>_ms_mean`` on /diagnostics.
NODE_STAGES = ("decode", "publish", "overlay")

#: TrackerStats fields that /diagnostics reports (under the same names) for the last frame.
DIAGNOSTIC_STATS_FIELDS = ("tokens_total", "tokens_kept_mean", "keep_ratio", "bank_frames",
                           "bank_tokens", "bank_bytes", "gpu_memory_bytes",
                           "peak_gpu_memory_bytes", "router_mode", "text_mode", "device",
                           "step_mode", "gpu_ms")


@dataclass
class FrameContext:
    """What the node knows about a frame besides the tracker's result."""

    header: Any
    width: int
    height: int
    node_latency_ms: float = 0.0
    dropped_frames: int = 0
    processed_frames: int = 0
    #: obj_id -> text it was prompted with (or found by)
    texts: Dict[int, str] = field(default_factory=dict)
    #: objects started without a click: from text alone (automatic click) or by the automatic prompt
    auto_prompted: Iterable[int] = ()
    #: the node's own cost of the frame: stage of NODE_STAGES -> ms
    node_ms: Dict[str, float] = field(default_factory=dict)


def stats_to_msg(stats: Any, result: Any, ctx: FrameContext):
    """``FrameStats`` (+ the result's ids and scores) -> ``fastsam2_msgs/TrackerStats``."""
    from fastsam2_msgs.msg import TrackerStats

    m = TrackerStats()
    m.header = ctx.header
    m.frame_index = int(result.frame_index)
    m.image_width, m.image_height = int(ctx.width), int(ctx.height)
    for stage in STAGES:
        setattr(m, f"{stage}_ms", float(stats.stage_ms.get(stage, 0.0)))
    m.node_latency_ms = float(ctx.node_latency_ms)
    for stage in NODE_STAGES:
        setattr(m, f"{stage}_ms", float(ctx.node_ms.get(stage, 0.0)))
    m.gpu_ms, m.step_mode = float(stats.gpu_ms), str(stats.step_mode)
    ids = sorted(int(i) for i in result.masks)
    m.tokens_total = max(0, int(stats.tokens_total))
    m.tokens_kept = [max(0, int(stats.tokens_kept.get(i, 0))) for i in ids]
    m.tokens_kept_mean = float(stats.tokens_kept_mean)
    m.keep_ratio = float(stats.keep_ratio)
    for name in ("bank_frames", "bank_tokens", "bank_bytes", "gpu_memory_bytes",
                 "peak_gpu_memory_bytes"):
        setattr(m, name, max(0, int(getattr(stats, name))))
    m.dropped_frames = max(0, int(ctx.dropped_frames))
    m.processed_frames = max(0, int(ctx.processed_frames))
    m.object_ids = ids
    m.object_scores = [float(result.scores.get(i, 0.0)) for i in ids]
    m.occluded_frames = [max(0, int(stats.occluded_frames.get(i, 0))) for i in ids]
    auto = set(int(i) for i in ctx.auto_prompted)
    m.auto_prompted_ids = [i for i in ids if i in auto]
    phrases = {int(k): str(v) for k, v in stats.auto_phrases.items()}
    m.auto_started_ids = [i for i in ids if i in phrases]
    m.auto_phrases = [phrases.get(i, "") for i in ids]
    for stage in AUTO_STAGES:
        setattr(m, f"auto_{stage}_ms", float(stats.stage_ms.get(f"auto_{stage}", 0.0)))
    m.router_mode, m.text_mode, m.device = str(stats.router_mode), str(stats.text_mode), str(stats.device)
    return m


def auto_prompt_summary(plan: Any) -> str:
    """One line on an automatic start (``core.auto_prompt.AutoPromptResult``): the reply of the
    ``auto_prompt`` service and the node's log line. Names the object and its phrase first, then
    why there is none (notes), the caption, the region and the time of each stage."""
    what = f'with the phrase "{plan.phrase}"' if plan.phrase else "without a phrase"
    notes = f": {'; '.join(plan.notes)}" if plan.notes else ""
    details = [f"caption {plan.caption!r}"] if plan.caption else []
    x, y = plan.click
    details.append(f"{plan.source} region, score {plan.score:.3g}, click ({x}, {y})")
    details.append(", ".join(f"{s} {plan.timings_ms.get(s, 0.0):.0f} ms" for s in AUTO_STAGES))
    return f"object {plan.obj_id} started automatically {what}{notes} ({'; '.join(details)})"


def tracked_objects_to_msg(result: Any, ctx: FrameContext):
    """Every tracked object of ``result`` -> ``fastsam2_msgs/TrackedObjectArray``.

    Occluded objects are kept: ``visible`` false, empty geometry, ``occluded_frames`` counting."""
    from fastsam2_msgs.msg import TrackedObject, TrackedObjectArray

    arr = TrackedObjectArray()
    arr.header = ctx.header
    arr.image_width, arr.image_height = int(ctx.width), int(ctx.height)
    auto = set(int(i) for i in ctx.auto_prompted)
    visible = result.visible
    occluded = result.stats.occluded_frames
    for obj_id in sorted(int(i) for i in result.masks):
        geo = mask_geometry(result.masks[obj_id])
        o = TrackedObject()
        o.id = obj_id
        o.text = ctx.texts.get(obj_id, "")
        o.presence_score = float(result.scores.get(obj_id, 0.0))
        o.visible = bool(visible.get(obj_id, False))
        o.occluded_frames = max(0, int(occluded.get(obj_id, 0)))
        o.area = geo.area
        o.bbox.x_offset, o.bbox.y_offset, o.bbox.width, o.bbox.height = geo.bbox
        o.centroid.x, o.centroid.y = geo.centroid
        o.auto_prompted = obj_id in auto
        arr.objects.append(o)
    return arr


def vision_msgs_available() -> bool:
    try:
        import vision_msgs.msg  # noqa: F401
    except ImportError:
        return False
    return True


def detections_to_msg(objects: Any):
    """``TrackedObjectArray`` -> ``vision_msgs/Detection2DArray`` of the visible objects.

    Per detection: ``id`` = the object id, one hypothesis with ``class_id`` = its text (or
    ``"object"``) and ``score`` = the presence probability (sigmoid of the logit), ``bbox`` centre
    and size in pixels, the centre in the package's pixel convention (pixel i at coordinate i, as
    clicks and centroids: a box of pixels 4..6 has centre 5 and size 3)."""
    from vision_msgs.msg import Detection2D, Detection2DArray, ObjectHypothesisWithPose

    out = Detection2DArray()
    out.header = objects.header
    for o in objects.objects:
        if not o.visible or o.area == 0:
            continue
        d = Detection2D()
        d.header = objects.header
        d.id = str(o.id)
        d.bbox.center.position.x = o.bbox.x_offset + (o.bbox.width - 1) / 2.0
        d.bbox.center.position.y = o.bbox.y_offset + (o.bbox.height - 1) / 2.0
        d.bbox.size_x, d.bbox.size_y = float(o.bbox.width), float(o.bbox.height)
        hyp = ObjectHypothesisWithPose()
        hyp.hypothesis.class_id = o.text or "object"
        hyp.hypothesis.score = 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, o.presence_score))))
        d.results.append(hyp)
        out.detections.append(d)
    return out


def msg_to_dict(msg: Any) -> Any:
    """A ROS message as plain Python (nested dicts, lists, numbers, strings), field by field."""
    if hasattr(msg, "get_fields_and_field_types"):
        return {name: msg_to_dict(getattr(msg, name)) for name in msg.get_fields_and_field_types()}
    if isinstance(msg, (list, tuple)) or type(msg).__name__ in ("array", "ndarray"):
        return [msg_to_dict(v) for v in msg]
    if isinstance(msg, float):
        return msg if math.isfinite(msg) else None
    if isinstance(msg, bytes):
        return list(msg)
    return msg


def diagnostic_values(stats_msg: Optional[Any]) -> Dict[str, str]:
    """The :data:`DIAGNOSTIC_STATS_FIELDS` of the last TrackerStats, as strings."""
    out = {}
    for name in DIAGNOSTIC_STATS_FIELDS:
        value = getattr(stats_msg, name, "") if stats_msg is not None else ""
        out[name] = f"{value:.3f}" if isinstance(value, float) else str(value)
    return out


__all__ = ["FrameContext", "NODE_STAGES", "DIAGNOSTIC_STATS_FIELDS", "stats_to_msg", "tracked_objects_to_msg",
           "vision_msgs_available", "detections_to_msg", "msg_to_dict", "diagnostic_values"]

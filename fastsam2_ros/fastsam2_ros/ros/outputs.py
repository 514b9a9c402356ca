"""The node's output publishers and what goes on each: mask, labels, overlay, objects,
detections (vision_msgs, when installed), stats. Every message carries the input image's header
and its resolution.

Created on configure and destroyed on cleanup/shutdown, always after the frame worker stopped,
so nothing publishes on a destroyed publisher.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, Mapping, Optional

import numpy as np
from sensor_msgs.msg import Image

from fastsam2_msgs.msg import TrackedObjectArray, TrackerStats

from ..image_messages import numpy_to_image
from .frame_worker import TrackedFrame
from .messages import (FrameContext, detections_to_msg, stats_to_msg, tracked_objects_to_msg,
                       vision_msgs_available)
from .overlay import draw_overlay
from .qos import latched, reliable


class OutputPublishers:
    """Lifecycle publishers of one node; :meth:`publish` sends one tracked frame."""

    def __init__(self, node: Any, depth: int, health: Any,
                 settings: Callable[[], Mapping[str, Any]]) -> None:
        from std_msgs.msg import String  # description: the latest automatic prompt's phrase

        self._node = node
        self._health = health
        self._settings = settings
        qos = reliable(depth)
        self._pubs: Dict[str, Any] = {
            "mask": node.create_lifecycle_publisher(Image, "mask", qos),
            "labels": node.create_lifecycle_publisher(Image, "labels", qos),
            "overlay": node.create_lifecycle_publisher(Image, "overlay", qos),
            "objects": node.create_lifecycle_publisher(TrackedObjectArray, "objects", qos),
            "stats": node.create_lifecycle_publisher(TrackerStats, "stats", qos),
            "description": node.create_lifecycle_publisher(String, "description", latched()),
        }
        if vision_msgs_available():
            from vision_msgs.msg import Detection2DArray

            self._pubs["detections"] = node.create_lifecycle_publisher(Detection2DArray,
                                                                        "detections", qos)

    @property
    def topics(self):
        return sorted(self._pubs)

    def destroy(self) -> None:
        pubs, self._pubs = self._pubs, {}
        for pub in pubs.values():
            self._node.destroy_lifecycle_publisher(pub)

    def publish_description(self, phrase: str) -> None:
        """The phrase of an automatic start ("" for a phrase-free one, so the latched message
        never names an object of an earlier start)."""
        pub = self._pubs.get("description")
        if pub is not None:
            pub.publish(pub.msg_type(data=phrase))

    def publish(self, frame: TrackedFrame) -> None:
        """Every enabled output of ``frame``; stats and health count only fresh frames."""
        pubs, s = self._pubs, self._settings()
        if not pubs:
            return
        result, header, rgb = frame.result, frame.header, frame.rgb
        h, w = rgb.shape[:2]
        if s["publish_mask"]:
            pubs["mask"].publish(numpy_to_image(result.union_mask((h, w)), "mono8", header))
        if s["publish_labels"]:
            pubs["labels"].publish(numpy_to_image(result.label_image((h, w)), "mono16", header))
        if s["publish_overlay"]:
            kept = _kept_token_grids(result) if s["overlay_show_tokens"] else None
            over = draw_overlay(rgb, result.masks, float(s["overlay_alpha"]), kept)
            pubs["overlay"].publish(numpy_to_image(over, "rgb8", header))
        counts = self._health.counts()
        ctx = FrameContext(header=header, width=w, height=h,
                           node_latency_ms=(time.monotonic() - frame.received) * 1e3,
                           dropped_frames=counts["dropped"],
                           processed_frames=counts["processed"] + (1 if frame.fresh else 0),
                           texts=frame.texts, auto_prompted=frame.auto_prompted)
        if s["publish_objects"] or s["publish_detections"]:
            objects = tracked_objects_to_msg(result, ctx)
            if s["publish_objects"]:
                pubs["objects"].publish(objects)
            if s["publish_detections"] and "detections" in pubs:
                pubs["detections"].publish(detections_to_msg(objects))
        stats = stats_to_msg(result.stats, result, ctx)
        if s["publish_stats"]:
            pubs["stats"].publish(stats)
        self._health.auto_prompted = list(stats.auto_prompted_ids)
        if frame.fresh:
            self._health.on_processed(float(stats.total_ms), ctx.node_latency_ms, stats)


def _kept_token_grids(result: Any) -> Optional[Dict[int, np.ndarray]]:
    """{obj_id: bool [g, g]} tokens kept in the memory bank on this frame (None when dense)."""
    return {int(k): np.asarray(v, dtype=bool) for k, v in result.kept_tokens.items()} or None


__all__ = ["OutputPublishers"]

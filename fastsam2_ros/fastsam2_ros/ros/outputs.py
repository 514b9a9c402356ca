"""The node's output publishers and what goes on each: mask, labels, overlay (raw and JPEG),
objects, detections (vision_msgs, when installed), stats. Every message carries the input
image's header and its resolution.

Created on configure and destroyed on cleanup/shutdown, always after the frame worker stopped,
so nothing publishes on a destroyed publisher.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

import numpy as np
from sensor_msgs.msg import CompressedImage, Image

from fastsam2_msgs.msg import TrackedObjectArray, TrackerStats

from ..image_messages import compressed_topic, empty_image, rgb_to_compressed
from .frame_worker import TrackedFrame
from .messages import (FrameContext, detections_to_msg, stats_to_msg, tracked_objects_to_msg,
                       vision_msgs_available)
from .overlay import draw_overlay
from .qos import latched, overriding_options, reliable


class OutputPublishers:
    """Lifecycle publishers of one node; :meth:`publish` sends one tracked frame."""

    def __init__(self, node: Any, depth: int, health: Any,
                 settings: Callable[[], Mapping[str, Any]]) -> None:
        from std_msgs.msg import String  # description: the latest automatic prompt's phrase

        self._node = node
        self._health = health
        self._settings = settings
        self._last_overlay = float("-inf")  # time.perf_counter() of the last overlay
        self._uncounted: Optional[TrackedFrame] = None  # the fresh frame being published, until counted
        self._epoch = 0  # the health's counting when the frame being published began
        #: topic -> ((height, width, encoding), its Image message, a view of the message's data)
        self._images: Dict[str, Tuple[Tuple[int, int, str], Any, np.ndarray]] = {}

        def publisher(msg_type, topic, qos=None):
            """A profile each: rclpy writes a publisher's QoS overrides into the one it is given."""
            return node.create_lifecycle_publisher(
                msg_type, topic, qos or reliable(depth),
                qos_overriding_options=overriding_options(node, "publisher", topic))

        self._pubs: Dict[str, Any] = {
            "mask": publisher(Image, "mask"),
            "labels": publisher(Image, "labels"),
            "overlay": publisher(Image, "overlay"),
            "objects": publisher(TrackedObjectArray, "objects"),
            "stats": publisher(TrackerStats, "stats"),
            "description": publisher(String, "description", latched()),
        }
        self._pubs["overlay_compressed"] = publisher(
            CompressedImage, compressed_topic(node.resolve_topic_name("overlay")))
        if vision_msgs_available():
            from vision_msgs.msg import Detection2DArray

            self._pubs["detections"] = publisher(Detection2DArray, "detections")

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
        """Every enabled output of ``frame``; stats and health count only fresh frames (a
        republished one updates only the last stats /diagnostics reports).

        Order: mask, labels, objects (+ detections), overlay and overlay/compressed (when due),
        stats last, carrying what this frame cost the node. Images are computed straight into
        the messages' buffers (:meth:`_image`), masks and labels from the tracker's packed bits.
        A fresh frame that fails before it is counted is counted as dropped (so every received
        frame is counted once) and the error goes on to the caller."""
        self._uncounted = frame if frame.fresh else None
        self._epoch = self._health.epoch  # (a publication that outlives its activation counts in it)
        try:
            self._publish(frame)
        finally:
            if self._uncounted is not None:
                self._health.on_discarded(self._epoch)
                self._uncounted = None

    def _publish(self, frame: TrackedFrame) -> None:
        pubs, s = self._pubs, self._settings()
        if not pubs:
            return
        t0 = time.perf_counter()
        result, header, rgb = frame.result, frame.header, frame.rgb
        h, w = rgb.shape[:2]
        if s["publish_mask"]:
            msg, data = self._image("mask", h, w, "mono8", header)
            result.union_mask((h, w), out=data)
            pubs["mask"].publish(msg)
        if s["publish_labels"]:
            msg, data = self._image("labels", h, w, "mono16", header)
            result.label_image((h, w), out=data)
            pubs["labels"].publish(msg)
        counts = self._health.counts()
        ctx = FrameContext(header=header, width=w, height=h,
                           dropped_frames=counts["dropped"],
                           processed_frames=counts["processed"] + (1 if frame.fresh else 0),
                           texts=frame.texts, auto_prompted=frame.auto_prompted)
        if s["publish_objects"] or s["publish_detections"]:
            objects = tracked_objects_to_msg(result, ctx)
            if s["publish_objects"]:
                pubs["objects"].publish(objects)
            if s["publish_detections"] and "detections" in pubs:
                pubs["detections"].publish(detections_to_msg(objects))
        t1 = time.perf_counter()
        ctx.node_ms = {"decode": frame.decode_ms, "publish": (t1 - t0) * 1e3, "overlay": 0.0}
        raw, jpeg = s["publish_overlay"], s["publish_overlay_compressed"]
        if (raw or jpeg) and self._overlay_due(frame, float(s["overlay_rate_hz"]), t1):
            kept = _kept_token_grids(result) if s["overlay_show_tokens"] else None
            msg, data = self._image("overlay", h, w, "rgb8", header)
            draw_overlay(rgb, result.masks, float(s["overlay_alpha"]), kept, out=data)
            if raw:
                pubs["overlay"].publish(msg)
            if jpeg:
                pubs["overlay_compressed"].publish(rgb_to_compressed(
                    data, "jpeg", header, jpeg_quality=int(s["overlay_jpeg_quality"])))
            ctx.node_ms["overlay"] = (time.perf_counter() - t1) * 1e3
        ctx.node_latency_ms = (time.monotonic() - frame.received) * 1e3
        stats = stats_to_msg(result.stats, result, ctx)
        self._health.auto_prompted = list(stats.auto_prompted_ids)
        if frame.fresh:  # counted before the stats go out, which already count it (processed_frames)
            self._health.on_processed(float(stats.total_ms), ctx.node_latency_ms, stats, self._epoch)
            self._uncounted = None
        else:  # a prompt, removal or reset changed the objects: /diagnostics reports them now
            self._health.on_republished(stats)
        if s["publish_stats"]:
            pubs["stats"].publish(stats)

    def _image(self, topic: str, h: int, w: int, encoding: str, header: Any):
        """``topic``'s Image message and a view of its data, to compute this frame's image into.
        The same message serves frame after frame (a new one when the size changes): rclpy
        copies a message while publish() runs, so its buffer is free again when publish()
        returns, and stays allocated and warm instead of being allocated, zeroed and faulted in
        for every frame. Only the publisher thread calls this."""
        held = self._images.get(topic)
        if held is None or held[0] != (h, w, encoding):
            msg, data = empty_image(h, w, encoding)
            held = self._images[topic] = ((h, w, encoding), msg, data)
        _, msg, data = held
        msg.header = header
        return msg, data

    def _overlay_due(self, frame: TrackedFrame, rate_hz: float, now: float) -> bool:
        """``overlay_rate_hz``: at most that many overlays a second (0: every frame); a prompt's
        republished frame always gets one (the feedback a click waits for)."""
        if rate_hz > 0 and frame.fresh and now - self._last_overlay < 1.0 / rate_hz:
            return False
        self._last_overlay = now
        return True


def _kept_token_grids(result: Any) -> Optional[Dict[int, np.ndarray]]:
    """{obj_id: bool [g, g]} tokens kept in the memory bank on this frame (None when dense)."""
    return {int(k): np.asarray(v, dtype=bool) for k, v in result.kept_tokens.items()} or None


__all__ = ["OutputPublishers"]

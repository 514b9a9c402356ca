"""Health counters of the tracker node and their /diagnostics status.

``NodeHealth`` is thread-safe plain Python (the image callback, the inference worker and the
diagnostics timer all touch it); ``to_status`` turns a snapshot into a
``diagnostic_msgs/DiagnosticStatus``. Levels:

* ERROR: the model could not be loaded (the last lifecycle transition failed), or the worker hit an
  unexpected exception within the last ``warn_hold`` seconds (at least one diagnostics period, so
  every error shows on at least one published status);
* WARN: not active / disabled, or frames dropped because inference could not keep up, a bad input
  (malformed image, invalid prompt) or an incompatible-QoS publisher within the last ``warn_hold``
  seconds (at least one diagnostics period). Frames skipped on purpose to hold ``max_rate_hz`` are
  counted as dropped but do not warn. Also WARN when images stopped coming for ``warn_hold``
  (at least ``MIN_SILENT_S``), or none came that long though a best-effort subscription has
  publishers (DDS loses large best-effort frames whole: the usual "running but does nothing");
* OK otherwise.

The per-frame tracker values come from the last ``TrackerStats`` message
(:data:`~fastsam2_ros.ros.messages.DIAGNOSTIC_STATS_FIELDS`), under the same names.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Deque, Dict, List, Optional, Tuple

from .messages import NODE_STAGES, diagnostic_values
from .parameters import set_image_reliability

OK, WARN, ERROR = 0, 1, 2  # diagnostic_msgs/DiagnosticStatus levels (bytes in the msg)
#: Least silence of the camera (seconds) that WARNs, whatever warn_hold is (a gap between two
#: frames of a slow camera is not a stopped one).
MIN_SILENT_S = 2.0
#: Longest free text (the message, last_error) on /diagnostics; lists of ids are never cut
MAX_TEXT_CHARS = 500
#: The values that hold free text (an exception's message can be arbitrarily long)
FREE_TEXT_VALUES = ("last_error",)
#: Frames kept for the rate and latency however old (a node slower than one frame per window
#: would otherwise report 0 Hz and no latency)
MIN_RATE_FRAMES = 3


@dataclass
class HealthSnapshot:
    level: int
    message: str
    values: Dict[str, str] = field(default_factory=dict)


class NodeHealth:
    """Counters and rolling windows of the node (all methods thread-safe)."""

    def __init__(self, window_s: float = 5.0) -> None:
        # window_s: the rate/latency window; drops are kept for max(window_s, warn_hold)
        self._hold = window_s
        self._lock = threading.Lock()
        self.window_s = window_s
        #: which counting this is (reset_counters starts a new one): a frame counted late, by a
        #: publication the previous activation gave up on, must not count in the next one
        self.epoch = -1
        self.reset_counters()
        self.forget_tracker()
        self.state = "unconfigured"
        self.enabled = True
        self.fatal: Optional[str] = None
        self.input_topic = "image"
        #: image publishers the subscription cannot hear now (qos.unreachable_publishers)
        self.unreachable_publishers = 0
        #: image publishers a best-effort subscription hears (qos.best_effort_publishers)
        self.best_effort_publishers = 0
        self.listening_since = float("-inf")  # when the image subscriptions were last made

    def reset_counters(self) -> None:
        """Zero the counters and windows (at activate). The objects' state (the last stats, the
        automatic starts) is not a counter: a model kept while inactive keeps its objects, and
        only :meth:`forget_tracker` clears them."""
        with self._lock:
            self.epoch += 1
            self.received = 0
            self.processed = 0
            self.dropped = 0
            self.skipped_for_rate = 0
            self.incompatible_qos = 0
            self.bad_inputs = 0
            self.prompt_errors = 0
            self.worker_errors = 0
            self.last_error: str = ""
            self.last_error_time: float = float("-inf")
            self.last_error_kind: str = "bad input"  # what last_error was (the WARN's words)
            self.last_worker_error: str = ""  # apart: a bad input after it must not hide it
            self.last_worker_error_time: float = float("-inf")
            self.last_received_time: float = float("-inf")
            # (t, tracker_ms, node_ms, {node stage: ms})
            self._frames: Deque[Tuple[float, float, float, Dict[str, float]]] = deque()
            self._drops: Deque[float] = deque()  # overload drops only (not rate skips)

    # --- events --------------------------------------------------------------------------------
    def on_received(self, replaced_unprocessed: bool, rate_limited: bool = False) -> None:
        """A frame arrived; ``replaced_unprocessed``: it replaced one the worker never took
        (``rate_limited``: because the worker was holding max_rate_hz, not because it was busy)."""
        with self._lock:
            self.received += 1
            self.last_received_time = time.monotonic()
            if replaced_unprocessed:
                self.dropped += 1
                if rate_limited:
                    self.skipped_for_rate += 1
                else:
                    self._drops.append(time.monotonic())

    def on_listening(self) -> None:
        """The image subscriptions were (re)made: silence counts from now."""
        with self._lock:
            self.listening_since = time.monotonic()

    def on_discarded(self, epoch: Optional[int] = None) -> None:
        """A received frame was thrown away unprocessed on purpose (disabled, lifecycle
        transition), or its inference failed (an ERROR of its own, as a worker error): dropped,
        without the overload WARN. ``epoch``: the counting it belongs to (ignored if over)."""
        with self._lock:
            if epoch is None or epoch == self.epoch:
                self.dropped += 1

    def on_processed(self, tracker_ms: float, node_ms: float, stats_msg: Any,
                     epoch: Optional[int] = None) -> None:
        with self._lock:
            if epoch is not None and epoch != self.epoch:
                return
            self.processed += 1
            stages = {st: float(getattr(stats_msg, f"{st}_ms", 0.0)) for st in NODE_STAGES}
            self._frames.append((time.monotonic(), float(tracker_ms), float(node_ms), stages))
            self.last_stats = stats_msg
            self._trim()

    def on_republished(self, stats_msg: Any) -> None:
        """The current frame went out again (a prompt, a removal, a reset): its stats are the
        last ones (the objects now), but it is not a processed frame (no count, no latency)."""
        with self._lock:
            self.last_stats = stats_msg

    def forget_tracker(self) -> None:
        """The tracker and its objects are gone (the model released, or left to a stuck worker):
        /diagnostics no longer reports the last frame's objects, bank and automatic starts, nor
        the model's device (a failed configure on another device is named by the parameter)."""
        with self._lock:
            self.last_stats: Any = None  # the last TrackerStats message
            self.auto_prompted: List[int] = []
            self.device = ""  # (set when a tracker is loaded)

    def on_incompatible_qos(self, message: str) -> None:
        with self._lock:
            self.incompatible_qos += 1
            self.last_error = message
            self.last_error_kind = "QoS mismatch"  # not a bad input: no message was refused
            self.last_error_time = time.monotonic()

    def on_bad_input(self, message: str, prompt: bool = False) -> None:
        with self._lock:
            if prompt:
                self.prompt_errors += 1
            else:
                self.bad_inputs += 1
            self.last_error = message
            self.last_error_kind = "bad input"
            self.last_error_time = time.monotonic()

    def on_worker_error(self, message: str) -> None:
        with self._lock:
            self.worker_errors += 1
            self.last_error = self.last_worker_error = message
            self.last_error_kind = "inference failed"
            self.last_error_time = time.monotonic()
            self.last_worker_error_time = self.last_error_time

    def counts(self) -> Dict[str, int]:
        with self._lock:
            return dict(received=self.received, processed=self.processed, dropped=self.dropped,
                        skipped_for_rate=self.skipped_for_rate, bad_inputs=self.bad_inputs,
                        prompt_errors=self.prompt_errors, worker_errors=self.worker_errors,
                        incompatible_qos=self.incompatible_qos)

    def _trim(self) -> None:
        now = time.monotonic()
        cutoff = now - self.window_s
        while len(self._frames) > MIN_RATE_FRAMES and self._frames[0][0] < cutoff:
            self._frames.popleft()
        cutoff = now - max(self.window_s, self._hold)
        while self._drops and self._drops[0] < cutoff:
            self._drops.popleft()

    # --- status --------------------------------------------------------------------------------
    def snapshot(self, warn_hold: float = 5.0, period: float = 1.0) -> HealthSnapshot:
        with self._lock:
            self._hold = max(float(warn_hold), float(period))
            self._trim()
            now = time.monotonic()
            frames = list(self._frames)
            drop_window = max(period, warn_hold, 1e-3)
            drops_recent = sum(1 for t in self._drops if t >= now - drop_window)
            rate = _frame_rate([f[0] for f in frames], now)
            silent_s = now - self.last_received_time
            quiet_s = now - max(self.last_received_time, self.listening_since)
            tracker_ms = [f[1] for f in frames]
            node_ms = [f[2] for f in frames]
            s = self.last_stats
            values = {
                "state": self.state,
                "enabled": str(self.enabled),
                "input_topic": self.input_topic,
                "rate_hz": f"{rate:.2f}",
                "latency_ms_mean": f"{_mean(tracker_ms):.1f}",
                "latency_ms_max": f"{max(tracker_ms) if tracker_ms else 0.0:.1f}",
                "node_latency_ms_mean": f"{_mean(node_ms):.1f}",
                # the node's own cost per stage, over the frames where the stage ran
                **{f"{st}_ms_mean": f"{_mean([f[3][st] for f in frames if f[3][st] > 0]):.2f}"
                   for st in NODE_STAGES},
                **diagnostic_values(s),
                "objects": ",".join(str(i) for i in getattr(s, "object_ids", [])),
                "occluded_objects": ",".join(
                    str(i) for i, n in zip(getattr(s, "object_ids", []),
                                           getattr(s, "occluded_frames", [])) if n),
                "auto_prompted_objects": ",".join(str(i) for i in self.auto_prompted),
                "frames_received": str(self.received),
                "frames_processed": str(self.processed),
                "frames_dropped": str(self.dropped),
                "frames_skipped_for_rate": str(self.skipped_for_rate),
                "frames_dropped_recently": str(drops_recent),
                "bad_inputs": str(self.bad_inputs),
                "prompt_errors": str(self.prompt_errors),
                "worker_errors": str(self.worker_errors),
                "incompatible_qos_events": str(self.incompatible_qos),
                "unreachable_publishers": str(self.unreachable_publishers),
                "best_effort_publishers": str(self.best_effort_publishers),
                "last_error": self.last_error,
            }
            if not values["device"]:
                values["device"] = self.device
            recent_error = now - self.last_error_time <= self._hold
            recent_worker_error = now - self.last_worker_error_time <= self._hold
            if self.fatal:
                level, msg = ERROR, self.fatal
            elif recent_worker_error:
                level, msg = ERROR, f"inference failed: {self.last_worker_error}"
            elif self.state != "active":
                level, msg = WARN, f"not processing: lifecycle state {self.state}"
            elif not self.enabled:
                level, msg = WARN, "disabled (enable service)"
            elif self.unreachable_publishers:
                level, msg = WARN, (f"{self.unreachable_publishers} best-effort publisher(s) on "
                                    f"{self.input_topic} cannot reach the reliable image subscription "
                                    f"({set_image_reliability('best_effort')})")
            elif recent_error:
                level, msg = WARN, f"{self.last_error_kind}: {self.last_error}"
            elif drops_recent:
                level, msg = WARN, (f"dropped {drops_recent} frame(s) in the last {drop_window:g} s "
                                    "(inference slower than the camera; only the newest frame is kept)")
            elif (self.best_effort_publishers and self.last_received_time < self.listening_since
                  and quiet_s > max(self._hold, MIN_SILENT_S)):  # none came since we listen
                level, msg = WARN, (f"no images on {self.input_topic} for {quiet_s:.0f} s though "
                                    f"{self.best_effort_publishers} publisher(s) offer it: best "
                                    "effort loses large frames whole (with Fast DDS' defaults "
                                    "any over 512 KiB, e.g. 640x480 rgb8): "
                                    f"{set_image_reliability('reliable')}, or the Fast DDS profile "
                                    "config/fastdds_large_frames.xml (docs/ros.md, Image QoS)")
            elif self.received and silent_s > max(self._hold, MIN_SILENT_S):
                level, msg = WARN, (f"no images on {self.input_topic} for {silent_s:.0f} s: "
                                    "the last masks are that old" + (
                                        f" ({self.best_effort_publishers} publisher(s) still offer "
                                        "it: a paused source, or frames now too large for best "
                                        "effort)" if self.best_effort_publishers else ""))
            elif self.processed == 0:
                level, msg = OK, f"active, waiting for images on {self.input_topic}"
            else:
                level, msg = OK, f"tracking {len(getattr(s, 'object_ids', []))} object(s) at {rate:.1f} Hz"
            return HealthSnapshot(level, msg, values)


def _frame_rate(times: List[float], now: float) -> float:
    """Frames per second over ``times`` (ascending): steady while frames come at their usual
    interval, falling once the silence since the last one is longer than that interval (a camera
    that stopped, or a tracker that hangs, shows a falling rate)."""
    if len(times) < 2:
        return 0.0
    span = times[-1] - times[0]
    if span <= 0:
        return 0.0
    overdue = (now - times[-1]) - span / (len(times) - 1)
    return (len(times) - 1) / (span + max(0.0, overdue))


def _mean(xs: List[float]) -> float:
    return sum(xs) / len(xs) if xs else 0.0


def to_status(snap: HealthSnapshot, name: str, hardware_id: str):
    """diagnostic_msgs/DiagnosticStatus from a snapshot."""
    from diagnostic_msgs.msg import DiagnosticStatus, KeyValue

    st = DiagnosticStatus()
    st.level = bytes([snap.level])
    st.name = name
    st.message = snap.message[:MAX_TEXT_CHARS]
    st.hardware_id = hardware_id
    st.values = [KeyValue(key=k, value=str(v)[:MAX_TEXT_CHARS] if k in FREE_TEXT_VALUES else str(v))
                 for k, v in snap.values.items()]
    return st


__all__ = ["NodeHealth", "HealthSnapshot", "to_status", "OK", "WARN", "ERROR"]

"""Lifecycle node that tracks prompted objects in an image stream with the streaming SAM 2 tracker.

Threads and locks
-----------------
* Image callbacks (own callback group) only store the newest message in a one-slot buffer; a frame
  that is replaced before the worker took it is counted as dropped. Nothing ever queues up.
* One worker thread (started on activate, joined on deactivate) converts the newest frame, runs
  ``tracker.track`` and publishes the outputs.
* Prompts, services and parameter changes run in their own callback group on the
  MultiThreadedExecutor, so they are not stuck behind inference. The tracker is not thread-safe:
  every tracker call holds ``_tracker_lock``, so a prompt is applied between two frames, on the
  current (last processed) frame.

Outputs carry the input image's header and its resolution. See docs/ros.md for topics, services
and parameters.
"""

from __future__ import annotations

import sys
import threading
import time
import traceback
from collections import deque
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import Point, PointStamped
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import (QoSDurabilityPolicy, QoSHistoryPolicy, QoSProfile, QoSReliabilityPolicy,
                       qos_profile_sensor_data)
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import String
from std_srvs.srv import SetBool, Trigger

from fastsam2_msgs.msg import Prompt, TrackerStats
from fastsam2_msgs.srv import AddObject, RemoveObject

from ..core.config import DEFAULT_NODE_NAME, TrackerConfig
from ..core.errors import CheckpointError, FastSam2Error, InputError
from . import prompting
from .conversions import compressed_to_rgb, image_to_rgb, numpy_to_image
from .diagnostics import NodeHealth, to_status
from .overlay import draw_overlay
from .parameters import NODE_PARAMETERS, declare_parameters, spec_map, tracker_config_from_node
from .prompting import PromptRequest

MAX_PENDING_PROMPTS = 16
STAGE_FIELDS = ("encoder", "router", "memory_attention", "decoder", "memory_encoder", "total")

TrackerFactory = Callable[[TrackerConfig], Any]


class ClickNotUsable(InputError):
    """A /clicked_point that cannot be projected (no camera_info, no TF): logged as a warning."""


def default_tracker_factory(cfg: TrackerConfig):
    from ..core.tracker import StreamingTracker

    return StreamingTracker(cfg)


def _reliable(depth: int) -> QoSProfile:
    return QoSProfile(history=QoSHistoryPolicy.KEEP_LAST, depth=int(depth),
                      reliability=QoSReliabilityPolicy.RELIABLE,
                      durability=QoSDurabilityPolicy.VOLATILE)


def _sensor(depth: int) -> QoSProfile:
    qos = QoSProfile(**{k: getattr(qos_profile_sensor_data, k)
                        for k in ("history", "reliability", "durability")}, depth=int(depth))
    return qos


def _transition(fn):
    """Log exceptions of a transition callback (rclpy turns them into a silent ERROR)."""

    def wrapper(self, state):
        try:
            return fn(self, state)
        except Exception as exc:  # noqa: BLE001
            self.get_logger().error(f"{fn.__name__} failed: {type(exc).__name__}: {exc}\n"
                                    + traceback.format_exc())
            self.health.fatal = f"{fn.__name__} failed: {exc}"
            return TransitionCallbackReturn.ERROR

    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper


class TrackerNode(LifecycleNode):
    """``fastsam2_tracker``: lifecycle node around :class:`fastsam2_ros.core.StreamingTracker`."""

    def __init__(self, node_name: str = DEFAULT_NODE_NAME, *,
                 tracker_factory: Optional[TrackerFactory] = None, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        declare_parameters(self)
        self._factory = tracker_factory or default_tracker_factory
        self._settings: Dict[str, Any] = {s.name: self.get_parameter(s.name).value
                                          for s in NODE_PARAMETERS}
        self._tracker: Any = None
        self._config: Optional[TrackerConfig] = None
        self._tracker_lock = threading.RLock()
        self._frame_cv = threading.Condition()
        self._slot: Optional[Tuple[str, Any, float]] = None
        self._worker: Optional[threading.Thread] = None
        self._stop = threading.Event()
        self._active = False
        self._enabled = True
        # the frame prompts apply to: (header, rgb) of the last processed frame
        self._current: Optional[Tuple[Any, np.ndarray]] = None
        self._pending: Deque[PromptRequest] = deque()
        self._auto_prompted: set = set()
        self._camera_info: Optional[CameraInfo] = None
        self._tf_buffer = None
        self._tf_listener = None
        self.health = NodeHealth()
        self.health.input_topic = self.resolve_topic_name("image")
        self._subs: List[Any] = []
        self._pubs: Dict[str, Any] = {}
        self._srvs: List[Any] = []

        self._image_group = MutuallyExclusiveCallbackGroup()
        self._prompt_group = MutuallyExclusiveCallbackGroup()
        self._diag_group = MutuallyExclusiveCallbackGroup()
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._diag_timer = self.create_timer(float(self._settings["diagnostics_period"]),
                                             self._publish_diagnostics,
                                             callback_group=self._diag_group)
        self.add_on_set_parameters_callback(self._on_set_parameters)

    # =========================================================================== lifecycle
    def autostart(self) -> bool:
        """Configure and activate (what ``auto_start`` does); True when active."""
        if self.trigger_configure() != TransitionCallbackReturn.SUCCESS:
            return False
        return self.trigger_activate() == TransitionCallbackReturn.SUCCESS

    @_transition
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.health.state = "configuring"
        try:
            cfg = tracker_config_from_node(self)
        except InputError as exc:
            return self._fail(f"invalid tracker parameters: {exc}")
        if not self._load_tracker(cfg):
            self.health.state = "unconfigured"
            return TransitionCallbackReturn.FAILURE
        depth = int(self._settings["output_qos_depth"])
        self._pubs = {
            "mask": self.create_lifecycle_publisher(Image, "mask", _reliable(depth)),
            "labels": self.create_lifecycle_publisher(Image, "labels", _reliable(depth)),
            "overlay": self.create_lifecycle_publisher(Image, "overlay", _reliable(depth)),
            "stats": self.create_lifecycle_publisher(TrackerStats, "stats", _reliable(depth)),
        }
        g = self._prompt_group
        self._srvs = [
            self.create_service(AddObject, "add_object", self._srv_add_object, callback_group=g),
            self.create_service(RemoveObject, "remove_object", self._srv_remove_object, callback_group=g),
            self.create_service(Trigger, "reset", self._srv_reset, callback_group=g),
            self.create_service(SetBool, "enable", self._srv_enable, callback_group=g),
        ]
        period = float(self._settings["diagnostics_period"])
        if abs(self._diag_timer.timer_period_ns - period * 1e9) > 1:
            self.destroy_timer(self._diag_timer)
            self._diag_timer = self.create_timer(period, self._publish_diagnostics,
                                                 callback_group=self._diag_group)
        self.health.fatal = None
        self.health.state = "inactive"
        self.get_logger().info(f"configured: model {cfg.model_cfg} on {self.health.device}, "
                               f"image_size {cfg.image_size}, keep_ratio {cfg.keep_ratio}")
        return super().on_configure(state)

    @_transition
    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        if self._tracker is None:  # released on deactivate: load again
            try:
                cfg = tracker_config_from_node(self)
            except InputError as exc:
                return self._fail(f"invalid tracker parameters: {exc}")
            if not self._load_tracker(cfg):
                self.health.state = "inactive"
                return TransitionCallbackReturn.FAILURE
        self.health.reset_counters()
        self._auto_prompted.clear()
        self._current = None
        self._create_subscriptions()
        self._stop.clear()
        self._active = True
        self._worker = threading.Thread(target=self._worker_loop, name="fastsam2_worker", daemon=True)
        self._worker.start()
        self.health.state = "active"
        self.get_logger().info(f"active: listening on {self.resolve_topic_name('image')}")
        return super().on_activate(state)

    @_transition
    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._deactivate()
        if not self._settings["keep_model_when_inactive"]:
            self._release_tracker()
        self.health.state = "inactive"
        self.get_logger().info("inactive" + ("" if self._tracker is not None else " (model released)"))
        return super().on_deactivate(state)

    @_transition
    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._deactivate()
        self._release_tracker()
        self._destroy_outputs()
        self.health.state = "unconfigured"
        return super().on_cleanup(state)

    @_transition
    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._deactivate()
        self._release_tracker()
        self._destroy_outputs()
        self.health.state = "finalized"
        return super().on_shutdown(state)

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.get_logger().error("lifecycle error: releasing the model and going back to unconfigured")
        try:
            self._deactivate()
            self._release_tracker()
            self._destroy_outputs()
        except Exception:  # noqa: BLE001 - best effort in the error path
            self.get_logger().error(traceback.format_exc())
        self.health.state = "unconfigured"
        return TransitionCallbackReturn.SUCCESS

    def _fail(self, message: str) -> TransitionCallbackReturn:
        self.get_logger().error(message)
        self.health.fatal = message
        return TransitionCallbackReturn.FAILURE

    def _load_tracker(self, cfg: TrackerConfig) -> bool:
        t0 = time.perf_counter()
        try:
            tracker = self._factory(cfg)
        except CheckpointError as exc:
            self._fail(f"cannot load the SAM 2 model: {exc}")
            return False
        except (InputError, FastSam2Error) as exc:
            self._fail(f"cannot build the tracker: {exc}")
            return False
        except Exception as exc:  # noqa: BLE001 - a broken install must not kill the node
            self.get_logger().error(traceback.format_exc())
            self._fail(f"cannot build the tracker ({type(exc).__name__}): {exc}")
            return False
        with self._tracker_lock:
            self._tracker = tracker
            self._config = cfg
        self.health.device = str(getattr(tracker, "device", cfg.device))
        self.health.fatal = None
        self.get_logger().info(f"model loaded in {time.perf_counter() - t0:.1f} s")
        return True

    def _release_tracker(self) -> None:
        with self._tracker_lock:
            tracker, self._tracker = self._tracker, None
            self._current = None
            self._pending.clear()
            if tracker is not None:
                try:
                    tracker.release()  # frees the model and empties the CUDA cache
                except Exception:  # noqa: BLE001
                    self.get_logger().error("tracker.release() failed:\n" + traceback.format_exc())

    def _deactivate(self) -> None:
        self._active = False
        self._stop.set()
        with self._frame_cv:
            self._slot = None
            self._frame_cv.notify_all()
        worker, self._worker = self._worker, None
        if worker is not None and worker is not threading.current_thread():
            worker.join(timeout=120.0)
        for sub in self._subs:
            self.destroy_subscription(sub)
        self._subs = []
        self._tf_listener = None
        self._tf_buffer = None

    def _destroy_outputs(self) -> None:
        for pub in self._pubs.values():
            self.destroy_lifecycle_publisher(pub)
        self._pubs = {}
        for srv in self._srvs:
            self.destroy_service(srv)
        self._srvs = []

    def _create_subscriptions(self) -> None:
        s = self._settings
        img_qos = _sensor(int(s["image_qos_depth"]))
        subs = [self.create_subscription(Image, "image", self._on_image, img_qos,
                                         callback_group=self._image_group)]
        if s["subscribe_compressed"]:
            subs.append(self.create_subscription(CompressedImage, "image/compressed",
                                                 self._on_compressed, img_qos,
                                                 callback_group=self._image_group))
        g = self._prompt_group
        subs += [
            self.create_subscription(Prompt, "prompt", self._on_prompt, _reliable(10), callback_group=g),
            self.create_subscription(String, "text_prompt", self._on_text, _reliable(10), callback_group=g),
            # rqt_image_view publishes its clicks reliable with depth 1000
            self.create_subscription(Point, "click", self._on_click, _reliable(100), callback_group=g),
            self.create_subscription(PointStamped, "/clicked_point", self._on_clicked_point,
                                     _reliable(10), callback_group=g),
            self.create_subscription(CameraInfo, "camera_info", self._on_camera_info,
                                     _sensor(1), callback_group=g),
        ]
        self._subs = subs
        if s["use_tf"]:
            try:
                from tf2_ros import Buffer, TransformListener  # optional dependency

                self._tf_buffer = Buffer()
                self._tf_listener = TransformListener(self._tf_buffer, self)
            except Exception:  # noqa: BLE001 - tf2_ros not installed (e.g. PyPI wheels)
                self._tf_buffer = None

    # =========================================================================== images
    def _on_image(self, msg: Image) -> None:
        self._store_frame("raw", msg)

    def _on_compressed(self, msg: CompressedImage) -> None:
        self._store_frame("compressed", msg)

    def _store_frame(self, kind: str, msg: Any) -> None:
        if not self._active or not self._enabled:
            return
        with self._frame_cv:
            replaced = self._slot is not None
            self._slot = (kind, msg, time.monotonic())
            self._frame_cv.notify()
        self.health.on_received(replaced)

    def _take_frame(self) -> Optional[Tuple[str, Any, float]]:
        with self._frame_cv:
            item, self._slot = self._slot, None
            return item

    def _worker_loop(self) -> None:
        while not self._stop.is_set():
            with self._frame_cv:
                while self._slot is None and not self._stop.is_set():
                    self._frame_cv.wait(0.5)
                if self._stop.is_set():
                    return
                item, self._slot = self._slot, None
            try:
                self._process(item)
            except Exception as exc:  # noqa: BLE001 - the worker must never die
                self._worker_error(exc)

    def _decode(self, kind: str, msg: Any) -> np.ndarray:
        return image_to_rgb(msg) if kind == "raw" else compressed_to_rgb(msg)

    def _process(self, item: Tuple[str, Any, float], prompt: Optional[PromptRequest] = None):
        """Track one frame (applying pending prompts if it is the first one); publish outputs.

        With ``prompt`` (a service call that found no current frame) that prompt is applied on
        this frame and ``(obj_id, auto)`` is returned.
        """
        kind, msg, t_recv = item
        try:
            rgb = self._decode(kind, msg)
        except InputError as exc:
            self._bad_input(f"image rejected ({kind}, frame_id {msg.header.frame_id!r}): {exc}")
            if prompt is not None:
                raise InputError(f"the waiting image is unusable: {exc}") from exc
            return None
        applied = None
        with self._tracker_lock:
            tracker = self._tracker
            if tracker is None or not self._active:
                return None
            try:
                if self._pending or prompt is not None:
                    result, applied = self._frame_with_prompts(tracker, msg.header, rgb, prompt)
                else:
                    result = tracker.track(rgb)
            except FastSam2Error as exc:
                if prompt is not None:
                    raise  # the service reports it
                self._bad_input(f"frame rejected by the tracker: {exc}")
                return None
            except Exception as exc:  # noqa: BLE001
                if prompt is not None:
                    raise
                self._worker_error(exc)
                return None
            self._current = (msg.header, rgb)
        self._publish(result, msg.header, rgb, t_recv)
        return applied

    def _frame_with_prompts(self, tracker, header, rgb, prompt: Optional[PromptRequest]):
        """Take a new frame and apply the queued prompts (and ``prompt``) on it.

        Before the first frame the first ``add_prompt`` passes ``image=`` so the tracker takes the
        frame with it (``add_prompt`` needs a current frame); otherwise the frame is tracked first.
        """
        queue = list(self._pending)
        self._pending.clear()
        if prompt is not None:
            queue.append(prompt)
        result = None
        applied = None
        fed = self._current is not None
        if fed:
            result = tracker.track(rgb)
            self._current = (header, rgb)
        shape = rgb.shape[:2]
        for req in queue:
            before = tracker.frame_index
            try:
                obj_id, res, auto = self._apply_locked(tracker, req, shape,
                                                       image=None if fed else rgb)
                fed, result = True, res
                self._current = (header, rgb)
                if req is prompt:
                    applied = (obj_id, auto)
            except FastSam2Error as exc:  # InputError, or CheckpointError (e.g. no CLIP weights)
                if tracker.frame_index != before:
                    fed = True
                    self._current = (header, rgb)
                if req is prompt:
                    raise
                self._bad_input(f"{req.source} rejected: {exc}", prompt=True)
        if not fed:
            result = tracker.track(rgb)
        elif result is None:  # the frame was taken by a prompt that then failed
            raise InputError("no result for this frame")
        return result, applied

    # =========================================================================== outputs
    def _publish(self, result: Any, header: Any, rgb: np.ndarray, t_recv: float,
                 count: bool = True) -> None:
        """Publish every output of ``result`` with ``header``; ``count``: a newly processed frame
        (False for the re-publication after a prompt)."""
        h, w = rgb.shape[:2]
        s = self._settings
        pubs = self._pubs
        if not pubs:
            return
        if s["publish_mask"]:
            pubs["mask"].publish(numpy_to_image(result.union_mask((h, w)), "mono8", header))
        if s["publish_labels"]:
            pubs["labels"].publish(numpy_to_image(result.label_image((h, w)), "mono16", header))
        if s["publish_overlay"]:
            kept = self._kept_token_grids(result) if s["overlay_show_tokens"] else None
            over = draw_overlay(rgb, result.masks, float(s["overlay_alpha"]), kept)
            pubs["overlay"].publish(numpy_to_image(over, "rgb8", header))
        node_ms = (time.monotonic() - t_recv) * 1e3
        stats = self._stats_msg(result, header, w, h, node_ms, count)
        if s["publish_stats"]:
            pubs["stats"].publish(stats)
        st = result.stats
        self.health.auto_prompted = list(stats.auto_prompted_ids)
        if not count:
            return
        self.health.on_processed(float(st.stage_ms.get("total", 0.0)), node_ms, dict(
            device=st.device, tokens_total=st.tokens_total, tokens_kept_mean=st.tokens_kept_mean,
            keep_ratio=st.keep_ratio, bank_frames=st.bank_frames, bank_tokens=st.bank_tokens,
            bank_bytes=st.bank_bytes, gpu_memory_bytes=st.gpu_memory_bytes,
            peak_gpu_memory_bytes=st.peak_gpu_memory_bytes, object_ids=list(stats.object_ids),
            router_mode=st.router_mode, text_mode=st.text_mode))

    @staticmethod
    def _kept_token_grids(result: Any) -> Optional[Dict[int, np.ndarray]]:
        """{obj_id: bool [g, g]} tokens kept in the memory bank on this frame (None when dense)."""
        return {int(k): np.asarray(v, dtype=bool) for k, v in result.kept_tokens.items()} or None

    def _stats_msg(self, result: Any, header: Any, w: int, h: int, node_ms: float,
                   count: bool = True) -> TrackerStats:
        st = result.stats
        m = TrackerStats()
        m.header = header
        m.frame_index = int(result.frame_index)
        m.image_width, m.image_height = int(w), int(h)
        for stage in STAGE_FIELDS:
            setattr(m, f"{stage}_ms", float(st.stage_ms.get(stage, 0.0)))
        m.node_latency_ms = float(node_ms)
        ids = sorted(int(i) for i in result.masks)
        m.tokens_total = max(0, int(st.tokens_total))
        m.tokens_kept = [max(0, int(st.tokens_kept.get(i, 0))) for i in ids]
        m.tokens_kept_mean = float(st.tokens_kept_mean)
        m.keep_ratio = float(st.keep_ratio)
        m.bank_frames = max(0, int(st.bank_frames))
        m.bank_tokens = max(0, int(st.bank_tokens))
        m.bank_bytes = max(0, int(st.bank_bytes))
        m.gpu_memory_bytes = max(0, int(st.gpu_memory_bytes))
        m.peak_gpu_memory_bytes = max(0, int(st.peak_gpu_memory_bytes))
        c = self.health.counts()
        m.dropped_frames = int(c["dropped"])
        m.processed_frames = int(c["processed"]) + (1 if count else 0)
        m.object_ids = ids
        m.object_scores = [float(result.scores.get(i, 0.0)) for i in ids]
        self._auto_prompted.update(int(i) for i in st.auto_prompted)
        m.auto_prompted_ids = sorted(i for i in self._auto_prompted if i in ids)
        m.router_mode = str(st.router_mode)
        m.text_mode = str(st.text_mode)
        m.device = str(st.device)
        return m

    @property
    def lifecycle_state(self) -> str:
        """Label of the current lifecycle state (unconfigured, inactive, active, finalized...)."""
        try:
            return str(self._state_machine.current_state[1])
        except Exception:  # noqa: BLE001 - private rclpy API; fall back to our own record
            return self.health.state

    def _publish_diagnostics(self) -> None:
        self.health.enabled = self._enabled
        self.health.state = self.lifecycle_state
        snap = self.health.snapshot(float(self._settings["diagnostics_warn_hold"]),
                                    float(self._settings["diagnostics_period"]))
        arr = DiagnosticArray()
        arr.header.stamp = self.get_clock().now().to_msg()
        arr.status = [to_status(snap, f"{self.get_fully_qualified_name()}: tracker",
                                self.health.device or "fastsam2")]
        self._diag_pub.publish(arr)

    # =========================================================================== errors
    def _bad_input(self, message: str, prompt: bool = False, warn: bool = False) -> None:
        self.health.on_bad_input(message, prompt=prompt)
        if warn:
            self.get_logger().warning(message, throttle_duration_sec=1.0)
        else:
            self.get_logger().error(message, throttle_duration_sec=1.0)

    def _worker_error(self, exc: BaseException) -> None:
        msg = f"{type(exc).__name__}: {exc}"
        self.health.on_worker_error(msg)
        self.get_logger().error(f"inference failed, frame skipped: {msg}\n{traceback.format_exc()}",
                                throttle_duration_sec=5.0)

    # =========================================================================== prompts
    def _apply_locked(self, tracker: Any, req: PromptRequest, shape: Tuple[int, int],
                      image: Optional[np.ndarray] = None) -> Tuple[int, Any, bool]:
        """Apply ``req`` (caller holds the tracker lock). Returns (obj_id, result, auto_prompted)."""
        tracked = set(int(i) for i in tracker.object_ids)
        obj_id = int(req.obj_id)
        if req.new_object:
            if obj_id == 0:
                obj_id = prompting.next_free_id(tracked)
            elif obj_id in tracked and not req.restart:
                raise InputError(f"object {obj_id} is already tracked: refine it (new_object=false) "
                                 "or remove it first")
        elif obj_id not in tracked:
            raise InputError(f"object {obj_id} is not tracked (tracked: {sorted(tracked)}); "
                             "use new_object=true to start it")
        kwargs = req.tracker_kwargs(shape)  # validates the mask against the frame
        if image is not None:
            kwargs["image"] = image
        restarted = False
        if req.new_object and req.restart and obj_id in tracked:
            tracker.remove_object(obj_id)
            self._auto_prompted.discard(obj_id)
            restarted = True
        result = tracker.add_prompt(obj_id=obj_id, **kwargs)
        auto = obj_id in set(int(i) for i in result.stats.auto_prompted)
        if auto:
            self._auto_prompted.add(obj_id)
        verb = "restarted" if restarted else ("started" if req.new_object else "refined")
        how = " from text alone (automatic click)" if auto else ""
        self.get_logger().info(f"{req.source}: object {obj_id} {verb}{how}: {req.describe()}")
        return obj_id, result, auto

    def _submit(self, req: PromptRequest, queue_if_no_frame: bool) -> Tuple[int, bool]:
        """Apply a prompt on the current frame, or on the next frame when none was processed yet.

        Returns (obj_id, auto); raises InputError. Queued prompts return (req.obj_id, False).
        """
        if not self._active or self._tracker is None:
            raise InputError("the tracker is not active (lifecycle state "
                             f"{self.health.state}); activate it first")
        with self._tracker_lock:
            tracker = self._tracker
            if tracker is None:
                raise InputError("the tracker is not loaded")
            if self._current is not None:
                header, rgb = self._current
                obj_id, result, auto = self._apply_locked(tracker, req, rgb.shape[:2])
                if self._settings["publish_on_prompt"]:
                    self._publish(result, header, rgb, time.monotonic(), count=False)
                return obj_id, auto
        # no frame processed yet: use a waiting frame now, or queue for the first frame
        item = self._take_frame()
        if item is not None:
            applied = self._process(item, prompt=req)
            if applied is None:
                raise InputError("the tracker is not active")
            return applied
        if not queue_if_no_frame:
            raise InputError(f"no image received yet on {self.resolve_topic_name('image')}; "
                             "prompts apply to the latest image")
        with self._tracker_lock:
            if len(self._pending) >= MAX_PENDING_PROMPTS:
                raise InputError(f"{MAX_PENDING_PROMPTS} prompts already wait for the first image")
            self._pending.append(req)
        self.get_logger().info(f"{req.source}: no image yet, prompt queued for the first frame: "
                               f"{req.describe()}")
        return int(req.obj_id), False

    def _try_submit(self, build: Callable[[], PromptRequest], source: str) -> None:
        """Topic prompt: build + submit, log and count errors, never raise."""
        try:
            req = build()
            self._submit(req, queue_if_no_frame=True)
        except FastSam2Error as exc:  # InputError, or CheckpointError (e.g. no CLIP weights)
            self._bad_input(f"{source} rejected: {exc}", prompt=True,
                            warn=isinstance(exc, ClickNotUsable))
        except Exception as exc:  # noqa: BLE001 - a prompt must not kill the node
            self._worker_error(exc)

    def _max_text(self) -> int:
        return int(getattr(self._config, "max_text_length", 300))

    def _on_prompt(self, msg: Prompt) -> None:
        self._try_submit(lambda: prompting.from_prompt_msg(msg, self._max_text(), "prompt"), "prompt")

    def _on_text(self, msg: String) -> None:
        def build() -> PromptRequest:
            text = prompting.check_text(msg.data, self._max_text())
            obj = int(self._settings["text_object_id"])
            return PromptRequest(obj_id=obj, new_object=True, text=text, restart=obj > 0,
                                 source="text_prompt")
        self._try_submit(build, "text_prompt")

    def _click_target(self) -> Tuple[int, bool]:
        if self._settings["click_new_object"]:
            return 0, True
        obj = int(self._settings["click_object_id"])
        with self._tracker_lock:
            tracked = self._tracker is not None and obj in set(self._tracker.object_ids)
        return obj, not tracked

    def _on_click(self, msg: Point) -> None:
        def build() -> PromptRequest:
            obj, new = self._click_target()
            return prompting.click_request(msg.x, msg.y, msg.z, obj, new, "click")
        self._try_submit(build, "click")

    def _on_camera_info(self, msg: CameraInfo) -> None:
        self._camera_info = msg

    def _on_clicked_point(self, msg: PointStamped) -> None:
        def build() -> PromptRequest:
            info = self._camera_info
            if info is None:
                raise ClickNotUsable(f"no camera_info received on {self.resolve_topic_name('camera_info')}: "
                                 "cannot project /clicked_point into the image")
            cam_frame = info.header.frame_id
            p = (msg.point.x, msg.point.y, msg.point.z)
            src = msg.header.frame_id
            if src and cam_frame and src.lstrip("/") != cam_frame.lstrip("/"):
                p = self._transform(p, src, cam_frame)
            u, v = prompting.project_to_pixel(list(info.k), p)
            obj, new = self._click_target()
            return prompting.click_request(u, v, 1.0, obj, new, "/clicked_point")
        self._try_submit(build, "/clicked_point")

    def _transform(self, p, src: str, dst: str):
        if self._tf_buffer is None:
            raise ClickNotUsable(
                f"/clicked_point is in frame {src!r} but the camera frame is {dst!r}, and TF is not "
                "available (tf2_ros not installed or use_tf false): click in the camera frame, or "
                "install tf2_ros")
        try:
            from rclpy.duration import Duration
            from rclpy.time import Time

            tf = self._tf_buffer.lookup_transform(dst, src, Time(), timeout=Duration(seconds=0.2))
        except Exception as exc:  # noqa: BLE001 - tf2 lookup/extrapolation errors
            raise ClickNotUsable(f"no TF from {src!r} to camera frame {dst!r}: {exc}") from exc
        t, r = tf.transform.translation, tf.transform.rotation
        return prompting.transform_point((t.x, t.y, t.z), (r.x, r.y, r.z, r.w), p)

    # =========================================================================== services
    def _srv_add_object(self, request: AddObject.Request, response: AddObject.Response):
        try:
            req = prompting.from_prompt_msg(request.prompt, self._max_text(), "add_object")
            obj_id, auto = self._submit(req, queue_if_no_frame=False)
            response.success, response.object_id, response.auto_prompted = True, int(obj_id), bool(auto)
            response.message = (f"object {obj_id} {'started' if req.new_object else 'refined'}"
                                + (" from text alone (automatic click)" if auto else ""))
        except FastSam2Error as exc:
            self._bad_input(f"add_object rejected: {exc}", prompt=True)
            response.success, response.message, response.object_id = False, str(exc), 0
        except Exception as exc:  # noqa: BLE001
            self._worker_error(exc)
            response.success, response.message = False, f"{type(exc).__name__}: {exc}"
        response.object_ids = self._tracked_ids()
        return response

    def _srv_remove_object(self, request: RemoveObject.Request, response: RemoveObject.Response):
        try:
            obj_id = prompting.check_object_id(request.object_id)
            with self._tracker_lock:
                if self._tracker is None:
                    raise InputError("the tracker is not loaded")
                self._tracker.remove_object(obj_id)
                self._auto_prompted.discard(obj_id)
            response.success, response.message = True, f"object {obj_id} removed"
            self.get_logger().info(response.message)
        except InputError as exc:
            self._bad_input(f"remove_object rejected: {exc}", prompt=True)
            response.success, response.message = False, str(exc)
        except Exception as exc:  # noqa: BLE001
            self._worker_error(exc)
            response.success, response.message = False, f"{type(exc).__name__}: {exc}"
        response.object_ids = self._tracked_ids()
        return response

    def _srv_reset(self, request: Trigger.Request, response: Trigger.Response):
        with self._tracker_lock:
            if self._tracker is None:
                response.success, response.message = False, "the tracker is not loaded"
                return response
            try:
                self._tracker.reset()
            except Exception as exc:  # noqa: BLE001
                self._worker_error(exc)
                response.success, response.message = False, f"{type(exc).__name__}: {exc}"
                return response
            self._auto_prompted.clear()
            self._pending.clear()
            self._current = None  # prompts after a reset apply to the next frame
        response.success, response.message = True, "all objects and memory cleared"
        self.get_logger().info("reset: " + response.message)
        return response

    def _srv_enable(self, request: SetBool.Request, response: SetBool.Response):
        self._enabled = bool(request.data)
        self.health.enabled = self._enabled
        if not self._enabled:
            with self._frame_cv:
                self._slot = None
        response.success = True
        response.message = "processing enabled" if self._enabled else "processing disabled (images ignored)"
        self.get_logger().info(response.message)
        return response

    def _tracked_ids(self) -> List[int]:
        with self._tracker_lock:
            return sorted(int(i) for i in self._tracker.object_ids) if self._tracker is not None else []

    # =========================================================================== parameters
    def _on_set_parameters(self, params) -> SetParametersResult:
        specs = spec_map()
        later = []
        for p in params:
            spec = specs.get(p.name)
            if spec is None:
                continue
            if p.name == "keep_ratio":
                with self._tracker_lock:
                    if self._tracker is not None:
                        try:
                            self._tracker.set_keep_ratio(float(p.value))
                        except InputError as exc:
                            return SetParametersResult(successful=False, reason=str(exc))
                continue
            if spec.group == "core" and self._tracker is not None:
                later.append(p.name)
        # node settings: everything validated by the descriptors' ranges
        for p in params:
            if p.name in self._settings:
                self._settings[p.name] = p.value
        if later:
            self.get_logger().info(f"parameter(s) {', '.join(later)} take effect on the next configure")
        return SetParametersResult(successful=True)

    # =========================================================================== teardown
    def destroy_node(self) -> None:
        self._deactivate()
        self._release_tracker()
        super().destroy_node()


def main(args: Optional[List[str]] = None) -> int:
    """``ros2 run fastsam2_ros tracker_node`` (console script ``tracker_node``)."""
    rclpy.init(args=args)
    node = TrackerNode()
    executor = MultiThreadedExecutor(num_threads=4)
    executor.add_node(node)
    rc = 0
    try:
        if node.get_parameter("auto_start").value:
            if not node.autostart():
                node.get_logger().error(
                    "auto start failed; the node stays up (fix the parameters and trigger "
                    "configure/activate with lifecycle transitions)")
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        executor.shutdown()
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return rc


if __name__ == "__main__":
    sys.exit(main())

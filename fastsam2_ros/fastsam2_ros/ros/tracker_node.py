"""Lifecycle node that tracks prompted objects in an image stream with the streaming SAM 2 tracker.

What lives where
----------------
* this module: lifecycle transitions, subscriptions and services (thin callbacks that turn
  messages into worker commands), parameters, /diagnostics, and :func:`main`;
* :mod:`.frame_worker`: the one thread that calls the tracker (frames and queued prompts);
* :mod:`.outputs`: the publishers and what goes on each; :mod:`.messages`: the converters;
* :mod:`.prompting`: prompt messages -> tracker prompts (validation in :mod:`..core.prompts`);
* :mod:`.parameters`, :mod:`.qos`, :mod:`.diagnostics`, :mod:`..image_messages` (decoding).

Image callbacks, prompt topics, the services that wait for the worker, and the ``auto_prompt``
service run in callback groups of their own on a MultiThreadedExecutor, so a service is never
stuck behind inference for more than one frame, and a service reply that waits (``add_object``
behind a long automatic prompt) holds up neither the prompt topics, ``enable``, the lifecycle
transitions nor the parameters. The services exist from start-up on: while the node is not active
they answer at once, naming its lifecycle state.
Outputs carry the input image's header and its resolution. See docs/ros.md.
"""

from __future__ import annotations

import logging
import os
import re
import reprlib
import signal
import sys
import threading
import time
import traceback
from typing import Any, Callable, Dict, List, Optional

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import Point, PointStamped
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.executors import MultiThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import String
from std_srvs.srv import SetBool, Trigger

from fastsam2_msgs.msg import Prompt
from fastsam2_msgs.srv import AddObject, RemoveObject

from ..core.config import DEFAULT_NODE_NAME, TrackerConfig
from ..core.errors import CheckpointError, FastSam2Error, InputError
from ..core.prompts import validate_object_id, validate_text
from ..image_messages import compressed_to_rgb, compressed_topic, image_to_rgb
from . import frame_worker, prompting
from .cli_process import first_signal_only
from .diagnostics import NodeHealth, to_status
from .frame_worker import FrameWorker, ObjectNotes, TrackedFrame, wait
from .messages import auto_prompt_summary
from .outputs import OutputPublishers
from .parameters import (NODE_PARAMETERS, blocks_configure, declare_parameters, refusal_text,
                         spec_map, tracker_config_from_node, unknown_override_warning,
                         waits_until)
from .process_memory import give_back_freed_memory, keep_freed_memory
from .prompting import ClickNotUsable, PromptRequest
from .qos import (best_effort_publishers, image_qos, incompatible_qos_events, overriding_options,
                  reliable, unreachable_publishers)

#: How long a service waits for the worker (one inference, or a text prompt's CLIP pass).
SERVICE_TIMEOUT_S = 300.0
#: Each cause of rejected input is logged at most once in this many seconds (always counted).
BAD_INPUT_LOG_PERIOD_S = 1.0


def bad_input_cause(message: str) -> str:
    """What a rejection message is about, for throttling its log: the message with its values
    (numbers, quoted strings) blanked. A NaN click and an infinite one share a cause; a click
    outside the image is another (throttled on its source alone, it went unlogged). Quoted
    strings are read as repr writes them, escapes included: a frame_id holding both quote
    characters is one value, not a new cause per message."""
    text = re.sub(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"", "'…'", message)
    return re.sub(r"[-+]?\d+(?:\.\d*)?(?:e[-+]?\d+)?|\b(?:nan|inf)\b", "#", text,
                  flags=re.IGNORECASE)

TrackerFactory = Callable[[TrackerConfig], Any]


#: What gets a node that is not active tracking, by lifecycle state (others: activate it).
ACTIVATION_HINTS = {"unconfigured": "configure and activate it",
                    "finalized": "it was shut down: start the node again"}


def not_active_message(state: str) -> str:
    """Why a prompt or service is refused while the node is not active, and what to do."""
    return (f"the tracker is not active (lifecycle state {state}); "
            f"{ACTIVATION_HINTS.get(state, 'activate it')}")


def default_tracker_factory(cfg: TrackerConfig):
    from ..core.tracker import StreamingTracker

    return StreamingTracker(cfg)


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


#: Executor threads: two callback groups may wait long (a prompt service and ``auto_prompt``,
#: each for the worker's answer) and four never do (images, prompt topics, diagnostics, the
#: lifecycle and parameter services); one thread each.
EXECUTOR_THREADS = 6


class TrackerNode(LifecycleNode):
    """``fastsam2_tracker``: lifecycle node around :class:`fastsam2_ros.core.StreamingTracker`."""

    def __init__(self, node_name: str = DEFAULT_NODE_NAME, *,
                 tracker_factory: Optional[TrackerFactory] = None,
                 exiting: Optional[threading.Event] = None, **kwargs: Any) -> None:
        """``exiting``: set when the process exits (main's signal handler) or the ROS context
        shuts down (_on_context_shutdown); a transition that waits for the worker then waits
        EXIT_STOP_TIMEOUT_S at most (FrameWorker.stop)."""
        super().__init__(node_name, **kwargs)
        self._exiting = exiting if exiting is not None else threading.Event()
        #: start-up values the descriptors rejected: configure fails with them until fixed
        rejected = declare_parameters(self)
        for reason in rejected.values():
            self.get_logger().error(reason)
        self.rejected_parameters = {n: r for n, r in rejected.items() if blocks_configure(n)}
        unknown = unknown_override_warning(self)
        if unknown:
            self.get_logger().warning(unknown)
        self._factory = tracker_factory or default_tracker_factory
        self._settings: Dict[str, Any] = {s.name: self.get_parameter(s.name).value
                                          for s in NODE_PARAMETERS}
        #: the live core parameter: the worker gives it to the tracker before each command or frame
        self._keep_ratio = float(self.get_parameter("keep_ratio").value)
        self._tracker: Any = None
        self._worker: Optional[FrameWorker] = None
        self._worker_stop_lock = threading.RLock()  # see _stop_worker
        self._object_notes: Optional[ObjectNotes] = None  # of the kept tracker's objects
        self._outputs: Optional[OutputPublishers] = None
        self._enabled = True
        self._logged_causes: dict = {}  # bad-input cause -> time.monotonic() of its last log
        self._logged_causes_lock = threading.Lock()
        self._camera_info: Optional[CameraInfo] = None
        self._tf_buffer = None
        self._tf_listener = None
        self.health = NodeHealth()
        self.health.input_topic = self.resolve_topic_name("image")
        self._subs: List[Any] = []
        self._image_group = MutuallyExclusiveCallbackGroup()
        self._prompt_group = MutuallyExclusiveCallbackGroup()  # topics and enable: never wait
        self._service_group = MutuallyExclusiveCallbackGroup()  # wait for the worker's answer
        self._diag_group = MutuallyExclusiveCallbackGroup()
        self._auto_group = MutuallyExclusiveCallbackGroup()
        self._srvs = self._create_services()
        self._diag_pub = self.create_publisher(  # reliable, depth 10: as diagnostic_updater
            DiagnosticArray, "/diagnostics", reliable(10),
            qos_overriding_options=overriding_options(self, "publisher", "/diagnostics"))
        self._diag_timer = self.create_timer(float(self._settings["diagnostics_period"]),
                                             self._publish_diagnostics,
                                             callback_group=self._diag_group)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.context.on_shutdown(self._on_context_shutdown)

    # =========================================================================== lifecycle
    def autostart(self) -> bool:
        """Configure and activate (what ``auto_start`` does); True when active."""
        if self.trigger_configure() != TransitionCallbackReturn.SUCCESS:
            return False
        return self.trigger_activate() == TransitionCallbackReturn.SUCCESS

    @_transition
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.health.state = "configuring"
        cfg = self._load_tracker()
        if cfg is None:
            self.health.state = "unconfigured"
            return TransitionCallbackReturn.FAILURE
        self._forget_destroyed_entities()
        self._outputs = OutputPublishers(self, int(self._settings["output_qos_depth"]),
                                         self.health, lambda: self._settings)
        self._restart_diagnostics_timer()
        self.health.fatal = None
        self.health.state = "inactive"
        self.get_logger().info(f"configured on {self.health.device}: model {cfg.model_cfg}, "
                               f"image_size {cfg.image_size}, keep_ratio {cfg.keep_ratio}")
        return super().on_configure(state)

    @_transition
    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        if self._tracker is None and self._load_tracker() is None:  # released on deactivate
            self.health.state = "inactive"
            return TransitionCallbackReturn.FAILURE
        self.health.reset_counters()
        activated = super().on_activate(state)  # the lifecycle publishers first: no frame is lost
        self._worker = FrameWorker(
            self._tracker, decode=_decode, publish=self._publish, health=self.health,
            logger=self.get_logger(), bad_input=self._bad_input, worker_error=self._worker_error,
            max_rate_hz=lambda: self._settings["max_rate_hz"], keep_ratio=lambda: self._keep_ratio,
            publish_on_prompt=lambda: self._settings["publish_on_prompt"],
            auto_prompt_on_start=bool(self._settings["auto_prompt_on_start"]),
            on_auto_prompt=self._announce_auto_prompt, notes=self._object_notes)
        self._worker.set_enabled(self._enabled)  # (after the worker is known: see _srv_enable)
        self._worker.start()
        self._create_subscriptions()
        self.health.on_listening()
        self.health.state = "active"
        listening = [f"{sub.topic_name} ({sub.qos_profile.reliability.name.lower()}, depth "
                     f"{sub.qos_profile.depth})" for sub in self._image_subscriptions()]
        self.get_logger().info(f"active: listening on {' and '.join(listening)}")
        return activated

    @_transition
    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._teardown(keep_model=bool(self._settings["keep_model_when_inactive"]), keep_outputs=True)
        self.health.state = "inactive"
        self.get_logger().info("inactive" + ("" if self._tracker is not None else " (model released)"))
        return super().on_deactivate(state)

    @_transition
    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._teardown()
        self.health.state = "unconfigured"
        return super().on_cleanup(state)

    @_transition
    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._teardown()
        self.health.state = "finalized"
        return super().on_shutdown(state)

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.get_logger().error("lifecycle error: releasing the model and going back to unconfigured")
        self._teardown()
        self.health.state = "unconfigured"
        return TransitionCallbackReturn.SUCCESS

    def destroy_node(self) -> None:
        self._teardown()
        super().destroy_node()

    def _teardown(self, keep_model: bool = False, keep_outputs: bool = False) -> None:
        """The one way down, in order: stop the worker (nothing calls the tracker or publishes
        any more), drop the inputs, then release the model and destroy the outputs (the services
        stay: they answer that the node is not active).
        Best effort: a failing step is logged and the next one still runs."""
        steps = [("stop the frame worker", self._stop_worker),
                 ("destroy the subscriptions", self._destroy_subscriptions)]
        if not keep_model:
            steps.append(("release the model", self._release_tracker))
        if not keep_outputs:
            steps.append(("destroy the outputs", self._destroy_outputs))
        for what, step in steps:
            try:
                step()
            except Exception:  # noqa: BLE001 - teardown must finish
                self.get_logger().error(f"teardown: could not {what}:\n{traceback.format_exc()}")

    def stop_processing(self, timeout: Optional[float] = None) -> None:
        """Stop the frame worker: no tracker call and no publication after this returns (a call
        still running after ``timeout`` s, default STOP_TIMEOUT_S, is abandoned with its tracker)."""
        self._stop_worker(timeout)

    def _stop_worker(self, timeout: Optional[float] = None) -> None:
        """Serialised: a stop from the signal handler's path and one from a transition must not
        let the second go on (to release the model) while the first still waits for a call."""
        with self._worker_stop_lock:
            worker, self._worker = self._worker, None
            if worker is not None:
                t0 = time.monotonic()
                ended = worker.stop(timeout, self._exiting)
                notes = worker.notes()
                # for the next worker, if the model stays (a worker still running may change them)
                self._object_notes = notes if ended else None
                if not ended:
                    self._drop_waiting_prompts(notes, "its tracker was abandoned")
                    self._abandon_tracker(time.monotonic() - t0)

    def _drop_waiting_prompts(self, notes: Optional[ObjectNotes], why: str) -> None:
        """Topic prompts queued for a first frame that no worker of this tracker will see: each
        one is reported as a rejected prompt (counted, logged, on /diagnostics), never lost
        silently. (With the model kept while inactive they wait for the next activation's.)"""
        for req in notes.pending if notes is not None else ():
            self._bad_input(f"{req.source} dropped: it waited for a first frame, and {why} before "
                            f"one came (send it again once active): {req.describe()}", prompt=True)

    def _on_context_shutdown(self) -> None:
        """The ROS context shut down under the node (an in-process owner's ``rclpy.shutdown``,
        rclpy's own signal handler): nothing can be published any more, so the worker takes no
        more frames, and a transition waiting for it waits EXIT_STOP_TIMEOUT_S at most. Not
        waited for here: rclpy calls this holding the context's lock, which ``context.ok()``
        (see _publish) takes too."""
        self._exiting.set()
        worker = self._worker
        if worker is not None:
            worker.halt()

    def _abandon_tracker(self, waited_s: float) -> None:
        """The worker is still inside a tracker call (a long automatic prompt, a hung GPU): the
        tracker stays with that thread, neither released under it nor shared with a new worker;
        the next activate loads a new one."""
        tracker, self._tracker = self._tracker, None
        self.health.forget_tracker()
        if tracker is not None:
            self.get_logger().error(
                f"the frame worker did not finish its tracker call within {waited_s:.0f} s; that "
                "tracker is left to it (its objects are lost; an activate loads a new one)")

    def _destroy_subscriptions(self) -> None:
        subs, self._subs = self._subs, []
        for sub in subs:
            self.destroy_subscription(sub)
        listener, self._tf_listener, self._tf_buffer = self._tf_listener, None, None
        if listener is not None:  # its /tf subscriptions live on this node until unregistered
            listener.unregister()

    def _release_tracker(self) -> None:
        tracker, self._tracker = self._tracker, None
        notes, self._object_notes = self._object_notes, None
        self._drop_waiting_prompts(notes, "the model was released")
        self.health.forget_tracker()  # (kept by keep_model_when_inactive, with the objects)
        if tracker is not None:
            tracker.release()  # frees the model and empties the CUDA cache
            del tracker
            give_back_freed_memory()  # (else the process keeps it: see process_memory)

    def _destroy_outputs(self) -> None:
        outputs, self._outputs = self._outputs, None
        if outputs is not None:
            outputs.destroy()

    def _fail(self, message: str) -> TransitionCallbackReturn:
        self.get_logger().error(message)
        self.health.fatal = self.health.last_error = message
        return TransitionCallbackReturn.FAILURE

    def _tracker_config(self) -> TrackerConfig:
        """The tracker configuration of the current parameters; InputError saying why they
        cannot configure the node."""
        if self.rejected_parameters:
            raise InputError("invalid parameters: " + "; ".join(self.rejected_parameters.values()))
        for spec in NODE_PARAMETERS:
            problem = spec.choice_problem(self._settings[spec.name])
            if problem:
                raise InputError(f"invalid parameters: {problem}")
        try:
            return tracker_config_from_node(self)
        except InputError as exc:
            raise InputError(f"invalid tracker parameters: {exc}") from None

    def _load_tracker(self) -> Optional[TrackerConfig]:
        """Check the parameters and build the tracker from them: its configuration, or None (the
        reason logged and set as the node's fatal error)."""
        t0 = time.perf_counter()
        try:
            cfg = self._tracker_config()
        except InputError as exc:
            self._fail(str(exc))
            return None
        try:
            tracker = self._factory(cfg)
        except CheckpointError as exc:
            self._fail(f"cannot load the weights: {exc}")
            return None
        except (InputError, FastSam2Error) as exc:
            self._fail(f"cannot build the tracker: {exc}")
            return None
        except Exception as exc:  # noqa: BLE001 - a broken install must not kill the node
            self.get_logger().error(traceback.format_exc())
            self._fail(f"cannot build the tracker ({type(exc).__name__}): {exc}")
            return None
        self._tracker = tracker
        self.health.device = str(getattr(tracker, "device", ""))
        self.health.fatal = None
        self.get_logger().info(f"model loaded in {time.perf_counter() - t0:.1f} s")
        return cfg

    def _restart_diagnostics_timer(self) -> None:
        period = float(self._settings["diagnostics_period"])
        if abs(self._diag_timer.timer_period_ns - period * 1e9) > 1:
            self.destroy_timer(self._diag_timer)
            self._diag_timer = self.create_timer(period, self._publish_diagnostics,
                                                 callback_group=self._diag_group)

    def _image_subscriptions(self) -> list:
        """The camera input among the subscriptions (raw or compressed, per image_transport)."""
        return [sub for sub in self._subs if sub.msg_type in (Image, CompressedImage)]

    def _forget_destroyed_entities(self) -> None:
        """rclpy's callback groups keep a weak reference to every entity ever created in them
        and never drop it: each lifecycle cycle added one per subscription and service."""
        for group in (self._image_group, self._prompt_group, self._service_group, self._diag_group,
                      self._auto_group, self.default_callback_group):
            refs = getattr(group, "entities", None)
            if isinstance(refs, set):  # rebound, not changed in place: other threads may read it
                group.entities = {ref for ref in refs if ref() is not None}

    def _create_services(self) -> List[Any]:
        """The services, for the node's whole life: while it is not active they answer at once
        that it is not (a service that appeared only once configured left callers waiting)."""
        waits = self._service_group
        return [
            self.create_service(AddObject, "add_object", self._srv_add_object, callback_group=waits),
            self.create_service(RemoveObject, "remove_object", self._srv_remove_object,
                                callback_group=waits),
            self.create_service(Trigger, "reset", self._srv_reset, callback_group=waits),
            self.create_service(SetBool, "enable", self._srv_enable, callback_group=self._prompt_group),
            self.create_service(Trigger, "auto_prompt", self._srv_auto_prompt,
                                callback_group=self._auto_group),
        ]

    def _create_subscriptions(self) -> None:
        self._forget_destroyed_entities()
        s = self._settings
        img_qos = image_qos(s["image_reliability"], s["image_depth"])
        topic = self.resolve_topic_name("image")
        msg_type, callback = Image, self._on_image
        if s["image_transport"] == "compressed":  # (a remap rule matches the name `image` only)
            topic, msg_type, callback = compressed_topic(topic), CompressedImage, self._on_compressed
        self.health.input_topic = topic  # what /diagnostics names

        def subscribe(msg_type, topic, callback, qos, callback_group=self._prompt_group, **kw):
            return self.create_subscription(
                msg_type, topic, callback, qos, callback_group=callback_group,
                qos_overriding_options=overriding_options(self, "subscription", topic), **kw)

        events = incompatible_qos_events(topic, self._incompatible_qos)
        subs = [subscribe(msg_type, topic, callback, img_qos, callback_group=self._image_group,
                          event_callbacks=events)]
        subs += [
            subscribe(Prompt, "prompt", self._on_prompt, reliable(10)),
            subscribe(String, "text_prompt", self._on_text, reliable(10)),
            # rqt_image_view publishes its clicks reliable with depth 1000
            subscribe(Point, "click", self._on_click, reliable(100)),
            subscribe(PointStamped, "/clicked_point", self._on_clicked_point, reliable(10)),
            subscribe(CameraInfo, "camera_info", self._on_camera_info, image_qos("best_effort", 1)),
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
        self._offer("raw", msg)

    def _on_compressed(self, msg: CompressedImage) -> None:
        self._offer("compressed", msg)

    def _offer(self, kind: str, msg: Any) -> None:
        worker = self._worker
        if worker is not None:  # (a disabled worker takes none: FrameWorker.set_enabled)
            worker.offer_frame(kind, msg)

    def _publish(self, frame: TrackedFrame) -> None:
        outputs = self._outputs
        if outputs is None:
            return
        try:
            outputs.publish(frame)
        except Exception:
            if self.context.ok():
                raise  # (a worker error)
            # the context shut down while the frame was tracked (_on_context_shutdown): it cannot
            # go out, and that is no inference failure

    # =========================================================================== prompts
    def _max_text(self) -> int:
        """The configured limit the tracker checks too (the parameter applies at configure: a
        value set later must neither refuse early nor let through what the tracker refuses)."""
        tracker = self._tracker
        cfg = getattr(tracker, "cfg", None)
        if cfg is not None:
            return int(cfg.max_text_length)
        return int(self.get_parameter("max_text_length").value)

    def _active_worker(self) -> FrameWorker:
        """The running frame worker; InputError (naming the lifecycle state) when inactive."""
        worker = self._worker
        if worker is None:
            raise InputError(not_active_message(self.lifecycle_state))
        return worker

    def _submit_prompt(self, req: PromptRequest, queue_if_no_frame: bool):
        worker = self._active_worker()
        return wait(worker.submit("prompt", req, queue_if_no_frame), SERVICE_TIMEOUT_S)

    def _try_prompt(self, build: Callable[[], PromptRequest], source: str) -> None:
        """Topic prompt: build + queue for the worker, log and count errors, never raise."""
        try:
            req = build()
            worker = self._active_worker()
            future = worker.submit("prompt", req, queue_if_no_frame=True)
            future.add_done_callback(lambda f: self._prompt_done(f, source))
        except FastSam2Error as exc:
            self._bad_input(f"{source} rejected: {exc}", prompt=True,
                            warn=isinstance(exc, ClickNotUsable))

    def _prompt_done(self, future, source: str) -> None:
        exc = future.exception()
        if isinstance(exc, FastSam2Error):  # InputError, or CheckpointError (no CLIP weights)
            self._bad_input(f"{source} rejected: {exc}", prompt=True)
        # other exceptions were reported by the worker

    def _on_prompt(self, msg: Prompt) -> None:
        self._try_prompt(lambda: prompting.from_prompt_msg(msg, self._max_text(), "prompt"), "prompt")

    def _on_text(self, msg: String) -> None:
        def build() -> PromptRequest:
            text = validate_text(msg.data, self._max_text())
            obj = int(self._settings["text_object_id"])
            return PromptRequest(obj_id=obj, new_object=True, text=text, restart=obj > 0,
                                 source="text_prompt")
        self._try_prompt(build, "text_prompt")

    def _click_target(self):
        """(object id, new_object) of a click: a new object, or click_object_id (None: start it if
        not tracked when the worker applies the click, refine it otherwise)."""
        if self._settings["click_new_object"]:
            return 0, True
        return int(self._settings["click_object_id"]), None

    def _on_click(self, msg: Point) -> None:
        def build() -> PromptRequest:
            obj, new = self._click_target()
            return prompting.click_request(msg.x, msg.y, msg.z, obj, new, "click")
        self._try_prompt(build, "click")

    def _on_camera_info(self, msg: CameraInfo) -> None:
        self._camera_info = msg

    def _on_clicked_point(self, msg: PointStamped) -> None:
        def build() -> PromptRequest:
            info = self._camera_info
            if info is None:
                raise ClickNotUsable(f"no camera_info received on {self.resolve_topic_name('camera_info')}: "
                                     "cannot project /clicked_point into the image")
            cam_frame = info.header.frame_id.lstrip("/")
            p = (msg.point.x, msg.point.y, msg.point.z)
            src = msg.header.frame_id.lstrip("/")
            if not src or not cam_frame:  # no frame to compare: it may be any frame (e.g. map)
                which = "the point" if not src else "camera_info"
                raise ClickNotUsable(f"/clicked_point: {which} has no frame_id (point "
                                     f"{reprlib.repr(src)}, camera {reprlib.repr(cam_frame)}): cannot "
                                     "tell whether it is in the camera frame")
            if src != cam_frame:
                p = self._transform(p, src, cam_frame)
            binning = (info.binning_x, info.binning_y)
            u, v = prompting.project_to_pixel(list(info.k), p, binning,
                                              (info.roi.x_offset, info.roi.y_offset), list(info.p))
            obj, new = self._click_target()
            req = prompting.click_request(u, v, 1.0, obj, new, "/clicked_point")
            req.image_size = prompting.camera_info_image_size(
                info.width, info.height, binning, (info.roi.width, info.roi.height))
            return req
        self._try_prompt(build, "/clicked_point")

    def _transform(self, p, src: str, dst: str):
        if self._tf_buffer is None:
            raise ClickNotUsable(
                f"/clicked_point is in frame {reprlib.repr(src)} but the camera frame is "
                f"{reprlib.repr(dst)}, and TF is not "
                "available (tf2_ros not installed or use_tf false): click in the camera frame, or "
                "install tf2_ros")
        try:
            from rclpy.duration import Duration
            from rclpy.time import Time

            tf = self._tf_buffer.lookup_transform(dst, src, Time(), timeout=Duration(seconds=0.2))
        except Exception as exc:  # noqa: BLE001 - tf2 lookup/extrapolation errors
            raise ClickNotUsable(f"no TF from {reprlib.repr(src)} to camera frame "
                                 f"{reprlib.repr(dst)}: {str(exc)[:200]}") from exc  # (tf2 names them)
        t, r = tf.transform.translation, tf.transform.rotation
        return prompting.transform_point((t.x, t.y, t.z), (r.x, r.y, r.z, r.w), p)

    # =========================================================================== services
    def _srv_add_object(self, request: AddObject.Request, response: AddObject.Response):
        try:
            req = prompting.from_prompt_msg(request.prompt, self._max_text(), "add_object")
            out = self._submit_prompt(req, queue_if_no_frame=False)
            response.success, response.object_id = True, int(out.obj_id)
            response.auto_prompted = bool(out.auto_prompted)
            response.message = (f"object {out.obj_id} {'started' if req.new_object else 'refined'}"
                                + (" from text alone (automatic click)" if out.auto_prompted else ""))
        except FastSam2Error as exc:
            self._bad_input(f"add_object rejected: {exc}", prompt=True)
            response.success, response.message, response.object_id = False, str(exc), 0
        except Exception as exc:  # noqa: BLE001 - reported by the worker; the reply says why
            response.success, response.message = False, f"{type(exc).__name__}: {exc}"
        response.object_ids = self._tracked_ids()
        return response

    def _srv_remove_object(self, request: RemoveObject.Request, response: RemoveObject.Response):
        try:
            obj_id = validate_object_id(int(request.object_id))
            worker = self._active_worker()
            wait(worker.submit("remove", obj_id), SERVICE_TIMEOUT_S)
            response.success, response.message = True, f"object {obj_id} removed"
        except FastSam2Error as exc:
            self._bad_input(f"remove_object rejected: {exc}", prompt=True)
            response.success, response.message = False, str(exc)
        except Exception as exc:  # noqa: BLE001
            response.success, response.message = False, f"{type(exc).__name__}: {exc}"
        response.object_ids = self._tracked_ids()
        return response

    def _srv_reset(self, request: Trigger.Request, response: Trigger.Response):
        try:
            worker = self._active_worker()
            dropped = wait(worker.submit("reset"), SERVICE_TIMEOUT_S)
            response.success, response.message = True, "all objects and memory cleared" + (
                f"; {dropped} prompt(s) waiting for the first image dropped" if dropped else "")
            self.get_logger().info("reset: " + response.message)
        except Exception as exc:  # noqa: BLE001
            response.success, response.message = False, str(exc)
        return response

    def _srv_auto_prompt(self, request: Trigger.Request, response: Trigger.Response):
        """Start one new object (next free id) with no user input, on the current frame. Waits
        for the worker in its own callback group, at most SERVICE_TIMEOUT_S."""
        try:
            worker = self._active_worker()
            plan = wait(worker.submit("auto_prompt"), SERVICE_TIMEOUT_S,
                        may_still="an object may still start; see description")
            response.success, response.message = True, auto_prompt_summary(plan)
        except FastSam2Error as exc:  # no region, a missing model, max_objects, no frame, timeout
            message = str(exc)
            self._bad_input(f"auto_prompt: no object started: {message}", prompt=True)
            response.success, response.message = False, message
        except Exception as exc:  # noqa: BLE001 - reported by the worker; the reply says why
            response.success, response.message = False, f"{type(exc).__name__}: {exc}"
        return response

    def _announce_auto_prompt(self, plan: Any) -> None:
        """An automatic start (on the worker thread): its phrase goes on ``description``."""
        outputs = self._outputs
        try:
            if outputs is not None:
                outputs.publish_description(plan.phrase or "")
        except Exception as exc:  # noqa: BLE001 - the object is started; only the topic failed
            self.get_logger().error(f"could not publish the description: {exc}")

    def _srv_enable(self, request: SetBool.Request, response: SetBool.Response):
        """The flag is kept for the next worker (on_activate sets it after storing the worker,
        this reads the worker after storing the flag: a concurrent activate gets it either way)."""
        self._enabled = bool(request.data)
        self.health.enabled = self._enabled
        worker = self._worker
        if worker is not None:
            worker.set_enabled(self._enabled)
        response.success = True
        response.message = "processing enabled" if self._enabled else "processing disabled (images ignored)"
        self.get_logger().info(response.message)
        return response

    def _tracked_ids(self) -> List[int]:
        worker = self._worker
        return list(worker.tracked_ids) if worker is not None else []

    # =========================================================================== parameters
    def _on_set_parameters(self, params) -> SetParametersResult:
        """Check every parameter of the set first, then apply them: a set is taken or refused
        whole (``set_parameters_atomically``), so nothing happens before the last check.

        Never raises: rclpy's parameter service sends no reply when this callback raises (``ros2
        param set`` waits until it times out), so anything unexpected is a refusal, logged."""
        try:
            specs = spec_map()
            ours = [(p, specs[p.name]) for p in params if p.name in specs]
            problem = _parameter_problem(ours)
            if problem is None:
                self._apply_parameters(params, ours)
        except Exception as exc:  # noqa: BLE001 - see the docstring
            problem = f"parameters not set, unexpected error: {type(exc).__name__}: {exc}"
            self.get_logger().error(f"{refusal_text(problem)}\n{traceback.format_exc()}")
        if problem is not None:
            return SetParametersResult(successful=False, reason=refusal_text(problem))
        return SetParametersResult(successful=True)

    def _apply_parameters(self, params, ours) -> None:
        later: Dict[str, List[str]] = {}  # when -> names whose step has run already
        state, built = self.lifecycle_state, self._tracker is not None
        for p, spec in ours:
            if p.name == "keep_ratio":  # the worker applies it (no worker: at activate)
                self._keep_ratio = float(p.value)
            when = waits_until(spec, state, built)
            if when is not None:
                later.setdefault(when, []).append(p.name)
            self.rejected_parameters.pop(p.name, None)  # a valid value replaces a rejected one
        for p in params:
            if p.name in self._settings:
                self._settings[p.name] = p.value
        if any(p.name == "diagnostics_period" for p in params):
            self._restart_diagnostics_timer()
        worker = self._worker
        if worker is not None and any(p.name in ("keep_ratio", "max_rate_hz") for p in params):
            worker.settings_changed()
        for when, names in later.items():
            self.get_logger().info(f"parameter(s) {', '.join(names)} take effect {when}")

    # =========================================================================== health
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
        try:  # (a transition on another thread may be destroying the subscriptions right now)
            subscriptions = self._image_subscriptions()
            self.health.unreachable_publishers = unreachable_publishers(self, subscriptions)
            self.health.best_effort_publishers = best_effort_publishers(self, subscriptions)
        except Exception:  # noqa: BLE001 - InvalidHandle; the next period asks again
            self.health.unreachable_publishers = self.health.best_effort_publishers = 0
        snap = self.health.snapshot(float(self._settings["diagnostics_warn_hold"]),
                                    float(self._settings["diagnostics_period"]))
        arr = DiagnosticArray()
        arr.header.stamp = self.get_clock().now().to_msg()
        # the device in use; before a model is built, the one asked for (e.g. "cuda" that failed)
        device = self.health.device or str(self.get_parameter("device").value)
        arr.status = [to_status(snap, f"{self.get_fully_qualified_name()}: tracker", device)]
        self._diag_pub.publish(arr)

    def _bad_input(self, message: str, prompt: bool = False, warn: bool = False) -> None:
        """Counted always; logged at most once a second per cause (rclpy's throttle is per
        calling line, and one line logs every cause: a second cause within 1 s went unlogged)."""
        self.health.on_bad_input(message, prompt=prompt)
        cause = bad_input_cause(message)
        with self._logged_causes_lock:  # (callbacks of several threads report bad input)
            now = time.monotonic()
            if now - self._logged_causes.get(cause, float("-inf")) < BAD_INPUT_LOG_PERIOD_S:
                return
            if len(self._logged_causes) > 64:  # only the last period's causes matter
                self._logged_causes = {c: t for c, t in self._logged_causes.items()
                                       if now - t < BAD_INPUT_LOG_PERIOD_S}
            self._logged_causes[cause] = now
        if warn:
            self.get_logger().warning(message)
        else:
            self.get_logger().error(message)

    def _incompatible_qos(self, message: str) -> None:
        self.health.on_incompatible_qos(message)
        self.get_logger().warning(message)

    def _worker_error(self, exc: BaseException) -> None:
        msg = f"{type(exc).__name__}: {exc}"
        self.health.on_worker_error(msg)
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        self.get_logger().error(f"inference failed, frame skipped: {msg}\n{tb}",
                                throttle_duration_sec=5.0)


def _parameter_problem(ours) -> Optional[str]:
    """Why a parameter set is refused (its first problem), or None; ``ours``: (parameter, spec)
    of each parameter the node declares."""
    for p, spec in ours:
        problem = spec.choice_problem(p.value)
        if problem:
            return problem
        if spec.group == "core":
            try:  # the core's ranges (e.g. keep_ratio's open lower end)
                TrackerConfig.from_mapping({p.name: p.value})
            except InputError as exc:
                return str(exc)
    return None


def _decode(kind: str, msg: Any) -> np.ndarray:
    """A received image message -> RGB uint8 (InputError for malformed or unsupported ones).
    An rgb8 frame is a view of the message's data, not a copy (nothing writes to it)."""
    return image_to_rgb(msg, copy=False) if kind == "raw" else compressed_to_rgb(msg)


#: Spins in a row that raise before ``spin_until_stopped`` gives up (about 5 s of failures).
SPIN_FAILURES_TO_GIVE_UP = 100


def spin_until_stopped(executor: MultiThreadedExecutor, stop: threading.Event, logger) -> None:
    """``executor.spin()`` that outlives a failing callback: rclpy's own lifecycle service raises
    for a transition id the current state does not have (a lifecycle manager's raw request), and
    building the wait set can meet a subscription a transition is destroying. Either exception
    would end ``spin()``, and the node with it; here it is logged and spinning goes on."""
    failures = 0  # in a row: a failure that repeats on every spin is not one bad request
    while not stop.is_set() and executor.context.ok():
        try:
            executor.spin_once(timeout_sec=0.2)
            failures = 0
        except Exception:  # noqa: BLE001 - one request failed, the node stays up
            failures += 1
            if failures >= SPIN_FAILURES_TO_GIVE_UP:
                logger.fatal(f"ROS callbacks failed {failures} times in a row; the node stops "
                             f"(a launch file's respawn can restart it):\n{traceback.format_exc()}")
                return
            logger.error(f"a ROS callback failed (the node keeps running):\n{traceback.format_exc()}",
                         throttle_duration_sec=1.0)
            time.sleep(0.05)  # an entity being destroyed leaves the wait set within a spin or two


class _InterruptedStartUp(BaseException):
    """SIGINT/SIGTERM while the node configures at start-up (loading a large checkpoint or a first
    torch.compile takes many seconds, ``ros2 launch`` escalates to SIGKILL after 10): raised in
    the main thread to leave the load at once. (A BaseException: transition callbacks catch
    Exception.)"""


def main(args: Optional[List[str]] = None,
         tracker_factory: Optional[TrackerFactory] = None) -> int:
    """The node process: ``ros2 run fastsam2_ros tracker_node`` (through :func:`run`).
    ``tracker_factory``: see :class:`TrackerNode` (the node benchmark's stand-in tracker).

    SIGINT/SIGTERM shut down in order — the worker stops, then the executor, then the publishers
    and the node go, then the ROS context — so a frame in flight never publishes on a dead context
    and no handle is destroyed under a waiting executor. (rclpy's own signal handler would
    invalidate the context first, while the worker may be publishing.) A signal during the
    start-up's configure and activate interrupts them (the node never activates after it); after
    start-up the worker's tracker call gets EXIT_STOP_TIMEOUT_S (frame_worker), then is abandoned,
    also where a lifecycle transition already waits for it.
    """
    keep_freed_memory()  # image-sized buffers are reused, not faulted in again every frame
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    stop, starting = threading.Event(), threading.Event()

    def on_signal(*_) -> None:
        stop.set()
        if starting.is_set():  # (signal handlers run in the main thread, between its bytecodes)
            starting.clear()
            raise _InterruptedStartUp()

    on_first_signal = first_signal_only(on_signal)  # stop.set() takes a lock: no second run in it
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_first_signal)
    node = TrackerNode(tracker_factory=tracker_factory, exiting=stop)
    executor = MultiThreadedExecutor(num_threads=EXECUTOR_THREADS)
    executor.add_node(node)
    spinner = threading.Thread(target=spin_until_stopped, args=(executor, stop, node.get_logger()),
                               name="fastsam2_executor", daemon=True)
    spinner.start()
    failed = False
    try:
        starting.set()
        try:
            if node.get_parameter("auto_start").value and not stop.is_set() and not node.autostart():
                node.get_logger().error(
                    "auto start failed; the node stays up (fix the parameters and trigger "
                    "configure/activate with lifecycle transitions)")
        finally:
            starting.clear()
        while not stop.wait(0.2) and spinner.is_alive():
            pass
        failed = not stop.is_set()  # the spinner gave up: exit non-zero, a supervisor restarts
    except _InterruptedStartUp:
        node.get_logger().info("interrupted while starting up")
    finally:  # in order: the worker (nothing publishes any more), the executor (no callback,
        # no wait on the node's handles), then subscriptions, publishers, services and the node,
        # then the context
        node.get_logger().info("shutting down")
        stop.set()
        node.stop_processing(frame_worker.EXIT_STOP_TIMEOUT_S)
        executor.shutdown(timeout_sec=5.0)
        spinner.join(timeout=5.0)
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return 1 if failed else 0


def run() -> None:
    """Console entry point: :func:`main`, then leave without the interpreter's teardown.

    Everything is shut down by then (model released, ROS context closed). Unloading torch, sam2
    and hydra at interpreter exit takes seconds on a busy machine, past ``ros2 launch``'s 5 s
    between SIGINT and SIGTERM, which would report a node that "failed to terminate"."""
    code = main()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    run()

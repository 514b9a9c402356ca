"""The tracker node's own logic with a test double of the tracker (scene_tracker.SceneTracker):
the frame worker as the only tracker caller, occlusion (an object leaves the frame and comes
back), per-object messages, max_rate_hz, image QoS. Real rclpy over Fast DDS on loopback; the
double replaces SAM 2 only, because random weights never predict an absent object."""

import math
import os
import threading
import time

import numpy as np
import pytest

os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
from domains import domain_id  # noqa: E402
DOMAIN_ID = domain_id(6)

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("fastsam2_msgs.msg", reason="fastsam2_msgs not built (scripts/setup_env.sh)")

from diagnostic_msgs.msg import DiagnosticStatus  # noqa: E402
from lifecycle_msgs.msg import Transition  # noqa: E402
from lifecycle_msgs.srv import ChangeState, GetState  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from ros_probe import (add_request, frame_rgb, image_reader_matched, prompt_msg,  # noqa: E402
                       running_node, wait_for)
from scene_tracker import ABSENT, PRESENT, SceneTracker  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_srvs.srv import SetBool, Trigger  # noqa: E402

from fastsam2_msgs.srv import RemoveObject  # noqa: E402
from fastsam2_ros.image_messages import image_to_numpy, numpy_to_image, rgb_to_compressed  # noqa: E402
from fastsam2_ros.ros.messages import vision_msgs_available  # noqa: E402

NS = "/b"
OUTPUTS = ("mask", "labels", "objects", "stats")


@pytest.fixture(scope="module")
def h():
    trackers = []

    def factory(cfg):
        trackers.append(SceneTracker(cfg))
        return trackers[-1]

    params = dict(diagnostics_period=0.2, diagnostics_warn_hold=0.5, image_depth=10)
    with running_node(DOMAIN_ID, NS, params, tracker_factory=factory) as (node, probe, ctx):
        h = type("H", (), {})()
        h.node, h.probe, h.ctx, h.trackers = node, probe, ctx, trackers
        yield h


def test_only_the_frame_worker_calls_the_tracker(h):
    p, node = h.probe, h.node
    p.wait_outputs(p.publish_frame(), OUTPUTS)
    assert p.call(p.add, add_request(obj_id=1, points=[(30, 30)])).success  # service
    p.prompt.publish(prompt_msg(1, False, points=[(31, 31)]))  # topic
    node.set_parameters([Parameter("click_object_id", value=2)])
    from geometry_msgs.msg import Point

    p.click.publish(Point(x=5.0, y=5.0, z=0.0))  # click: starts object 2 on the background
    assert wait_for(lambda: node._tracked_ids() == [1, 2]), node._tracked_ids()
    assert node.set_parameters([Parameter("keep_ratio", value=0.7)])[0].successful  # parameter
    assert wait_for(lambda: h.trackers[-1].keep_ratio == 0.7)
    assert p.call(p.remove, RemoveObject.Request(object_id=2)).success
    for shift in (0, 1, 2):
        p.wait_outputs(p.publish_frame(frame_rgb(shift=shift)), OUTPUTS)
    callers = h.trackers[-1].callers
    workers = [t for t in threading.enumerate() if t.name == "fastsam2_worker"]
    assert len(callers) == 1 and [t.ident for t in workers] == list(callers)


def test_an_object_that_leaves_the_frame_stays_tracked_as_occluded(h):
    p = h.probe
    assert p.call(p.reset, Trigger.Request()).success
    p.wait_outputs(p.publish_frame(frame_rgb(shift=0)), OUTPUTS)
    assert p.call(p.add, add_request(obj_id=3, points=[(30, 30)])).success
    # the red disk moves right, leaves the 80 px wide frame (centre 92+, radius 12), comes back
    shifts = [10, 40, 62, 70, 90, 5]
    outs = [p.wait_outputs(p.publish_frame(frame_rgb(shift=s)), OUTPUTS) for s in shifts[:-1]]
    n_diag = len(p.got("diag"))  # while it is out of view, /diagnostics lists it as occluded
    assert wait_for(lambda: any(kv.key == "occluded_objects" and kv.value == "3"
                                for d in p.got("diag")[n_diag:] for s in d.status for kv in s.values), 10.0)
    outs.append(p.wait_outputs(p.publish_frame(frame_rgb(shift=shifts[-1])), OUTPUTS))
    expect_visible = [True, True, False, False, False, True]
    expect_occluded = [0, 0, 1, 2, 3, 0]
    for out, vis, occ, shift in zip(outs, expect_visible, expect_occluded, shifts):
        mask = image_to_numpy(out["mask"]) > 0
        (obj,) = out["objects"].objects
        st = out["stats"]
        assert list(st.object_ids) == [3], f"object dropped at shift {shift}"
        assert (obj.id, obj.visible, obj.occluded_frames) == (3, vis, occ), shift
        assert list(st.occluded_frames) == [occ]
        assert obj.presence_score == (PRESENT if vis else ABSENT)
        assert mask.any() == vis and obj.area == int(mask.sum())
        assert out["objects"].header.stamp == out["mask"].header.stamp
        if vis:
            ys, xs = np.nonzero(mask)
            assert (obj.bbox.x_offset, obj.bbox.y_offset) == (xs.min(), ys.min())
            assert (obj.bbox.width, obj.bbox.height) == (xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)
            assert (obj.centroid.x, obj.centroid.y) == pytest.approx((xs.mean(), ys.mean()))
        else:  # empty mask, empty geometry, nothing in the label image
            assert obj.bbox.width == obj.bbox.height == 0
            assert math.isnan(obj.centroid.x) and not image_to_numpy(out["labels"]).any()


@pytest.mark.skipif(not vision_msgs_available(), reason="vision_msgs is not installed (no PyPI "
                    "wheel; it comes with every ROS 2 install): Detection2DArray is not published")
def test_visible_objects_are_published_as_vision_msgs_detections(h):
    p = h.probe
    key = p.publish_frame(frame_rgb(shift=0))
    out = p.wait_outputs(key, OUTPUTS + ("detections",))
    (obj,) = out["objects"].objects
    (det,) = out["detections"].detections
    assert det.id == str(obj.id) and det.header.stamp == out["mask"].header.stamp
    assert det.bbox.size_x == obj.bbox.width and det.bbox.size_y == obj.bbox.height
    assert det.bbox.center.position.x == pytest.approx(obj.bbox.x_offset + obj.bbox.width / 2)
    assert det.results[0].hypothesis.class_id == "object"
    assert det.results[0].hypothesis.score == pytest.approx(1 / (1 + math.exp(-PRESENT)))
    gone = p.wait_outputs(p.publish_frame(frame_rgb(shift=90)), OUTPUTS + ("detections",))
    assert len(gone["objects"].objects) == 1 and len(gone["detections"].detections) == 0


def test_max_rate_hz_skips_frames_and_reports_them_as_drops(h):
    p, node = h.probe, h.node
    rate = 2.0  # a period far longer than one (fake) inference, even on a loaded machine
    assert node.set_parameters([Parameter("max_rate_hz", value=rate)])[0].successful
    p.wait_outputs(p.publish_frame(), OUTPUTS)
    c0 = node.health.counts()
    n_stats = len(p.got("stats"))
    t0 = time.monotonic()
    keys = []
    while time.monotonic() - t0 < 2.0:  # ~30 Hz for 2 s
        keys.append(p.publish_frame(frame_rgb(shift=len(keys) % 5)))
        time.sleep(0.03)
    last = p.wait_outputs(keys[-1], OUTPUTS)["stats"]  # the newest frame is still processed
    elapsed = time.monotonic() - t0
    c1 = node.health.counts()
    processed = c1["processed"] - c0["processed"]
    dropped = c1["dropped"] - c0["dropped"]
    assert c1["received"] - c0["received"] == len(keys)
    assert processed <= rate * elapsed + 2, (processed, elapsed)
    assert processed + dropped == len(keys)
    skipped = c1["skipped_for_rate"] - c0["skipped_for_rate"]
    assert 0 < skipped <= dropped and skipped >= len(keys) - processed - 5  # nearly all: the rate
    assert last.dropped_frames == c1["dropped"]
    assert len(p.got("stats")[n_stats:]) == processed
    assert node.set_parameters([Parameter("max_rate_hz", value=0.0)])[0].successful


def _reactivate(p, node, **params):
    deactivate = Transition(id=Transition.TRANSITION_DEACTIVATE)
    activate = Transition(id=Transition.TRANSITION_ACTIVATE)
    assert p.call(p.change_state, ChangeState.Request(transition=deactivate)).success
    assert all(r.successful for r in node.set_parameters(
        [Parameter(k, value=v) for k, v in params.items()]))
    assert p.call(p.change_state, ChangeState.Request(transition=activate)).success


def test_reliable_image_qos_gets_every_large_frame_and_reports_best_effort_publishers(h):
    p, node = h.probe, h.node
    _reactivate(p, node, image_reliability="reliable")
    sub = [s for s in node._subs if s.topic_name == f"{NS}/image"][0]
    assert sub.qos_profile.reliability == ReliabilityPolicy.RELIABLE
    # a best-effort camera cannot connect to a reliable subscription: logged and counted
    best_effort = p.create_publisher(Image, f"{NS}/image",
                                     QoSProfile(depth=5, reliability=ReliabilityPolicy.BEST_EFFORT))
    assert wait_for(lambda: node.health.counts()["incompatible_qos"] >= 1, 60.0)
    assert "set image_reliability:=best_effort" in node.health.last_error
    assert wait_for(lambda: any(kv.key == "incompatible_qos_events" and int(kv.value) >= 1
                                for d in p.got("diag")[-3:] for s in d.status for kv in s.values), 10.0)

    def last_status():
        status = p.got("diag")[-1].status[0]
        return status.level, status.message, {kv.key: kv.value for kv in status.values}

    # the event fires once, but /diagnostics WARNs for as long as the camera cannot connect,
    # well past the bad-input hold (0.5 s here)
    time.sleep(1.5)
    assert wait_for(lambda: last_status()[2]["unreachable_publishers"] == "1", 10.0)
    level, message, _ = last_status()
    assert level == DiagnosticStatus.WARN and "image_reliability:=best_effort" in message
    p.destroy_publisher(best_effort)
    assert wait_for(lambda: last_status()[2]["unreachable_publishers"] == "0", 10.0)
    assert last_status()[2]["best_effort_publishers"] == "0"  # a reliable subscription
    # full-HD frames in a burst from a reliable publisher: every one reaches the node
    assert wait_for(lambda: p.image.get_subscription_count() > 0, 10.0)
    big = np.zeros((1080, 1920, 3), np.uint8)
    c0 = node.health.counts()["received"]
    for i in range(4):
        big[:, :, 0] = i
        p.image.publish(numpy_to_image(big, "rgb8", p.next_header()))
    assert wait_for(lambda: node.health.counts()["received"] - c0 == 4, 120.0), node.health.counts()
    _reactivate(p, node, image_reliability="best_effort")
    # the probe's camera publisher, heard by the best-effort subscription, is counted
    assert wait_for(lambda: last_status()[2]["best_effort_publishers"] == "1", 10.0)


def test_a_transition_the_current_state_does_not_have_leaves_the_node_running(h):
    """rclpy's lifecycle service raises for it (no answer) instead of answering success=false;
    the executor must not die of it (a lifecycle manager sends raw transition ids)."""
    p, node = h.probe, h.node
    assert node.lifecycle_state == "active"
    configure = Transition(id=Transition.TRANSITION_CONFIGURE)
    fut = p.change_state.call_async(ChangeState.Request(transition=configure))
    time.sleep(1.0)
    assert not fut.done() or not fut.result().success
    assert p.call(p.get_state, GetState.Request()).current_state.label == "active"
    p.wait_outputs(p.publish_frame(), OUTPUTS)


def test_keep_ratio_set_while_inactive_applies_on_activate_with_the_model_kept(h):
    p, node = h.probe, h.node
    _reactivate(p, node, keep_model_when_inactive=True)
    p.wait_outputs(p.publish_frame(), OUTPUTS)
    assert p.call(p.add, add_request(obj_id=4, points=[(30, 30)], text="a red mug")).success
    p.wait_outputs(p.publish_frame(), OUTPUTS)
    tracker = node._tracker
    _reactivate(p, node, keep_ratio=0.6)
    assert node._tracker is tracker  # kept
    stats = p.wait_outputs(p.publish_frame(), OUTPUTS)["stats"]
    assert stats.keep_ratio == pytest.approx(0.6)
    # the kept objects keep their text
    objects = p.wait_outputs(p.publish_frame(), OUTPUTS)["objects"]
    assert {(o.id, o.text) for o in objects.objects} >= {(4, "a red mug")}
    # a set refused as a whole changes nothing, also not the tracker
    bad = Parameter("image_reliability", value="sometimes")
    assert not node.set_parameters_atomically([Parameter("keep_ratio", value=0.2), bad]).successful
    stats = p.wait_outputs(p.publish_frame(), OUTPUTS)["stats"]
    assert stats.keep_ratio == pytest.approx(0.6) and node.get_parameter("keep_ratio").value == 0.6
    _reactivate(p, node, keep_model_when_inactive=False, keep_ratio=0.3)


def test_image_transport_compressed_tracks_each_camera_frame_once(h):
    """A camera that publishes through image_transport sends every frame raw and compressed: the
    node subscribes to one of them (it used to take both, tracking each frame twice)."""
    p, node = h.probe, h.node
    _reactivate(p, node, image_transport="compressed")
    try:
        assert [s.topic_name for s in node._image_subscriptions()] == [f"{NS}/image/compressed"]
        assert node.health.input_topic == f"{NS}/image/compressed"  # what /diagnostics names
        assert wait_for(lambda: p.compressed.get_subscription_count() > 0, 10.0)
        assert wait_for(lambda: p.image.get_subscription_count() == 0, 10.0)
        # until the best-effort reader has matched the probe, a frame may be lost
        for _ in range(30):
            warm = p.publish_frame(encoding="compressed")
            if wait_for(lambda: p.by_stamp("stats", warm), 2.0):
                break
        else:
            raise AssertionError("no compressed frame was answered")
        c0 = node.health.counts()
        keys = []
        for shift in range(3):  # the same frame on both topics, as image_transport sends it
            rgb = frame_rgb(shift=shift)
            header = p.next_header()
            p.image.publish(numpy_to_image(rgb, "rgb8", header))
            p.compressed.publish(rgb_to_compressed(rgb, "png", header))
            keys.append((header.stamp.sec, header.stamp.nanosec))
            p.wait_outputs(keys[-1], OUTPUTS)
        time.sleep(0.5)
        assert [len(p.by_stamp("stats", k)) for k in keys] == [1, 1, 1]
        c1 = node.health.counts()
        assert (c1["received"] - c0["received"], c1["dropped"] - c0["dropped"]) == (3, 0)
    finally:
        _reactivate(p, node, image_transport="raw")
    assert [s.topic_name for s in node._image_subscriptions()] == [f"{NS}/image"]
    assert wait_for(lambda: image_reader_matched(node, NS), 20.0)


def test_compressed_topics_follow_remaps_of_image_and_overlay():
    """image_transport's rule: <resolved image>/compressed. A remap rule `image:=X` matches the name
    `image` only, so the node derives the compressed topics from the resolved names."""
    from fastsam2_ros.ros.tracker_node import TrackerNode

    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=DOMAIN_ID)
    remaps = ["--ros-args", "-r", "image:=/camera/color/image_raw", "-r", "overlay:=viz/overlay"]
    node = TrackerNode(context=ctx, namespace="/remapped", cli_args=remaps,
                       tracker_factory=lambda cfg: SceneTracker(cfg),
                       parameter_overrides=[Parameter("image_transport", value="compressed")])
    try:
        assert node.autostart(), node.health.fatal
        assert [s.topic_name for s in node._image_subscriptions()] == \
            ["/camera/color/image_raw/compressed"]
        published = {pub.topic_name for pub in node._outputs._pubs.values()}
        assert "/remapped/viz/overlay/compressed" in published and "/remapped/viz/overlay" in published
    finally:
        node.destroy_node()
        rclpy.shutdown(context=ctx)


def test_a_worker_stuck_in_a_tracker_call_keeps_its_tracker(monkeypatch):
    """Deactivate gives up on a worker still inside a tracker call (a long automatic prompt on the
    CPU). Its tracker used to be released under it, or (keep_model_when_inactive) shared with the
    next worker: two threads in one tracker. Now it stays with the old thread; activate loads anew."""
    from rclpy.lifecycle import TransitionCallbackReturn
    from std_msgs.msg import Header

    from fastsam2_ros.ros import tracker_node

    entered, gate, built = threading.Event(), threading.Event(), []

    class StuckTracker(SceneTracker):
        released = False

        def track(self, rgb):
            entered.set()
            gate.wait(30.0)
            return super().track(rgb)

        def release(self):
            self.released = True

    def factory(cfg):
        built.append(StuckTracker(cfg))
        return built[-1]

    monkeypatch.setattr(tracker_node.frame_worker, "STOP_TIMEOUT_S", 0.5)
    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=DOMAIN_ID)
    node = tracker_node.TrackerNode(context=ctx, namespace="/stuck", tracker_factory=factory,
                                    parameter_overrides=[Parameter("keep_model_when_inactive", value=True)])
    try:
        assert node.autostart(), node.health.fatal
        node._worker.offer_frame("raw", numpy_to_image(frame_rgb(), "rgb8", Header(frame_id="cam")))
        assert entered.wait(10.0)
        assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
        assert node._tracker is None and not built[0].released  # left to the stuck thread
        gate.set()
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        assert len(built) == 2 and node._tracker is built[1]
    finally:
        gate.set()
        node.destroy_node()
        rclpy.shutdown(context=ctx)


@pytest.mark.parametrize("outcome", ["started", "failed"])
def test_a_worker_abandoned_at_deactivate_reports_nothing_of_its_call(monkeypatch, outcome):
    """Deactivate gives up on a worker inside a long automatic prompt. When that call ended, the
    auto_prompt service replied success for an object nobody tracks, its phrase was latched on the
    next activation's description, and its errors counted on the next activation's health."""
    from rclpy.lifecycle import TransitionCallbackReturn
    from std_msgs.msg import Header

    from fastsam2_ros.core.auto_prompt import AutoPromptResult
    from fastsam2_ros.ros import tracker_node

    entered, gate = threading.Event(), threading.Event()

    class StuckAutoPrompt(SceneTracker):
        def auto_prompt(self, obj_id, image=None):
            entered.set()
            gate.wait(30.0)
            if outcome == "failed":
                raise RuntimeError("CUDA out of memory")
            self.colours[obj_id] = (220, 40, 40)
            result = self._result([obj_id])
            result.stats.auto_phrases = {obj_id: "red ball"}
            result.auto_prompt = AutoPromptResult(
                obj_id=obj_id, mask=np.ones((4, 4), bool), box=(0, 0, 3, 3), score=0.9,
                source="sam2", click=(30, 30), caption="a red ball", phrase="red ball", timings_ms={})
            return result

    monkeypatch.setattr(tracker_node.frame_worker, "STOP_TIMEOUT_S", 0.5)
    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=DOMAIN_ID)
    node = tracker_node.TrackerNode(context=ctx, namespace="/abandoned",
                                    tracker_factory=StuckAutoPrompt)
    replies, described = [], []
    try:
        assert node.autostart(), node.health.fatal
        monkeypatch.setattr(node._outputs, "publish_description", described.append)
        old = node._worker
        old.offer_frame("raw", numpy_to_image(frame_rgb(), "rgb8", Header(frame_id="cam")))
        assert wait_for(lambda: old._current is not None, 10.0)
        service = threading.Thread(target=lambda: replies.append(
            node._srv_auto_prompt(Trigger.Request(), Trigger.Response())))
        service.start()
        assert entered.wait(10.0)
        assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
        service.join(10.0)
        assert replies, "the reply waited for the abandoned call"
        assert not replies[0].success and "abandoned" in replies[0].message, replies[0].message
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        gate.set()
        old._thread.join(10.0)
        assert not old._thread.is_alive()
        counts = node.health.counts()
    finally:
        gate.set()
        node.destroy_node()
        rclpy.shutdown(context=ctx)
    assert described == [], "the lost object's phrase went on the new activation's description"
    assert counts["worker_errors"] == counts["prompt_errors"] == counts["bad_inputs"] == 0, counts


def test_a_prompt_right_after_reset_applies_to_the_latest_frame(h):
    """reset dropped the worker's frame: add_object answered "no image received yet" until a new
    frame came (never, with a paused camera or enable false)."""
    p, node = h.probe, h.node
    key = p.publish_frame()
    p.wait_outputs(key, OUTPUTS)
    assert p.call(p.reset, Trigger.Request()).success
    assert p.call(p.enable, SetBool.Request(data=False)).success  # no new frame comes
    try:
        reply = p.call(p.add, add_request(obj_id=9, points=[(30, 30)]))
        assert reply.success and reply.object_id == 9, reply.message
        # republished with the latest frame's stamp (after the reset's, without objects), now
        # with object 9
        assert wait_for(lambda: [o.id for o in p.by_stamp("objects", key)[-1].objects] == [9], 10.0)
    finally:
        assert p.call(p.enable, SetBool.Request(data=True)).success
        assert p.call(p.remove, RemoveObject.Request(object_id=9)).success


def _diagnostics(p):
    """The values of the last /diagnostics status the probe got."""
    got = p.got("diag")
    return {kv.key: kv.value for kv in got[-1].status[0].values} if got else {}


def test_remove_and_reset_are_published_and_leave_diagnostics(h):
    """remove_object and reset published nothing: mask, labels, objects, stats and /diagnostics
    (the last stats) kept the removed objects until the next frame, never with a paused camera.
    The republished frame's node_latency_ms counts from the image's arrival, not the command."""
    p, node = h.probe, h.node
    assert p.call(p.reset, Trigger.Request()).success
    key = p.publish_frame()
    p.wait_outputs(key, OUTPUTS)
    seen = time.monotonic()  # the image arrived before this
    assert p.call(p.enable, SetBool.Request(data=False)).success  # no new frame comes
    try:
        for obj_id, point in ((1, (30, 30)), (2, (5, 5))):
            assert p.call(p.add, add_request(obj_id=obj_id, points=[point])).success
        assert wait_for(lambda: _diagnostics(p).get("objects") == "1,2", 10.0), _diagnostics(p)

        def last(topic):
            return p.by_stamp(topic, key)[-1]

        asked = time.monotonic()
        assert p.call(p.remove, RemoveObject.Request(object_id=1)).success
        assert wait_for(lambda: list(last("stats").object_ids) == [2], 10.0)
        assert last("stats").node_latency_ms >= (asked - seen) * 1e3
        assert wait_for(lambda: [o.id for o in last("objects").objects] == [2], 10.0)
        assert wait_for(lambda: set(np.unique(image_to_numpy(last("labels")))) == {0, 2}, 10.0)
        assert wait_for(lambda: _diagnostics(p).get("objects") == "2", 10.0), _diagnostics(p)
        assert p.call(p.reset, Trigger.Request()).success
        assert wait_for(lambda: list(last("stats").object_ids) == [], 10.0)
        assert (last("stats").image_width, last("stats").image_height) == (80, 60)
        assert wait_for(lambda: not last("objects").objects, 10.0)
        assert wait_for(lambda: not image_to_numpy(last("mask")).any(), 10.0)
        assert wait_for(lambda: _diagnostics(p).get("objects") == "", 10.0), _diagnostics(p)
    finally:
        assert p.call(p.enable, SetBool.Request(data=True)).success


def test_deactivate_that_releases_the_model_clears_its_objects_from_diagnostics(h):
    """/diagnostics reported the last frame's objects and bank after deactivate had released the
    model with them; keep_model_when_inactive keeps both."""
    p, node = h.probe, h.node
    deactivate = Transition(id=Transition.TRANSITION_DEACTIVATE)
    activate = Transition(id=Transition.TRANSITION_ACTIVATE)
    for keep in (True, False):
        assert node.set_parameters([Parameter("keep_model_when_inactive", value=keep)])[0].successful
        p.wait_outputs(p.publish_frame(), OUTPUTS)
        if 1 not in node._tracked_ids():
            assert p.call(p.add, add_request(obj_id=1, points=[(30, 30)])).success
        p.wait_outputs(p.publish_frame(), OUTPUTS)  # a tracked frame with object 1
        assert "1" in node.health.snapshot(0.5, 0.2).values["objects"].split(",")
        assert p.call(p.change_state, ChangeState.Request(transition=deactivate)).success
        try:
            values = node.health.snapshot(0.5, 0.2).values
            if keep:
                assert "1" in values["objects"].split(",") and values["bank_frames"] != ""
            else:
                assert node._tracker is None
                # the released model's device too: a configure on another device that fails
                # must not be reported under it (hardware_id falls back to the parameter)
                assert (values["objects"], values["bank_frames"], values["bank_bytes"],
                        values["auto_prompted_objects"], values["device"]) == ("", "", "", "", ""), values
                assert wait_for(lambda: (_diagnostics(p).get("state"), _diagnostics(p).get("objects"))
                                == ("inactive", ""), 10.0), _diagnostics(p)
        finally:
            assert p.call(p.change_state, ChangeState.Request(transition=activate)).success
    assert node.set_parameters([Parameter("keep_model_when_inactive", value=False)])[0].successful


def test_deactivate_unregisters_the_tf_listener(h, monkeypatch):
    """Each activate made a TransformListener; deactivate only dropped the reference, and its
    /tf and /tf_static subscriptions stayed on the node (2, 4, 6 ... after each cycle)."""
    import sys
    import types

    made = []

    class Listener:
        def __init__(self, buffer, node):
            self.subs = [node.create_subscription(Image, "/tf_fake", lambda m: None, 1)]
            self.node = node
            made.append(self)

        def unregister(self):
            for sub in self.subs:
                self.node.destroy_subscription(sub)
            self.subs = []

    fake = types.ModuleType("tf2_ros")
    fake.Buffer, fake.TransformListener = (lambda: object()), Listener
    monkeypatch.setitem(sys.modules, "tf2_ros", fake)
    p, node = h.probe, h.node
    for _ in range(3):
        _reactivate(p, node)
    assert len(made) == 3 and all(not m.subs for m in made[:-1]) and made[-1].subs
    monkeypatch.delitem(sys.modules, "tf2_ros")
    _reactivate(p, node)  # back to no TF, as the other tests run
    assert not made[-1].subs and node._tf_listener is None
    assert wait_for(lambda: image_reader_matched(node, NS), 20.0)


def test_each_cause_of_bad_input_is_logged(h, monkeypatch):
    """One throttled log line served every cause: a second cause within 1 s went unlogged."""
    node = h.node
    logged = []

    class Log:
        def __getattr__(self, level):
            return lambda message, **kw: logged.append(message) if level in ("warning", "error") else None

    monkeypatch.setattr(node, "get_logger", lambda: Log())
    node._logged_causes.clear()
    before = node.health.counts()["bad_inputs"]
    messages = ["click rejected: point (nan, 1) is not finite",
                "text_prompt rejected: text prompt has 400 characters; at most 300",
                "image rejected (raw, frame_id 'cam'): unsupported encoding 32FC1",
                # another cause of the same source (it shared the source's slot, unlogged)
                "click rejected: point (500.0, 3.0) is outside the 960x540 image",
                "click rejected: point (inf, 1) is not finite",  # same causes within 1 s
                "image rejected (raw, frame_id 'cam2'): unsupported encoding 32FC1",
                "click rejected: point (-4.5, 3.0) is outside the 960x540 image"]
    for m in messages:
        node._bad_input(m, prompt=m.startswith(("click", "text")))
    assert logged == messages[:4]
    assert node.health.counts()["bad_inputs"] - before == 2  # (prompt errors count apart)


def test_max_text_length_applies_at_configure_everywhere(h):
    """The node checked texts with the live parameter, the tracker with its configured value."""
    node = h.node
    configured = node._tracker.cfg.max_text_length
    assert all(r.successful for r in node.set_parameters([Parameter("max_text_length", value=10)]))
    try:
        assert node._max_text() == configured != 10
    finally:
        node.set_parameters([Parameter("max_text_length", value=configured)])


def test_lifecycle_cycles_leave_no_dead_entities_in_the_callback_groups(h):
    """rclpy's callback groups keep a weak reference per entity created in them and never drop
    it: every cycle added one per subscription, service and event handler (37k after 1,000)."""
    p, node = h.probe, h.node
    groups = (node._image_group, node._prompt_group, node._service_group, node._diag_group,
              node._auto_group,
              node.default_callback_group)

    def refs():
        return sum(len(g.entities) for g in groups)

    _reactivate(p, node)
    before = refs()
    for _ in range(5):
        _reactivate(p, node)
    assert refs() == before
    assert wait_for(lambda: image_reader_matched(node, NS), 20.0)


def test_keep_ratio_set_while_the_command_queue_is_full_still_applies(h, monkeypatch):
    """keep_ratio went to the worker as a command: with 16 commands waiting it was refused
    ("busy") while set_parameters said yes, and the tracker kept the old ratio for good."""
    from fastsam2_ros.ros.frame_worker import MAX_QUEUED_COMMANDS

    p, node = h.probe, h.node
    p.wait_outputs(p.publish_frame(), OUTPUTS)
    tracker, gate = node._tracker, threading.Event()
    add_prompt = tracker.add_prompt

    def held(*a, **k):  # a prompt that takes its time (a text prompt's CLIP pass)
        gate.wait(20.0)
        return add_prompt(*a, **k)

    monkeypatch.setattr(tracker, "add_prompt", held)
    try:
        for i in range(MAX_QUEUED_COMMANDS + 2):
            p.prompt.publish(prompt_msg(obj_id=0, new=True, points=[(10 + i, 10)]))
            time.sleep(0.03)  # (within the topic's depth of 10)
        assert wait_for(lambda: len(node._worker._commands) >= MAX_QUEUED_COMMANDS, 10.0)
        assert node.set_parameters([Parameter("keep_ratio", value=0.9)])[0].successful
    finally:
        gate.set()
    assert wait_for(lambda: not node._worker._commands, 30.0)
    stats = p.wait_outputs(p.publish_frame(), OUTPUTS)["stats"]
    assert stats.keep_ratio == pytest.approx(0.9) and tracker.keep_ratio == pytest.approx(0.9)
    assert node.set_parameters([Parameter("keep_ratio", value=0.3)])[0].successful
    assert p.call(p.reset, Trigger.Request()).success


def test_a_lower_max_rate_applies_to_the_frame_already_waiting(h):
    """The next frame's time was fixed with the rate in force when the previous frame started:
    after max_rate_hz 0.01 -> 0 no frame was tracked for 100 s."""
    p, node = h.probe, h.node
    p.wait_outputs(p.publish_frame(), OUTPUTS)
    assert node.set_parameters([Parameter("max_rate_hz", value=0.01)])[0].successful
    try:  # one frame per 100 s: the next one waits
        key = p.publish_frame(frame_rgb(shift=1))
        time.sleep(0.5)
        assert not p.by_stamp("mask", key)
    finally:
        assert node.set_parameters([Parameter("max_rate_hz", value=0.0)])[0].successful
    assert wait_for(lambda: p.by_stamp("mask", key), 10.0)


def test_enable_answers_while_add_object_waits_behind_an_automatic_prompt(h, monkeypatch):
    """Every prompt service and topic shared one one-at-a-time callback group: an add_object
    waiting for the worker (behind a long automatic prompt) held up enable, clicks and prompts."""
    p, node = h.probe, h.node
    p.wait_outputs(p.publish_frame(), OUTPUTS)
    tracker, entered, gate = node._tracker, threading.Event(), threading.Event()

    def slow_auto_prompt(obj_id, image=None):
        entered.set()
        gate.wait(30.0)
        from fastsam2_ros.core.errors import InputError
        raise InputError("no object-like region on this frame")

    monkeypatch.setattr(tracker, "auto_prompt", slow_auto_prompt, raising=False)
    try:
        assert p.auto_prompt.wait_for_service(timeout_sec=10.0)
        f_auto = p.auto_prompt.call_async(Trigger.Request())
        assert entered.wait(10.0)
        f_add = p.add.call_async(add_request(obj_id=7, points=[(30, 30)]))  # waits behind it
        time.sleep(0.5)
        f_enable = p.enable.call_async(SetBool.Request(data=True))
        assert wait_for(f_enable.done, 10.0) and f_enable.result().success
        assert not f_auto.done() and not f_add.done()  # the worker was still busy
    finally:
        gate.set()
    assert wait_for(f_add.done, 20.0) and f_add.result().success
    assert p.call(p.reset, Trigger.Request()).success


def test_an_invalid_device_is_refused_when_set(h):
    p, node = h.probe, h.node
    before = node.get_parameter("keep_ratio").value
    result = node.set_parameters_atomically([Parameter("keep_ratio", value=0.8),
                                             Parameter("device", value="gpu")])
    assert not result.successful and "auto | cpu | cuda" in result.reason
    assert node.get_parameter("keep_ratio").value == before
    assert node.get_parameter("device").value != "gpu"


def test_services_answer_while_the_node_is_not_configured(h):
    """The services existed only between configure and cleanup: a call while unconfigured (e.g.
    after a configure that failed on a missing checkpoint) waited for ever."""
    p, node = h.probe, h.node
    cleanup = Transition(id=Transition.TRANSITION_CLEANUP)
    configure = Transition(id=Transition.TRANSITION_CONFIGURE)
    activate = Transition(id=Transition.TRANSITION_ACTIVATE)
    deactivate = Transition(id=Transition.TRANSITION_DEACTIVATE)
    for transition in (deactivate, cleanup):
        assert p.call(p.change_state, ChangeState.Request(transition=transition)).success
    try:
        for client, request in ((p.auto_prompt, Trigger.Request()), (p.reset, Trigger.Request()),
                                (p.add, add_request(obj_id=1, points=[(30, 30)])),
                                (p.remove, RemoveObject.Request(object_id=1))):
            reply = p.call(client, request)
            assert not reply.success and reply.message.endswith(
                "(lifecycle state unconfigured); configure and activate it"), reply.message
    finally:
        for transition in (configure, activate):
            assert p.call(p.change_state, ChangeState.Request(transition=transition)).success
    assert wait_for(lambda: image_reader_matched(node, NS), 20.0)
    p.wait_outputs(p.publish_frame(), OUTPUTS)


def test_a_clicked_point_on_a_rectified_stream_is_projected_with_p(h, monkeypatch):
    """camera_info's K is the raw (distorted) image's matrix, P the rectified image's, which RViz
    and image_geometry project with: the node projected with K, here 11 px off."""
    from geometry_msgs.msg import PointStamped
    from sensor_msgs.msg import CameraInfo

    p, node = h.probe, h.node
    p.wait_outputs(p.publish_frame(), OUTPUTS)
    tracker, clicks = node._tracker, []
    add_prompt = tracker.add_prompt

    def recording(obj_id, points=None, **kw):
        clicks.append(points)
        return add_prompt(obj_id, points=points, **kw)

    monkeypatch.setattr(tracker, "add_prompt", recording)
    info = CameraInfo()  # a calibrated camera with barrel distortion
    info.header.frame_id = "cam_optical"
    info.width, info.height = 80, 60
    info.distortion_model, info.d = "plumb_bob", [-0.3, 0.1, 0.0, 0.0, 0.0]
    info.k = [100.0, 0.0, 40.0, 0.0, 100.0, 30.0, 0.0, 0.0, 1.0]
    info.p = [70.0, 0.0, 35.0, 0.0, 0.0, 70.0, 28.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    node._on_camera_info(info)
    point = PointStamped()
    point.header.frame_id = "cam_optical"
    point.point.x, point.point.y, point.point.z = 0.2, 0.1, 1.0
    try:
        node._on_clicked_point(point)
        assert wait_for(lambda: clicks, 20.0), "the click was not applied"
    finally:
        assert p.call(p.reset, Trigger.Request()).success
    np.testing.assert_allclose(clicks, [[[49.0, 35.0]]])  # P's pixel; K's is (60, 40)


def _change_state(p, transition_id):
    return p.call(p.change_state, ChangeState.Request(transition=Transition(id=transition_id))).success


@pytest.mark.parametrize("keep", [True, False])
def test_a_prompt_waiting_for_the_first_frame_is_never_lost_by_deactivate(keep):
    """A topic prompt queued for the first frame vanished at deactivate: no object, no log line,
    no count. With keep_model_when_inactive it waits for the next activation's first frame;
    otherwise it is reported as a dropped prompt (prompt_errors, last_error)."""
    def factory(cfg):
        return SceneTracker(cfg)

    with running_node(DOMAIN_ID, f"/pending{int(keep)}", dict(keep_model_when_inactive=keep),
                      tracker_factory=factory) as (node, p, _):
        p.prompt.publish(prompt_msg(1, True, points=[(30, 30)]))
        assert wait_for(lambda: node._worker is not None and len(node._worker._pending) == 1, 10.0)
        assert _change_state(p, Transition.TRANSITION_DEACTIVATE)
        counts = node.health.counts()
        if keep:
            assert counts["prompt_errors"] == 0, node.health.last_error
            assert _change_state(p, Transition.TRANSITION_ACTIVATE)
            p.publish_until_answered("stats")
            assert wait_for(lambda: node._tracked_ids() == [1], 10.0), node._tracked_ids()
        else:
            assert counts["prompt_errors"] == 1, counts
            assert "prompt dropped: it waited for a first frame" in node.health.last_error
            assert _change_state(p, Transition.TRANSITION_ACTIVATE)


def test_a_kept_model_keeps_its_objects_on_diagnostics_after_activate(h):
    """keep_model_when_inactive: activate reset the counters and with them the last stats and the
    automatic starts, so /diagnostics reported no objects while the tracker still held them."""
    p, node = h.probe, h.node
    assert node.set_parameters([Parameter("keep_model_when_inactive", value=True)])[0].successful
    try:
        p.wait_outputs(p.publish_frame(), OUTPUTS)
        if 1 not in node._tracked_ids():
            assert p.call(p.add, add_request(obj_id=1, points=[(30, 30)])).success
        p.wait_outputs(p.publish_frame(), OUTPUTS)
        assert _change_state(p, Transition.TRANSITION_DEACTIVATE)
        assert _change_state(p, Transition.TRANSITION_ACTIVATE)
        assert 1 in node._tracked_ids()
        values = node.health.snapshot(0.5, 0.2).values
        assert "1" in values["objects"].split(",") and values["bank_frames"] != "", values
    finally:
        assert node.set_parameters([Parameter("keep_model_when_inactive", value=False)])[0].successful


def test_no_frame_offered_before_enable_false_answers_is_tracked_after_it(h, monkeypatch):
    """The image callback checked the node's enabled flag, then offered the frame with no lock
    shared with enable: a callback preempted in between (held here until enable has answered)
    left a frame that was tracked and published after 'processing disabled'."""
    from fastsam2_ros.ros import frame_worker

    p, node = h.probe, h.node
    p.wait_outputs(p.publish_frame(), OUTPUTS)
    offer, entered, answered, offered = frame_worker.FrameWorker.offer_frame, *(
        threading.Event() for _ in range(3))

    def preempted(self, kind, msg):
        entered.set()
        answered.wait(10.0)
        offer(self, kind, msg)
        offered.set()

    monkeypatch.setattr(frame_worker.FrameWorker, "offer_frame", preempted)
    received = node.health.counts()["received"]
    try:
        p.publish_frame(frame_rgb(shift=3))
        assert entered.wait(10.0)
        assert p.call(p.enable, SetBool.Request(data=False)).success
        answered.set()
        assert offered.wait(10.0)
        assert node.health.counts()["received"] == received and node._worker._slot is None
    finally:
        answered.set()
        monkeypatch.undo()
        assert p.call(p.enable, SetBool.Request(data=True)).success


def test_rclpy_shutdown_during_inference_is_no_inference_failure(monkeypatch):
    """An in-process owner shut the context down while a frame was tracked: its publication
    failed on the dead context (RCLError) and was logged with a traceback as 'inference failed',
    counted as a worker error (ERROR on /diagnostics). Now the worker halts, and that failed
    publication is no error."""
    from std_msgs.msg import Header

    from fastsam2_ros.ros import tracker_node

    entered, gate, published = threading.Event(), threading.Event(), threading.Event()
    raised = []

    class GatedTracker(SceneTracker):
        def track(self, rgb):
            if self.frame_index >= 0:  # the second frame waits inside the call
                entered.set()
                gate.wait(10.0)
            return super().track(rgb)

    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=DOMAIN_ID)
    node = tracker_node.TrackerNode(context=ctx, namespace="/ctxdown", tracker_factory=GatedTracker)
    try:
        assert node.autostart(), node.health.fatal
        publish = node._outputs.publish

        def recording(frame):
            try:
                publish(frame)
            except Exception as exc:
                raised.append(exc)
                raise
            finally:
                published.set()

        monkeypatch.setattr(node._outputs, "publish", recording)
        worker = node._worker
        for shift in (0, 1):
            worker.offer_frame("raw", numpy_to_image(frame_rgb(shift=shift), "rgb8",
                                                     Header(frame_id="cam")))
            if shift == 0:
                assert published.wait(10.0) and not raised
                published.clear()
        assert entered.wait(10.0)
        rclpy.shutdown(context=ctx)
        halted = worker._stop.is_set()
        gate.set()
        assert published.wait(10.0) and raised, "the frame was not published on the dead context"
        node.stop_processing(5.0)  # (the publisher thread has reported, or not, by now)
        counts = node.health.counts()
    finally:
        gate.set()
        node.destroy_node()
        if ctx.ok():
            rclpy.shutdown(context=ctx)
    assert counts["worker_errors"] == 0, node.health.last_worker_error
    assert halted, "the worker still took frames on a dead context"

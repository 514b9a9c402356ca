"""Pure helpers of the ROS adapter, without a node: prompt messages -> tracker prompts, camera
projection of RViz clicks, the overlay, and the diagnostics levels."""

import math

import numpy as np
import pytest

from fastsam2_ros.core.errors import InputError
from fastsam2_ros.ros import diagnostics, overlay, prompting

msgs = pytest.importorskip("fastsam2_msgs.msg", reason="fastsam2_msgs not built (scripts/setup_env.sh)")
from geometry_msgs.msg import Point  # noqa: E402

from fastsam2_ros.image_messages import numpy_to_image  # noqa: E402


def prompt(**kw):
    m = msgs.Prompt()
    m.object_id = kw.pop("object_id", 1)
    m.new_object = kw.pop("new_object", True)
    pts = kw.pop("points", [])
    m.points = [Point(x=float(x), y=float(y)) for x, y in pts]
    m.labels = kw.pop("labels", [1] * len(pts))
    for k, v in kw.items():
        setattr(m, k, v)
    return m


def test_prompt_msg_to_request():
    req = prompting.from_prompt_msg(prompt(points=[(3, 4), (5, 6)], labels=[1, 0], text=" mug ",
                                           has_box=True, box=[1.0, 2.0, 8.0, 9.0]), 300)
    assert req.obj_id == 1 and req.new_object and req.text == "mug"
    kw = req.tracker_kwargs((20, 30))
    assert kw["points"] == [[3.0, 4.0], [5.0, 6.0]] and kw["labels"] == [1, 0]
    assert kw["box"] == [1.0, 2.0, 8.0, 9.0] and kw["text"] == "mug" and "mask" not in kw


def test_prompt_msg_with_mask():
    from fastsam2_ros.image_messages import numpy_to_image

    m = np.zeros((4, 5), np.uint8)
    m[1:3, 1:4] = 255
    req = prompting.from_prompt_msg(prompt(mask=numpy_to_image(m, "mono8")), 300)
    np.testing.assert_array_equal(req.tracker_kwargs((4, 5))["mask"], m > 0)
    with pytest.raises(InputError, match="image is"):
        req.tracker_kwargs((8, 8))


@pytest.mark.parametrize("kw,match", [
    (dict(points=[(math.nan, 1)]), "NaN"),
    (dict(points=[(1, math.inf)]), "NaN"),
    (dict(points=[(1, 1)], labels=[1, 0]), "labels"),
    (dict(points=[(1, 1)], labels=[2]), "labels must be"),
    (dict(has_box=True, box=[0.0, math.nan, 3.0, 3.0]), "box"),
    (dict(), "empty prompt"),
    (dict(text="x" * 10000), "at most 300"),
    (dict(text="   "), "empty"),
    (dict(object_id=70000, points=[(1, 1)]), "out of range"),
    (dict(object_id=-1, points=[(1, 1)]), "out of range"),
    (dict(object_id=0, new_object=False, points=[(1, 1)]), "out of range"),
    (dict(points=[(1, 1)] * 65), "too many"),
    # refused on arrival (it used to wait for the worker, or the first image, and fail there)
    (dict(points=[(1, 1)], mask=numpy_to_image(np.ones((8, 8), np.uint8), "mono8")),
     "mask prompt cannot be combined"),
    (dict(has_box=True, box=[0.0, 0.0, 3.0, 3.0], mask=numpy_to_image(np.ones((8, 8), np.uint8), "mono8")),
     "mask prompt cannot be combined"),
])
def test_bad_prompt_msgs(kw, match):
    with pytest.raises(InputError, match=match):
        prompting.from_prompt_msg(prompt(**kw), 300)


def test_click_label_from_z():
    assert prompting.click_request(3, 4, 0.0, 1, True, "click").labels == [1]
    assert prompting.click_request(3, 4, -1.0, 1, True, "click").labels == [0]
    with pytest.raises(InputError):
        prompting.click_request(math.nan, 4, 0.0, 1, True, "click")


def test_projection_and_transform():
    k = [500.0, 0.0, 320.0, 0.0, 400.0, 240.0, 0.0, 0.0, 1.0]
    assert prompting.project_to_pixel(k, (0.0, 0.0, 2.0)) == (320.0, 240.0)
    u, v = prompting.project_to_pixel(k, (0.2, -0.1, 2.0))
    assert (u, v) == pytest.approx((370.0, 220.0))
    with pytest.raises(prompting.ClickNotUsable, match="behind"):  # a warning, not a prompt error
        prompting.project_to_pixel(k, (0.0, 0.0, -1.0))
    with pytest.raises(InputError, match="intrinsic"):
        prompting.project_to_pixel([0.0] * 9, (0.0, 0.0, 1.0))
    # K is at full resolution: a 2x2-binned ROI at (100, 40) sees the centre at ((320-100)/2, (240-40)/2)
    assert prompting.project_to_pixel(k, (0.0, 0.0, 2.0), (2, 2), (100, 40)) == (110.0, 100.0)
    assert prompting.project_to_pixel(k, (0.0, 0.0, 2.0), (0, 0)) == (320.0, 240.0)  # 0 means 1
    # the images a camera_info describes: its ROI (else the sensor) over the binning
    assert prompting.camera_info_image_size(640, 480) == (640, 480)
    assert prompting.camera_info_image_size(640, 480, (2, 2), (300, 200)) == (150, 100)
    assert prompting.camera_info_image_size(640, 480, (0, 2)) == (640, 240)
    assert prompting.camera_info_image_size(0, 0) is None  # no size given: nothing to compare
    req = prompting.click_request(10.0, 10.0, 1.0, 1, True, "/clicked_point")
    req.image_size = (320, 240)
    assert req.tracker_kwargs((240, 320))["points"] == [[10.0, 10.0]]
    with pytest.raises(InputError, match="projected for 320x240 images.*current image is 640x480"):
        req.tracker_kwargs((480, 640))
    # 90 degrees about z: x -> y
    s = math.sqrt(0.5)
    p = prompting.transform_point((1.0, 0.0, 0.0), (0.0, 0.0, s, s), (1.0, 0.0, 0.0))
    assert p == pytest.approx((1.0, 1.0, 0.0))


def test_a_click_is_projected_with_p_when_camera_info_has_one():
    """RViz and image_geometry project with P, the rectified image's matrix; K (the raw image's)
    put a click on a rectified stream 11 px off on an 80x60 image."""
    k = [100.0, 0.0, 40.0, 0.0, 100.0, 30.0, 0.0, 0.0, 1.0]
    p = [70.0, 0.0, 35.0, 0.0, 0.0, 70.0, 28.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    assert prompting.project_to_pixel(k, (0.2, 0.1, 1.0), p=p) == pytest.approx((49.0, 35.0))
    # a stereo pair's second camera: Tx = -fx * baseline (0.1 m), Ty = 3, divided by z like the rest
    stereo = [70.0, 0.0, 35.0, -7.0, 0.0, 70.0, 28.0, 3.0, 0.0, 0.0, 1.0, 0.0]
    assert prompting.project_to_pixel(k, (0.4, 0.2, 2.0), p=stereo) == pytest.approx((45.5, 36.5))
    # P is at full resolution too: the ROI offset, then the binning, as for K
    assert prompting.project_to_pixel(k, (0.4, 0.2, 2.0), (2, 2), (10, 4), p=stereo) == \
        pytest.approx((17.75, 16.25))
    # an uncalibrated driver leaves P all zero: K then
    assert prompting.project_to_pixel(k, (0.2, 0.1, 1.0), p=[0.0] * 12) == pytest.approx((60.0, 40.0))
    with pytest.raises(InputError, match="projection matrix P"):
        prompting.project_to_pixel(k, (0.2, 0.1, 1.0), p=[0.0] * 11 + [1.0])


def test_overlay_colors_masks_and_tokens():
    rgb = np.full((16, 16, 3), 100, np.uint8)
    m = np.zeros((16, 16), bool)
    m[4:12, 4:12] = True
    out = overlay.draw_overlay(rgb, {1: m}, alpha=0.5)
    assert out.shape == rgb.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out[0, 0], [100, 100, 100])
    np.testing.assert_array_equal(out[4, 4], overlay.color_of(1))  # boundary in full colour
    assert not np.array_equal(out[8, 8], [100, 100, 100])
    grid = np.zeros((4, 4), bool)
    grid[0, 0] = True
    out2 = overlay.draw_overlay(rgb, {}, kept_tokens={1: grid})
    assert out2[0, 0, 0] == 100 and out2[15, 15, 0] < 100


def test_health_levels():
    h = diagnostics.NodeHealth()
    h.state = "active"
    assert h.snapshot().level == diagnostics.OK
    h.on_processed(10.0, 12.0, msgs.TrackerStats(object_ids=[1, 2], occluded_frames=[0, 3],
                                                 tokens_total=64, bank_frames=5))
    snap = h.snapshot()
    assert snap.level == diagnostics.OK and snap.values["frames_processed"] == "1"
    assert (snap.values["objects"], snap.values["occluded_objects"]) == ("1,2", "2")
    assert (snap.values["tokens_total"], snap.values["bank_frames"]) == ("64", "5")
    h.on_received(replaced_unprocessed=True, rate_limited=True)  # skipped to hold max_rate_hz
    snap = h.snapshot(warn_hold=0.0)
    assert snap.level == diagnostics.OK and snap.values["frames_skipped_for_rate"] == "1"
    assert snap.values["frames_dropped"] == "1"
    h.on_bad_input("image rejected: bad step")
    snap = h.snapshot(warn_hold=5.0)
    assert snap.level == diagnostics.WARN and "bad step" in snap.message
    assert h.snapshot(warn_hold=0.0, period=0.0).level == diagnostics.OK
    # the hold is at least one diagnostics period: an error between two statuses is on the next
    assert h.snapshot(warn_hold=0.0, period=2.0).level == diagnostics.WARN
    h.last_error_time -= 10.0  # the bad input is old now
    h.on_received(replaced_unprocessed=True)
    snap = h.snapshot(warn_hold=0.0)
    assert snap.level == diagnostics.WARN and "dropped" in snap.message
    assert snap.values["frames_dropped"] == "2"
    h.fatal = "SAM 2 checkpoint not found"
    assert h.snapshot().level == diagnostics.ERROR
    st = diagnostics.to_status(h.snapshot(), "tracker", "cpu")
    assert st.level == bytes([diagnostics.ERROR]) and "checkpoint" in st.message
    assert {kv.key for kv in st.values} >= {"rate_hz", "latency_ms_mean", "tokens_kept_mean",
                                            "bank_frames", "gpu_memory_bytes", "frames_dropped"}


def test_msgs_package_xml_is_valid():
    from pathlib import Path

    catkin_pkg = pytest.importorskip("catkin_pkg.package")
    xml = Path(__file__).resolve().parents[2] / "fastsam2_msgs" / "package.xml"
    if not xml.is_file():
        pytest.skip("fastsam2_msgs not in this checkout")
    pkg = catkin_pkg.parse_package(str(xml))
    pkg.validate()  # raises InvalidPackage, e.g. for a maintainer email like a@b.c
    assert pkg.name == "fastsam2_msgs"
    assert "rosidl_interface_packages" in [g.name for g in pkg.member_of_groups]


def test_interfaces_have_the_contract_fields():
    from fastsam2_msgs.srv import AddObject, RemoveObject

    p = set(msgs.Prompt.get_fields_and_field_types())
    assert {"header", "object_id", "new_object", "text", "points", "labels", "has_box", "box", "mask"} <= p
    s = set(msgs.TrackerStats.get_fields_and_field_types())
    assert {"header", "encoder_ms", "router_ms", "memory_attention_ms", "decoder_ms", "memory_encoder_ms",
            "total_ms", "tokens_total", "tokens_kept", "keep_ratio", "bank_frames", "bank_tokens",
            "bank_bytes", "gpu_memory_bytes", "dropped_frames", "object_ids", "router_mode",
            "text_mode", "auto_prompted_ids"} <= s
    assert {"success", "message", "object_id", "object_ids"} <= set(AddObject.Response.get_fields_and_field_types())
    assert {"object_id"} <= set(RemoveObject.Request.get_fields_and_field_types())
    assert {"success", "message"} <= set(RemoveObject.Response.get_fields_and_field_types())


def test_stats_msg_carries_the_automatic_prompt_per_object():
    from fastsam2_ros.core.stats import FrameResult, FrameStats
    from fastsam2_ros.ros.messages import FrameContext, stats_to_msg
    from std_msgs.msg import Header

    mask = np.zeros((4, 5), bool)
    stats = FrameStats(stage_ms={"total": 900.0, "auto_proposals": 700.0, "auto_caption": 150.0,
                                 "auto_refinement": 20.0},
                       auto_phrases={2: "red mug", 3: ""}, auto_prompted=[2])
    result = FrameResult(frame_index=7, masks={3: mask, 1: mask, 2: mask},
                         scores={1: 1.0, 2: 1.0, 3: 1.0}, stats=stats)
    m = stats_to_msg(stats, result, FrameContext(Header(), 5, 4, auto_prompted=[2, 3]))
    assert list(m.object_ids) == [1, 2, 3]
    assert list(m.auto_started_ids) == [2, 3] and list(m.auto_phrases) == ["", "red mug", ""]
    assert (m.auto_proposals_ms, m.auto_caption_ms, m.auto_refinement_ms) == (700.0, 150.0, 20.0)
    assert m.total_ms == 900.0
    later = stats_to_msg(FrameStats(auto_phrases={2: "red mug"}), result, FrameContext(Header(), 5, 4))
    assert list(later.auto_phrases) == ["", "red mug", ""] and later.auto_proposals_ms == 0.0


def test_auto_prompt_summary_names_the_object_the_phrase_or_why_there_is_none():
    from fastsam2_ros.core.auto_prompt import AutoPromptResult
    from fastsam2_ros.ros.messages import auto_prompt_summary

    timings = {"proposals": 812.4, "caption": 301.0, "refinement": 12.6}
    plan = AutoPromptResult(obj_id=4, mask=np.ones((2, 2), bool), box=(0, 0, 1, 1), score=0.4321,
                            source="sam2", click=(10, 20), caption="a red mug on a table",
                            phrase="red mug", timings_ms=timings)
    assert auto_prompt_summary(plan) == (
        'object 4 started automatically with the phrase "red mug" (caption \'a red mug on a '
        "table'; sam2 region, score 0.432, click (10, 20); proposals 812 ms, caption 301 ms, "
        "refinement 13 ms)")
    free = AutoPromptResult(obj_id=1, mask=np.ones((2, 2), bool), box=(0, 0, 1, 1), score=0.5,
                            source="rpn", click=(1, 1), notes=["no caption model configured"],
                            timings_ms={"proposals": 5.0, "caption": 0.0, "refinement": 0.0})
    assert auto_prompt_summary(free).startswith(
        "object 1 started automatically without a phrase: no caption model configured (rpn region")


# ------------------------------------------------------------------------------ spinning
class _Logger:
    def __init__(self):
        self.lines = []

    def error(self, msg, **kw):
        self.lines.append(("error", msg))

    def fatal(self, msg, **kw):
        self.lines.append(("fatal", msg))


class _Executor:
    """spin_once raises for the listed calls (1-based), else counts; stops the loop at ``until``."""

    def __init__(self, raising, until, stop):
        self.raising, self.until, self.stop, self.calls = raising, until, stop, 0
        self.context = type("C", (), {"ok": staticmethod(lambda: True)})()

    def spin_once(self, timeout_sec=None):
        self.calls += 1
        if self.calls >= self.until:
            self.stop.set()
        if self.raising(self.calls):
            raise RuntimeError(f"callback {self.calls} failed")


def test_spinning_outlives_a_failing_callback_but_not_one_that_fails_every_time(monkeypatch):
    import threading

    from fastsam2_ros.ros import tracker_node

    monkeypatch.setattr(tracker_node.time, "sleep", lambda s: None)
    stop, log = threading.Event(), _Logger()
    ex = _Executor(lambda n: n in (3, 4), until=50, stop=stop)
    tracker_node.spin_until_stopped(ex, stop, log)
    assert ex.calls == 50 and [kind for kind, _ in log.lines] == ["error", "error"]
    stop, log = threading.Event(), _Logger()
    ex = _Executor(lambda n: True, until=10 ** 6, stop=stop)
    tracker_node.spin_until_stopped(ex, stop, log)
    assert ex.calls == tracker_node.SPIN_FAILURES_TO_GIVE_UP and not stop.is_set()
    assert log.lines[-1][0] == "fatal" and "in a row" in log.lines[-1][1]


@pytest.mark.parametrize("state,hint", [("unconfigured", "configure and activate it"),
                                        ("inactive", "activate it"),
                                        ("finalized", "it was shut down: start the node again")])
def test_a_refusal_while_not_active_says_what_gets_the_node_tracking(state, hint):
    """A finalized node has no transition left: "activate it first" sent users to a refused
    command (the unconfigured wording is checked on a real node in test_ros_node_behaviour)."""
    from fastsam2_ros.ros import tracker_node

    assert tracker_node.not_active_message(state) == (
        f"the tracker is not active (lifecycle state {state}); {hint}")


def test_an_inference_error_between_two_statuses_is_on_the_next_one():
    """warn_hold shorter than the diagnostics period: the error is still on the next status."""
    h = diagnostics.NodeHealth()
    h.state = "active"
    h.on_worker_error("CUDA out of memory")
    h.last_worker_error_time -= 1.2  # 1.2 s ago; the last status went out 2 s ago
    h.last_error_time = h.last_worker_error_time
    assert h.snapshot(warn_hold=1.0, period=2.0).level == diagnostics.ERROR
    assert h.snapshot(warn_hold=1.0, period=1.0).level == diagnostics.OK


def test_diagnostics_cut_free_text_but_list_every_object():
    h = diagnostics.NodeHealth()
    h.state = "active"
    ids = list(range(1, 201))
    h.on_processed(10.0, 12.0, msgs.TrackerStats(object_ids=ids, occluded_frames=[0] * 200))
    h.on_bad_input("x" * 5000)
    values = {kv.key: kv.value for kv in diagnostics.to_status(h.snapshot(), "tracker", "cpu").values}
    assert [int(i) for i in values["objects"].split(",")] == ids
    assert len(values["last_error"]) == diagnostics.MAX_TEXT_CHARS


def test_every_object_of_a_full_tracker_has_its_own_overlay_colour():
    """The palette has 16 colours; ids past it used to repeat them (objects 1 and 17 alike)."""
    colours = [tuple(int(c) for c in overlay.color_of(i)) for i in range(1, 256)]
    assert len(set(colours)) == len(colours)
    np.testing.assert_array_equal(overlay.color_of(3), overlay.PALETTE[2])
    assert overlay.color_of(70000).dtype == np.uint8


def test_health_rate_falls_and_warns_when_the_camera_stops(monkeypatch):
    """rate_hz was counted between the first and the last frame of the window, so a camera that
    stopped still showed its old rate (then 0 Hz) at OK, for ever."""
    clock = [1000.0]
    monkeypatch.setattr(diagnostics.time, "monotonic", lambda: clock[0])
    h = diagnostics.NodeHealth()
    h.state = "active"
    for _ in range(20):  # 2 s at 10 Hz
        h.on_received(False)
        h.on_processed(50.0, 60.0, msgs.TrackerStats(object_ids=[1], occluded_frames=[0]))
        clock[0] += 0.1
    snap = h.snapshot(warn_hold=5.0, period=1.0)
    assert snap.level == diagnostics.OK and 9.0 <= float(snap.values["rate_hz"]) <= 10.5
    clock[0] += 4.0  # the camera stopped 4 s ago
    snap = h.snapshot(warn_hold=5.0, period=1.0)
    assert float(snap.values["rate_hz"]) < 2.5 and snap.level == diagnostics.OK  # within the hold
    clock[0] += 2.0
    snap = h.snapshot(warn_hold=5.0, period=1.0)
    assert snap.level == diagnostics.WARN and snap.message.startswith("no images on")
    assert float(snap.values["rate_hz"]) < 0.5
    clock[0] += 60.0
    assert float(h.snapshot(warn_hold=5.0, period=1.0).values["rate_hz"]) < 0.05
    h.on_received(False)  # it is back
    assert h.snapshot(warn_hold=5.0, period=1.0).level == diagnostics.OK


@pytest.mark.parametrize("period_s", [6.0, 4.0, 2.0])
def test_health_rate_and_latency_of_a_node_slower_than_the_window(monkeypatch, period_s):
    """A node tracking one frame every 2-6 s (``max_rate_hz: 0.2`` on a 4 Hz camera here; or a
    large model on a CPU) read "at 0.0 Hz" on most statuses, and latency 0.0 when no frame fell in
    the 5 s window: the window kept no frame or one, and a lone interval was divided by up to
    5 s."""
    clock = [1000.0]
    monkeypatch.setattr(diagnostics.time, "monotonic", lambda: clock[0])
    h = diagnostics.NodeHealth()
    h.state = "active"
    stats = msgs.TrackerStats(object_ids=[1], occluded_frames=[0])
    rates, latencies, next_frame = [], [], clock[0]
    while clock[0] < 1060.0:
        h.on_received(True, rate_limited=True)  # the camera's frames, skipped for the rate
        if clock[0] >= next_frame:
            h.on_processed(1500.0, 1600.0, stats)
            next_frame += period_s
        if clock[0] >= 1030.0:  # steady state
            snap = h.snapshot(warn_hold=5.0, period=1.0)
            rates.append(float(snap.values["rate_hz"]))
            latencies.append(float(snap.values["latency_ms_mean"]))
            assert snap.level == diagnostics.OK and not snap.message.endswith("at 0.0 Hz")
        clock[0] += 0.25
    assert min(rates) >= 0.8 / period_s and max(rates) <= 1.2 / period_s, (min(rates), max(rates))
    assert set(latencies) == {1500.0}


def test_health_error_names_the_worker_error_after_a_later_bad_input():
    h = diagnostics.NodeHealth()
    h.state = "active"
    h.on_worker_error("OutOfMemoryError: CUDA out of memory")
    h.on_bad_input("click rejected: point (900, 20) outside the 640x480 image", prompt=True)
    snap = h.snapshot(warn_hold=5.0, period=1.0)
    assert snap.level == diagnostics.ERROR and "out of memory" in snap.message
    assert "click rejected" in snap.values["last_error"]  # the key still has the latest one


def test_health_words_an_incompatible_qos_event_as_such_not_as_a_bad_input():
    h = diagnostics.NodeHealth()
    h.state = "active"
    h.on_incompatible_qos("a publisher on /cam/image offers incompatible QoS (policy DURABILITY)")
    snap = h.snapshot(warn_hold=5.0, period=1.0)
    assert snap.level == diagnostics.WARN and snap.values["bad_inputs"] == "0"
    assert snap.message.startswith("QoS mismatch: a publisher"), snap.message
    h.on_bad_input("image rejected: bad step")
    assert h.snapshot(warn_hold=5.0, period=1.0).message == "bad input: image rejected: bad step"


def test_the_qos_module_imports_with_humbles_rclpy_layout():
    """Humble's rclpy has rclpy.qos_event, not rclpy.event_handler (Iron+): the node died at
    import there. Simulated here by hiding the Iron+ module in a fresh interpreter."""
    import subprocess
    import sys

    code = """
import sys
import rclpy.node, rclpy.qos
import rclpy.event_handler as handler
sys.modules["rclpy.qos_event"] = handler
sys.modules["rclpy.event_handler"] = None   # import rclpy.event_handler now fails
from fastsam2_ros.ros import qos
print(qos.SubscriptionEventCallbacks.__name__)
"""
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and "SubscriptionEventCallbacks" in run.stdout, run.stderr


def test_a_detection_is_centred_where_the_object_centroid_is(monkeypatch):
    """Pixel i is at coordinate i (clicks, centroids); the detection centre was x + w/2, half a
    pixel off the centroid of the same symmetric object. vision_msgs is not a PyPI wheel: a
    stand-in with its fields is used where it is missing."""
    import sys
    import types
    from types import SimpleNamespace as NS

    from std_msgs.msg import Header
    from fastsam2_ros.core.stats import BitMasks, FrameResult, FrameStats
    from fastsam2_ros.ros.messages import FrameContext, detections_to_msg, tracked_objects_to_msg

    try:
        import vision_msgs.msg  # noqa: F401
    except ImportError:
        class Detection2D:
            def __init__(self):
                self.header, self.id, self.results = None, "", []
                self.bbox = NS(center=NS(position=NS(x=0.0, y=0.0), theta=0.0), size_x=0.0, size_y=0.0)

        stand_in = types.ModuleType("vision_msgs.msg")
        stand_in.Detection2D = Detection2D
        stand_in.Detection2DArray = lambda: NS(header=None, detections=[])
        stand_in.ObjectHypothesisWithPose = lambda: NS(hypothesis=NS(class_id="", score=0.0))
        package = types.ModuleType("vision_msgs")
        package.msg = stand_in
        monkeypatch.setitem(sys.modules, "vision_msgs", package)
        monkeypatch.setitem(sys.modules, "vision_msgs.msg", stand_in)
    square = np.zeros((20, 30), bool)
    square[9:12, 4:7] = True
    pixel = np.zeros((20, 30), bool)
    pixel[7, 5] = True
    result = FrameResult(frame_index=0, masks=BitMasks.pack({1: square, 2: pixel}),
                         scores={1: 3.0, 2: 3.0}, stats=FrameStats(), image_shape=(20, 30))
    objects = tracked_objects_to_msg(result, FrameContext(header=Header(), width=30, height=20))
    detections = detections_to_msg(objects).detections
    assert len(detections) == 2
    for obj, det in zip(objects.objects, detections):
        centre = (det.bbox.center.position.x, det.bbox.center.position.y)
        assert centre == (obj.centroid.x, obj.centroid.y), (obj.id, centre)
        assert (det.bbox.size_x, det.bbox.size_y) == (obj.bbox.width, obj.bbox.height)


def _listening_with_a_best_effort_publisher(monkeypatch):
    """An active node's health, its image subscription made now and heard by one best-effort
    publisher, on a clock the test moves (``clock[0]``)."""
    clock = [1000.0]
    monkeypatch.setattr(diagnostics.time, "monotonic", lambda: clock[0])
    h = diagnostics.NodeHealth()
    h.state = "active"
    h.on_listening()
    h.best_effort_publishers = 1
    return h, clock


def test_health_warns_when_publishers_are_there_but_no_image_arrives(monkeypatch):
    """A reliable 640x480 camera and the default best-effort subscription: DDS lost every frame
    over 512 KiB whole, and /diagnostics said OK "active, waiting for images" for ever."""
    h, clock = _listening_with_a_best_effort_publisher(monkeypatch)
    clock[0] += 1.5
    snap = h.snapshot(warn_hold=1.0, period=1.0)
    assert snap.level == diagnostics.OK and "waiting for images" in snap.message  # not yet
    clock[0] += 1.0
    snap = h.snapshot(warn_hold=1.0, period=1.0)
    assert snap.level == diagnostics.WARN and "though 1 publisher(s) offer it" in snap.message
    # (a start-up qos_overrides reliability would win over the parameter: the advice says so)
    assert "set image_reliability:=reliable, and no reliability in qos_overrides" in snap.message
    assert snap.values["best_effort_publishers"] == "1"
    h.best_effort_publishers = 0  # nobody publishes: waiting is all there is to say
    assert h.snapshot(warn_hold=1.0, period=1.0).level == diagnostics.OK
    h.best_effort_publishers = 1
    h.on_received(False)  # a frame came (a small one, or the profile is set)
    assert h.snapshot(warn_hold=1.0, period=1.0).level == diagnostics.OK
    h.on_listening()  # reactivated: silence counts from the new subscriptions
    clock[0] += 2.5
    assert h.snapshot(warn_hold=1.0, period=1.0).level == diagnostics.WARN


def test_health_says_a_camera_that_stopped_stopped_though_its_publisher_stays(monkeypatch):
    """Frames had come, then the publisher stayed but sent nothing (a paused bag, a triggered
    camera): /diagnostics blamed best effort losing large frames, of a camera whose frames had
    arrived, and the 'stopped' message could never show while a best-effort publisher was there."""
    h, clock = _listening_with_a_best_effort_publisher(monkeypatch)
    for _ in range(10):
        clock[0] += 0.1
        h.on_received(False)
        h.on_processed(50.0, 60.0, msgs.TrackerStats(object_ids=[1], occluded_frames=[0]))
    clock[0] += 6.0
    snap = h.snapshot(warn_hold=5.0, period=1.0)
    assert snap.level == diagnostics.WARN
    assert snap.message.startswith("no images on") and "the last masks are that old" in snap.message
    assert "1 publisher(s) still offer it" in snap.message and "fastdds" not in snap.message


def test_a_test_domain_base_past_fast_dds_last_domain_is_refused_by_name(monkeypatch):
    """A base of 230 put test_launch.py in domain 235, which Fast DDS refuses: pytest exited 1
    without a word. The base is checked where every module takes its domain."""
    from domains import MAX_DOMAIN_ID, MAX_OFFSET, domain_id

    monkeypatch.setenv("FASTSAM2_TEST_DOMAIN_BASE", str(MAX_DOMAIN_ID - MAX_OFFSET))
    assert domain_id(MAX_OFFSET) == MAX_DOMAIN_ID
    for bad in ("230", "-1", "sixty"):
        monkeypatch.setenv("FASTSAM2_TEST_DOMAIN_BASE", bad)
        with pytest.raises(ValueError, match="FASTSAM2_TEST_DOMAIN_BASE must be"):
            domain_id(1)


@pytest.mark.parametrize("frame_id", ["cam", "it's", 'say "hi"', "a'b\"c", "x'y\"z\\", "\\'"])
def test_bad_input_cause_blanks_any_frame_id_repr_writes(frame_id):
    """A frame_id with both quote characters is written with escapes by repr; it is still one
    value, so messages that differ only in it share one throttled log cause."""
    from fastsam2_ros.ros.tracker_node import bad_input_cause

    assert bad_input_cause(f"frame {frame_id!r} is 3x2, expected 640x480") == \
        "frame '…' is #x#, expected #x#"


def test_health_advice_on_unreachable_publishers_names_the_qos_override_too():
    """A start-up qos_overrides reliability wins over image_reliability: advice naming only the
    parameter changed nothing (review diff9)."""
    h = diagnostics.NodeHealth()
    h.state = "active"
    h.unreachable_publishers = 1
    snap = h.snapshot(warn_hold=1.0, period=1.0)
    assert snap.level == diagnostics.WARN
    assert "set image_reliability:=best_effort, and no reliability in qos_overrides" in snap.message

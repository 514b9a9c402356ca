"""The tracker lifecycle node end to end: real rclpy, real DDS on loopback, the real tracker core
(random weights, ``tiny`` at 128 px on CPU).

One node (in namespace ``/t``) and a probe node run on a MultiThreadedExecutor in a background
thread; the probe publishes images and prompts and records every output. The tests share the node
(loading the model once keeps the module well under a minute of inference), so each one makes the
state it needs itself (the helpers below): they pass alone and in any order.
"""

import json
import math
import os
import time

import numpy as np
import pytest

os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
from domains import domain_id  # noqa: E402
DOMAIN_ID = domain_id(2)

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("fastsam2_msgs.msg", reason="fastsam2_msgs not built (scripts/setup_env.sh)")
pytest.importorskip("sam2")

from geometry_msgs.msg import Point, PointStamped  # noqa: E402
from lifecycle_msgs.msg import Transition  # noqa: E402
from lifecycle_msgs.srv import ChangeState, GetState  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from ros_probe import (H, W, add_request, frame_rgb, image_reader_matched, prompt_msg,  # noqa: E402
                       running_node, wait_for)
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402
from std_msgs.msg import String  # noqa: E402
from std_srvs.srv import SetBool, Trigger  # noqa: E402

from fastsam2_msgs.srv import RemoveObject  # noqa: E402
from fastsam2_ros.image_messages import image_to_numpy  # noqa: E402

NS = "/t"
TINY_CLIP = "fs2rostest-tiny-vit"
TINY_CLIP_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 64, "head_width": 16, "layers": 2},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 4, "layers": 1},
}


@pytest.fixture(scope="module")
def h(tmp_path_factory):
    try:  # a tiny CLIP ViT keeps the text-only start cheap
        import open_clip

        d = tmp_path_factory.mktemp("clipcfg")
        (d / f"{TINY_CLIP}.json").write_text(json.dumps(TINY_CLIP_CFG))
        open_clip.add_model_config(d)
        has_clip = True
    except ImportError:
        has_clip = False

    params = dict(model_cfg="tiny", allow_random_weights=True, image_size=128, device="cpu",
                  mc_passes=0, keep_ratio=0.5, clip_model=TINY_CLIP, publish_overlay=True,
                  overlay_show_tokens=True, diagnostics_period=0.25,
                  diagnostics_warn_hold=1.0)
    with running_node(DOMAIN_ID, NS, params) as (node, probe, ctx):
        h = type("H", (), {})()
        h.node, h.probe, h.ctx, h.has_clip = node, probe, ctx, has_clip
        yield h


def check_images(out, key, frame_id="cam_optical"):
    mask, labels = out["mask"], out["labels"]
    for m in (mask, labels, out.get("overlay"), out["stats"]):
        if m is None:
            continue
        assert (m.header.stamp.sec, m.header.stamp.nanosec) == key
        assert m.header.frame_id == frame_id
    assert (mask.encoding, mask.height, mask.width, mask.step) == ("mono8", H, W, W)
    assert (labels.encoding, labels.height, labels.width, labels.step) == ("mono16", H, W, 2 * W)
    m = image_to_numpy(mask)
    lab = image_to_numpy(labels)
    assert set(np.unique(m).tolist()) <= {0, 255}
    np.testing.assert_array_equal(lab > 0, m == 255)
    if "overlay" in out:
        ov = out["overlay"]
        assert (ov.encoding, ov.height, ov.width, ov.step) == ("rgb8", H, W, 3 * W)
    return m, lab


def frame_and_object_1(h):
    """A processed frame, and object 1 tracked: the state the earlier tests leave, made here when a
    test runs without them (object 1 is started from the prompt topic, as the first test does).
    Returns the ids tracked then."""
    p, node = h.probe, h.node
    p.wait_outputs(p.publish_frame(), ("stats",))
    if 1 not in node._tracked_ids():
        p.prompt.publish(prompt_msg(1, True, points=[(30, 30)]))
        assert wait_for(lambda: 1 in node._tracked_ids(), 30.0), "object 1 did not start"
    return sorted(node._tracked_ids())


def only_object_1(h):
    """A processed frame and object 1 alone (a reset first): the next free id is 2 and no object
    was started automatically, whatever the tests before left tracked."""
    assert h.probe.call(h.probe.reset, Trigger.Request()).success
    assert frame_and_object_1(h) == [1]


def no_frame_yet(h):
    """Deactivate and activate over the services: an active node that has received no frame yet
    (a reset keeps the latest frame, so a prompt would apply to it instead of waiting for one)."""
    p, node = h.probe, h.node
    for t in (Transition.TRANSITION_DEACTIVATE, Transition.TRANSITION_ACTIVATE):
        assert p.call(p.change_state, ChangeState.Request(transition=Transition(id=t))).success
    # the subscriptions are new: both sides must know each other before a best-effort frame
    assert wait_for(lambda: p.image.get_subscription_count() > 0 and p.prompt.get_subscription_count() > 0
                    and image_reader_matched(node, NS), 20.0), "discovery after activate failed"


# ------------------------------------------------------------------------------------------ tests
def test_queued_prompt_then_padded_bgr_frame(h):
    p, node = h.probe, h.node
    no_frame_yet(h)  # the prompt must wait for the first frame
    p.prompt.publish(prompt_msg(1, True, points=[(30, 30)]))
    assert wait_for(lambda: len(node._worker._pending) == 1, 10.0), "prompt did not reach the node"
    key = p.publish_frame(encoding="bgr8", pad=5)  # row padding must be handled
    out = p.wait_outputs(key)
    _, lab = check_images(out, key)
    assert set(np.unique(lab).tolist()) <= {0, 1}
    st = out["stats"]
    assert list(st.object_ids) == [1] and list(st.auto_prompted_ids) == []
    assert (st.image_width, st.image_height) == (W, H)
    assert st.tokens_total == (128 // 16) ** 2 and len(st.tokens_kept) == 1
    assert st.keep_ratio == pytest.approx(0.5) and st.device == "cpu"
    assert st.total_ms > 0 and st.encoder_ms > 0 and st.node_latency_ms >= 0


def test_a_reset_reply_counts_the_prompts_it_dropped_that_waited_for_the_first_frame(h):
    p, node = h.probe, h.node
    no_frame_yet(h)
    p.prompt.publish(prompt_msg(1, True, points=[(30, 30)]))
    assert wait_for(lambda: len(node._worker._pending) == 1, 10.0), "prompt did not reach the node"
    reply = p.call(p.reset, Trigger.Request())
    assert reply.success and reply.message == ("all objects and memory cleared; 1 prompt(s) "
                                               "waiting for the first image dropped")
    key = p.publish_frame()
    assert list(p.wait_outputs(key)["stats"].object_ids) == []


def test_every_input_encoding(h):
    p = h.probe
    only_object_1(h)
    for enc in ("rgb8", "rgba8", "bgra8", "mono8", "mono16"):
        key = p.publish_frame(encoding=enc)
        out = p.wait_outputs(key)
        check_images(out, key)
        assert list(out["stats"].object_ids) == [1], enc


def test_stats_consistent_with_tracker(h):
    p, node = h.probe, h.node
    frame_and_object_1(h)  # an object, so there is a memory bank and a kept-token count
    keys = [p.publish_frame(frame_rgb(shift=s)) for s in (0,)]
    out = p.wait_outputs(keys[-1])
    key2 = p.publish_frame(frame_rgb(shift=2))
    out2 = p.wait_outputs(key2)
    st1, st2 = out["stats"], out2["stats"]
    assert st2.frame_index == st1.frame_index + 1
    tr = node._tracker  # no frame in flight: the stats describe the tracker's state
    bank = tr.memory_bank_size()
    assert st2.frame_index == tr.frame_index
    assert list(st2.object_ids) == sorted(tr.object_ids)
    assert (st2.bank_frames, st2.bank_tokens, st2.bank_bytes) == (bank["frames"], bank["tokens"], bank["bytes"])
    assert st2.bank_frames >= 2 and st2.bank_bytes > 0
    assert 0 < st2.tokens_kept[0] <= st2.tokens_total
    assert st2.router_mode == "training_free" and st2.processed_frames > st1.processed_frames
    assert st2.total_ms >= st2.encoder_ms


def test_text_only_prompt_starts_tracking(h):
    if not h.has_clip:
        pytest.skip("open_clip not installed: text prompts need it")
    p = h.probe
    only_object_1(h)  # a frame to apply the text on; the text's object is then 2
    n_before = len(p.got("stats"))
    p.text.publish(String(data="the red ball"))
    # publish_on_prompt: the current frame's outputs come again, now with the new object
    assert wait_for(lambda: any(2 in s.object_ids for s in p.got("stats")[n_before:])), "text prompt not applied"
    key = p.publish_frame()
    st = p.wait_outputs(key)["stats"]
    assert 2 in st.object_ids and list(st.auto_prompted_ids) == [2]
    assert st.text_mode == "clip_ridge"
    assert wait_for(lambda: any(kv.key == "auto_prompted_objects" and kv.value == "2"
                                for d in p.got("diag")[-3:] for s in d.status for kv in s.values), 10.0)
    assert h.probe.call(p.remove, RemoveObject.Request(object_id=2)).success


def test_services(h):
    p = h.probe
    before = frame_and_object_1(h)  # [1] after the earlier tests
    r = p.call(p.add, add_request(obj_id=0, box=(5, 5, 40, 40)))
    assert r.success, r.message
    new_id = r.object_id
    smallest_free = next(i for i in range(1, len(before) + 2) if i not in before)
    assert new_id == smallest_free and list(r.object_ids) == sorted(before + [new_id]) and not r.auto_prompted
    r = p.call(p.add, add_request(obj_id=new_id, new=False, points=[(10, 12)], labels=[0]))
    assert r.success and r.object_id == new_id
    r = p.call(p.add, add_request(obj_id=77, new=False, points=[(10, 10)]))
    assert not r.success and "not tracked" in r.message
    r = p.call(p.add, add_request(obj_id=1, new=True, points=[(10, 10)]))
    assert not r.success and "already tracked" in r.message
    r = p.call(p.add, add_request(obj_id=9, points=[(math.nan, 3)]))
    assert not r.success and "NaN" in r.message
    r = p.call(p.add, add_request(obj_id=9, points=[(500, 3)]))
    assert not r.success and "outside" in r.message
    r = p.call(p.remove, RemoveObject.Request(object_id=new_id))
    assert r.success and list(r.object_ids) == before
    r = p.call(p.remove, RemoveObject.Request(object_id=new_id))
    assert not r.success and "unknown" in r.message
    # enable switch
    assert p.call(p.enable, SetBool.Request(data=False)).success
    key = p.publish_frame()
    time.sleep(1.0)
    assert not p.by_stamp("mask", key), "disabled node published"
    assert p.call(p.enable, SetBool.Request(data=True)).success
    key = p.publish_frame()
    p.wait_outputs(key)


def test_clicks_from_rqt_and_rviz(h):
    p, node = h.probe, h.node
    p.wait_outputs(p.publish_frame(), ("stats",))  # a frame to click on (also when run alone)
    before = set(node._tracked_ids()) - {5, 6}
    node.set_parameters([Parameter("click_object_id", value=5)])
    p.click.publish(Point(x=50.0, y=20.0, z=0.0))
    assert wait_for(lambda: 5 in node._tracked_ids()), "click did not start object 5"
    errors = node.health.counts()["prompt_errors"]
    p.click.publish(Point(x=52.0, y=22.0, z=-1.0))  # negative click refines object 5
    # RViz: camera_info + a point in the camera frame -> pixel (40, 30) for object 6; K is at full
    # resolution, the images are a 2x2-binned ROI at offset (10, 10) of it (image_geometry's rule)
    info = CameraInfo()
    info.header.frame_id = "cam_optical"
    info.width, info.height = 2 * W + 10, 2 * H + 10
    info.k = [200.0, 0.0, 90.0, 0.0, 200.0, 70.0, 0.0, 0.0, 1.0]
    info.binning_x = info.binning_y = 2
    info.roi.x_offset = info.roi.y_offset = 10
    info.roi.width, info.roi.height = 2 * W, 2 * H
    assert wait_for(lambda: p.info.get_subscription_count() > 0, 10.0)
    p.info.publish(info)
    assert wait_for(lambda: node._camera_info is not None, 10.0)
    node.set_parameters([Parameter("click_new_object", value=True)])
    pt = PointStamped()
    pt.header.frame_id = "cam_optical"
    pt.point.x, pt.point.y, pt.point.z = 0.0, 0.0, 2.0
    p.clicked.publish(pt)
    assert wait_for(lambda: len(node._tracked_ids()) == len(before) + 2), \
        f"clicked_point not applied: {node._tracked_ids()}"
    assert node.health.counts()["prompt_errors"] == errors
    # another frame without TF: clear warning, nothing applied
    pt.header.frame_id = "map"
    p.clicked.publish(pt)
    assert wait_for(lambda: node.health.counts()["prompt_errors"] == errors + 1, 20.0)
    assert "TF" in node.health.last_error and "map" in node.health.last_error
    # a client's huge frame_id is quoted cut short, not echoed whole into the log and replies
    pt.header.frame_id = "m" * 100_000
    p.clicked.publish(pt)
    assert wait_for(lambda: node.health.counts()["prompt_errors"] == errors + 2, 20.0)
    assert "TF" in node.health.last_error and len(node.health.last_error) < 500
    # a point without a frame_id may be in any frame: not projected as if in the camera's
    pt.header.frame_id = ""
    p.clicked.publish(pt)
    assert wait_for(lambda: node.health.counts()["prompt_errors"] == errors + 3, 20.0)
    assert "the point has no frame_id" in node.health.last_error
    # camera_info of other images (unbinned: twice the size): refused, naming both sizes
    info.binning_x = info.binning_y = 1
    p.info.publish(info)
    assert wait_for(lambda: node._camera_info.binning_x == 1, 10.0)
    pt.header.frame_id = "cam_optical"
    p.clicked.publish(pt)
    assert wait_for(lambda: node.health.counts()["prompt_errors"] == errors + 4, 20.0)
    assert f"projected for {2 * W}x{2 * H} images" in node.health.last_error, node.health.last_error
    assert len(node._tracked_ids()) == len(before) + 2
    node.set_parameters([Parameter("click_new_object", value=False)])
    for obj in node._tracked_ids():
        if obj not in before:
            assert p.call(p.remove, RemoveObject.Request(object_id=obj)).success


def test_bad_inputs_are_survived(h):
    import array

    p, node = h.probe, h.node
    before = frame_and_object_1(h)  # prompts are checked against a frame and object 1
    c0 = node.health.counts()
    n_diag = len(p.got("diag"))
    bad = []
    for enc, hh, ww, step, n in (("rgb8", H, W, 3 * W, 10),       # data shorter than step*height
                                 ("rgb8", H, W, 3 * W - 1, 3 * W * H),  # step smaller than a row
                                 ("32FC1", H, W, 4 * W, 4 * W * H),      # no colour meaning
                                 ("rgb8", 0, 0, 0, 0)):                 # empty
        m = Image()
        m.header = p.next_header()
        m.height, m.width, m.encoding, m.step = hh, ww, enc, step
        m.data = array.array("B", bytes(n))
        bad.append(m)
    for i, m in enumerate(bad):
        p.image.publish(m)
        assert wait_for(lambda: node.health.counts()["bad_inputs"] >= c0["bad_inputs"] + i + 1, 20.0), m.encoding
    # bad prompts on every prompt path
    p.prompt.publish(prompt_msg(1, False, points=[(math.nan, 1.0)]))
    p.prompt.publish(prompt_msg(1, False, points=[(W + 100, 1.0)]))
    p.prompt.publish(prompt_msg(42, False, points=[(3, 3)]))
    p.prompt.publish(prompt_msg(1, False, points=[(3, 3)], labels=[1, 0]))
    p.text.publish(String(data="x" * 100000))
    p.click.publish(Point(x=float("inf"), y=1.0, z=0.0))
    assert wait_for(lambda: node.health.counts()["prompt_errors"] >= c0["prompt_errors"] + 6, 30.0), \
        node.health.counts()
    assert node._tracked_ids() == before
    assert wait_for(lambda: any(s.level == b"\x01" and "bad input" in s.message
                                for d in p.got("diag")[n_diag:] for s in d.status), 10.0)
    key = p.publish_frame()
    check_images(p.wait_outputs(key), key)


def test_unexpected_exception_in_inference_does_not_kill_worker(h):
    p, node = h.probe, h.node
    tracker = node._tracker
    real = tracker.track
    calls = []

    def boom(img):
        calls.append(1)
        tracker.track = real
        raise RuntimeError("simulated CUDA error")

    tracker.track = boom
    errors = node.health.counts()["worker_errors"]
    p.publish_frame()
    assert wait_for(lambda: node.health.counts()["worker_errors"] == errors + 1, 30.0)
    key = p.publish_frame()
    check_images(p.wait_outputs(key), key)


def _our_statuses(probe):
    return [s for d in probe.got("diag") for s in d.status if s.name.startswith("/t/fastsam2_tracker")]


def test_burst_drops_frames_instead_of_queueing(h):
    p, node = h.probe, h.node
    # an error of an earlier test outranks the drop warning for diagnostics_warn_hold: wait it out
    assert wait_for(lambda: _our_statuses(p) and _our_statuses(p)[-1].level == b"\x00", 15.0)
    c0 = node.health.counts()
    n_diag = len(p.got("diag"))
    keys = [p.publish_frame(frame_rgb(seed=i)) for i in range(8)]
    last = p.wait_outputs(keys[-1])["stats"]  # the newest frame is always processed
    c1 = node.health.counts()
    processed = c1["processed"] - c0["processed"]
    assert processed < 8, "every frame of the burst was processed: frames are queueing"
    assert c1["dropped"] > c0["dropped"]
    assert last.dropped_frames == c1["dropped"]
    received = c1["received"] - c0["received"]
    assert processed + (c1["dropped"] - c0["dropped"]) == received
    assert wait_for(lambda: any(s.level == b"\x01" and "dropped" in s.message
                                for d in p.got("diag")[n_diag:] for s in d.status), 10.0)


def test_diagnostics_published(h):
    p = h.probe
    p.wait_outputs(p.publish_frame(), ("stats",))  # a processed frame to report
    n_diag = len(p.got("diag"))  # statuses from after it (not the ones sent while configuring)
    assert wait_for(lambda: len(p.got("diag")) >= n_diag + 2, 10.0)
    ours = _our_statuses(p)
    assert ours
    keys = {kv.key for kv in ours[-1].values}
    assert {"rate_hz", "latency_ms_mean", "tokens_kept_mean", "bank_frames", "bank_bytes",
            "gpu_memory_bytes", "frames_dropped", "bad_inputs", "state"} <= keys
    vals = {kv.key: kv.value for kv in ours[-1].values}
    assert vals["state"] == "active" and int(vals["frames_processed"]) > 0


def test_keep_ratio_is_live(h):
    p, node = h.probe, h.node
    frame_and_object_1(h)  # an object, so the frame has a kept-token count
    assert node.set_parameters([Parameter("keep_ratio", value=1.0)])[0].successful
    st = p.wait_outputs(p.publish_frame())["stats"]
    assert st.keep_ratio == pytest.approx(1.0) and st.router_mode == "dense"
    assert st.tokens_kept[0] == st.tokens_total
    assert node.set_parameters([Parameter("keep_ratio", value=0.5)])[0].successful


def test_lifecycle_deactivate_activate_over_services(h):
    p, node = h.probe, h.node
    r = p.call(p.change_state, ChangeState.Request(transition=Transition(id=Transition.TRANSITION_DEACTIVATE)))
    assert r.success
    assert p.call(p.get_state, GetState.Request()).current_state.label == "inactive"
    assert node._tracker is None, "the model must be released on deactivate"
    key = p.publish_frame()
    assert wait_for(lambda: any(s.level == b"\x01" and "not processing" in s.message
                                for d in p.got("diag")[-4:] for s in d.status), 10.0)
    assert not p.by_stamp("mask", key)
    r = p.call(p.add, add_request(obj_id=0, points=[(3, 3)]))
    assert not r.success and "not active" in r.message
    r = p.call(p.change_state, ChangeState.Request(transition=Transition(id=Transition.TRANSITION_ACTIVATE)))
    assert r.success and node._tracker is not None
    assert wait_for(lambda: p.image.get_subscription_count() > 0, 10.0)
    r = p.call(p.add, add_request(obj_id=0, points=[(3, 3)]))
    assert not r.success and "no image received yet" in r.message
    key = p.publish_frame()
    out = p.wait_outputs(key)
    check_images(out, key)
    assert out["stats"].frame_index == 0 and list(out["stats"].object_ids) == []
    assert out["stats"].dropped_frames == 0  # counters restart on activate
    # reset, then a frame and a service prompt right after it: the prompt lands on that frame
    assert p.call(p.reset, Trigger.Request()).success
    key = p.publish_frame()
    assert wait_for(lambda: node.health.counts()["received"] >= 2, 10.0)
    r = p.call(p.add, add_request(obj_id=0, points=[(30, 30)]))
    assert r.success and r.object_id == 1, r.message
    assert wait_for(lambda: any(list(s.object_ids) == [1] for s in p.by_stamp("stats", key)))

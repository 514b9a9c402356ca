"""The node's automatic prompt (issue 9, phase B): the ``auto_prompt`` service, the
``auto_prompt_on_start`` parameter, the latched ``description`` topic and the automatic-prompt
fields of ``TrackerStats``. Real rclpy over Fast DDS on loopback, the real tracker core (random
``tiny`` SAM 2 at 64 px on CPU) and the real stages: region proposals from a torchvision Faster
R-CNN RPN with random weights (a random SAM 2's own mask generator scores every mask 0, so it
never proposes anything), a tiny random BLIP that always says "dog" (``tiny_models``), and the
real all-MiniLM-L6-v2 refinement. Only a caption model that *fails* or says nothing useful is
simulated, by replacing the loaded captioner's ``caption`` method (the core tests run the real
silent model). Tests run in file order and share one node, reconfigured through the lifecycle
services where the ``auto_*`` parameters (applied on configure) change."""

import os
import threading
import time

import pytest

os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
from domains import domain_id  # noqa: E402
DOMAIN_ID = domain_id(10)

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("fastsam2_msgs.msg", reason="fastsam2_msgs not built (scripts/setup_env.sh)")
pytest.importorskip("sam2")
pytest.importorskip("torchvision")

from lifecycle_msgs.msg import Transition  # noqa: E402
from lifecycle_msgs.srv import ChangeState, GetState  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from ros_probe import frame_rgb, image_reader_matched, running_node, wait_for  # noqa: E402
from std_msgs.msg import String  # noqa: E402
from std_srvs.srv import SetBool, Trigger  # noqa: E402
from tiny_models import make_tiny_blip, needs_minilm, save_random_rpn  # noqa: E402

from fastsam2_msgs.srv import RemoveObject  # noqa: E402

NS = "/a"
OUTPUTS = ("mask", "labels", "objects", "stats")
#: what a user subscribes to description with: reliable, transient local
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)


@pytest.fixture(scope="module")
def h(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("auto_node")
    rpn = save_random_rpn(tmp / "frcnn.pth")
    # phrase-free to begin with: no caption model (the default on a robot)
    params = dict(model_cfg="tiny", allow_random_weights=True, image_size=64, device="cpu",
                  mc_passes=0, keep_ratio=0.5, text_mode="none", max_objects=1,
                  auto_proposal_source="rpn", auto_rpn_weights=str(rpn), auto_min_objectness=0.0,
                  auto_prompt_on_start=True, diagnostics_period=0.25)
    with running_node(DOMAIN_ID, NS, params) as (node, probe, ctx):
        probe.create_subscription(String, f"{NS}/description", probe._rec("description"), LATCHED)
        h = type("H", (), {})()
        h.node, h.probe, h.ctx, h.tmp = node, probe, ctx, tmp
        yield h


def auto_prompt(p):
    return p.call(p.auto_prompt, Trigger.Request())


def late_description(p):
    """What a subscriber created now receives on description (the latched message)."""
    got = []
    sub = p.create_subscription(String, f"{NS}/description", lambda m: got.append(m.data), LATCHED)
    try:
        assert wait_for(lambda: got, 20.0), "a late subscriber got nothing on description"
        time.sleep(0.3)  # nothing else may come: depth 1, the latest only
        return got
    finally:
        p.destroy_subscription(sub)


def stats_after(p, n_before, cond, timeout=60.0):
    """The first stats message after the first ``n_before`` for which ``cond`` holds."""
    def found():
        return [s for s in p.got("stats")[n_before:] if cond(s)]

    assert wait_for(found, timeout), "no such stats message after the automatic prompt"
    return found()[0]


def reconfigure(p, node, **params):
    """deactivate -> cleanup -> parameters -> configure -> activate, over the lifecycle services;
    then wait until the recreated outputs are matched."""
    def transition(tid):
        r = p.call(p.change_state, ChangeState.Request(transition=Transition(id=tid)))
        assert r.success, tid

    transition(Transition.TRANSITION_DEACTIVATE)
    r = auto_prompt(p)  # the service stays until cleanup and says why it cannot work
    assert not r.success and "not active" in r.message and "inactive" in r.message
    transition(Transition.TRANSITION_CLEANUP)
    assert all(res.successful for res in node.set_parameters(
        [Parameter(k, value=v) for k, v in params.items()]))
    transition(Transition.TRANSITION_CONFIGURE)
    transition(Transition.TRANSITION_ACTIVATE)
    assert p.call(p.get_state, GetState.Request()).current_state.label == "active"
    assert wait_for(lambda: image_reader_matched(node, NS) and all(
        node._outputs._pubs[n].get_subscription_count() > 0 for n in OUTPUTS + ("description",)),
        20.0), "inputs or outputs not matched after reconfigure"


# ------------------------------------------------------------------------- phrase-free (default)
def test_service_before_any_image_fails_clearly(h):
    p, node = h.probe, h.node
    errors = node.health.counts()["prompt_errors"]
    r = auto_prompt(p)
    assert not r.success and "no image received yet" in r.message
    assert node._tracked_ids() == []
    assert node.health.counts()["prompt_errors"] == errors + 1
    assert "auto_prompt" in node.health.last_error


def test_auto_prompt_on_start_starts_an_object_on_the_first_frame(h):
    p = h.probe
    key = p.publish_frame()
    out = p.wait_outputs(key, OUTPUTS)
    st = out["stats"]
    assert list(st.object_ids) == [1] and list(st.auto_started_ids) == [1]
    assert list(st.auto_prompted_ids) == [1] and list(st.auto_phrases) == [""]  # no caption model
    assert st.auto_proposals_ms > 0 and st.auto_caption_ms == 0 and st.auto_refinement_ms == 0
    assert st.total_ms >= st.auto_proposals_ms  # the stages are part of the frame's total
    (obj,) = out["objects"].objects
    assert obj.id == 1 and obj.auto_prompted and obj.text == ""
    # the next frame is tracked, not auto-prompted again; the stats still name the object
    st2 = p.wait_outputs(p.publish_frame(frame_rgb(shift=2)), OUTPUTS)["stats"]
    assert list(st2.auto_started_ids) == [1] and list(st2.auto_phrases) == [""]
    assert st2.auto_proposals_ms == st2.auto_caption_ms == st2.auto_refinement_ms == 0
    assert len(p.by_stamp("stats", key)) == 1  # one fresh frame, no republication
    # a phrase-free start is announced with an empty description (never an older phrase)
    assert wait_for(lambda: [m.data for m in p.got("description")] == [""], 10.0)


def test_other_services_answer_while_an_auto_prompt_runs(h):
    """The auto_prompt reply waits in its own callback group: the other services still answer."""
    p, node = h.probe, h.node
    assert p.call(p.remove, RemoveObject.Request(object_id=1)).success
    proposer = node._tracker._auto_prompter.proposer()
    started, release = threading.Event(), threading.Event()
    real = proposer.propose

    def slow_propose(image):
        started.set()
        release.wait(30.0)
        return real(image)

    proposer.propose = slow_propose
    try:
        assert p.auto_prompt.wait_for_service(timeout_sec=10.0)
        fut = p.auto_prompt.call_async(Trigger.Request())
        assert started.wait(30.0), "the automatic prompt did not start"
        t0 = time.monotonic()
        assert p.call(p.enable, SetBool.Request(data=True), timeout=10.0).success
        assert p.call(p.get_state, GetState.Request(), timeout=10.0).current_state.label == "active"
        assert time.monotonic() - t0 < 10.0 and not fut.done()
        release.set()
        assert wait_for(fut.done, 60.0)
        assert fut.result().success, fut.result().message
    finally:
        release.set()
        del proposer.propose  # the class's method again


def test_service_reply_names_the_object_and_why_it_has_no_phrase(h):
    p, node = h.probe, h.node
    assert p.call(p.remove, RemoveObject.Request(object_id=1)).success
    n = len(p.got("stats"))
    r = auto_prompt(p)
    assert r.success, r.message
    assert r.message.startswith("object 1 started automatically without a phrase: no caption model")
    assert "proposals" in r.message and "caption 0 ms" in r.message and "rpn region" in r.message
    assert node._tracked_ids() == [1]
    # publish_on_prompt: the current frame comes again with the object and the stage times
    st = stats_after(p, n, lambda s: s.auto_proposals_ms > 0)
    assert list(st.auto_started_ids) == [1] and list(st.auto_phrases) == [""]


def test_max_objects_is_a_clear_failure_and_tracking_goes_on(h):
    p, node = h.probe, h.node
    r = auto_prompt(p)
    assert not r.success and "max_objects" in r.message
    assert node._tracked_ids() == [1]
    st = p.wait_outputs(p.publish_frame(), OUTPUTS)["stats"]
    assert list(st.object_ids) == [1] and list(st.auto_started_ids) == [1]


# ------------------------------------------------------------------------------------- failures
def test_no_region_above_the_thresholds(h):
    p, node = h.probe, h.node
    reconfigure(p, node, auto_min_objectness=1.0)  # no RPN proposal reaches objectness 1
    errors = node.health.counts()["prompt_errors"]
    # auto_prompt_on_start fails on the first frame: logged, counted, and the frame is tracked
    st = p.wait_outputs(p.publish_frame(), OUTPUTS)["stats"]
    assert list(st.object_ids) == [] and st.auto_proposals_ms == 0
    assert wait_for(lambda: node.health.counts()["prompt_errors"] == errors + 1, 10.0)
    assert "auto_prompt_on_start" in node.health.last_error
    assert "no object-like region" in node.health.last_error
    r = auto_prompt(p)
    assert not r.success and "no object-like region" in r.message and "auto_min" in r.message
    st = p.wait_outputs(p.publish_frame(frame_rgb(shift=3)), OUTPUTS)["stats"]
    assert list(st.object_ids) == [] and st.frame_index == 1


def test_missing_caption_model_fails_at_configure(h):
    """It was found only at the first automatic prompt; now configure refuses it (like a missing
    router file) and the node is configured again once it is fixed."""
    p, node = h.probe, h.node
    missing = h.tmp / "no-such-caption-model"

    def transition(tid):
        return p.call(p.change_state, ChangeState.Request(transition=Transition(id=tid))).success

    assert transition(Transition.TRANSITION_DEACTIVATE) and transition(Transition.TRANSITION_CLEANUP)
    assert node.set_parameters([Parameter("auto_caption_model", value=str(missing))])[0].successful
    assert not transition(Transition.TRANSITION_CONFIGURE)
    assert "caption model directory not found" in node.health.fatal and str(missing) in node.health.fatal
    fixed = dict(auto_caption_model="", auto_prompt_on_start=False, auto_min_objectness=0.0)
    assert all(r.successful for r in node.set_parameters(
        [Parameter(k, value=v) for k, v in fixed.items()]))
    assert transition(Transition.TRANSITION_CONFIGURE) and transition(Transition.TRANSITION_ACTIVATE)
    assert wait_for(lambda: image_reader_matched(node, NS) and all(
        node._outputs._pubs[n].get_subscription_count() > 0 for n in OUTPUTS + ("description",)), 20.0)
    st = p.wait_outputs(p.publish_frame(), OUTPUTS)["stats"]
    assert list(st.object_ids) == [] and st.frame_index == 0


# ------------------------------------------------------------- caption model + real MiniLM
@needs_minilm
def test_on_start_with_a_caption_model_publishes_the_phrase(h):
    p, node = h.probe, h.node
    blip = make_tiny_blip(h.tmp / "blip")  # says "dog"
    reconfigure(p, node, auto_caption_model=str(blip), auto_caption_max_tokens=1,
                auto_prompt_on_start=True)
    out = p.wait_outputs(p.publish_frame(), OUTPUTS)
    st = out["stats"]
    assert list(st.auto_started_ids) == [1] and list(st.auto_phrases) == ["dog"]
    assert st.auto_proposals_ms > 0 and st.auto_caption_ms > 0 and st.auto_refinement_ms > 0
    assert out["objects"].objects[0].text == "dog"
    assert late_description(p) == ["dog"]  # latched: a subscriber that comes later gets it
    st2 = p.wait_outputs(p.publish_frame(frame_rgb(shift=2)), OUTPUTS)["stats"]
    assert list(st2.auto_phrases) == ["dog"] and st2.auto_caption_ms == 0


@needs_minilm
def test_empty_phrase_and_failing_caption_model_give_a_phrase_free_start(h):
    p, node = h.probe, h.node
    captioner = node._tracker._auto_prompter.captioner()

    def failing(crop):
        raise RuntimeError("simulated caption failure")

    cases = [(lambda crop: "it is there.", "no noun phrase in the caption"),  # refined to nothing
             (failing, "caption model failed: simulated caption failure")]
    try:
        for caption, why in cases:
            assert p.call(p.remove, RemoveObject.Request(object_id=1)).success
            captioner.caption = caption
            n = len(p.got("stats"))
            r = auto_prompt(p)
            assert r.success and "object 1 started automatically without a phrase" in r.message
            assert why in r.message
            st = stats_after(p, n, lambda s: s.auto_proposals_ms > 0)
            assert list(st.auto_started_ids) == [1] and list(st.auto_phrases) == [""]
            assert late_description(p) == [""]
            p.wait_outputs(p.publish_frame(), OUTPUTS)  # tracking goes on
    finally:
        captioner.__dict__.pop("caption", None)  # the loaded model's own method again
    assert p.call(p.remove, RemoveObject.Request(object_id=1)).success
    r = auto_prompt(p)
    assert r.message.startswith('object 1 started automatically with the phrase "dog"'), r.message
    assert "caption 'dog'" in r.message
    assert late_description(p) == ["dog"]

"""The frame worker's automatic-prompt orders, without ROS: which frame an automatic start uses
and when ``auto_prompt_on_start`` gives way. A recording tracker double stands in for SAM 2 (the
node tests, test_ros_auto_prompt.py, run the real one); the worker is the real thread."""

import threading

import numpy as np
import pytest

from fastsam2_ros.core.auto_prompt import AutoPromptResult
from fastsam2_ros.core.stats import FrameResult, FrameStats
from fastsam2_ros.ros.frame_worker import FrameWorker, wait
from fastsam2_ros.ros.prompting import PromptRequest
from polling import wait_for


class RecordingTracker:
    """Records every call; ``auto_prompt`` starts the object with the phrase "cup"."""

    def __init__(self):
        self.calls = []
        self.objects = []
        self.frame_index = -1
        self.hold = threading.Event()
        self.hold.set()

    @property
    def object_ids(self):
        return list(self.objects)

    def _result(self, auto=None):
        stats = FrameStats(frame_index=self.frame_index, object_ids=list(self.objects),
                           auto_phrases={i: "cup" for i in self.objects})
        masks = {i: np.zeros((4, 4), bool) for i in self.objects}
        return FrameResult(self.frame_index, masks, {i: 1.0 for i in self.objects}, stats,
                           auto_prompt=auto)

    def track(self, rgb):
        self.calls.append("track")
        self.frame_index += 1
        return self._result()

    def add_prompt(self, obj_id, image=None, **kw):
        self.calls.append(f"add_prompt {obj_id}")
        if image is not None:
            self.track(image)
        if obj_id not in self.objects:
            self.objects.append(obj_id)
        return self._result()

    def auto_prompt(self, obj_id, image=None):
        where = "a new frame" if image is not None else "the current frame"
        self.calls.append(f"auto_prompt {obj_id} on {where}")
        if image is not None:
            self.frame_index += 1
        self.objects.append(obj_id)
        plan = AutoPromptResult(obj_id=obj_id, mask=np.ones((4, 4), bool), box=(0, 0, 3, 3),
                                score=0.5, source="sam2", click=(1, 1), caption="a cup",
                                phrase="cup", timings_ms={"proposals": 1.0})
        return self._result(plan)

    def current_result(self, image_shape=None):
        return self._result()

    keep_ratio = 0.3

    def reset(self):  # a command that holds the worker until released
        self.calls.append("reset")
        self.hold.wait(10.0)


class Header:
    frame_id = "cam"


class Msg:
    header = Header()


def auto_starting_worker(tracker, image, published, errors, announced=None):
    """A FrameWorker with ``auto_prompt_on_start`` whose every frame decodes to ``image``; what
    it publishes and the errors it reports go to the lists given."""
    extra = {} if announced is None else {"on_auto_prompt": announced.append}
    return FrameWorker(tracker, decode=lambda kind, msg: image,
                       publish=published.append, health=type("Health", (), {
                           "on_received": lambda *a, **k: None,
                           "on_discarded": lambda *a: None})(),
                       logger=type("Log", (), {"info": lambda self, m: None})(),
                       bad_input=lambda m, **k: errors.append(m),
                       worker_error=lambda exc: errors.append(repr(exc)),
                       max_rate_hz=lambda: 0.0, keep_ratio=lambda: tracker.keep_ratio,
                       publish_on_prompt=lambda: True, auto_prompt_on_start=True, **extra)


@pytest.fixture
def worker():
    tracker = RecordingTracker()
    announced, published, errors = [], [], []
    w = auto_starting_worker(tracker, np.zeros((16, 16, 3), np.uint8), published, errors, announced)
    w.start()
    yield w, tracker, announced, published, errors
    w.stop()


def hold_worker(w, tracker):
    """Keep the worker busy with a command, so the next frame waits in its slot."""
    tracker.hold.clear()
    w.submit("reset")
    assert wait_for(lambda: "reset" in tracker.calls)


def test_service_request_while_the_first_frame_waits_starts_one_object(worker):
    """auto_prompt_on_start must not start a second object on the frame the service uses."""
    w, tracker, announced, published, errors = worker
    hold_worker(w, tracker)
    w.offer_frame("raw", Msg())
    future = w.submit("auto_prompt")
    tracker.hold.set()
    plan = wait(future, 10.0)
    assert plan.obj_id == 1 and plan.phrase == "cup"
    assert tracker.calls == ["reset", "track", "auto_prompt 1 on the current frame"]
    assert [p.obj_id for p in announced] == [1] and not errors
    # the tracked frame, then the republished one (the publisher thread publishes after the answer)
    assert wait_for(lambda: len(published) == 2)
    assert published[-1].texts == {1: "cup"} and not published[-1].fresh


def test_on_start_gives_way_to_a_prompt_that_waited_for_the_first_frame(worker):
    w, tracker, announced, published, errors = worker
    queued = w.submit("prompt", PromptRequest(obj_id=5, points=[(1.0, 1.0)], labels=[1]),
                      queue_if_no_frame=True)
    assert wait(queued, 10.0).queued
    w.offer_frame("raw", Msg())
    assert wait_for(lambda: published)
    assert tracker.calls == ["add_prompt 5", "track"] and not announced and not errors
    w.offer_frame("raw", Msg())  # later frames are only tracked
    assert wait_for(lambda: len(published) == 2)
    assert tracker.calls[-1] == "track"


def test_on_start_auto_prompts_the_first_frame_only(worker):
    w, tracker, announced, published, errors = worker
    w.offer_frame("raw", Msg())
    assert wait_for(lambda: published)
    assert tracker.calls == ["auto_prompt 1 on a new frame"] and published[0].fresh
    assert [p.obj_id for p in announced] == [1]
    w.offer_frame("raw", Msg())
    assert wait_for(lambda: len(published) == 2)
    assert tracker.calls[-1] == "track" and len(announced) == 1


def test_on_start_waits_for_a_frame_the_tracker_takes(worker):
    """A first frame the tracker refuses (too small) is not "the first usable frame": the
    automatic start used to be spent on it, and the next good frame was only tracked."""
    from fastsam2_ros.core.errors import InputError

    w, tracker, announced, published, errors = worker
    good_auto_prompt, good_track = tracker.auto_prompt, tracker.track

    def refuse(*a, **k):
        tracker.calls.append("refused")
        raise InputError("image is too small: 4x4 (min 8x8)")

    tracker.auto_prompt = tracker.track = refuse
    w.offer_frame("raw", Msg())
    assert wait_for(lambda: any("frame rejected by the tracker" in e for e in errors))
    assert not published and not announced
    tracker.auto_prompt, tracker.track = good_auto_prompt, good_track
    w.offer_frame("raw", Msg())
    assert wait_for(lambda: published)
    assert tracker.calls[-1] == "auto_prompt 1 on a new frame" and [p.obj_id for p in announced] == [1]


def test_a_service_request_on_a_refused_first_frame_leaves_the_automatic_start(worker):
    """The service took the waiting frame as its own; when the tracker refused it, the automatic
    start was spent all the same and the first usable frame was only tracked."""
    from fastsam2_ros.core.errors import InputError

    w, tracker, announced, published, errors = worker
    good_track = tracker.track

    def refuse(*a, **k):
        tracker.calls.append("refused")
        raise InputError("image is too small: 4x4 (min 8x8)")

    hold_worker(w, tracker)
    tracker.track = refuse
    w.offer_frame("raw", Msg())  # a frame the tracker refuses waits
    future = w.submit("auto_prompt")  # the service comes while it waits
    tracker.hold.set()
    with pytest.raises(InputError, match="no image received yet"):
        wait(future, 10.0)
    tracker.track = good_track
    w.offer_frame("raw", Msg())
    assert wait_for(lambda: published)
    assert tracker.calls[-1] == "auto_prompt 1 on a new frame", tracker.calls


def test_a_prompt_after_reset_that_fails_once_the_frame_was_taken_does_not_feed_it_again(worker):
    """add_prompt(image=) tracks the frame before it can fail (a text prompt without CLIP
    weights): the next prompt handed the same frame over again, tracking it twice."""
    from fastsam2_ros.core.errors import CheckpointError

    w, tracker, announced, published, errors = worker
    w._auto_start_pending = False
    w.offer_frame("raw", Msg())
    assert wait_for(lambda: published)
    tracker.reset = lambda: (tracker.calls.append("reset"), tracker.objects.clear())
    wait(w.submit("reset"), 10.0)
    good = tracker.add_prompt

    def takes_frame_then_fails(obj_id, image=None, **kw):
        if image is not None:
            tracker.track(image)
        raise CheckpointError("CLIP weights file not found")

    tracker.add_prompt = takes_frame_then_fails
    before = tracker.frame_index
    with pytest.raises(CheckpointError):
        wait(w.submit("prompt", PromptRequest(obj_id=1, new_object=True, text="cup")), 10.0)
    tracker.add_prompt = good
    wait(w.submit("prompt", PromptRequest(obj_id=1, new_object=True, points=[[1, 1]], labels=[1])), 10.0)
    assert tracker.frame_index == before + 1, f"one frame tracked {tracker.frame_index - before} times"


def test_a_users_text_for_an_automatically_started_object_is_the_text_it_publishes(worker):
    """Every frame's stats carry the automatic phrase; copying them over the node's texts on every
    frame replaced a later user text ("the red mug") by the phrase ("cup")."""
    w, tracker, announced, published, errors = worker
    w.offer_frame("raw", Msg())
    assert wait_for(lambda: published) and published[0].texts == {1: "cup"}
    wait(w.submit("prompt", PromptRequest(obj_id=1, new_object=False, text="the red mug",
                                          points=[(1.0, 1.0)], labels=[1])), 10.0)
    count = len(published)
    w.offer_frame("raw", Msg())
    assert wait_for(lambda: len(published) > count)
    assert published[-1].texts == {1: "the red mug"} and not errors


def test_on_start_with_a_phrase_over_the_clip_context_starts_on_the_first_frame_once():
    """Real tracker (tiny random SAM 2, random CLIP), a caption without spaces (88 CLIP tokens):
    add_prompt(image=) took the frame, then CLIP refused the phrase; nothing started and
    ``_auto_start`` tracked the frame again (the first published frame was frame 1)."""
    import warnings

    from fastsam2_ros.core.auto_prompt import AutoPrompter, Proposal
    from fastsam2_ros.core.config import TrackerConfig
    from fastsam2_ros.core.models import build_predictor
    from fastsam2_ros.core.tracker import StreamingTracker

    caption = "一只戴着红色项圈的棕色小狗正坐在客厅里的木桌上看着镜头旁边还有一个杯子"
    cfg = TrackerConfig(model_cfg="tiny", allow_random_weights=True, image_size=128, device="cpu",
                        mc_passes=0, text_mode="clip_ridge", auto_caption_model="/")  # any folder: replaced below
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tracker = StreamingTracker(cfg, model=build_predictor(cfg))
    region = np.zeros((48, 64), bool)
    region[12:36, 16:48] = True
    prompter = tracker._auto_prompter = AutoPrompter(cfg, tracker.model)
    prompter._proposer = type("Box", (), {"propose": lambda self, img: [Proposal(region, 0.9, "rpn")]})()
    prompter._captioner = type("Cjk", (), {"caption": lambda self, crop: caption})()
    prompter._refiner = type("Whole", (), {"rank": lambda self, c: [(c, 1.0)]})()
    published, errors = [], []
    w = auto_starting_worker(tracker, np.full((48, 64, 3), 90, np.uint8), published, errors)
    w.start()
    try:
        w.offer_frame("raw", Msg())
        assert wait_for(lambda: published, seconds=120.0)
    finally:
        w.stop()
    assert not errors and tracker.object_ids == [1]
    assert published[0].result.frame_index == 0 == tracker.frame_index
    assert caption.startswith(tracker.objects[1].text)

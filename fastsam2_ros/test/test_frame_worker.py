"""The frame worker's pipeline without ROS: frames are tracked on the worker thread and published
on the publisher thread, in order, overlapped, with a bounded backlog; stop() publishes what was
tracked and nothing after it returns; a failing publication does not stop the pipeline."""

import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest

from fastsam2_ros.core.config import TrackerConfig
from fastsam2_ros.ros.frame_worker import PUBLISH_BACKLOG, FrameWorker
from polling import wait_for
from scene_tracker import SceneTracker


class Recorder:
    """Health, logger and error sinks of the worker, and a publish callback that takes its time."""

    def __init__(self, publish_s=0.0, fail_on=()):
        self.publish_s = publish_s
        self.fail_on = set(fail_on)
        self.published = []  # (frame index, start, end, thread name)
        self.errors = []
        self.discarded = 0
        self.lock = threading.Lock()

    def publish(self, frame):
        start = time.monotonic()
        index = frame.result.frame_index
        if index in self.fail_on:
            raise RuntimeError(f"publication of frame {index} failed")
        time.sleep(self.publish_s)
        with self.lock:
            self.published.append((index, start, time.monotonic(), threading.current_thread().name))

    def on_received(self, *a, **k):
        pass

    def on_discarded(self):
        self.discarded += 1


class TimedTracker(SceneTracker):
    """Records when each frame was tracked."""

    def __init__(self, track_s):
        super().__init__(TrackerConfig())
        self.track_s = track_s
        self.tracked = []  # (frame index, start, end)

    def track(self, rgb):
        start = time.monotonic()
        time.sleep(self.track_s)
        result = super().track(rgb)
        self.tracked.append((result.frame_index, start, time.monotonic()))
        return result


def make_worker(tracker, rec, max_rate_hz=lambda: 0.0):
    log = SimpleNamespace(info=lambda *a, **k: None)
    return FrameWorker(tracker, decode=lambda kind, msg: msg.rgb, publish=rec.publish,
                       health=rec, logger=log, bad_input=lambda *a, **k: None,
                       worker_error=rec.errors.append, max_rate_hz=max_rate_hz,
                       keep_ratio=lambda: tracker.keep_ratio, publish_on_prompt=lambda: True)


def feed(worker, tracker, n):
    """Offer n frames, each once the worker has taken the previous one (none is dropped)."""
    rgb = np.zeros((16, 16, 3), np.uint8)
    for i in range(n):
        before = len(tracker.tracked)
        worker.offer_frame("raw", SimpleNamespace(rgb=rgb, header=SimpleNamespace(frame_id="f")))
        wait_for(lambda: len(tracker.tracked) != before, 10.0, step=0.001)


def run_pipeline(frames, published, track_s=0.0, publish_s=0.0, fail_on=()):
    """Start a worker, feed ``frames``, wait until ``published`` frames went out, stop it."""
    tracker, rec = TimedTracker(track_s), Recorder(publish_s, fail_on)
    worker = make_worker(tracker, rec)
    worker.start()
    try:
        feed(worker, tracker, frames)
        assert wait_for(lambda: len(rec.published) == published)
    finally:
        worker.stop()
    return tracker, rec


def test_publishing_overlaps_tracking_in_order_with_a_bounded_backlog():
    tracker, rec = run_pipeline(8, 8, track_s=0.02, publish_s=0.06)
    assert [p[0] for p in rec.published] == list(range(8))  # every frame, in order
    assert {p[3] for p in rec.published} == {"fastsam2_publisher"}
    # some frame was tracked while an earlier one was being published
    assert any(p_start < t_start < p_end for _, p_start, p_end, _ in rec.published
               for _, t_start, _ in tracker.tracked)
    # the worker never ran more than the backlog (+ the frame being published) ahead
    for index, t_start, _ in tracker.tracked:
        done = sum(1 for p in rec.published if p[2] <= t_start)
        assert index - done <= PUBLISH_BACKLOG + 1, (index, done)


def test_stop_publishes_what_was_tracked_and_nothing_after():
    tracker, rec = TimedTracker(track_s=0.0), Recorder(publish_s=0.05)
    worker = make_worker(tracker, rec)
    worker.start()
    feed(worker, tracker, 3)
    worker.stop()
    stopped_at = time.monotonic()
    count = len(rec.published)
    assert count == len(tracker.tracked) == 3
    time.sleep(0.2)
    assert len(rec.published) == count and all(end <= stopped_at for _, _, end, _ in rec.published)


def test_a_failed_publication_is_reported_and_the_next_frame_goes_out():
    _, rec = run_pipeline(3, 2, fail_on={1})
    assert [p[0] for p in rec.published] == [0, 2]
    assert len(rec.errors) == 1 and "frame 1" in str(rec.errors[0])


def test_a_publication_that_outlives_stop_is_the_last_and_goes_unreported():
    """stop(timeout) returned while a hung publication went on, and then the publisher went on
    with the frames behind it, after stop() had said nothing is published any more."""
    hang, go_on = threading.Event(), threading.Event()
    tracker, rec = TimedTracker(track_s=0.0), Recorder()
    publish = rec.publish

    def hanging_publish(frame):
        if frame.result.frame_index == 0:
            hang.set()
            go_on.wait(10.0)
            raise RuntimeError("publication of frame 0 failed late")
        publish(frame)

    rec.publish = hanging_publish
    worker = make_worker(tracker, rec)
    worker.start()
    feed(worker, tracker, 2)  # frame 1 waits behind the hung frame 0 (PUBLISH_BACKLOG)
    assert hang.wait(10.0)
    t0 = time.monotonic()
    assert worker.stop(timeout=0.3) is True  # (the tracking thread ended: its tracker is fine)
    assert time.monotonic() - t0 < 5.0
    assert rec.discarded == 1  # frame 1, which will not go out (frame 0 is still going out)
    go_on.set()
    time.sleep(0.3)
    assert rec.published == [] and rec.errors == [] and rec.discarded == 1


def test_a_publication_that_outlives_its_activation_counts_in_it_not_in_the_next():
    """The hung frame's late count (dropped: its publication failed) went into the counters the
    next activation had just reset: one frame dropped of none received."""
    from fastsam2_ros.ros.diagnostics import NodeHealth
    from fastsam2_ros.ros.outputs import OutputPublishers

    health, hang, go_on = NodeHealth(), threading.Event(), threading.Event()
    outputs = OutputPublishers.__new__(OutputPublishers)  # its counting, without ROS publishers
    outputs._health, outputs._uncounted, outputs._epoch = health, None, 0

    def middleware(frame):
        hang.set()
        go_on.wait(10.0)
        raise RuntimeError("the middleware failed late")

    outputs._publish = middleware
    tracker = TimedTracker(track_s=0.0)
    log = SimpleNamespace(info=lambda *a, **k: None)
    worker = FrameWorker(tracker, decode=lambda kind, msg: msg.rgb, publish=outputs.publish,
                         health=health, logger=log, bad_input=lambda *a, **k: None,
                         worker_error=lambda exc: None, max_rate_hz=lambda: 0.0,
                         keep_ratio=lambda: tracker.keep_ratio, publish_on_prompt=lambda: True)
    worker.start()
    feed(worker, tracker, 1)
    assert hang.wait(10.0)
    assert worker.stop(timeout=0.2) is True
    health.reset_counters()  # the next activation
    go_on.set()
    time.sleep(0.3)
    assert {k: health.counts()[k] for k in ("received", "processed", "dropped")} == dict(
        received=0, processed=0, dropped=0)




def test_a_stream_of_prompts_neither_queues_without_bound_nor_stops_tracking():
    """Prompts that came faster than they were applied piled up without a limit, and every
    queued command ran before any frame: no frame was tracked while they came."""
    from fastsam2_ros.core.errors import InputError
    from fastsam2_ros.ros.frame_worker import COMMANDS_BEFORE_A_FRAME, MAX_QUEUED_COMMANDS, wait

    tracker, rec = TimedTracker(0.0), Recorder()
    gate = threading.Event()
    order = []

    def slow_reset():  # a command that takes its time (a text prompt's CLIP pass)
        gate.wait(10.0)
        order.append("command")

    tracker.reset = slow_reset
    track = tracker.track
    tracker.track = lambda rgb: (order.append("frame"), track(rgb))[1]
    worker = make_worker(tracker, rec)
    worker.start()
    try:
        first = worker.submit("reset")  # the worker is inside this one
        assert wait_for(lambda: not worker._commands, 10.0)
        futures = [worker.submit("reset") for _ in range(MAX_QUEUED_COMMANDS)]
        refused = worker.submit("reset")
        try:
            wait(refused, 1.0)
            raise AssertionError("a command beyond the queue's limit was taken")
        except InputError as exc:
            assert "busy" in str(exc)
        worker.offer_frame("raw", SimpleNamespace(rgb=np.zeros((16, 16, 3), np.uint8),
                                                  header=SimpleNamespace(frame_id="f")))
        gate.set()
        for f in [first] + futures:
            wait(f, 10.0)
        assert wait_for(lambda: "frame" in order, 10.0)
        # the frame went after COMMANDS_BEFORE_A_FRAME commands in a row, not after all 17
        assert order.index("frame") == COMMANDS_BEFORE_A_FRAME
    finally:
        gate.set()
        worker.stop()


def test_frames_replaced_while_tracking_within_the_rate_are_rate_skips_not_drops():
    """With max_rate_hz 2 and 0.15 s inference a 20 Hz camera is held easily; frames replaced
    while the worker was inside the tracker used to count as overload drops (WARN all the time)."""
    from fastsam2_ros.ros.diagnostics import OK, NodeHealth

    health = NodeHealth()
    health.state = "active"
    tracker = TimedTracker(0.15)
    log = SimpleNamespace(info=lambda *a, **k: None)
    worker = FrameWorker(tracker, decode=lambda kind, msg: msg.rgb,
                         publish=lambda f: health.on_processed(0.0, 0.0, None), health=health,
                         logger=log, bad_input=lambda *a, **k: None, worker_error=print,
                         max_rate_hz=lambda: 2.0, keep_ratio=lambda: tracker.keep_ratio,
                         publish_on_prompt=lambda: True)
    worker.start()
    rgb = np.zeros((16, 16, 3), np.uint8)
    try:
        t0 = time.monotonic()
        while time.monotonic() - t0 < 2.5:
            worker.offer_frame("raw", SimpleNamespace(rgb=rgb, header=SimpleNamespace(frame_id="f")))
            time.sleep(0.05)
        snap = health.snapshot(warn_hold=1.0, period=1.0)
    finally:
        worker.stop()
    counts = health.counts()
    assert counts["dropped"] > 20 and counts["dropped"] == counts["skipped_for_rate"], counts
    assert snap.level == OK, snap.message


def test_the_first_frame_stats_cover_every_prompt_that_waited_for_it():
    """Two prompts queued before the first image: the frame's stats were the last prompt's
    alone (encoder 0 ms, total one prompt's), though the frame was encoded for the first."""
    from fastsam2_ros.core.stats import FrameStats
    from fastsam2_ros.ros.prompting import PromptRequest

    class StagedTracker(SceneTracker):
        def add_prompt(self, *a, image=None, **k):
            result = super().add_prompt(*a, image=image, **k)
            result.stats = FrameStats(stage_ms={"encoder": 40.0 if image is not None else 0.0,
                                                "decoder": 5.0,
                                                "total": 45.0 if image is not None else 5.0})
            return result

    tracker, rec = StagedTracker(TrackerConfig()), Recorder()
    worker = make_worker(tracker, rec)
    published = []
    worker._publish = published.append
    worker.start()
    try:
        futures = [worker.submit("prompt", PromptRequest(obj_id=i, new_object=True, points=[(3, 4 + i)],
                                                         labels=[1], source="click"),
                                 queue_if_no_frame=True) for i in (1, 2)]
        [f.result(10) for f in futures]
        rgb = np.zeros((16, 16, 3), np.uint8)
        worker.offer_frame("raw", SimpleNamespace(rgb=rgb, header=SimpleNamespace(frame_id="f")))
        assert wait_for(lambda: published, 10.0)
    finally:
        worker.stop()
    stage_ms = published[0].result.stats.stage_ms
    assert (stage_ms["encoder"], stage_ms["decoder"], stage_ms["total"]) == (40.0, 10.0, 50.0)


class _SlowTracker(TimedTracker):
    """Says when it is inside track()."""

    def __init__(self, track_s):
        super().__init__(track_s)
        self.inside = threading.Event()

    def track(self, rgb):
        self.inside.set()
        try:
            return super().track(rgb)
        finally:
            self.inside.clear()


def test_a_second_stop_waits_for_the_tracker_call_the_first_one_waits_for():
    """The first stop() took the thread handle; a concurrent second one saw none and returned
    "ended" at once, while the worker was still inside the tracker (the node then released the
    model under the call)."""
    tracker, rec = _SlowTracker(0.5), Recorder()
    worker = make_worker(tracker, rec)
    worker.start()
    worker.offer_frame("raw", SimpleNamespace(rgb=np.zeros((16, 16, 3), np.uint8),
                                              header=SimpleNamespace(frame_id="f")))
    assert wait_for(tracker.inside.is_set, 5.0, step=0.001)
    first = threading.Thread(target=worker.stop)
    first.start()
    time.sleep(0.05)
    assert worker.stop() is True
    assert not tracker.inside.is_set(), "stop() returned while the tracker call ran"
    first.join(5.0)


def test_a_command_submitted_while_stop_runs_is_failed_not_left_waiting():
    """submit() checked the stop flag outside the lock stop() drains the queue under: a command
    checked just before stop() and queued after its drain never got an answer (a service waited
    its whole timeout)."""
    stopped = threading.Event()

    class PausingCondition(threading.Condition):
        def __enter__(self):  # the submitter is preempted right after submit's first line
            if threading.current_thread().name == "submitter":
                stopped.wait(5)
            return super().__enter__()

    tracker, rec = TimedTracker(0.0), Recorder()
    worker = make_worker(tracker, rec)
    worker._cv = PausingCondition()
    worker.start()
    futures = []
    submitter = threading.Thread(target=lambda: futures.append(worker.submit("reset")),
                                 name="submitter")
    submitter.start()
    time.sleep(0.1)
    assert worker.stop(timeout=5.0)
    stopped.set()
    submitter.join(5.0)
    assert futures[0].done() and isinstance(futures[0].exception(), Exception)


def test_frames_thrown_away_by_disable_or_stop_count_as_dropped():
    """Every received frame is processed or dropped: one waiting when the node was disabled
    (set_enabled(False)) or deactivated (stop) was neither."""
    from fastsam2_ros.ros.diagnostics import NodeHealth

    health = NodeHealth()
    health.state = "active"
    tracker = TimedTracker(0.2)
    worker = FrameWorker(tracker, decode=lambda kind, msg: msg.rgb,
                         publish=lambda f: health.on_processed(0.0, 0.0, None), health=health,
                         logger=SimpleNamespace(info=lambda *a, **k: None),
                         bad_input=lambda *a, **k: None, worker_error=print,
                         max_rate_hz=lambda: 0.0, keep_ratio=lambda: tracker.keep_ratio,
                         publish_on_prompt=lambda: True)
    worker.start()

    def offer():
        worker.offer_frame("raw", SimpleNamespace(rgb=np.zeros((16, 16, 3), np.uint8),
                                                  header=SimpleNamespace(frame_id="f")))
    offer()
    assert wait_for(lambda: len(tracker.tracked) == 0 and worker._slot is None, 5.0, step=0.001)
    offer()  # waits while the first one is tracked (0.2 s)
    worker.set_enabled(False)
    assert wait_for(lambda: health.counts()["processed"] == 1, 5.0)
    worker.set_enabled(True)
    offer()
    assert wait_for(lambda: len(tracker.tracked) == 1 and worker._slot is None, 5.0, step=0.001)
    offer()  # waits while the third one is tracked
    worker.stop()
    c = health.counts()
    assert c["received"] == 4 and c["processed"] + c["dropped"] == 4, c
    assert "dropped" not in health.snapshot(warn_hold=5.0).message  # on purpose: no WARN


def test_a_frame_whose_inference_raised_counts_as_dropped():
    """Every received frame is processed, dropped or a bad input: one whose tracker call raised
    (a CUDA out of memory) was only a worker error, so received = processed + dropped + 1."""
    from fastsam2_ros.ros.diagnostics import NodeHealth

    class FailingOnce(SceneTracker):
        fail_next = True

        def track(self, rgb):
            if self.fail_next:
                self.fail_next = False
                raise RuntimeError("CUDA out of memory")
            return super().track(rgb)

    health, errors = NodeHealth(), []
    tracker = FailingOnce(TrackerConfig())
    worker = FrameWorker(tracker, decode=lambda kind, msg: msg.rgb,
                         publish=lambda f: health.on_processed(0.0, 0.0, None), health=health,
                         logger=SimpleNamespace(info=lambda *a, **k: None),
                         bad_input=lambda *a, **k: None, worker_error=errors.append,
                         max_rate_hz=lambda: 0.0, keep_ratio=lambda: tracker.keep_ratio,
                         publish_on_prompt=lambda: True)
    worker.start()
    try:
        _offer(worker, np.zeros((16, 16, 3), np.uint8))
        assert wait_for(lambda: errors, 5.0)
        _offer(worker, np.zeros((16, 16, 3), np.uint8))
        assert wait_for(lambda: health.counts()["processed"] == 1, 5.0)
    finally:
        worker.stop()
    c = health.counts()
    assert c["received"] == 2 and c["processed"] + c["dropped"] + c["bad_inputs"] == 2, c


def _prompt_worker(tracker):
    worker = make_worker(tracker, Recorder())
    published = []
    worker._publish = published.append
    worker.start()
    rgb = np.zeros((16, 16, 3), np.uint8)
    rgb[8:, :] = 200
    worker.offer_frame("raw", SimpleNamespace(rgb=rgb, header=SimpleNamespace(frame_id="f")))
    assert wait_for(lambda: published, 10.0)
    return worker, published


def test_a_refused_restart_leaves_the_object_tracked_and_an_accepted_one_drops_its_text():
    """text_object_id N restarts object N: it was removed before the tracker saw the new prompt,
    so a refused text (no CLIP weights, too long, text_mode none) deleted the object."""
    from fastsam2_ros.core.errors import InputError
    from fastsam2_ros.ros.prompting import PromptRequest

    tracker = SceneTracker(TrackerConfig())  # takes clicks only: a text alone is refused
    worker, published = _prompt_worker(tracker)
    try:
        worker.submit("prompt", PromptRequest(obj_id=1, new_object=True, points=[(3, 12)], labels=[1],
                                              text="the floor")).result(10)
        with pytest.raises(InputError):
            worker.submit("prompt", PromptRequest(obj_id=1, new_object=True, text="the red mug",
                                                  restart=True)).result(10)
        assert tracker.object_ids == [1] and worker.tracked_ids == (1,)
        assert wait_for(lambda: len(published) == 2, 10.0)  # the frame, then the first prompt's
        assert published[-1].texts == {1: "the floor"}
        worker.submit("prompt", PromptRequest(obj_id=1, new_object=True, points=[(3, 3)], labels=[1],
                                              restart=True)).result(10)
        assert tracker.colours[1] == (0, 0, 0), "restarted from the new click"
        assert wait_for(lambda: len(published) == 3, 10.0)
        assert published[-1].texts == {}, "the old object's text went with it"
    finally:
        worker.stop()


def test_a_command_reply_sees_the_object_ids_after_the_command():
    """The add_object/remove_object replies read the worker's ids as soon as the command's result
    is set: they were refreshed after it, so a reply could list the ids before the call."""
    from fastsam2_ros.ros.prompting import PromptRequest

    class GatedTracker(SceneTracker):
        def __init__(self):
            super().__init__(TrackerConfig())
            self.go = threading.Event()

        def add_prompt(self, *a, **k):
            if k.get("image") is None:
                assert self.go.wait(10)
            return super().add_prompt(*a, **k)

        def remove_object(self, obj_id):
            assert self.go.wait(10)
            return super().remove_object(obj_id)

    tracker = GatedTracker()
    worker, _ = _prompt_worker(tracker)
    seen = []
    try:
        for kind, arg in (("prompt", PromptRequest(obj_id=4, new_object=True, points=[(3, 3)],
                                                   labels=[1])), ("remove", 4)):
            tracker.go.clear()
            future = worker.submit(kind, arg)
            future.add_done_callback(lambda f: seen.append(worker.tracked_ids))
            tracker.go.set()
            future.result(10)
    finally:
        worker.stop()
    assert seen == [(4,), ()]


def test_a_prompt_after_a_failed_frame_applies_to_the_frame_the_node_published():
    """A step that raises (a CUDA out-of-memory) has made its frame the tracker's current one; the
    node still shows the frame before it, so a click must go to that frame, not to the failed
    one whose masks would go out under the earlier frame's header."""
    from fastsam2_ros.ros.prompting import PromptRequest

    class FailingOnce(SceneTracker):
        fail_next = False

        def track(self, rgb):
            if self.fail_next:
                self.fail_next = False
                self.frame_index += 1
                self.image = rgb
                raise RuntimeError("CUDA out of memory")
            return super().track(rgb)

    tracker = FailingOnce(TrackerConfig())
    errors = []
    worker = make_worker(tracker, Recorder())
    worker._worker_error = errors.append
    published = []
    worker._publish = published.append
    worker.start()
    shown = np.zeros((16, 16, 3), np.uint8)
    shown[:, 8:] = 200  # the click at x=12 lands on the bright half
    failed = np.full((16, 16, 3), 50, np.uint8)
    try:
        for rgb in (shown, failed):
            count = len(published)
            tracker.fail_next = rgb is failed
            worker.offer_frame("raw", SimpleNamespace(rgb=rgb, header=SimpleNamespace(frame_id="f")))
            assert wait_for(lambda: len(published) > count or errors, 10.0)
        assert len(errors) == 1 and len(published) == 1
        worker.submit("prompt", PromptRequest(obj_id=1, new_object=True, points=[(12, 3)],
                                              labels=[1])).result(10)
        assert wait_for(lambda: len(published) == 2, 10.0)
    finally:
        worker.stop()
    out = published[-1]
    assert out.rgb is shown
    np.testing.assert_array_equal(out.result.masks[1], shown[..., 0] == 200)


def _recording_worker(tracker):
    """A started worker that records what it publishes and the bad inputs it reports."""
    worker = make_worker(tracker, Recorder())
    published, refused = [], []
    worker._publish = published.append
    worker._bad_input = lambda message, **k: refused.append(message)
    worker.start()
    return worker, published, refused


def test_prompts_waiting_for_the_first_image_outlast_a_frame_the_tracker_refuses():
    from fastsam2_ros.ros.prompting import PromptRequest

    tracker = SceneTracker(TrackerConfig())
    worker, published, refused = _recording_worker(tracker)
    try:
        queued = worker.submit("prompt", PromptRequest(obj_id=1, new_object=True, points=[(2, 2)],
                                                       labels=[1]), queue_if_no_frame=True)
        assert queued.result(10).queued
        for rgb in (np.zeros((4, 300, 3), np.uint8), np.zeros((16, 16, 3), np.uint8)):
            worker.offer_frame("raw", SimpleNamespace(rgb=rgb, header=SimpleNamespace(frame_id="f")))
            assert wait_for(lambda: published or len(refused) == 1, 10.0)
        assert wait_for(lambda: published, 10.0)
    finally:
        worker.stop()
    assert len(refused) == 1 and "too small" in refused[0], refused
    assert published[0].result.object_ids == [1]


def test_a_reset_says_how_many_prompts_waiting_for_the_first_image_it_dropped():
    """A prompt queued for the first image and then a reset: the prompt was gone without a word."""
    from fastsam2_ros.ros.prompting import PromptRequest

    tracker = SceneTracker(TrackerConfig())
    worker, published, refused = _recording_worker(tracker)
    try:
        for obj_id in (1, 2):
            queued = worker.submit("prompt", PromptRequest(obj_id=obj_id, new_object=True,
                                                           points=[(2, 2)], labels=[1]),
                                   queue_if_no_frame=True)
            assert queued.result(10).queued
        assert worker.submit("reset").result(10) == 2
        assert worker.submit("reset").result(10) == 0
        worker.offer_frame("raw", SimpleNamespace(rgb=np.zeros((16, 16, 3), np.uint8),
                                                  header=SimpleNamespace(frame_id="f")))
        assert wait_for(lambda: published, 10.0)
    finally:
        worker.stop()
    assert published[0].result.object_ids == [] and not refused


def test_a_tiny_max_rate_holds_frames_back_without_failing():
    """max_rate_hz 1e-10 is within its range, but 1 / rate overflowed the lock's wait
    (OverflowError every half second, a worker error each time, while the rate was set)."""
    tracker, rec = TimedTracker(0.0), Recorder()
    rate = [1e-10]
    worker = make_worker(tracker, rec, max_rate_hz=lambda: rate[0])
    worker.start()
    try:
        for _ in range(2):
            _offer(worker, np.zeros((16, 16, 3), np.uint8))
            time.sleep(0.8)
        assert len(tracker.tracked) == 1 and not rec.errors, rec.errors  # the second one waits
        rate[0] = 0.0
        assert wait_for(lambda: len(tracker.tracked) == 2, 10.0)
    finally:
        worker.stop()
    assert not rec.errors, rec.errors


class _TextStartTracker(SceneTracker):
    """Also starts an object from a text alone (a click at the centre), reporting the start in
    that call's stats only, as the core does."""

    def add_prompt(self, obj_id, points=None, labels=None, text=None, image=None, restart=False, **k):
        if points is None and text is not None:
            if image is not None:
                self.track(image)
            height, width = self.image.shape[:2]
            super().add_prompt(obj_id, points=[[width // 2, height // 2]], labels=[1], restart=restart)
            return self._result([obj_id])
        return super().add_prompt(obj_id, points=points, labels=labels, image=image, restart=restart)


def _offer(worker, rgb):
    worker.offer_frame("raw", SimpleNamespace(rgb=rgb, header=SimpleNamespace(frame_id="f")))


def test_an_object_started_from_text_alone_stays_marked_when_its_result_is_not_published():
    """The mark was taken from the published frames only: with publish_on_prompt false, or with
    another prompt after it on the first frame, the start was never marked."""
    from fastsam2_ros.ros.prompting import PromptRequest

    rgb = np.zeros((16, 16, 3), np.uint8)
    for publish_on_prompt, queued in ((False, False), (True, True)):
        tracker = _TextStartTracker(TrackerConfig())
        worker = make_worker(tracker, Recorder())
        worker._publish_on_prompt = lambda: publish_on_prompt
        published = []
        worker._publish = published.append
        worker.start()
        try:
            if not queued:
                _offer(worker, rgb)
                assert wait_for(lambda: len(published) == 1, 10.0)
            prompts = [PromptRequest(obj_id=1, new_object=True, text="the mug")]
            if queued:  # a second prompt waits behind it: only the last call's result goes out
                prompts.append(PromptRequest(obj_id=2, new_object=True, points=[(2, 2)], labels=[1]))
            for req in prompts:
                worker.submit("prompt", req, queue_if_no_frame=queued).result(10)
            count = len(published)
            _offer(worker, rgb)
            assert wait_for(lambda: len(published) > count, 10.0)
        finally:
            worker.stop()
        assert published[-1].auto_prompted == {1}, (publish_on_prompt, queued)


class _HeldTracker(SceneTracker):
    """remove_object holds the worker until ``go`` is set (then refuses the unknown id), so that
    a frame and commands can be made to wait together."""

    def __init__(self):
        super().__init__(TrackerConfig())
        self.go = threading.Event()
        self.inside = threading.Event()

    def remove_object(self, obj_id):
        self.inside.set()
        assert self.go.wait(10)
        return super().remove_object(obj_id)


def test_a_topic_prompt_meeting_a_refused_waiting_image_waits_for_the_next_one():
    """Commands go before frames: a topic prompt that found the first image waiting took it with
    it, and when the tracker refused that image the prompt was rejected, not queued."""
    from fastsam2_ros.ros.prompting import PromptRequest

    tracker = _HeldTracker()
    worker, published, refused = _recording_worker(tracker)
    try:
        worker.submit("remove", 99)  # holds the worker
        _offer(worker, np.zeros((4, 300, 3), np.uint8))  # refused by the tracker: too small
        future = worker.submit("prompt", PromptRequest(obj_id=1, new_object=True, points=[(2, 2)],
                                                       labels=[1]), queue_if_no_frame=True)
        tracker.go.set()
        assert future.result(10).queued
        assert len(refused) == 1 and "too small" in refused[0], refused
        _offer(worker, np.zeros((16, 16, 3), np.uint8))
        assert wait_for(lambda: published, 10.0)
    finally:
        worker.stop()
    assert published[0].result.object_ids == [1]


def test_a_refused_prompt_that_meets_the_first_image_leaves_the_image_published():
    """The prompts that waited were applied (the tracker took the frame), then the caller's bad
    click was raised: the frame was never published and the node had no current frame."""
    from fastsam2_ros.core.errors import InputError
    from fastsam2_ros.ros.prompting import PromptRequest

    tracker = _HeldTracker()
    worker = make_worker(tracker, Recorder())
    published = []
    worker._publish = published.append
    worker.start()
    try:
        queued = worker.submit("prompt", PromptRequest(obj_id=1, new_object=True, points=[(2, 2)],
                                                       labels=[1]), queue_if_no_frame=True)
        assert queued.result(10).queued
        worker.submit("remove", 99)  # holds the worker
        _offer(worker, np.zeros((16, 16, 3), np.uint8))
        bad = worker.submit("prompt", PromptRequest(obj_id=2, new_object=True, points=[(50, 2)],
                                                    labels=[1]))
        tracker.go.set()
        with pytest.raises(InputError, match="outside"):
            bad.result(10)
        assert wait_for(lambda: published, 10.0)
        assert published[0].result.object_ids == [1] and worker._current is not None
        worker.submit("prompt", PromptRequest(obj_id=3, new_object=True, points=[(5, 5)],
                                              labels=[1])).result(10)  # the frame is there
    finally:
        worker.stop()


def test_a_command_whose_wait_timed_out_is_withdrawn_or_said_to_go_on():
    """A service that gave up waiting (SERVICE_TIMEOUT_S behind a long tracker call) replied
    "did not answer", but its command stayed queued and applied later: a client that retried got
    a second object. One the worker already runs cannot be withdrawn: the reply says so."""
    from fastsam2_ros.core.errors import InputError
    from fastsam2_ros.ros.frame_worker import wait
    from fastsam2_ros.ros.prompting import PromptRequest

    tracker = _HeldTracker()
    worker, _ = _prompt_worker(tracker)
    try:
        running = worker.submit("remove", 99)  # holds the worker
        assert tracker.inside.wait(10)
        queued = worker.submit("prompt", PromptRequest(obj_id=1, new_object=True, points=[(3, 3)],
                                                       labels=[1]))
        with pytest.raises(InputError, match="withdrawn"):
            wait(queued, 0.01)
        with pytest.raises(InputError, match="goes on in the worker: it may still take effect"):
            wait(running, 0.01)
        tracker.go.set()
        worker.submit("prompt", PromptRequest(obj_id=2, new_object=True, points=[(3, 12)],
                                              labels=[1])).result(10)  # runs after the withdrawn one
    finally:
        tracker.go.set()
        worker.stop()
    assert tracker.object_ids == [2], "the withdrawn prompt was applied"


def test_a_republished_frame_keeps_the_time_its_image_arrived():
    """node_latency_ms counts from TrackedFrame.received: a prompt's republished frame was given
    the time of the prompt, so its latency counted from the click, not from the image."""
    from fastsam2_ros.ros.prompting import PromptRequest

    tracker = SceneTracker(TrackerConfig())
    worker, published = _prompt_worker(tracker)
    try:
        worker.submit("prompt", PromptRequest(obj_id=1, new_object=True, points=[(3, 12)],
                                              labels=[1])).result(10)
        assert wait_for(lambda: len(published) == 2, 10.0)
    finally:
        worker.stop()
    fresh, again = published
    assert (fresh.fresh, again.fresh) == (True, False) and again.header is fresh.header
    assert again.received == fresh.received


@pytest.mark.parametrize("publish_on_prompt", [True, False])
def test_remove_and_reset_republish_the_current_frame_without_what_is_gone(publish_on_prompt):
    """remove_object and reset published nothing: the outputs (and /diagnostics, which reads the
    last stats) showed the removed objects until the next frame, never with a paused camera."""
    from fastsam2_ros.ros.prompting import PromptRequest

    tracker = SceneTracker(TrackerConfig())
    worker, published = _prompt_worker(tracker)  # 16 x 16: dark top, bright bottom
    worker._publish_on_prompt = lambda: publish_on_prompt
    try:
        for obj_id, point in ((1, (3, 12)), (2, (3, 3))):
            worker.submit("prompt", PromptRequest(obj_id=obj_id, new_object=True, points=[point],
                                                  labels=[1])).result(10)
        assert worker.submit("remove", 1).result(10) == 1
        worker.submit("reset").result(10)
    finally:
        worker.stop()  # publishes what was queued
    if not publish_on_prompt:
        assert len(published) == 1  # the frame only
        return
    assert len(published) == 5  # the frame, two prompts, the removal, the reset
    fresh, removed, emptied = published[0], published[3], published[4]
    for frame in (removed, emptied):
        assert not frame.fresh and frame.header is fresh.header and frame.rgb is fresh.rgb
        assert frame.received == fresh.received
    assert removed.result.object_ids == [2] and list(removed.result.stats.object_ids) == [2]
    np.testing.assert_array_equal(removed.result.label_image((16, 16)),
                                  np.where(fresh.rgb[..., 0] == 0, 2, 0))
    assert emptied.result.object_ids == [] and list(emptied.result.stats.object_ids) == []
    assert emptied.result.image_shape == (16, 16)
    assert not emptied.result.union_mask().any()


def test_no_republish_of_a_frame_whose_step_failed_under_the_nodes_header():
    """After a frame whose step failed once the tracker had taken it (a CUDA out of memory),
    removing the last object republished the tracker's failed frame (its size, its index) under
    the node's current frame's header and image. The tracker's frame is not the node's then:
    nothing is republished, the next frame shows the change."""
    from fastsam2_ros.ros.prompting import PromptRequest

    class FailsOnBigFrames(SceneTracker):
        def track(self, rgb):
            if rgb.shape[0] > 16:  # the step fails after the tracker took the frame
                self.image = rgb
                self.frame_index += 1
                raise RuntimeError("CUDA out of memory (simulated)")
            return super().track(rgb)

    tracker = FailsOnBigFrames(TrackerConfig())
    worker, published = _prompt_worker(tracker)  # a 16 x 16 frame, published
    try:
        worker.submit("prompt", PromptRequest(obj_id=1, new_object=True, points=[(3, 12)],
                                              labels=[1])).result(10)
        assert wait_for(lambda: len(published) == 2, 10.0)
        worker.offer_frame("raw", SimpleNamespace(rgb=np.zeros((24, 32, 3), np.uint8),
                                                  header=SimpleNamespace(frame_id="big")))
        assert wait_for(lambda: tracker.frame_index == 1, 10.0)
        assert worker.submit("remove", 1).result(10) == 1
        worker.submit("reset").result(10)  # the tracker has no frame now: the node's, emptied
    finally:
        worker.stop()
    assert [p.result.image_shape for p in published] == [(16, 16)] * 3
    assert published[-1].result.object_ids == [] and published[-1].header.frame_id == "f"


def test_an_image_refused_with_a_huge_frame_id_is_reported_in_a_short_line():
    """The refused image's frame_id went whole into the bad-input line (logged, on /diagnostics):
    a client's megabyte frame_id was a megabyte of log once a second."""
    from fastsam2_ros.core.errors import InputError

    def refuse(kind, msg):
        raise InputError("unsupported image encoding 'x'")

    tracker, rec, reported = TimedTracker(0.0), Recorder(0.0, ()), []
    log = SimpleNamespace(info=lambda *a, **k: None)
    worker = FrameWorker(tracker, decode=refuse, publish=rec.publish, health=rec, logger=log,
                         bad_input=lambda message, **k: reported.append(message),
                         worker_error=rec.errors.append, max_rate_hz=lambda: 0.0,
                         keep_ratio=lambda: tracker.keep_ratio, publish_on_prompt=lambda: True)
    worker.start()
    try:
        worker.offer_frame("raw", SimpleNamespace(header=SimpleNamespace(frame_id="f" * 10 ** 6)))
        assert wait_for(lambda: reported, 10.0)
    finally:
        worker.stop()
    assert len(reported[0]) < 300 and "unsupported image encoding" in reported[0], len(reported[0])

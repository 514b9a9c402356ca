"""The frame worker: the one thread that calls the tracker.

Image callbacks only :meth:`FrameWorker.offer_frame` (a one-slot buffer: a newer frame replaces an
unprocessed one, which is counted as dropped). Prompts, removals and resets from topics and
services are :meth:`FrameWorker.submit`-ted as commands and run here,
between two frames, on the current frame; a service waits for its command's future. So the tracker
(not thread-safe) is never called from two threads, and a prompt waits at most one inference.

Each frame goes through three steps: decode (``decode``) and track (the tracker) on this thread,
then publish (``publish``) on a second one, the publisher: publishing frame t overlaps decoding
and tracking frame t+1. At most :data:`PUBLISH_BACKLOG` tracked frames wait for the publisher (the
worker waits beyond that, so a slow output path holds the tracking rate back instead of queueing);
frames are published in the order they were tracked, prompt republications included.

Two settings are read, not queued: ``keep_ratio`` (applied before the next command or frame, so a
change is never lost behind a full command queue) and ``max_rate_hz``, which holds the tracking
rate: the worker takes no frame before ``1 / max_rate_hz`` after the previous one started, with the
value in force now (:meth:`FrameWorker.settings_changed` wakes a worker waiting on the old one);
frames replaced meanwhile are counted as dropped (and as skipped for the rate, which does not raise
a diagnostics warning).

The automatic prompt (``tracker.auto_prompt``: proposal -> caption -> phrase, seconds to tens of
seconds on a CPU) runs here too: as the ``auto_prompt`` command on the current frame, or, with
``auto_prompt_on_start``, on the first frame instead of only tracking it. ``on_auto_prompt`` hears
of every automatic start (the node publishes its phrase).
"""

from __future__ import annotations

import contextlib
import reprlib
import threading
import time
from collections import deque
from concurrent.futures import Future, InvalidStateError
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any, Callable, Deque, Dict, Optional, Set, Tuple

import numpy as np

from ..core.errors import FastSam2Error, InputError
from ..core.prompts import next_free_id, validate_image
from .messages import auto_prompt_summary
from .prompting import PromptRequest

#: Prompts that may wait for the first frame (topic prompts before any image arrived).
MAX_PENDING_PROMPTS = 16
#: Commands (prompts, removals, resets ...) that may wait for the worker; more are refused, so a
#: planner that prompts faster than prompts are applied cannot queue without bound.
MAX_QUEUED_COMMANDS = 16
#: Commands run before a waiting frame; after this many in a row a frame that is due goes first,
#: so a stream of prompts cannot stop tracking.
COMMANDS_BEFORE_A_FRAME = 4
#: Tracked frames that may wait for the publisher while it publishes another one.
PUBLISH_BACKLOG = 1
#: How long stop() waits for the tracker call in progress (a lifecycle transition waits this long).
STOP_TIMEOUT_S = 120.0
#: How long a stop waits for the tracker call in progress once the process exits (Ctrl-C,
#: SIGTERM). A longer one (an automatic prompt takes tens of seconds on a CPU) is abandoned, as at
#: deactivate, and the process ends anyway: ``ros2 launch`` sends SIGTERM 5 s after its SIGINT and
#: SIGKILL 5 s later.
EXIT_STOP_TIMEOUT_S = 3.0
#: The slices a stop waits in, to see an exit that comes meanwhile
JOIN_SLICE_S = 0.1
#: pause after an error in the worker's own wait (reported each time, never a busy loop)
LOOP_ERROR_PAUSE_S = 0.5
#: The outcome of the command an abandoned worker runs (see FrameWorker._abandon).
ABANDONED = ("the tracker was abandoned while this request ran (a lifecycle transition or shutdown "
             "did not wait for its call to end): its objects, and whatever the request changed, "
             "are lost")


@dataclass
class TrackedFrame:
    """A tracker result with what the outputs need besides it."""

    result: Any
    header: Any
    rgb: np.ndarray
    received: float  # time.monotonic() when the image arrived
    fresh: bool  # True: a newly tracked frame; False: the current frame again after a prompt
    texts: Dict[int, str] = field(default_factory=dict)
    auto_prompted: Set[int] = field(default_factory=set)
    decode_ms: float = 0.0  # the node's cost of decoding the image message


@dataclass
class PromptOutcome:
    obj_id: int
    auto_prompted: bool = False
    queued: bool = False  # waiting for the first frame


class _FrameRefused(InputError):
    """The image a prompt was to go with is unusable (not the prompt's fault: a prompt that may
    wait for an image is queued instead)."""

    def __init__(self, reason: Exception) -> None:
        super().__init__(f"the waiting image is unusable: {reason}")


@dataclass
class _Command:
    kind: str  # prompt | remove | reset | auto_prompt
    arg: Any = None
    queue_if_no_frame: bool = False
    future: Future = field(default_factory=Future)


#: What the worker's wait returns for "a setting changed" (no command, no frame).
_SETTINGS = _Command("settings")


@dataclass
class ObjectNotes:
    """What the worker knows of the tracked objects beyond the tracker: their text prompts and
    which ones started without a click (the tracker reports that only on the starting call), and
    the topic prompts still waiting for a first frame (objects to be)."""

    texts: Dict[int, str]
    auto_prompted: Set[int]
    pending: Tuple[PromptRequest, ...] = ()


class FrameWorker:
    """Owns the tracker while running; see the module docstring."""

    def __init__(self, tracker: Any, *, decode: Callable[[str, Any], np.ndarray],
                 publish: Callable[[TrackedFrame], None], health: Any, logger: Any,
                 bad_input: Callable[..., None], worker_error: Callable[[BaseException], None],
                 max_rate_hz: Callable[[], float], keep_ratio: Callable[[], float],
                 publish_on_prompt: Callable[[], bool],
                 auto_prompt_on_start: bool = False,
                 on_auto_prompt: Optional[Callable[[Any], None]] = None,
                 notes: Optional["ObjectNotes"] = None) -> None:
        """``notes``: what an earlier worker knew of the tracker's objects (a model kept while
        the node was inactive keeps its objects, and they keep their texts and marks; prompts
        that waited for a first frame wait for this worker's)."""
        self.tracker = tracker
        self._decode = decode
        self._publish = publish
        self._abandoned = threading.Event()  # see _abandon
        self._publisher_abandoned = threading.Event()  # stop() gave up on a publication (see stop)
        # what the worker tells the node: nothing once stop() has abandoned it
        self._count_received = self._unless_abandoned(health.on_received)
        self._count_dropped = self._unless_abandoned(health.on_discarded)
        self._log_info = self._unless_abandoned(logger.info)
        self._bad_input = self._unless_abandoned(bad_input)
        self._worker_error = self._unless_abandoned(worker_error)
        self._max_rate_hz = max_rate_hz
        self._keep_ratio = keep_ratio
        self._refused_keep_ratio: Optional[float] = None
        self._publish_on_prompt = publish_on_prompt
        #: the first usable frame starts an object automatically unless a prompt came first
        self._auto_start_pending = bool(auto_prompt_on_start)
        self._on_auto_prompt = self._unless_abandoned(on_auto_prompt) if on_auto_prompt else None
        self._running: Optional[_Command] = None  # the command the worker runs now
        self._cv = threading.Condition()
        self._enabled = True  # see set_enabled
        self._slot: Optional[Tuple[str, Any, float]] = None
        self._commands: Deque[_Command] = deque()
        self._commands_in_a_row = 0  # commands run since the last frame
        self._stop = threading.Event()
        self._stop_lock = threading.Lock()  # a second stop() waits for the first one's end
        self._thread: Optional[threading.Thread] = None
        self._rate_waiting = False  # the worker holds a waiting frame back for max_rate_hz
        self._to_publish: Deque[Optional[TrackedFrame]] = deque()  # None: the publisher stops
        self._publish_cv = threading.Condition()
        self._publisher: Optional[threading.Thread] = None
        self._last_frame_at: Optional[float] = None  # time.monotonic() when the last frame started
        #: why the tracker's current frame is not the node's, which a prompt then hands over
        #: again: "reset" (the tracker has none) or "failed step" (it holds a later frame whose
        #: step failed); "" when it is the node's
        self._needs_image = ""
        #: (header, rgb, received) of the frame prompts apply to; ``received`` (its arrival,
        #: time.monotonic()) times a republished frame's node_latency_ms too
        self._current: Optional[Tuple[Any, np.ndarray, float]] = None
        self._pending: Deque[PromptRequest] = deque(notes.pending) if notes else deque()
        self._texts: Dict[int, str] = dict(notes.texts) if notes else {}
        self._auto_prompted: Set[int] = set(notes.auto_prompted) if notes else set()
        #: object ids after the last tracker call (read by other threads; replaced, never mutated)
        self.tracked_ids: Tuple[int, ...] = ()
        self._refresh_ids()  # (and notes of objects the tracker no longer has go)

    def notes(self) -> "ObjectNotes":
        """The objects' texts and automatic-start marks and the prompts waiting for a first
        frame, for the next worker on this tracker (read after ``stop``)."""
        return ObjectNotes(dict(self._texts), set(self._auto_prompted), tuple(self._pending))

    # ----------------------------------------------------------------------------- control
    def start(self) -> None:
        self._stop.clear()
        self._to_publish.clear()
        self._publisher = threading.Thread(target=self._publish_loop, name="fastsam2_publisher",
                                           daemon=True)
        self._publisher.start()
        self._thread = threading.Thread(target=self._loop, name="fastsam2_worker", daemon=True)
        self._thread.start()

    def stop(self, timeout: Optional[float] = None, exiting: Optional[threading.Event] = None) -> bool:
        """Stop taking frames and commands, wait for the frame in progress and the publication
        of what was tracked, fail what is queued. Nothing is published after this returns, but a
        publication still in progress after ``timeout``: it ends on its own, unreported, and the
        frames behind it are not published.
        False when the tracking thread did not end within ``timeout`` (a tracker call hung), or
        within EXIT_STOP_TIMEOUT_S of ``exiting`` being set: the worker is abandoned then
        (:meth:`_abandon`)."""
        timeout = STOP_TIMEOUT_S if timeout is None else timeout
        self.halt()
        with self._stop_lock:  # (a concurrent caller must not return while a tracker call runs)
            thread = self._thread
            ended = True
            if thread is not None and thread is not threading.current_thread():
                _join(thread, timeout, exiting)
                ended = not thread.is_alive()
            if ended:
                self._thread = None  # else the next stop() waits for it again
            else:
                self._abandon()
            publisher, self._publisher = self._publisher, None
            if publisher is not None:
                with self._publish_cv:
                    self._to_publish.append(None)
                    self._publish_cv.notify_all()
                if publisher is not threading.current_thread():
                    _join(publisher, timeout, exiting)
                    if publisher.is_alive():  # a publication hung: what it does next is not ours
                        self._abandon_publisher()
            with self._cv:
                left, self._commands = list(self._commands), deque()
            for cmd in left:
                if cmd.future.set_running_or_notify_cancel():  # (else its waiter withdrew it)
                    cmd.future.set_exception(InputError("the tracker stopped (lifecycle transition)"))
            return ended

    def halt(self) -> None:
        """Take no more frames or commands, without waiting for the call in progress (the first
        step of :meth:`stop`, which still has to end the threads)."""
        self._stop.set()
        with self._cv:
            self._discard_frame()
            self._cv.notify_all()

    def _abandon(self) -> None:
        """stop() gave up on the tracker call in progress, and the node moves on without this
        worker (a new one, new counters, the outputs of the next activation): the command it runs
        fails now, and nothing the call does when it ends reaches the node (no reply, automatic
        start announcement, count, error or log line)."""
        self._abandoned.set()
        running = self._running
        if running is not None:
            self._answer(running)

    def _abandon_publisher(self) -> None:
        """stop() gave up on a publication in progress: it ends on its own (and counts in this
        activation's counts, if it ends before the next one), and the frames behind it are
        dropped here, as the publisher will not publish them."""
        self._publisher_abandoned.set()
        with self._publish_cv:  # (the end marker stays: the thread still ends when its call does)
            left, self._to_publish = list(self._to_publish), deque([None])
            self._publish_cv.notify_all()
        for frame in left:
            if frame is not None and frame.fresh:
                self._count_dropped()

    def _unless_abandoned(self, report: Callable[..., Any]) -> Callable[..., None]:
        """``report`` (a node callback), silent once the worker is abandoned."""
        def reported(*args: Any, **kwargs: Any) -> None:
            if not self._abandoned.is_set():
                report(*args, **kwargs)
        return reported

    # ----------------------------------------------------------------------------- inputs
    def offer_frame(self, kind: str, msg: Any) -> None:
        """Keep ``msg`` as the newest frame (called by the image callbacks; never blocks)."""
        with self._cv:  # (the checks under the lock stop() and set_enabled discard the slot with)
            if self._stop.is_set() or not self._enabled:
                return
            replaced = self._slot is not None
            # skipped for the rate: while the worker holds a frame back for it (until it takes
            # the frame, a wake-up late), and while it tracks before the rate lets the next through
            rate_limited = replaced and (self._rate_waiting
                                         or self._next_frame_at() > time.monotonic())
            self._slot = (kind, msg, time.monotonic())
            self._cv.notify_all()
        self._count_received(replaced, rate_limited=rate_limited)

    def settings_changed(self) -> None:
        """Wake the worker: a wait for the frame rate is measured again with the current
        ``max_rate_hz``, and a new ``keep_ratio`` applies before the next command or frame."""
        with self._cv:
            self._cv.notify_all()

    def set_enabled(self, enabled: bool) -> None:
        """The ``enable`` service: disabled, no frame is taken, and the waiting one is dropped.
        Set and checked under the slot's lock, so no frame offered before ``enable: false``
        answers is tracked after it."""
        with self._cv:
            self._enabled = bool(enabled)
            if not self._enabled:
                self._discard_frame()

    def _discard_frame(self) -> None:
        """Drop the waiting frame (disabled, stopping); it counts as dropped (caller holds _cv)."""
        if self._slot is not None:
            self._slot = None
            self._count_dropped()

    def submit(self, kind: str, arg: Any = None, queue_if_no_frame: bool = False) -> Future:
        """Queue a command for the worker; its future holds the outcome or the InputError."""
        cmd = _Command(kind, arg, queue_if_no_frame)
        with self._cv:  # checked under the lock stop() drains with: nothing queued after it
            if self._stop.is_set() or self._thread is None:
                cmd.future.set_exception(InputError("the tracker is not active; activate it first"))
                return cmd.future
            if len(self._commands) >= MAX_QUEUED_COMMANDS:
                cmd.future.set_exception(InputError(
                    f"the tracker is busy: {len(self._commands)} commands wait already (prompts "
                    "come faster than they are applied)"))
                return cmd.future
            self._commands.append(cmd)
            self._cv.notify_all()
        return cmd.future

    # ----------------------------------------------------------------------------- loop
    def _loop(self) -> None:
        while True:
            try:
                cmd, frame = self._next()
            except Exception as exc:  # noqa: BLE001 - the worker must never die (reported,
                self._worker_error(exc)  # then tried again without spinning)
                self._stop.wait(LOOP_ERROR_PAUSE_S)
                continue
            if cmd is None and frame is None:
                return
            try:
                self._follow_keep_ratio()
                if cmd is _SETTINGS:
                    continue
                if cmd is not None:
                    self._run_command(cmd)
                else:
                    self._process_frame(frame)
            except Exception as exc:  # noqa: BLE001 - the worker must never die
                self._worker_error(exc)

    def _keep_ratio_due(self) -> bool:
        want = float(self._keep_ratio())
        return float(self.tracker.keep_ratio) != want and want != self._refused_keep_ratio

    def _follow_keep_ratio(self) -> None:
        """Give the tracker the keep ratio in force (a parameter, validated when it was set; a
        value the tracker refused anyway is reported once, not tried again)."""
        if not self._keep_ratio_due():
            return
        want = float(self._keep_ratio())
        try:
            self.tracker.set_keep_ratio(want)
        except Exception as exc:  # noqa: BLE001 - the worker must never die
            self._refused_keep_ratio = want
            self._worker_error(exc)

    def _next_frame_at(self) -> float:
        """When the rate allows the next frame: ``1 / max_rate_hz`` (its current value) after
        the previous frame started."""
        rate = float(self._max_rate_hz() or 0.0)
        if self._last_frame_at is None or rate <= 0:
            return 0.0
        return self._last_frame_at + 1.0 / rate

    def _next(self) -> Tuple[Optional[_Command], Optional[Tuple[str, Any, float]]]:
        """Block until a command, a frame the rate allows, a new keep ratio (then
        (_SETTINGS, None)), or stop (then (None, None))."""
        with self._cv:
            while not self._stop.is_set():
                if self._keep_ratio_due():
                    return _SETTINGS, None
                frame_due = self._slot is not None and self._next_frame_at() <= time.monotonic()
                if self._commands and not (frame_due and
                                           self._commands_in_a_row >= COMMANDS_BEFORE_A_FRAME):
                    self._rate_waiting = False
                    self._commands_in_a_row += 1
                    return self._commands.popleft(), None
                if self._slot is not None:
                    wait = self._next_frame_at() - time.monotonic()
                    if wait <= 0:
                        self._commands_in_a_row = 0
                        item, self._slot = self._slot, None
                        self._rate_waiting = False
                        self._last_frame_at = time.monotonic()
                        return None, item
                    self._rate_waiting = True
                    # capped: a tiny max_rate_hz gives a wait beyond what a lock can take
                    # (threading.TIMEOUT_MAX); the loop looks again anyway
                    self._cv.wait(min(wait, 0.5))
                    continue
                self._rate_waiting = False
                self._cv.wait(0.5)
            return None, None

    def _take_waiting_frame(self) -> Optional[Tuple[str, Any, float]]:
        with self._cv:
            item, self._slot = self._slot, None
            return item

    # ----------------------------------------------------------------------------- frames
    def _process_frame(self, item: Tuple[str, Any, float],
                       prompt: Optional[PromptRequest] = None) -> Optional[PromptOutcome]:
        """Decode, track (applying prompts that waited for a first frame), publish."""
        kind, msg, received = item
        t0 = time.perf_counter()
        try:
            rgb = self._decode(kind, msg)
        except InputError as exc:
            self._bad_input(f"image rejected ({kind}, frame_id {reprlib.repr(msg.header.frame_id)}): "
                            f"{exc}")
            if prompt is not None:
                raise _FrameRefused(exc) from exc
            return None
        decode_ms = (time.perf_counter() - t0) * 1e3
        outcome = prompt_error = None
        auto_start, self._auto_start_pending = self._auto_start_pending, False
        before, taken = self.tracker.frame_index, False
        try:
            if self._pending or prompt is not None:
                validate_image(rgb)  # a refused frame leaves the waiting prompts waiting
                result, outcome, prompt_error = self._first_frame_with_prompts(msg.header, rgb, prompt)
            elif auto_start and not self.tracker.object_ids:
                result = self._auto_start(rgb)
            else:
                result = self.tracker.track(rgb)
            taken = True
        except FastSam2Error as exc:
            if auto_start:  # the first *usable* frame starts the object: wait for the next one
                self._auto_start_pending = True
            self._bad_input(f"frame rejected by the tracker: {exc}")
            if prompt is not None:
                raise _FrameRefused(exc) from exc
            return None
        except Exception:  # inference failed (a CUDA out of memory): the caller reports it as a
            self._count_dropped()  # worker error; the frame is dropped, so every one is counted
            raise
        finally:
            self._refresh_ids()
            if not taken and self.tracker.frame_index != before:
                # the tracker moved on to a frame that failed and was not published: a prompt
                # goes to the node's current frame, handed over again with it (as after a reset)
                self._needs_image = "failed step" if self._current is not None else ""
        self._current = (msg.header, rgb, received)
        self._needs_image = ""
        self._emit(result, msg.header, rgb, received, fresh=True, decode_ms=decode_ms)
        if prompt_error is not None:  # the frame is taken and published all the same
            raise prompt_error
        return outcome

    def _first_frame_with_prompts(self, header, rgb, prompt: Optional[PromptRequest]):
        """Take a frame and apply the prompts that waited for it (and ``prompt``). Returns the
        frame's result, ``prompt``'s outcome and ``prompt``'s error (None when it was applied):
        the caller's refused prompt must not throw the frame away.

        Before the first frame the first ``add_prompt`` passes ``image=`` so the tracker takes the
        frame with it; otherwise the frame is tracked first."""
        queue = list(self._pending)
        self._pending.clear()
        if prompt is not None:
            queue.append(prompt)
        tracker = self.tracker
        results, outcome, prompt_error = [], None, None
        fed = self._current is not None
        if fed:
            results.append(tracker.track(rgb))
        for req in queue:
            before = tracker.frame_index
            try:
                out, res = self._apply(req, rgb.shape[:2], image=None if fed else rgb)
                fed = True
                results.append(res)
                if req is prompt:
                    outcome = out
            except FastSam2Error as exc:
                fed = fed or tracker.frame_index != before
                if req is prompt:
                    prompt_error = exc
                    continue
                self._bad_input(f"{req.source} rejected: {exc}", prompt=True)
        if not results:  # no prompt took the frame, or one took it and then failed
            results.append(tracker.track(rgb))
        result = results[-1]
        for earlier in results[:-1]:  # the frame's stats cover every call made for it
            result.stats.add_stage_times(earlier.stats)
        return result, outcome, prompt_error

    def _note_starts(self, result) -> None:
        """Remember the objects a call started without a click and their found phrases, where the
        call returns: the core reports a start only in that call's result, which is not always
        published (publish_on_prompt false, several prompts on the first frame)."""
        self._auto_prompted.update(int(i) for i in result.stats.auto_prompted)
        for obj_id, phrase in result.stats.auto_phrases.items():  # a user's later text wins
            self._texts.setdefault(int(obj_id), phrase)

    def _emit(self, result, header, rgb, received: float, fresh: bool, decode_ms: float = 0.0) -> None:
        self._note_starts(result)
        frame = TrackedFrame(result, header, rgb, received, fresh, dict(self._texts),
                             set(self._auto_prompted), decode_ms)
        with self._publish_cv:  # wait while the publisher is PUBLISH_BACKLOG frames behind
            while (len(self._to_publish) >= PUBLISH_BACKLOG and self._publisher is not None
                   and self._publisher.is_alive()):
                self._publish_cv.wait(0.5)
            self._to_publish.append(frame)
            self._publish_cv.notify_all()

    def _publish_loop(self) -> None:
        """The publisher thread: publish tracked frames in order until stop() says so."""
        while True:
            with self._publish_cv:
                while not self._to_publish:
                    self._publish_cv.wait()
                frame = self._to_publish.popleft()
                self._publish_cv.notify_all()
            if frame is None or self._publisher_abandoned.is_set():
                return
            try:
                self._publish(frame)
            except Exception as exc:  # noqa: BLE001 - the publisher must never die
                if not self._publisher_abandoned.is_set():
                    self._worker_error(exc)

    def _refresh_ids(self) -> None:
        ids = tuple(sorted(int(i) for i in self.tracker.object_ids))
        for gone in set(self._texts) - set(ids):
            del self._texts[gone]
        self._auto_prompted &= set(ids)
        self.tracked_ids = ids

    # ----------------------------------------------------------------------------- commands
    def _run_command(self, cmd: _Command) -> None:
        if not cmd.future.set_running_or_notify_cancel():
            return  # its waiter gave up and withdrew it (see wait): it must not apply later
        self._running = cmd
        try:
            handler = {"prompt": self._cmd_prompt, "remove": self._cmd_remove,
                       "reset": self._cmd_reset, "auto_prompt": self._cmd_auto_prompt}[cmd.kind]
            value, error = handler(cmd), None
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            value, error = None, exc
        try:
            self._refresh_ids()  # before the reply, which lists the tracked ids
        finally:
            self._running = None
            self._answer(cmd, value, error)
            if error is not None and not isinstance(error, FastSam2Error):
                self._worker_error(error)

    def _answer(self, cmd: _Command, value: Any = None, error: Optional[BaseException] = None) -> None:
        """Give the command's waiter its outcome, once (the first answer stands); an abandoned
        worker's command has failed (ABANDONED), whatever its call returned."""
        if self._abandoned.is_set():
            value, error = None, InputError(ABANDONED)
        try:
            if error is None:
                cmd.future.set_result(value)
            else:
                cmd.future.set_exception(error)
        except InvalidStateError:  # answered already: by _abandon, while the call still ran
            pass

    def _cmd_prompt(self, cmd: _Command) -> PromptOutcome:
        req: PromptRequest = cmd.arg
        if self._current is not None:
            header, rgb, received = self._current
            with self._feeding_after_reset():
                outcome, result = self._apply(req, rgb.shape[:2], image=self._image_after_reset())
            if self._publish_on_prompt():
                self._refresh_ids()
                self._emit(result, header, rgb, received, fresh=False)
            return outcome
        item = self._take_waiting_frame()  # no frame processed yet: use one that waits
        if item is not None:
            try:
                outcome = self._process_frame(item, prompt=req)
            except _FrameRefused:  # (counted as a bad image) a topic prompt waits for the next
                if not cmd.queue_if_no_frame:
                    raise
            else:
                if outcome is None:
                    raise InputError("the waiting image could not be used")
                return outcome
        if not cmd.queue_if_no_frame:
            raise InputError("no image received yet; prompts apply to the latest image")
        if len(self._pending) >= MAX_PENDING_PROMPTS:
            raise InputError(f"{MAX_PENDING_PROMPTS} prompts already wait for the first image")
        self._pending.append(req)
        self._log_info(f"{req.source}: no image yet, prompt queued for the first frame: {req.describe()}")
        return PromptOutcome(int(req.obj_id), queued=True)

    def _apply(self, req: PromptRequest, shape, image: Optional[np.ndarray] = None):
        """Apply one prompt on the current frame (or on ``image``). Returns (outcome, result)."""
        tracker = self.tracker
        tracked = set(int(i) for i in tracker.object_ids)
        obj_id = int(req.obj_id)
        new = req.new_object if req.new_object is not None else obj_id not in tracked
        if new:
            if obj_id == 0:
                obj_id = next_free_id(tracked)
            elif obj_id in tracked and not req.restart:
                raise InputError(f"object {obj_id} is already tracked: refine it (new_object=false) "
                                 "or remove it first")
        elif obj_id not in tracked:
            raise InputError(f"object {obj_id} is not tracked (tracked: {sorted(tracked)}); "
                             "use new_object=true to start it")
        kwargs = req.tracker_kwargs(shape)  # validates a mask against the frame
        if image is not None:
            kwargs["image"] = image
        restarted = new and req.restart and obj_id in tracked
        result = tracker.add_prompt(obj_id=obj_id, restart=restarted, **kwargs)
        if restarted:  # accepted: the old object's notes go with it
            self._auto_prompted.discard(obj_id)
            self._texts.pop(obj_id, None)
        self._note_starts(result)
        auto = obj_id in set(int(i) for i in result.stats.auto_prompted)
        if req.text:
            self._texts[obj_id] = req.text
        verb = "restarted" if restarted else ("started" if new else "refined")
        how = " from text alone (automatic click)" if auto else ""
        self._log_info(f"{req.source}: object {obj_id} {verb}{how}: {req.describe()}")
        return PromptOutcome(obj_id, auto_prompted=auto), result

    # ----------------------------------------------------------------------------- automatic prompt
    def _cmd_auto_prompt(self, cmd: _Command) -> Any:
        """Start the next free id automatically on the current frame (a frame that waits when
        none was processed yet). Returns the ``AutoPromptResult``; InputError / CheckpointError
        (no region above the thresholds, a missing model, max_objects, no frame) go to the caller."""
        if self._current is None:
            item = self._take_waiting_frame()
            if item is not None:
                armed, self._auto_start_pending = self._auto_start_pending, False  # this request
                self._process_frame(item)  # is the frame's automatic prompt
                if self._current is None:  # the frame was refused: the start waits for a usable one
                    self._auto_start_pending = armed
            if self._current is None:
                raise InputError("no image received yet: the automatic prompt runs on the "
                                 "latest image")
        header, rgb, received = self._current
        with self._feeding_after_reset():
            plan, result = self._auto_prompt("auto_prompt", image=self._image_after_reset())
        if self._publish_on_prompt():
            self._refresh_ids()
            self._emit(result, header, rgb, received, fresh=False)
        return plan

    def _auto_start(self, rgb: np.ndarray):
        """``auto_prompt_on_start``: the first frame starts an object instead of only being
        tracked. A failure is logged and counted, and the frame is tracked: the node goes on."""
        validate_image(rgb)  # a frame the tracker refuses is no try (counted once, by the caller)
        try:
            return self._auto_prompt("auto_prompt_on_start", image=rgb)[1]
        except FastSam2Error as exc:
            self._bad_input(f"auto_prompt_on_start: no object started on the first frame: {exc} "
                            "(call the auto_prompt service to try again)", prompt=True)
        except Exception as exc:  # noqa: BLE001 - reported; the frame is still tracked
            self._worker_error(exc)
        return self.tracker.track(rgb)

    def _auto_prompt(self, source: str, image: Optional[np.ndarray] = None):
        """``tracker.auto_prompt`` for the next free id (on ``image``, else the current frame);
        returns (AutoPromptResult, FrameResult)."""
        obj_id = next_free_id(int(i) for i in self.tracker.object_ids)
        result = self.tracker.auto_prompt(obj_id, image=image)
        self._note_starts(result)
        plan = result.auto_prompt
        self._log_info(f"{source}: {auto_prompt_summary(plan)}")
        if self._on_auto_prompt is not None:
            self._on_auto_prompt(plan)
        return plan, result

    def _cmd_remove(self, cmd: _Command) -> int:
        obj_id = int(cmd.arg)
        self.tracker.remove_object(obj_id)
        self._auto_prompted.discard(obj_id)
        self._texts.pop(obj_id, None)
        self._log_info(f"object {obj_id} removed")
        self._republish_current()
        return obj_id

    def _cmd_reset(self, cmd: _Command) -> int:
        """Forget every object, and the prompts waiting for the first image (they would start
        objects): returns how many of those were dropped, which the service's reply (and its log
        line) says."""
        self.tracker.reset()
        self._auto_prompted.clear()
        self._texts.clear()
        dropped = len(self._pending)
        self._pending.clear()
        # the tracker forgot its frame, the node did not: a prompt after the reset applies to the
        # frame the user sees (the latest), handed to the tracker again with the prompt
        self._needs_image = "reset" if self._current is not None else ""
        self._republish_current()
        return dropped

    def _republish_current(self) -> None:
        """``publish_on_prompt``: after a removal or a reset, the current frame's outputs again as
        the tracker holds it now (without the removed object; after a reset without objects, in
        the frame's size), as a prompt republishes it, so the outputs (and /diagnostics) stop
        showing what is gone. Not when the tracker holds a frame whose step failed after the
        node's current one (its size and index are not the node's): the next frame shows it."""
        if self._current is None or not self._publish_on_prompt():
            return
        header, rgb, received = self._current
        if self._needs_image == "failed step":
            return
        try:
            result = self.tracker.current_result(image_shape=rgb.shape[:2])
        except Exception as exc:  # noqa: BLE001 - the command itself succeeded: only reported
            self._worker_error(exc)
            return
        self._refresh_ids()
        self._emit(result, header, rgb, received, fresh=False)

    def _image_after_reset(self) -> Optional[np.ndarray]:
        """The current frame when the tracker was reset since it took it (None: it has it)."""
        return self._current[1] if self._needs_image and self._current is not None else None

    @contextlib.contextmanager
    def _feeding_after_reset(self):
        """Around a prompt that may hand the frame over again: once the tracker has taken it (the
        prompt succeeded, or failed after the tracker took the frame) it is not handed over twice."""
        before = self.tracker.frame_index
        try:
            yield
            self._needs_image = ""
        finally:
            if self.tracker.frame_index != before:
                self._needs_image = ""


def _join(thread: threading.Thread, timeout: float, exiting: Optional[threading.Event]) -> None:
    """``thread.join(timeout)``, cut to EXIT_STOP_TIMEOUT_S once ``exiting`` is set: a signal that
    comes while a lifecycle transition waits here for a long call (holding the node's stop lock,
    which the exit's own stop needs) must not wait out the transition's STOP_TIMEOUT_S."""
    deadline = time.monotonic() + timeout
    while thread.is_alive():
        now = time.monotonic()
        if exiting is not None and exiting.is_set():
            deadline, exiting = min(deadline, now + EXIT_STOP_TIMEOUT_S), None
        if now >= deadline:
            return
        thread.join(min(JOIN_SLICE_S, deadline - now))


def wait(future: Future, timeout: float, may_still: str = "it may still take effect") -> Any:
    """A command's result for a service that waits at most ``timeout`` s; then InputError. A
    command still queued is withdrawn, so it never applies after the failed reply (a client that
    retries must not get it twice); one the worker already runs goes on, and the reply says what
    it ``may_still`` do."""
    try:
        return future.result(timeout=timeout)
    except FutureTimeout:  # the builtin TimeoutError only from Python 3.11 on (Humble runs 3.10)
        pass
    late = f"the tracker did not answer within {timeout:g} s"
    if future.cancel():
        raise InputError(f"{late}; the request was withdrawn (it will not apply)")
    if future.done():  # answered right after the timeout
        return future.result()
    raise InputError(f"{late} (it goes on in the worker: {may_still})")


__all__ = ["FrameWorker", "TrackedFrame", "PromptOutcome", "MAX_PENDING_PROMPTS",
           "MAX_QUEUED_COMMANDS", "COMMANDS_BEFORE_A_FRAME",
           "PUBLISH_BACKLOG", "wait"]

"""``fastsam2-demo``: run the real tracker node on a video or a folder of frames, end to end.

The lifecycle node (``TrackerNode``) and a feeder node run in-process on a MultiThreadedExecutor;
everything between them goes over ROS topics and services (DDS), exactly as with a camera. Both
run in a namespace of their own, ``/fastsam2_demo_<pid>``, so two demos (or a demo next to a
robot's tracker) in one ROS domain never see each other's frames or prompts:

1. the feeder publishes frame 0 on ``image`` and waits for the node's outputs;
2. it sends the prompt (``--text`` / ``--click`` / ``--box``) with the ``add_object`` service,
   which applies it on frame 0 and republishes frame 0's outputs; with ``--auto`` there is no
   prompt: the node starts with ``auto_prompt_on_start`` and frame 0 is auto-prompted (proposal
   -> caption -> phrase) before its outputs come, whose stats carry the three stage times;
3. it publishes the remaining frames one at a time (lock-step, so every frame is processed;
   ``--rate`` publishes at that rate instead, frame i at ``t1 + (i - 1) / rate`` as a camera
   does, and the node drops what it cannot keep up with); a frame the node refuses ends the run
   at once with the node's reason;
4. it writes each frame's ``overlay`` image as a PNG file and an mp4 frame to ``--output`` as
   soon as the frame is final (nothing piles up in memory; with ``--rate`` a thread of its own
   writes them, and a frame the node dropped has no PNG and repeats the previous overlay in the
   mp4, which keeps the input's timeline), and at the end, also after Ctrl-C, SIGTERM or an
   error, the ``stats`` messages as JSON lines and a summary; it prints per-frame and summary
   statistics.

Example::

    fastsam2-demo --input /data/bedroom --click 210,350 --checkpoint ~/models/sam2.1_hiera_tiny.pt
    fastsam2-demo --input clip.mp4 --text "the robot arm" --random-weights --max-frames 10
    fastsam2-demo --input /data/bedroom --auto --caption-model ~/models/blip-base --checkpoint ...
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .cli_process import interrupts_after, no_interrupts, printable_output, sigterm_as_ctrl_c
from .pacing import FixedRate


def _pair(text: str, n: int, what: str) -> List[float]:
    try:
        vals = [float(v) for v in text.replace(" ", "").split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{what} must be {n} comma-separated numbers, got {text!r}") from None
    if len(vals) != n or not all(math.isfinite(v) for v in vals):
        raise argparse.ArgumentTypeError(f"{what} must be {n} comma-separated numbers, got {text!r}")
    return vals


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fastsam2-demo",
        description="Track a prompted object through a video with the fastsam2_ros lifecycle node "
                    "(in-process, over real ROS 2 topics) and write overlay frames + an mp4.")
    p.add_argument("--input", required=True, help="video file, folder of frames, image or rosbag")
    p.add_argument("--text", default=None, help='text prompt, e.g. "the child on the left"; alone it '
                   "starts tracking by itself (automatic click)")
    p.add_argument("--click", action="append", default=[], metavar="X,Y",
                   type=lambda s: _pair(s, 2, "--click"),
                   help="foreground click in pixels of the first frame (repeatable)")
    p.add_argument("--neg-click", action="append", default=[], metavar="X,Y",
                   type=lambda s: _pair(s, 2, "--neg-click"), help="background click (repeatable)")
    p.add_argument("--box", default=None, metavar="X0,Y0,X1,Y1", type=lambda s: _pair(s, 4, "--box"),
                   help="box prompt in pixels of the first frame")
    p.add_argument("--auto", action="store_true",
                   help="no prompt: the node starts an object on the first frame by itself "
                   "(auto_prompt_on_start: proposal -> caption -> phrase; the auto_* parameters)")
    p.add_argument("--caption-model", default=None, metavar="DIR",
                   help="captioning model directory for --auto (sets auto_caption_model; with "
                   "none here or in --params-file the start is phrase-free)")
    w = p.add_mutually_exclusive_group()
    w.add_argument("--checkpoint", default="", help="official SAM 2.1 checkpoint, e.g. sam2.1_hiera_tiny.pt")
    w.add_argument("--random-weights", action="store_true",
                   help="random weights (smoke test: the masks are meaningless; a --params-file "
                   "checkpoint is ignored)")
    p.add_argument("--clip-weights", default="", help="open_clip weights for text relevance")
    p.add_argument("--model-cfg", default=None, help="tiny|small|base_plus|large or sam2 config name")
    p.add_argument("--output", default="fastsam2_demo_out",
                   help="output folder, created if missing (an empty value is refused); an "
                   "earlier run's overlay_NNNNN.png, overlay.mp4, stats.jsonl and summary.json in "
                   "it are removed first, nothing else")
    p.add_argument("--max-frames", type=int, default=None, help="process at most N frames")
    p.add_argument("--image-size", type=int, default=None, help="SAM 2 input side (default 1024)")
    p.add_argument("--keep-ratio", type=float, default=None, help="fraction of tokens kept (0, 1]")
    p.add_argument("--device", default=None, help="auto | cpu | cuda | cuda:N")
    p.add_argument("--params-file", default=None,
                   help="ROS parameter file (config/tracker.yaml layout: a '/**/fastsam2_tracker: "
                   "ros__parameters:' section, which applies in the demo's own namespace)")
    p.add_argument("--fps", type=float, default=None,
                   help=f"frame rate of the mp4 and of the frames' stamps, in [{FPS_RANGE[0]:g}, "
                   f"{FPS_RANGE[1]:g}], the rates the mp4 writer takes (default: the video's or "
                   "the rosbag's, else 10; a rosbag's frames keep their recorded headers)")
    p.add_argument("--rate", type=float, default=None,
                   help="publish frames at this rate (Hz, > 0) instead of lock-step; slow inference "
                   "drops frames (overlay.mp4 repeats the previous overlay for each)")
    p.add_argument("--topic", default=None, help="image topic inside a rosbag input")
    p.add_argument("--frame-timeout", type=float, default=300.0,
                   help="seconds to wait for one frame's outputs, > 0")
    p.add_argument("--no-video", action="store_true", help="write PNG frames only")
    p.add_argument("--quiet", action="store_true", help="no per-frame lines")
    return p


#: Frame rates the demo takes (--fps or a video's own): those OpenCV's mp4 writer takes (MPEG-4
#: counts time in at most 65535ths of a second, and OpenCV rounds a rate to 0.001, which below
#: 0.01 fps is off by more than 5 %); the frames' stamps carry all of them.
FPS_RANGE = (0.01, 65535.0)
MP4_FOURCC = "mp4v"
#: The options whose value goes to ROS or OpenCV, which take UTF-8 only
UTF8_OPTIONS = ("text", "checkpoint", "clip_weights", "caption_model", "model_cfg", "device",
                "params_file", "output")
#: What the demo writes into --output; a run removes exactly these names first (an earlier run's).
OVERLAY_PNG = re.compile(r"overlay_[0-9]{5,}\.png")
VIDEO_FILE, STATS_FILE, SUMMARY_FILE = "overlay.mp4", "stats.jsonl", "summary.json"


def overlay_png(index: int) -> str:
    """Frame ``index``'s overlay file (five digits at least: the names sort in frame order)."""
    return f"overlay_{index:05d}.png"


def _stamp(i: int, fps: float, recorded=None, sent=()):
    """Frame ``i``'s stamp: its recorded one (a bag's header: the outputs match the bag's other
    topics), else ``i / fps``. The outputs are matched to the frames sent by their stamp, so a
    stamp an earlier frame has (a driver that repeats one) is moved on by 1 ns till it is new."""
    from builtin_interfaces.msg import Time

    ns = recorded.stamp_ns if recorded is not None else int(round(i * 1e9 / fps))
    while divmod(ns, 1_000_000_000) in sent:
        ns += 1
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def _key(stamp) -> Tuple[int, int]:
    return int(stamp.sec), int(stamp.nanosec)


class _Collector:
    """The node's outputs per input stamp. Overlays are held only until the demo takes them (the
    frame is final: a prompt republishes frame 0 and the newer overlay wins); every frame's stats
    message stays (small) for stats.jsonl."""

    def __init__(self) -> None:
        self.cv = threading.Condition()
        self.overlay: Dict[Tuple[int, int], object] = {}
        self.overlay_count: Dict[Tuple[int, int], int] = {}
        self.stats: Dict[Tuple[int, int], object] = {}
        self.stats_count: Dict[Tuple[int, int], int] = {}

    def on_overlay(self, msg) -> None:
        with self.cv:
            k = _key(msg.header.stamp)
            self.overlay[k] = msg
            self.overlay_count[k] = self.overlay_count.get(k, 0) + 1
            self.cv.notify_all()

    def on_stats(self, msg) -> None:
        with self.cv:
            k = _key(msg.header.stamp)
            self.stats[k] = msg
            self.stats_count[k] = self.stats_count.get(k, 0) + 1
            self.cv.notify_all()

    def wait(self, key, timeout: float, count: int = 1,
             give_up: Callable[[], str] = lambda: "") -> bool:
        """True once ``count`` overlays and stats messages of ``key`` came; False at the timeout,
        or as soon as ``give_up()`` says why none will come."""
        deadline = time.monotonic() + timeout
        with self.cv:
            while not (self.overlay_count.get(key, 0) >= count
                       and self.stats_count.get(key, 0) >= count):
                left = deadline - time.monotonic()
                if left <= 0 or give_up():
                    return False
                self.cv.wait(min(left, 0.1))
            return True

    def wait_overlay(self, timeout: float) -> None:
        """Return once an overlay waits to be taken, or after ``timeout``."""
        with self.cv:
            if not self.overlay:
                self.cv.wait(timeout)

    def take_overlays(self) -> List[Tuple[Tuple[int, int], object]]:
        """The overlays that came since the last call, in stamp order (they are not kept)."""
        with self.cv:
            taken = sorted(self.overlay.items(), key=lambda item: item[0])
            self.overlay.clear()
            return taken


class _OverlayWriter:
    """Writes each overlay as it comes, as a PNG and an mp4 frame, so a long video never piles up
    in memory (one full-resolution frame each, and the last mp4 frame). The mp4 keeps the input's
    timeline: a frame the node dropped (``--rate``) has no overlay and no PNG, and the previous
    overlay is written again in its place, so that mp4 frame k is input frame k."""

    def __init__(self, out_dir: Path, fps: float, video: bool) -> None:
        self.out_dir = out_dir
        self.fps = fps
        self._video = None if video else False  # None: opened at the first frame (its size)
        self._last: Optional[Tuple[int, np.ndarray]] = None  # the last mp4 frame: (index, bgr)
        self.pngs = 0
        self.video_frames = 0
        self.repeated = 0  # mp4 frames that stand for dropped frames

    def write(self, arrived, index_of: Dict[Tuple[int, int], int]) -> None:
        """Write the ``(stamp key, overlay)`` pairs of frames this run sent, in frame order (a
        bag's recorded stamps need not increase)."""
        ours = [(index_of[key], msg) for key, msg in arrived if key in index_of]
        for index, msg in sorted(ours, key=lambda pair: pair[0]):
            self._write_one(index, msg)

    def _write_one(self, index: int, msg) -> None:
        import cv2

        from ..image_messages import image_to_numpy

        bgr = np.ascontiguousarray(image_to_numpy(msg)[:, :, ::-1])
        path = self.out_dir / overlay_png(index)
        if not cv2.imwrite(str(path), bgr):  # (a full disk, a folder of that name: no exception)
            raise OSError(f"cannot write {path}")
        self.pngs += 1
        self._write_video(index, bgr)

    def _write_video(self, index: int, bgr: np.ndarray) -> None:
        """mp4 frame ``index``, after the previous overlay once for each frame dropped since it
        (the node answers frames in order, so none of them comes later)."""
        writer = self._writer(bgr.shape)
        if not writer:
            return
        if self._last is not None:
            last_index, last_bgr = self._last
            for _ in range(index - last_index - 1):
                writer.write(last_bgr)
                self.video_frames += 1
                self.repeated += 1
        writer.write(bgr)
        self.video_frames += 1
        self._last = (index, bgr)

    def _writer(self, shape):
        import cv2

        if self._video is None:
            self._video = cv2.VideoWriter(str(self.out_dir / VIDEO_FILE),
                                          cv2.VideoWriter_fourcc(*MP4_FOURCC), self.fps,
                                          (shape[1], shape[0]))
            if not self._video.isOpened():
                print("warning: cv2.VideoWriter cannot write mp4 here; PNG frames only",
                      file=sys.stderr)
                self._video = False
        return self._video

    def close(self) -> None:
        if self._video:
            self._video.release()
        self._video = False


class _Stop(Exception):
    """Ends the frame loop early: exit status ``code`` and its ``error:`` line (none for Ctrl-C /
    SIGTERM, 130); the outputs so far are written all the same."""

    def __init__(self, code: int, message: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def interrupted(self) -> bool:
        return self.code == 130


def wait_until(cond, timeout: float, step: float = 0.02) -> bool:
    """Poll ``cond`` until it holds or ``timeout`` seconds pass; its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(step)
    return cond()


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())  # one line (YAML errors have several)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Every bad input ends with one ``error:`` line and exit status 2 (1: the node gave no
    output in time), never a traceback; Ctrl-C and SIGTERM end with 130."""
    from ..core.errors import FastSam2Error

    args = build_parser().parse_args(argv)
    printable_output()  # its lines name --input and other files, whatever their names
    try:
        with sigterm_as_ctrl_c():
            return _run(args)
    except (FastSam2Error, OSError) as exc:  # bad frames, unwritable output, ...
        print("error: " + _one_line(exc), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _run(args) -> int:
    if not args.checkpoint and not args.random_weights:
        print("error: give --checkpoint PATH (official SAM 2.1 checkpoint, e.g. sam2.1_hiera_tiny.pt "
              "from the facebookresearch/sam2 release) or --random-weights", file=sys.stderr)
        return 2
    prompted = bool(args.text or args.click or args.neg_click or args.box)
    if args.auto and prompted:
        print("error: --auto starts without a prompt: drop --text/--click/--neg-click/--box",
              file=sys.stderr)
        return 2
    if args.caption_model and not args.auto:
        print("error: --caption-model is for --auto (the automatic prompt's caption)", file=sys.stderr)
        return 2
    if not (args.auto or prompted):
        print("error: give a prompt: --text, --click X,Y or --box X0,Y0,X1,Y1, or --auto",
              file=sys.stderr)
        return 2
    if args.max_frames is not None and args.max_frames < 1:
        print("error: --max-frames must be >= 1", file=sys.stderr)
        return 2
    for flag, value in (("--fps", args.fps), ("--rate", args.rate),
                        ("--frame-timeout", args.frame_timeout)):
        if value is not None and not (math.isfinite(value) and value > 0):
            print(f"error: {flag} must be a positive number, got {value}", file=sys.stderr)
            return 2
    if not args.output.strip():  # an unset "$OUT": it would write (and clean up) the current folder
        print("error: --output must not be empty", file=sys.stderr)
        return 2
    not_utf8 = _not_utf8(args)
    if not_utf8:
        print(f"error: {not_utf8} is not UTF-8, which ROS and OpenCV need (a file: rename it, or "
              "give a link to it with a UTF-8 name)", file=sys.stderr)
        return 2
    args.output = str(Path(args.output).expanduser())
    if args.params_file:
        args.params_file = str(Path(args.params_file).expanduser())
    if args.caption_model:
        args.caption_model = str(Path(args.caption_model).expanduser())
        if not Path(args.caption_model).is_dir():
            print(f"error: --caption-model {args.caption_model} is not a folder (a local "
                  "transformers captioning model)", file=sys.stderr)
            return 2

    from ..core.config import TrackerConfig
    from ..frame_sources import open_frames
    from . import messages  # noqa: F401 - _write_results's, before a Ctrl-C can cut its import short

    overrides = _parameter_overrides(args)
    # the tracker parameters are checked before ROS starts (same rules as the node's configure)
    TrackerConfig.from_mapping({k: v for k, v in overrides.items()
                                if k in TrackerConfig.field_names()})
    if args.params_file:
        _check_params_file(args.params_file)  # before rcl, which would fail or skip it silently
    out_dir = Path(args.output)
    # a file in the way, a folder that cannot be written (as fastsam2-eval's --out): InputError
    from ..eval.cli import check_output_folder

    check_output_folder(out_dir, "--output")
    clash = _input_among_outputs(Path(args.input), out_dir)
    if clash:
        print(f"error: {clash}", file=sys.stderr)
        return 2
    src = open_frames(args.input, topic=args.topic, max_frames=args.max_frames)
    fps = _frame_rate(args, src)
    out_dir.mkdir(parents=True, exist_ok=True)
    for f in _earlier_outputs(out_dir):
        f.unlink()
    t_start = time.perf_counter()
    try:
        return _run_ros(args, overrides, src, fps, out_dir)
    except KeyboardInterrupt:
        if not (out_dir / SUMMARY_FILE).exists():  # before _track (ROS start, model load)
            with no_interrupts():
                _write_results(out_dir, _OverlayWriter(out_dir, fps, video=False), _Collector(), {},
                               time.perf_counter() - t_start, {}, _Stop(130))
        raise


def _not_utf8(args) -> str:
    """The first option, with its value, that ROS (parameters, the prompt, rcl's params file) or
    OpenCV (the output files) gets and that is not UTF-8 ('' if none): rclpy refuses it with a
    UnicodeEncodeError, OpenCV crashes on it (SIGSEGV). An --input folder of any name is read."""
    from ..frame_sources import is_utf8

    for name in UTF8_OPTIONS:
        value = getattr(args, name)
        if value and not is_utf8(value):
            return f"--{name.replace('_', '-')} {value}"
    return ""


def demo_namespace() -> str:
    """The demo's own namespace (its node and feeder): no other demo's, nor a robot's."""
    return f"/fastsam2_demo_{os.getpid()}"


def _check_params_file(path: str) -> None:
    """The file exists, parses and has the node's section keyed so that rcl applies it in the
    demo's own namespace: a bare ``fastsam2_tracker:`` (or ``/fastsam2_tracker:``) matches only a
    node in the root namespace, and rcl would skip it without a word."""
    from ..core.config import DEFAULT_NODE_NAME, check_params_file_reaches

    check_params_file_reaches(path, f"{demo_namespace()}/{DEFAULT_NODE_NAME}")


def _frame_rate(args, src) -> float:
    """--fps, else the video's or the bag's own rate, else 10; refused (before the model loads) where the
    stamps or the mp4 writer cannot take it."""
    from ..core.errors import InputError

    fps = float(args.fps or src.fps or 10.0)
    what = "--fps" if args.fps else f"the frame rate of {args.input} ({fps:g} fps; give --fps)"
    if not FPS_RANGE[0] <= fps <= FPS_RANGE[1]:
        raise InputError(f"{what} must be in [{FPS_RANGE[0]:g}, {FPS_RANGE[1]:g}] (the rates the "
                         f"mp4 writer takes), got {fps:g}")
    if not args.no_video and not _mp4_takes(fps):
        raise InputError(f"{what}: OpenCV's mp4 writer does not take {fps!r} fps (MPEG-4 time "
                         "base); round it, or give --no-video")
    return fps


@contextlib.contextmanager
def _quiet_stderr():
    """File descriptor 2 to /dev/null for a while: FFmpeg logs a refused time base there itself,
    past OpenCV's log level, and the refusal is ours to say, in one line."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(devnull)
        os.close(saved)


def _mp4_takes(fps: float) -> bool:
    """Whether OpenCV's mp4 writer opens at ``fps`` (it refuses a rate it cannot express in
    MPEG-4's time base), asked on a scratch file so that the run does not end without an mp4."""
    import tempfile

    import cv2

    log = cv2.utils.logging
    level = log.getLogLevel()
    log.setLogLevel(log.LOG_LEVEL_SILENT)  # the refusal is ours to say, in one line
    try:
        with tempfile.TemporaryDirectory() as scratch, _quiet_stderr():
            writer = cv2.VideoWriter(str(Path(scratch) / VIDEO_FILE),
                                     cv2.VideoWriter_fourcc(*MP4_FOURCC), fps, (64, 64))
            opened = writer.isOpened()
            writer.release()
    finally:
        log.setLogLevel(level)
    return opened


def _earlier_outputs(out_dir: Path) -> List[Path]:
    """An earlier run's files in ``out_dir``, removed before a run (a shorter run must not leave
    its frames); nothing else in the folder is ours."""
    if not out_dir.is_dir():
        return []
    return [f for f in out_dir.iterdir()
            if f.is_file() and (f.name in (VIDEO_FILE, STATS_FILE, SUMMARY_FILE)
                                or OVERLAY_PNG.fullmatch(f.name))]


def _input_among_outputs(source: Path, out_dir: Path) -> str:
    """Why ``source`` cannot be read with this ``out_dir`` ("" if it can): the run would delete
    it (an earlier run's overlay.mp4) or write its overlays among its frames."""
    source = source.expanduser().resolve()
    if source == out_dir.expanduser().resolve():
        return f"--input and --output are the same folder ({source}): give another --output"
    if any(source == f.resolve() for f in _earlier_outputs(out_dir)):
        return (f"--input {source} is an earlier run's output in --output {out_dir}, which this run "
                "replaces: copy it elsewhere or give another --output")
    return ""


def _run_ros(args, overrides: dict, src, fps: float, out_dir: Path) -> int:
    """Start the node and the feeder in a namespace of their own, track, tear ROS down."""
    import rclpy
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.node import Node
    from rclpy.parameter import Parameter
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from rclpy.signals import SignalHandlerOptions

    from fastsam2_msgs.msg import TrackerStats
    from fastsam2_msgs.srv import AddObject
    from sensor_msgs.msg import Image

    from .tracker_node import EXECUTOR_THREADS, TrackerNode

    try:
        rclpy.init(args=_rcl_args(args), signal_handler_options=SignalHandlerOptions.NO)
    except RuntimeError as exc:  # rcl's RCLError: a parameter file it rejects beyond the check above
        if not args.params_file:
            raise
        print(f"error: --params-file {args.params_file}: {str(exc).split(', at ')[0]}", file=sys.stderr)
        return 2
    node = feeder = executor = spin_thread = None
    try:
        namespace = demo_namespace()  # another demo in the domain has another
        node = TrackerNode(namespace=namespace,
                           parameter_overrides=[Parameter(k, value=v) for k, v in overrides.items()])
        feeder = Node("fastsam2_demo_feeder", namespace=namespace)
        col = _Collector()
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        pub = feeder.create_publisher(Image, node.resolve_topic_name("image"), reliable)
        feeder.create_subscription(Image, node.resolve_topic_name("overlay"), col.on_overlay, reliable)
        feeder.create_subscription(TrackerStats, node.resolve_topic_name("stats"), col.on_stats, reliable)
        client = feeder.create_client(AddObject, node.resolve_service_name("add_object"))
        executor = MultiThreadedExecutor(num_threads=EXECUTOR_THREADS + 1)  # + the feeder's
        executor.add_node(node)
        executor.add_node(feeder)
        spin_thread = threading.Thread(target=executor.spin, daemon=True)
        spin_thread.start()

        t0 = time.perf_counter()
        if not node.autostart():
            print(f"error: the tracker node could not start: {node.health.fatal}", file=sys.stderr)
            return 2
        print(f"model ready in {time.perf_counter() - t0:.1f} s; {src.count} frame(s) from "
              f"{args.input}; node {node.get_fully_qualified_name()}")
        if not (wait_until(lambda: pub.get_subscription_count() > 0, 10.0)
                and wait_until(lambda: node.count_publishers(node.resolve_topic_name("stats")) > 0, 10.0)
                and client.wait_for_service(timeout_sec=10.0)):
            print("error: the feeder and the tracker node did not discover each other (DDS)", file=sys.stderr)
            return 1
        return _track(args, src, fps, out_dir, _Link(node, pub, client), col)
    finally:  # in order: the worker and node, the executor and its thread, then the context
        with no_interrupts():  # a second Ctrl-C here left the spin thread running: SIGABRT
            if node is not None:
                node.destroy_node()
            if executor is not None:
                executor.shutdown(timeout_sec=5.0)
            if spin_thread is not None:
                spin_thread.join(timeout=5.0)
            if feeder is not None:
                feeder.destroy_node()
            if rclpy.ok():
                rclpy.shutdown()


def _rcl_args(args) -> List[str]:
    """The command line rcl gets: the program and the ROS part only. With none given rclpy takes
    the whole ``sys.argv``, the demo's own options included, and a path or ``--text`` that is
    not UTF-8 (a Latin-1 folder name) ended in a UnicodeEncodeError before any frame."""
    ros_args = ["--ros-args", "--params-file", args.params_file] if args.params_file else []
    return ["fastsam2-demo"] + ros_args


class _Link:
    """The feeder's ends: the tracker node (its health), the image publisher, add_object."""

    def __init__(self, node, pub, client) -> None:
        self.node = node
        self.pub = pub
        self.client = client


def _track(args, src, fps: float, out_dir: Path, link: _Link, col: _Collector) -> int:
    """Feed the frames; however the loop ends (all done, Ctrl-C / SIGTERM, a frame the source
    cannot read, a node that refuses a frame or does not answer) the overlays so far stay and
    stats.jsonl and summary.json are written. Returns the exit status."""
    from ..core.errors import FastSam2Error

    overlays = _OverlayWriter(out_dir, fps, video=not args.no_video)
    index_of: Dict[Tuple[int, int], int] = {}  # stamp key -> frame index, of the frames sent
    stop: Optional[_Stop] = _Stop(1, "the demo failed (see the traceback)")
    t_start = time.perf_counter()
    try:
        _feed(args, src, fps, link, col, overlays, index_of)
        stop = None
    except KeyboardInterrupt:
        stop = _Stop(130)
    except _Stop as exc:
        stop = exc
    except (FastSam2Error, OSError) as exc:  # a frame the source cannot read, an unwritable output
        stop = _Stop(2, _one_line(exc))
    finally:
        with no_interrupts():  # a second Ctrl-C must not lose what the first one kept
            try:
                overlays.write(col.take_overlays(), index_of)  # came, not yet written
            except OSError as exc:  # (the results still say what was done)
                stop = stop or _Stop(2, _one_line(exc))
            overlays.close()
            _write_results(out_dir, overlays, col, index_of, time.perf_counter() - t_start,
                           link.node.health.counts(), stop)
    return stop.code if stop else 0


def _feed(args, src, fps: float, link: _Link, col: _Collector, overlays: _OverlayWriter,
          index_of: Dict[Tuple[int, int], int]) -> None:
    """Publish frame 0 and its prompt, then the other frames (lock-step or ``--rate``), writing
    each frame's overlay as soon as it is final."""
    frames = enumerate(src.iter_headers())
    i, (recorded, rgb) = next(frames)
    key, refused = _publish(i, _image_msg(rgb), recorded, fps, link, index_of)
    _start_object(args, link, col, key, refused)
    _write_overlays(col, overlays, index_of)
    if args.rate:
        _feed_at_rate(args, frames, fps, link, col, overlays, index_of)
        return
    if not args.quiet:
        _print_frame(i, col.stats.get(key))
    for i, (recorded, rgb) in frames:
        key, refused = _publish(i, _image_msg(rgb), recorded, fps, link, index_of)
        _await_outputs(col, key, i, args.frame_timeout, refused)
        _write_overlays(col, overlays, index_of)
        if not args.quiet:
            _print_frame(i, col.stats.get(key))


def _write_overlays(col: _Collector, overlays: _OverlayWriter,
                    index_of: Dict[Tuple[int, int], int]) -> None:
    """Write the overlays that came; a Ctrl-C meanwhile waits until they are written (taken from
    the collector, they were lost: the PNGs and the mp4 ended a frame short)."""
    with interrupts_after():
        overlays.write(col.take_overlays(), index_of)


def _feed_at_rate(args, frames, fps: float, link: _Link, col: _Collector,
                  overlays: _OverlayWriter, index_of: Dict[Tuple[int, int], int]) -> None:
    """Frames 1.. at ``--rate``, at fixed deadlines (the node drops what it cannot keep up with),
    while a thread writes the overlays; then the last frame's outputs and every frame's line."""
    pace = FixedRate(args.rate)
    key = None
    with _BackgroundWrites(col, overlays, index_of) as writes:
        for i, (recorded, rgb) in frames:
            msg = _image_msg(rgb)
            pace.wait()
            key, _ = _publish(i, msg, recorded, fps, link, index_of)
            writes.check()
        if key is not None:  # let the last frame finish, then report what was processed
            col.wait(key, args.frame_timeout)
    _write_overlays(col, overlays, index_of)
    if not args.quiet:
        for k, i in index_of.items():
            _print_frame(i, col.stats.get(k))
    _warn_if_behind(pace, args.rate)


def _image_msg(rgb: np.ndarray):
    from ..image_messages import numpy_to_image

    return numpy_to_image(rgb, "rgb8")


def _publish(i: int, msg, recorded, fps: float, link: _Link,
             index_of: Dict[Tuple[int, int], int]) -> Tuple[Tuple[int, int], Callable[[], str]]:
    """Give frame ``i`` its header (``recorded``: a bag's, else the demo's own: ``_stamp``,
    frame_id ``camera``) and publish it: (its stamp key, the node's refusals from now on). It is
    in ``index_of`` first, so that its overlay, however soon it comes, is taken as this run's."""
    msg.header.stamp = _stamp(i, fps, recorded, index_of)
    msg.header.frame_id = recorded.frame_id if recorded is not None else "camera"
    key = _key(msg.header.stamp)
    refused = _refusal_watch(link.node.health)
    index_of[key] = i
    link.pub.publish(msg)
    return key, refused


class _BackgroundWrites:
    """``--rate``: the overlays are written by a thread of their own as they come. Written by the
    feeder between frames, a frame's PNG and mp4 frames (tens of ms at 960x540) made the next
    frame late. A write that fails (an unwritable output) ends the run at the next frame."""

    def __init__(self, col: _Collector, overlays: _OverlayWriter,
                 index_of: Dict[Tuple[int, int], int]) -> None:
        self._col = col
        self._overlays = overlays
        self._index_of = index_of
        self._done = threading.Event()
        self._error: Optional[Exception] = None
        self._thread = threading.Thread(target=self._run, name="fastsam2_demo_writer", daemon=True)

    def __enter__(self) -> "_BackgroundWrites":
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        with no_interrupts():  # the thread must be done before anyone else writes
            self._done.set()
            self._thread.join()
        if exc_info[0] is None:
            self.check()

    def _run(self) -> None:
        try:
            while not self._done.is_set():
                self._col.wait_overlay(0.1)
                self._overlays.write(self._col.take_overlays(), self._index_of)
        except Exception as exc:  # noqa: BLE001 - raised in the feeder by check()
            self._error = exc

    def check(self) -> None:
        """Raise, in the feeder, what failed in the thread."""
        if self._error is not None:
            raise self._error


def _warn_if_behind(pace: FixedRate, rate: float) -> None:
    """The node saw a slower camera than --rate asked for when the feeder itself was late."""
    if pace.late:
        print(f"warning: the feeder fell behind --rate {rate:g}: {pace.late} frame(s) went out "
              f"more than one period late (reading and converting a frame here takes longer "
              f"than 1/{rate:g} s)", file=sys.stderr)


def _start_object(args, link: _Link, col: _Collector, key, refused: Callable[[], str]) -> None:
    """Frame 0: its outputs, then the prompt (add_object) and frame 0 again with the mask; with
    --auto the node's automatic prompt, reported."""
    _await_outputs(col, key, 0, args.frame_timeout, refused)
    if args.auto:  # frame 0's outputs come after its automatic prompt
        _report_auto_start(col.stats[key], link.node.health.last_error)
        return
    refused = _refusal_watch(link.node.health)
    fut = link.client.call_async(_add_object_request(args))
    if not wait_until(fut.done, args.frame_timeout) or fut.result() is None:
        raise _Stop(1, "add_object did not answer")
    res = fut.result()
    if not res.success:
        raise _Stop(2, f"prompt rejected: {res.message}")
    print(f"prompt: {res.message}")
    _await_outputs(col, key, 0, args.frame_timeout, refused, count=2,  # republished with the mask
                   missing="frame 0 was not republished with the prompt's mask")


def _refusal_watch(health) -> Callable[[], str]:
    """From now on: the node's last error once it counts a refused image or a failed step ('' till
    then). In lock-step only the frame just sent can be the cause."""
    def failures() -> int:
        counts = health.counts()
        return counts["bad_inputs"] + counts["worker_errors"]

    before = failures()
    return lambda: (health.last_error or "see the node's log") if failures() > before else ""


def _await_outputs(col: _Collector, key, index: int, timeout: float, refused: Callable[[], str],
                   count: int = 1, missing: str = "") -> None:
    """Wait for a frame's outputs; a frame the node refuses ends the wait at once, with the
    node's reason, instead of after the whole timeout."""
    if col.wait(key, timeout, count, give_up=refused):
        return
    reason = refused()
    if reason:
        raise _Stop(2, f"the tracker node could not process frame {index}: {reason}")
    raise _Stop(1, missing or f"no output for frame {index} within {timeout} s")


def _write_results(out_dir: Path, overlays: _OverlayWriter, col: _Collector,
                   index_of: Dict[Tuple[int, int], int], wall: float, counts: dict,
                   stop: Optional[_Stop]) -> None:
    """stats.jsonl and summary.json of the frames processed so far (summary.json says whether
    the run was interrupted or its error), then the summary lines and how the run ended."""
    from .messages import msg_to_dict

    rows = [{"frame": i, **msg_to_dict(col.stats[k])} for k, i in index_of.items() if k in col.stats]
    with open(out_dir / STATS_FILE, "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    summary = _summary(rows, len(index_of), wall, counts)
    summary["interrupted"] = bool(stop and stop.interrupted)
    summary["error"] = stop.message if stop and not stop.interrupted else None
    (out_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2))
    if summary["error"]:
        print(f"error: {summary['error']}", file=sys.stderr)
    _print_summary(summary, out_dir, overlays)
    if summary["interrupted"]:
        print(f"interrupted after {len(index_of)} frame(s) sent: the outputs so far are in "
              f"{out_dir} (summary.json: \"interrupted\": true)", file=sys.stderr)


def _parameter_overrides(args) -> dict:
    """Node parameters from the command line."""
    # the demo's feeder publishes raw images (a robot's params file may choose compressed)
    # and waits for each frame's overlay and stats, and for frame 0 again after the prompt;
    # only --auto starts an object by itself (the demo's add_object starts object 1 otherwise)
    overrides = {"publish_overlay": True, "auto_start": False, "image_transport": "raw",
                 "publish_stats": True, "publish_on_prompt": True, "overlay_rate_hz": 0.0,
                 "auto_prompt_on_start": bool(args.auto)}
    if args.random_weights:  # a smoke test: a params file's checkpoint must not load instead
        overrides["allow_random_weights"] = True
        overrides["checkpoint"] = ""
    if args.checkpoint:
        overrides["checkpoint"] = str(Path(args.checkpoint).expanduser())
    for name, val in (("model_cfg", args.model_cfg), ("image_size", args.image_size),
                      ("keep_ratio", args.keep_ratio), ("device", args.device),
                      ("clip_weights", args.clip_weights or None),
                      ("auto_caption_model", args.caption_model)):
        if val is not None:
            overrides[name] = val
    return overrides


def _add_object_request(args):
    """add_object for object 1 with the command line's prompt."""
    from fastsam2_msgs.srv import AddObject

    req = AddObject.Request()
    req.prompt = _prompt_msg(args)
    return req


def _prompt_msg(args):
    from fastsam2_msgs.msg import Prompt
    from geometry_msgs.msg import Point

    m = Prompt()
    m.object_id = 1
    m.new_object = True
    if args.text:
        m.text = args.text
    pts = [(x, y, 1) for x, y in args.click] + [(x, y, 0) for x, y in args.neg_click]
    m.points = [Point(x=float(x), y=float(y), z=0.0) for x, y, _ in pts]
    m.labels = [int(lab) for _, _, lab in pts]
    if args.box:
        m.has_box = True
        m.box = [float(v) for v in args.box]
    return m


def _report_auto_start(st, last_error: str) -> None:
    """Print what the automatic prompt of frame 0 started (_Stop: it started nothing)."""
    if not len(st.auto_started_ids):
        reason = last_error or "see the log"
        raise _Stop(2, f"the automatic prompt started no object on frame 0: {reason}")
    phrases = dict(zip(st.object_ids, st.auto_phrases))
    for obj_id in st.auto_started_ids:
        phrase = f'"{phrases[obj_id]}"' if phrases[obj_id] else "without a phrase (phrase-free)"
        print(f"automatic prompt: object {obj_id} {phrase}; proposals {st.auto_proposals_ms:.0f} "
              f"ms, caption {st.auto_caption_ms:.0f} ms, refinement {st.auto_refinement_ms:.0f} ms")


def _print_frame(i: int, st) -> None:
    if st is None:
        print(f"frame {i:5d}: dropped (a newer frame arrived before inference was free)")
        return
    kept = "/".join(str(int(v)) for v in st.tokens_kept) or "-"
    auto = f" auto={list(st.auto_prompted_ids)}" if len(st.auto_prompted_ids) else ""
    phrases = dict(zip(st.object_ids, st.auto_phrases))
    if len(st.auto_started_ids):
        auto += " phrases " + ", ".join(f"{i}:{phrases[i]!r}" for i in st.auto_started_ids)
    print(f"frame {i:5d}: total {st.total_ms:8.1f} ms (enc {st.encoder_ms:.0f}, mem-attn "
          f"{st.memory_attention_ms:.0f}, dec {st.decoder_ms:.0f}, mem-enc {st.memory_encoder_ms:.0f}, "
          f"router {st.router_ms:.0f})  tokens {kept}/{st.tokens_total}  bank {st.bank_frames} fr "
          f"{st.bank_bytes / 2**20:.1f} MiB  objects {list(st.object_ids)}{auto}")


def _summary(rows: List[dict], sent: int, wall: float, counts: dict) -> dict:
    """Latency and tokens kept are means over the tracked frames: frame 0 is prompted (it runs
    dense and its time includes the prompt), so it is left out as fastsam2-eval leaves prompted
    frames out; a one-frame run has only frame 0 to report."""
    with_objects = [r for r in rows if r["object_ids"]]  # (a refused prompt tracked nothing)
    tracked = [r for r in with_objects if r["frame"] > 0] or with_objects
    totals = [r["total_ms"] for r in tracked]
    kept = [sum(r["tokens_kept"]) / len(r["tokens_kept"]) for r in tracked if r["tokens_kept"]]
    return {
        "frames_sent": sent, "frames_processed": counts.get("processed", 0),
        "frames_dropped": counts.get("dropped", 0), "wall_s": round(wall, 2),
        "latency_ms_mean": round(statistics.fmean(totals), 1) if totals else 0.0,
        "latency_ms_median": round(statistics.median(totals), 1) if totals else 0.0,
        "fps_tracker": round(1000.0 / statistics.fmean(totals), 2) if totals and statistics.fmean(totals) > 0 else 0.0,
        "tokens_kept_mean": round(statistics.fmean(kept), 1) if kept else 0.0,
        "tokens_total": rows[-1]["tokens_total"] if rows else 0,
        "keep_ratio": round(rows[-1]["keep_ratio"], 4) if rows else 0.0,  # a float32 field
        "bank_frames_max": max((r["bank_frames"] for r in rows), default=0),
        "bank_bytes_max": max((r["bank_bytes"] for r in rows), default=0),
        "objects": rows[-1]["object_ids"] if rows else [],
        "auto_prompted": sorted({i for r in rows for i in r["auto_prompted_ids"]}),
        "auto_prompt": _auto_prompt_summary(rows),
        "device": rows[-1]["device"] if rows else "",
    }


def _auto_prompt_summary(rows: List[dict]) -> dict:
    """Objects started by the automatic prompt with their phrases, and the stage times (ms) of
    the frames it ran on."""
    from ..core.auto_prompt import AUTO_STAGES

    phrases = {}
    runs = []
    for r in rows:
        phrases.update({str(i): p for i, p in zip(r["object_ids"], r["auto_phrases"])
                        if i in r["auto_started_ids"]})
        times = {s: r[f"auto_{s}_ms"] for s in AUTO_STAGES}
        if any(times.values()):
            runs.append({"frame": r["frame"],
                         "stage_ms": {s: round(v, 1) for s, v in times.items()}})
    return {"phrases": phrases, "runs": runs}


def _print_summary(s: dict, out_dir: Path, overlays: _OverlayWriter) -> None:
    auto = s["auto_prompt"]
    print("summary: "
          f"{s['frames_processed']} processed / {s['frames_sent']} sent ({s['frames_dropped']} dropped) "
          f"in {s['wall_s']} s; tracker latency mean {s['latency_ms_mean']} ms, median "
          f"{s['latency_ms_median']} ms ({s['fps_tracker']} FPS); tokens kept {s['tokens_kept_mean']}/"
          f"{s['tokens_total']} (keep_ratio {s['keep_ratio']}); memory bank max {s['bank_frames_max']} "
          f"frames, {s['bank_bytes_max'] / 2**20:.2f} MiB; objects {s['objects']}"
          + (f" (started without a click: {s['auto_prompted']})" if s["auto_prompted"] else "")
          + (f"; automatic prompt phrases {auto['phrases']}, stage ms "
             f"{[run['stage_ms'] for run in auto['runs']]}" if auto["runs"] else "")
          + f"; device {s['device']}")
    repeated = (f", {overlays.repeated} of them the previous overlay again for a dropped frame"
                if overlays.repeated else "")
    print(f"wrote {overlays.pngs} overlay PNG(s)"
          + (f", overlay.mp4 ({overlays.video_frames} frames{repeated})" if overlays.video_frames else "")
          + f", stats.jsonl and summary.json to {out_dir}")


if __name__ == "__main__":
    sys.exit(main())

"""``fastsam2-demo``: run the real tracker node on a video or a folder of frames, end to end.

The lifecycle node (``TrackerNode``) and a feeder node run in-process on a MultiThreadedExecutor;
everything between them goes over ROS topics and services (DDS), exactly as with a camera:

1. the feeder publishes frame 0 on ``image`` and waits for the node's outputs;
2. it sends the prompt (``--text`` / ``--click`` / ``--box``) with the ``add_object`` service,
   which applies it on frame 0 and republishes frame 0's outputs; with ``--auto`` there is no
   prompt: the node starts with ``auto_prompt_on_start`` and frame 0 is auto-prompted (proposal
   -> caption -> phrase) before its outputs come, whose stats carry the three stage times;
3. it publishes the remaining frames one at a time (lock-step, so every frame is processed;
   ``--rate`` publishes at a fixed rate instead, and the node drops what it cannot keep up with);
4. it writes the ``overlay`` images as PNG files and an mp4 to ``--output``, the
   ``stats`` messages as JSON lines, and prints per-frame and summary statistics.

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
import signal
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np


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
                   help="random weights (smoke test: the masks are meaningless)")
    p.add_argument("--clip-weights", default="", help="open_clip weights for text relevance")
    p.add_argument("--model-cfg", default=None, help="tiny|small|base_plus|large or sam2 config name")
    p.add_argument("--output", default="fastsam2_demo_out",
                   help="output folder (created; an earlier run's overlay_*.png, overlay.mp4, "
                   "stats.jsonl and summary.json in it are removed first)")
    p.add_argument("--max-frames", type=int, default=None, help="process at most N frames")
    p.add_argument("--image-size", type=int, default=None, help="SAM 2 input side (default 1024)")
    p.add_argument("--keep-ratio", type=float, default=None, help="fraction of tokens kept (0, 1]")
    p.add_argument("--device", default=None, help="auto | cpu | cuda | cuda:N")
    p.add_argument("--params-file", default=None,
                   help="ROS parameter file (config/tracker.yaml layout: a '/**/fastsam2_tracker: "
                   "ros__parameters:' section)")
    p.add_argument("--fps", type=float, default=None,
                   help=f"frame rate of the mp4 and of the frames' stamps, in [{FPS_RANGE[0]:g}, "
                   f"{FPS_RANGE[1]:g}] (default: the video's, else 10)")
    p.add_argument("--rate", type=float, default=None,
                   help="publish frames at this rate (Hz, > 0) instead of lock-step; slow inference "
                   "drops frames")
    p.add_argument("--topic", default=None, help="image topic inside a rosbag input")
    p.add_argument("--frame-timeout", type=float, default=300.0,
                   help="seconds to wait for one frame's outputs, > 0")
    p.add_argument("--no-video", action="store_true", help="write PNG frames only")
    p.add_argument("--quiet", action="store_true", help="no per-frame lines")
    return p


#: Frame rates the frames' stamps can carry (whole nanoseconds apart, 32-bit seconds).
FPS_RANGE = (1e-3, 1e6)
#: What the demo writes into --output; a run removes these first (an earlier run's leftovers).
OUTPUT_GLOBS = ("overlay_*.png", "overlay.mp4", "stats.jsonl", "summary.json")


def _stamp(i: int, fps: float):
    from builtin_interfaces.msg import Time

    ns = int(round(i * 1e9 / fps))
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def _key(stamp) -> Tuple[int, int]:
    return int(stamp.sec), int(stamp.nanosec)


class _Collector:
    """Latest overlay/stats per input stamp (a prompt republishes a frame: the newer one wins)."""

    def __init__(self) -> None:
        self.cv = threading.Condition()
        self.overlay: Dict[Tuple[int, int], object] = {}
        self.stats: Dict[Tuple[int, int], object] = {}
        self.stats_count: Dict[Tuple[int, int], int] = {}

    def on_overlay(self, msg) -> None:
        with self.cv:
            self.overlay[_key(msg.header.stamp)] = msg
            self.cv.notify_all()

    def on_stats(self, msg) -> None:
        with self.cv:
            k = _key(msg.header.stamp)
            self.stats[k] = msg
            self.stats_count[k] = self.stats_count.get(k, 0) + 1
            self.cv.notify_all()

    def wait(self, key, timeout: float, min_stats: int = 1) -> bool:
        deadline = time.monotonic() + timeout
        with self.cv:
            while not (key in self.overlay and self.stats_count.get(key, 0) >= min_stats):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cv.wait(min(left, 0.5))
            return True


def wait_until(cond, timeout: float, step: float = 0.02) -> bool:
    """Poll ``cond`` until it holds or ``timeout`` seconds pass; its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(step)
    return cond()


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Every bad input ends with one ``error:`` line and exit status 2 (1: the node gave no
    output in time), never a traceback."""
    from ..core.errors import FastSam2Error

    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    except (FastSam2Error, OSError) as exc:  # bad frames, unwritable output, ...
        print("error: " + " ".join(str(exc).split()), file=sys.stderr)  # one line (YAML errors have several)
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
    if args.fps is not None and not FPS_RANGE[0] <= args.fps <= FPS_RANGE[1]:
        print(f"error: --fps must be in [{FPS_RANGE[0]:g}, {FPS_RANGE[1]:g}] (the frames' stamps), "
              f"got {args.fps}", file=sys.stderr)
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

    from ..core.config import TrackerConfig, load_ros_params
    from ..frame_sources import open_frames

    overrides = _parameter_overrides(args)
    # the tracker parameters are checked before ROS starts (same rules as the node's configure)
    TrackerConfig.from_mapping({k: v for k, v in overrides.items()
                                if k in TrackerConfig.field_names()})
    if args.params_file:
        load_ros_params(args.params_file)  # exists, parses, has the node's section: before rcl
    out_dir = Path(args.output)
    if out_dir.exists() and not out_dir.is_dir():
        print(f"error: --output {out_dir} exists and is not a folder", file=sys.stderr)
        return 2
    src = open_frames(args.input, topic=args.topic, max_frames=args.max_frames)
    fps = float(args.fps or getattr(src, "fps", None) or 10.0)
    out_dir.mkdir(parents=True, exist_ok=True)
    for pattern in OUTPUT_GLOBS:  # a shorter run must not leave the previous run's frames
        for old in out_dir.glob(pattern):
            old.unlink()

    import rclpy
    from geometry_msgs.msg import Point
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.node import Node
    from rclpy.parameter import Parameter
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from rclpy.signals import SignalHandlerOptions

    from fastsam2_msgs.msg import Prompt, TrackerStats
    from fastsam2_msgs.srv import AddObject
    from sensor_msgs.msg import Image

    from ..image_messages import image_to_numpy, numpy_to_image
    from .messages import msg_to_dict
    from .tracker_node import EXECUTOR_THREADS, TrackerNode

    ros_args = ["--ros-args", "--params-file", args.params_file] if args.params_file else None
    try:
        rclpy.init(args=ros_args, signal_handler_options=SignalHandlerOptions.NO)
    except RuntimeError as exc:  # rcl's RCLError: a parameter file it rejects beyond the check above
        if not args.params_file:
            raise
        print(f"error: --params-file {args.params_file}: {str(exc).split(', at ')[0]}", file=sys.stderr)
        return 2
    node = feeder = executor = spin_thread = None
    try:
        node = TrackerNode(parameter_overrides=[Parameter(k, value=v) for k, v in overrides.items()])
        feeder = Node("fastsam2_demo_feeder")
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
        print(f"model ready in {time.perf_counter() - t0:.1f} s; {src.count} frame(s) from {args.input}")
        if not (wait_until(lambda: pub.get_subscription_count() > 0, 10.0)
                and wait_until(lambda: node.count_publishers(node.resolve_topic_name("stats")) > 0, 10.0)
                and client.wait_for_service(timeout_sec=10.0)):
            print("error: the feeder and the tracker node did not discover each other (DDS)", file=sys.stderr)
            return 1

        stamps: List[Tuple[int, int]] = []
        per_frame: List[dict] = []
        t_start = time.perf_counter()
        sent = 0
        for i, rgb in enumerate(src):
            msg = numpy_to_image(rgb, "rgb8")
            msg.header.stamp = _stamp(i, fps)
            msg.header.frame_id = "camera"
            key = _key(msg.header.stamp)
            stamps.append(key)
            pub.publish(msg)
            sent += 1
            if i == 0 and not col.wait(key, args.frame_timeout):
                print("error: no output for frame 0", file=sys.stderr)
                return 1
            if i == 0 and args.auto:  # frame 0's outputs come after its automatic prompt
                if not _report_auto_start(col.stats[key], node.health.last_error):
                    return 2
            elif i == 0:
                req = AddObject.Request()
                req.prompt = _prompt_msg(Prompt, Point, args)
                fut = client.call_async(req)
                if not wait_until(fut.done, args.frame_timeout) or fut.result() is None:
                    print("error: add_object did not answer", file=sys.stderr)
                    return 1
                res = fut.result()
                if not res.success:
                    print(f"error: prompt rejected: {res.message}", file=sys.stderr)
                    return 2
                print(f"prompt: {res.message}")
                if not col.wait(key, args.frame_timeout, min_stats=2):  # republished with the mask
                    print("error: frame 0 was not republished with the prompt's mask", file=sys.stderr)
                    return 1
            elif args.rate:
                time.sleep(max(0.0, 1.0 / args.rate))
            elif not col.wait(key, args.frame_timeout):
                print(f"error: no output for frame {i} within {args.frame_timeout} s", file=sys.stderr)
                return 1
            if not args.rate and not args.quiet:
                _print_frame(i, col.stats.get(key))
        if args.rate:  # let the last frame finish, then report what was processed
            col.wait(stamps[-1], args.frame_timeout)
            if not args.quiet:
                for i, key in enumerate(stamps):
                    _print_frame(i, col.stats.get(key))
        wall = time.perf_counter() - t_start

        written = 0
        video_frames = 0
        writer = None
        for i, key in enumerate(stamps):
            ov = col.overlay.get(key)
            st = col.stats.get(key)
            if st is not None:
                per_frame.append({"frame": i, **msg_to_dict(st)})
            if ov is None:
                continue
            bgr = np.ascontiguousarray(image_to_numpy(ov)[:, :, ::-1])
            import cv2

            cv2.imwrite(str(out_dir / f"overlay_{i:05d}.png"), bgr)
            written += 1
            if not args.no_video:
                if writer is None:
                    writer = cv2.VideoWriter(str(out_dir / "overlay.mp4"),
                                             cv2.VideoWriter_fourcc(*"mp4v"), fps,
                                             (bgr.shape[1], bgr.shape[0]))
                    if not writer.isOpened():
                        print("warning: cv2.VideoWriter cannot write mp4 here; PNG frames only",
                              file=sys.stderr)
                        writer = False
                if writer:
                    writer.write(bgr)
                    video_frames += 1
        if writer:
            writer.release()
        with open(out_dir / "stats.jsonl", "w") as f:
            for row in per_frame:
                f.write(json.dumps(row) + "\n")
        summary = _summary(per_frame, sent, wall, node.health.counts())
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        _print_summary(summary, out_dir, written, video_frames)
        return 0
    finally:  # in order: the worker and node, the executor and its thread, then the context
        with _no_interrupts():  # a second Ctrl-C here left the spin thread running: SIGABRT
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


@contextlib.contextmanager
def _no_interrupts():
    """SIGINT ignored while ROS is torn down (main thread only; restored after)."""
    try:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread: nothing to guard
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _parameter_overrides(args) -> dict:
    """Node parameters from the command line."""
    # the demo's feeder publishes raw images (a robot's params file may choose compressed)
    # and waits for each frame's overlay and stats, and for frame 0 again after the prompt
    overrides = {"publish_overlay": True, "auto_start": False, "image_transport": "raw",
                 "publish_stats": True, "publish_on_prompt": True, "overlay_rate_hz": 0.0}
    if args.auto:
        overrides["auto_prompt_on_start"] = True
    if args.random_weights:
        overrides["allow_random_weights"] = True
    if args.checkpoint:
        overrides["checkpoint"] = str(Path(args.checkpoint).expanduser())
    for name, val in (("model_cfg", args.model_cfg), ("image_size", args.image_size),
                      ("keep_ratio", args.keep_ratio), ("device", args.device),
                      ("clip_weights", args.clip_weights or None),
                      ("auto_caption_model", args.caption_model)):
        if val is not None:
            overrides[name] = val
    return overrides


def _prompt_msg(Prompt, Point, args):
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


def _report_auto_start(st, last_error: str) -> bool:
    """Print what the automatic prompt of frame 0 started (False: it started nothing)."""
    if not len(st.auto_started_ids):
        reason = last_error or "see the log"
        print(f"error: the automatic prompt started no object on frame 0: {reason}", file=sys.stderr)
        return False
    phrases = dict(zip(st.object_ids, st.auto_phrases))
    for obj_id in st.auto_started_ids:
        phrase = f'"{phrases[obj_id]}"' if phrases[obj_id] else "without a phrase (phrase-free)"
        print(f"automatic prompt: object {obj_id} {phrase}; proposals {st.auto_proposals_ms:.0f} "
              f"ms, caption {st.auto_caption_ms:.0f} ms, refinement {st.auto_refinement_ms:.0f} ms")
    return True


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
    tracked = [r for r in rows if r["frame"] > 0] or rows
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


def _print_summary(s: dict, out_dir: Path, written: int, video_frames: int) -> None:
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
    print(f"wrote {written} overlay PNG(s)"
          + (f", overlay.mp4 ({video_frames} frames)" if video_frames else "")
          + f", stats.jsonl and summary.json to {out_dir}")


if __name__ == "__main__":
    sys.exit(main())

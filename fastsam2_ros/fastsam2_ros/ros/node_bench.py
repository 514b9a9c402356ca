"""``fastsam2-bench --node``: what the tracker node itself costs per frame, measured through ROS.

The real lifecycle node runs in a process of its own (``tracker_node.main``, what ``ros2 run``
starts); this process is a plain rclpy probe on loopback. The probe publishes rgb8 frames on
``image`` (reliable) and records when each output of each frame arrives. Per input size and
output set (``mask``; ``mask+labels+objects``; ``+overlay``; ``+overlay@10Hz``, the overlay at
``overlay_rate_hz: 10``) it reports:

* **latency**, frames sent one at a time: publish -> ``mask``, and publish -> the frame's last
  output (``stats``, which the node publishes after every other output of the frame); median and
  p95;
* the **tracker's time** (``TrackerStats.total_ms``) and the **node's own cost** = latency minus
  the tracker's time, for the mask and for the complete output set, with the node's own account
  of it (``decode_ms``, ``publish_ms``, ``overlay_ms`` of the stats, where the node reports them);
* the **sustained output rate** at a 30 Hz input (``--rate``): outputs per second, frames that got
  no output, latency under that load, and whether the node followed the camera (every frame
  out, p95 latency within one input period of the one-at-a-time p95).

Both directions of the loopback transport are inside these numbers, as for any ROS consumer.

The tracker is a **stand-in of fixed cost** by default (``--tracker standin``): it waits
``--cost-ms`` with the GIL released, as the host does while the GPU runs the captured step, and
returns what the CUDA fast path returns, one packed bit image per frame (``--objects`` ellipses
covering ``--object-area`` of the frame). ``--tracker real`` runs SAM 2 (``--model``, random
weights, ``--image-size``) and prompts one object in the middle of the first frame of each size.
``--tracker floor`` runs no tracker node at all but :func:`serve_floor`, a plain rclpy node that
answers with outputs of the same types and sizes: the transport floor under the node's cost.

Transport: Fast DDS's defaults, or ``--fastdds-profile FILE`` for both processes (e.g.
``config/fastdds_large_frames.xml``, shared memory for large frames). The probe keeps freed
image buffers (:mod:`.process_memory`, unless ``FASTSAM2_KEEP_FREED_MEMORY=0``), so that its own
page faults do not count as the node's cost; the node process is left as ``tracker_node.main``
sets it up. JSON with every sample's summary goes to ``--json`` (the repository keeps them in
``benchmarks/``). Ctrl-C or SIGTERM stops the node process and writes the points measured so far
(``"interrupted": true``), exit status 130; the node process also ends when this one is killed
(:func:`.cli_process.exit_with_parent`).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..core.config import PARAMETER_RANGES, Range
from ..core.errors import InputError
from ..core.prompts import MAX_IMAGE_SIDE, MIN_IMAGE_SIDE, validate_image
from ..core.stats import BitMasks, FrameResult, FrameStats
from .cli_process import (exit_with_parent, first_signal_only, no_interrupts, printable_output,
                          sigterm_as_ctrl_c)
from .demo import wait_until
from .messages import NODE_STAGES
from .pacing import FixedRate
from .process_memory import keep_freed_memory

SCHEMA_VERSION = 1
SIZES: Tuple[Tuple[int, int], ...] = ((640, 480), (1280, 720), (1920, 1080))
#: output set -> the node's live output parameters (stats are always on: they carry total_ms)
OUTPUT_SETS: Dict[str, Dict[str, bool]] = {
    "mask": dict(publish_mask=True, publish_labels=False, publish_objects=False,
                 publish_detections=False, publish_overlay=False),
    "mask+labels+objects": dict(publish_mask=True, publish_labels=True, publish_objects=True,
                                publish_detections=True, publish_overlay=False),
    "+overlay": dict(publish_mask=True, publish_labels=True, publish_objects=True,
                     publish_detections=True, publish_overlay=True, overlay_rate_hz=0.0),
    "+overlay@10Hz": dict(publish_mask=True, publish_labels=True, publish_objects=True,
                          publish_detections=True, publish_overlay=True, overlay_rate_hz=10.0),
}
#: the topics whose arrival completes a frame, per output set (stats come last; with the overlay
#: at its own rate, a frame without one is complete at its stats)
SET_TOPICS = {"mask": ("mask", "stats"), "mask+labels+objects": ("mask", "labels", "objects", "stats"),
              "+overlay": ("mask", "labels", "objects", "overlay", "stats"),
              "+overlay@10Hz": ("mask", "labels", "objects", "stats")}
#: the node's own account of its cost (TrackerStats fields, where the node has them)
NODE_STAT_FIELDS = tuple(f"{stage}_ms" for stage in NODE_STAGES)
NAMESPACE = "/fastsam2_bench"
#: frames without any answer after which a point is given up (the node is not tracking: each
#: further frame would only wait out its timeout)
SILENT_FRAMES_BEFORE_GIVING_UP = 3
NODE_NAME = "fastsam2_tracker"


# ============================================================================ the stand-in tracker
class FixedCostTracker:
    """Benchmark-only stand-in of ``StreamingTracker``: objects tracked from the start, a fixed
    cost per frame spent waiting (GIL released), packed bit masks like the CUDA fast path."""

    def __init__(self, cfg, cost_ms: float, objects: int, object_area: float) -> None:
        self.cfg = cfg
        self.device = "standin"
        self.cost_s = float(cost_ms) / 1e3
        self.object_ids = list(range(1, int(objects) + 1))
        self.object_area = float(object_area)
        self.keep_ratio = float(cfg.keep_ratio)  # the node's worker follows the parameter
        self.frame_index = -1
        self._bits: Dict[Tuple[int, int], np.ndarray] = {}

    def _bits_for(self, h: int, w: int) -> np.ndarray:
        """Packed bits of the objects (ellipses side by side, ``object_area`` of the frame)."""
        bits = self._bits.get((h, w))
        if bits is None:
            n = len(self.object_ids)
            yy, xx = np.mgrid[:h, :w].astype(np.float32)
            r = math.sqrt(self.object_area / n / math.pi)  # of the frame's width and height
            bits = self._bits[(h, w)] = BitMasks.pack({
                obj_id: ((xx - (i + 1) * w / (n + 1)) / (r * w)) ** 2 + ((yy - h / 2) / (r * h)) ** 2 <= 1.0
                for i, obj_id in enumerate(self.object_ids)}).bits
        return bits

    def track(self, rgb: np.ndarray) -> FrameResult:
        t0 = time.perf_counter()
        rgb = validate_image(rgb)
        self.frame_index += 1
        result = self.current_result(rgb.shape[:2])  # (its bits' copy: the real tracker's host copy)
        left = self.cost_s - (time.perf_counter() - t0)
        if left > 0:
            time.sleep(left)
        result.stats.stage_ms["total"] = (time.perf_counter() - t0) * 1e3
        return result

    def current_result(self, image_shape=None) -> FrameResult:
        """The objects on a frame of ``image_shape`` again, at no cost (after a reset)."""
        ids = list(self.object_ids)
        stats = FrameStats(frame_index=self.frame_index, object_ids=ids, device=self.device,
                           step_mode="standin", keep_ratio=1.0)
        bits = self._bits_for(*tuple(image_shape)[:2]).copy()
        return FrameResult(frame_index=self.frame_index, masks=BitMasks(bits, ids),
                           scores={i: 5.0 for i in ids}, stats=stats)

    def add_prompt(self, *args, **kwargs):
        raise InputError("the benchmark's stand-in tracker takes no prompts")

    def remove_object(self, obj_id: int) -> None:
        raise InputError("the benchmark's stand-in tracker keeps its objects")

    def reset(self) -> None:
        self.frame_index = -1

    def set_keep_ratio(self, keep_ratio: float) -> None:
        self.keep_ratio = float(keep_ratio)  # (costs the same at any ratio)

    def release(self) -> None:
        self._bits.clear()


# ============================================================================ the node process
def serve_node(argv: Sequence[str]) -> int:
    """The node process: ``tracker_node.main`` with the stand-in tracker (or the real one)."""
    p = argparse.ArgumentParser(prog="node_bench --serve-node")
    p.add_argument("--tracker", choices=("standin", "real"), default="standin")
    p.add_argument("--cost-ms", type=float, default=10.0)
    p.add_argument("--objects", type=int, default=1)
    p.add_argument("--object-area", type=float, default=0.2)
    p.add_argument("--parent-pid", type=int, required=True)
    args, ros_args = p.parse_known_args(argv)
    exit_with_parent(args.parent_pid)
    from .tracker_node import main

    factory = None
    if args.tracker == "standin":
        def factory(cfg):
            return FixedCostTracker(cfg, args.cost_ms, args.objects, args.object_area)
    code = main(["node_bench"] + list(ros_args), tracker_factory=factory)
    sys.stdout.flush()
    os._exit(code)


def serve_floor(argv: Sequence[str]) -> int:
    """The transport floor: a plain rclpy node, in place of the tracker node, that answers every
    frame with outputs of the same types and sizes (built once, only the header changes), doing
    no work at all. Latency through it is what loopback transport and rclpy cost by themselves."""
    p = argparse.ArgumentParser(prog="node_bench --serve-floor")
    p.add_argument("--parent-pid", type=int, required=True)
    args, ros_args = p.parse_known_args(argv)
    exit_with_parent(args.parent_pid)
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from rclpy.signals import SignalHandlerOptions
    from sensor_msgs.msg import Image

    from fastsam2_msgs.msg import TrackedObject, TrackedObjectArray, TrackerStats

    from ..image_messages import empty_image
    from .qos import reliable

    keep_freed_memory()  # as tracker_node.main does
    # our handler for SIGINT and SIGTERM alike: rclpy's own SIGTERM handler shut the context down
    # under the spinner, and the main thread waited for a stop that never came
    rclpy.init(args=["node_bench"] + list(ros_args), signal_handler_options=SignalHandlerOptions.NO)
    node = Node(NODE_NAME, namespace=NAMESPACE)
    for name, value in {**OUTPUT_SETS["+overlay@10Hz"], "publish_stats": True}.items():
        node.declare_parameter(name, value)
    pubs = {t: node.create_publisher(typ, t, reliable(10)) for t, typ in (
        ("mask", Image), ("labels", Image), ("overlay", Image), ("objects", TrackedObjectArray),
        ("stats", TrackerStats))}
    built: Dict[Tuple[int, int], dict] = {}
    last_overlay = [float("-inf")]

    def on_image(msg) -> None:
        size = (int(msg.height), int(msg.width))
        out = built.get(size)
        if out is None:
            objects = TrackedObjectArray()
            objects.objects = [TrackedObject(id=1, visible=True)]
            out = built[size] = {"mask": empty_image(*size, "mono8")[0],
                                 "labels": empty_image(*size, "mono16")[0],
                                 "overlay": empty_image(*size, "rgb8")[0],
                                 "objects": objects, "stats": TrackerStats()}
        on = {p.name: p.value for p in node.get_parameters(list(OUTPUT_SETS["+overlay@10Hz"]))}
        rate = float(on["overlay_rate_hz"])
        now = time.perf_counter()
        overlay = on["publish_overlay"] and (rate <= 0 or now - last_overlay[0] >= 1.0 / rate)
        if overlay:
            last_overlay[0] = now
        for topic, enabled in (("mask", on["publish_mask"]), ("labels", on["publish_labels"]),
                               ("objects", on["publish_objects"]), ("overlay", overlay),
                               ("stats", True)):
            if enabled:
                out[topic].header = msg.header
                pubs[topic].publish(out[topic])

    node.create_subscription(Image, "image", on_image, reliable(5))
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    stop = threading.Event()
    on_first_signal = first_signal_only(lambda *_: stop.set())
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_first_signal)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    stop.wait()
    executor.shutdown(timeout_sec=2.0)
    sys.stdout.flush()
    os._exit(0)


def node_command(args, python: str = sys.executable) -> List[str]:
    params = dict(image_reliability="reliable", image_depth=5, output_qos_depth=10,
                  diagnostics_period=1.0, publish_stats=True, max_rate_hz=0.0)
    if args.tracker == "real":
        params.update(model_cfg=args.model, allow_random_weights=True, image_size=args.image_size,
                      keep_ratio=args.keep_ratio, device=args.device)
    ros = ["--ros-args", "-r", f"__ns:={NAMESPACE}", "--log-level", "warn"]
    parent = ["--parent-pid", str(os.getpid())]  # the node process ends with this one
    if args.tracker == "floor":
        return [python, "-m", "fastsam2_ros.ros.node_bench", "--serve-floor"] + parent + ros
    for k, v in params.items():
        ros += ["-p", f"{k}:={str(v).lower() if isinstance(v, bool) else v}"]
    return [python, "-m", "fastsam2_ros.ros.node_bench", "--serve-node", "--tracker", args.tracker,
            "--cost-ms", str(args.cost_ms), "--objects", str(args.objects),
            "--object-area", str(args.object_area)] + parent + ros


# ============================================================================ the probe
class Probe:
    """rclpy node that publishes frames and timestamps every output's arrival per stamp."""

    def __init__(self, domain_id: Optional[int]) -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.node import Node
        try:
            from rclpy.parameter_client import AsyncParameterClient
        except ImportError as exc:  # Humble's rclpy has no parameter client
            raise RuntimeError("fastsam2-bench --node needs rclpy of ROS 2 Iron or newer "
                               "(rclpy.parameter_client)") from exc
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image

        from fastsam2_msgs.msg import TrackedObjectArray, TrackerStats

        self.ctx = rclpy.Context()
        # the program name only: without args rclpy takes sys.argv, whose --json or --label
        # that is not UTF-8 ended in a UnicodeEncodeError
        rclpy.init(args=["fastsam2-bench"], context=self.ctx, domain_id=domain_id)
        self.node = Node("fastsam2_bench_probe", context=self.ctx)
        qos = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        self.image = self.node.create_publisher(Image, f"{NAMESPACE}/image",
                                                QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE))
        self.lock = threading.Lock()
        self.arrivals: Dict[str, Dict[Tuple[int, int], float]] = {}
        self.stats: Dict[Tuple[int, int], dict] = {}
        self.cond = threading.Condition(self.lock)
        for topic, typ in (("mask", Image), ("labels", Image), ("overlay", Image),
                           ("objects", TrackedObjectArray), ("stats", TrackerStats)):
            self.arrivals[topic] = {}
            self.node.create_subscription(typ, f"{NAMESPACE}/{topic}", self._on(topic), qos)
        self.params = AsyncParameterClient(self.node, f"{NAMESPACE}/{NODE_NAME}")
        self.executor = SingleThreadedExecutor(context=self.ctx)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()
        self.sec = 0

    def _on(self, topic: str):
        def cb(msg) -> None:
            t = time.perf_counter()
            key = (msg.header.stamp.sec, msg.header.stamp.nanosec)
            with self.cond:
                self.arrivals[topic].setdefault(key, t)
                if topic == "stats":
                    self.stats[key] = {f: float(getattr(msg, f)) for f in
                                       ("total_ms", "node_latency_ms") + NODE_STAT_FIELDS
                                       if hasattr(msg, f)}
                    self.stats[key]["dropped_frames"] = int(msg.dropped_frames)
                self.cond.notify_all()
        return cb

    def wait_node(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if (self.image.get_subscription_count() > 0 and self.params.services_are_ready()
                    and all(self.node.count_publishers(f"{NAMESPACE}/{t}") > 0
                            for t in ("mask", "stats"))):
                return
            time.sleep(0.1)
        raise RuntimeError(f"the tracker node did not come up within {timeout:g} s")

    def set_parameters(self, values: Dict[str, object]) -> None:
        from rclpy.parameter import Parameter

        fut = self.params.set_parameters([Parameter(k, value=v) for k, v in values.items()])
        deadline = time.monotonic() + 10.0
        while not fut.done() and time.monotonic() < deadline:
            time.sleep(0.01)
        if not fut.done() or not all(r.successful for r in fut.result().results):
            raise RuntimeError(f"could not set {values} on the node")

    def call_trigger(self, name: str) -> None:
        from std_srvs.srv import Trigger

        client = self.node.create_client(Trigger, f"{NAMESPACE}/{name}")
        client.wait_for_service(timeout_sec=30.0)
        fut = client.call_async(Trigger.Request())
        wait_until(fut.done, 300.0, step=0.01)
        self.node.destroy_client(client)

    def add_object_at(self, x: float, y: float) -> None:
        from geometry_msgs.msg import Point

        from fastsam2_msgs.srv import AddObject

        client = self.node.create_client(AddObject, f"{NAMESPACE}/add_object")
        client.wait_for_service(timeout_sec=30.0)
        req = AddObject.Request()
        req.prompt.object_id, req.prompt.new_object = 1, True
        req.prompt.points, req.prompt.labels = [Point(x=float(x), y=float(y))], [1]
        fut = client.call_async(req)
        wait_until(fut.done, 300.0, step=0.01)
        self.node.destroy_client(client)
        if not fut.result().success:
            raise RuntimeError(f"add_object failed: {fut.result().message}")

    def make_frame(self, w: int, h: int, seed: int):
        from ..image_messages import numpy_to_image

        rng = np.random.default_rng(seed)
        rgb = (rng.random((h, w, 3)) * 255).astype(np.uint8)
        return numpy_to_image(rgb, "rgb8")

    def publish(self, msg: "object") -> Tuple[Tuple[int, int], float]:
        self.sec += 1
        msg.header.stamp.sec, msg.header.stamp.nanosec = self.sec, 1000
        msg.header.frame_id = "bench_camera"
        t0 = time.perf_counter()
        self.image.publish(msg)
        return (self.sec, 1000), t0

    def arrived(self, key, topics) -> bool:
        return all(key in self.arrivals[t] for t in topics) and (
            "stats" not in topics or key in self.stats)

    def wait_outputs(self, key, topics, timeout: float) -> bool:
        deadline = time.perf_counter() + timeout
        with self.cond:
            while not self.arrived(key, topics):
                left = deadline - time.perf_counter()
                if left <= 0:
                    return False
                self.cond.wait(left)
        return True

    def close(self) -> None:
        import rclpy

        self.executor.shutdown(timeout_sec=5.0)
        self.node.destroy_node()
        rclpy.shutdown(context=self.ctx)


# ============================================================================ measurements
def _summary(xs: Sequence[float]) -> Dict[str, Optional[float]]:
    if not xs:
        return {"median": None, "p95": None, "mean": None, "n": 0}
    a = np.asarray(xs, dtype=np.float64)
    return {"median": round(float(np.median(a)), 3), "p95": round(float(np.percentile(a, 95)), 3),
            "mean": round(float(a.mean()), 3), "n": int(a.size)}


def measure_latency(probe: Probe, frames, topics, count: int, warmup: int, gap_s: float,
                    timeout: float) -> dict:
    """Frames one at a time: latency per output, the tracker's time, the node's own cost."""
    rows = []
    lost = answered = 0
    for i in range(warmup + count):
        key, t0 = probe.publish(frames[i % len(frames)])
        if not probe.wait_outputs(key, topics, timeout):
            lost += int(i >= warmup)
            if answered == 0 and i + 1 >= SILENT_FRAMES_BEFORE_GIVING_UP:
                raise RuntimeError(f"the node answered none of the first {i + 1} frames (waited "
                                   f"{timeout:g} s for each): it is not tracking; see its log")
            continue
        answered += 1
        if i < warmup:
            continue
        with probe.lock:
            arrival = {t: probe.arrivals[t][key] - t0 for t in topics}
            stats = dict(probe.stats[key])
        rows.append((arrival, stats))
        time.sleep(gap_s)
    if answered == 0:  # (a point too short for the early give-up)
        raise RuntimeError(f"the node answered none of the {warmup + count} frames (waited "
                           f"{timeout:g} s for each): it is not tracking; see its log")
    mask = [r[0]["mask"] * 1e3 for r in rows]
    complete = [max(r[0].values()) * 1e3 for r in rows]
    tracker = [r[1]["total_ms"] for r in rows]
    out = {
        "frames": count, "lost": lost,
        "mask_latency_ms": _summary(mask),
        "complete_latency_ms": _summary(complete),
        "tracker_ms": _summary(tracker),
        "node_cost_mask_ms": _summary([m - t for m, t in zip(mask, tracker)]),
        "node_cost_ms": _summary([c - t for c, t in zip(complete, tracker)]),
    }
    for f in NODE_STAT_FIELDS + ("node_latency_ms",):
        vals = [r[1][f] for r in rows if f in r[1]]
        if vals:
            out[f"node_{f}" if not f.startswith("node_") else f] = _summary(vals)
    return out


def measure_rate(probe: Probe, frames, topics, rate_hz: float, seconds: float,
                 one_at_a_time_p95: Optional[float]) -> dict:
    """Frames at ``rate_hz`` for ``seconds``: outputs per second, frames without outputs (and
    those the node counts as dropped: its counter now against its counter before the run),
    latency under load, and whether the node followed."""
    pace = FixedRate(rate_hz)
    n = max(2, int(round(seconds * rate_hz)))
    dropped_before = _node_dropped_so_far(probe)
    sent = []
    for i in range(n):
        pace.wait()
        sent.append(probe.publish(frames[i % len(frames)]))
    deadline = time.perf_counter() + 3.0
    while time.perf_counter() < deadline and not probe.arrived(sent[-1][0], topics):
        time.sleep(0.02)
    time.sleep(0.3)
    with probe.lock:
        masks = [(probe.arrivals["mask"].get(k), t0) for k, t0 in sent]
        complete = [probe.arrived(k, topics) for k, _ in sent]
        dropped = [probe.stats[k]["dropped_frames"] for k, _ in sent if k in probe.stats]
    got = [(t, t0) for t, t0 in masks if t is not None]
    latency = [(t - t0) * 1e3 for t, t0 in got]
    arrivals = sorted(t for t, _ in got)
    hz = (len(arrivals) - 1) / (arrivals[-1] - arrivals[0]) if len(arrivals) > 1 and arrivals[-1] > arrivals[0] else 0.0
    lat = _summary(latency)
    out = {"input_hz": rate_hz, "sent": n, "with_mask": len(got),
           "complete": int(sum(complete)), "output_hz": round(hz, 2),
           "node_dropped": (max(dropped) - dropped_before) if dropped else None,
           "mask_latency_ms": lat}
    out["followed"] = bool(len(got) == n and sum(complete) == n and lat["p95"] is not None
                           and (one_at_a_time_p95 is None
                                or lat["p95"] <= one_at_a_time_p95 + pace.period * 1e3))
    return out


def _node_dropped_so_far(probe: Probe) -> int:
    """The node's cumulative ``dropped_frames`` in the last stats that came (0: none came yet).
    The rate run's baseline is taken before it starts: the first stats of the run come after
    the node has already dropped frames of it, and those drops were subtracted away."""
    with probe.lock:
        return probe.stats[max(probe.stats)]["dropped_frames"] if probe.stats else 0


# ============================================================================ driver
def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="fastsam2-bench --node", description=__doc__.splitlines()[0])
    p.add_argument("--tracker", choices=("standin", "real", "floor"), default="standin",
                   help="standin: the node with a fixed-cost stand-in tracker; real: the node with "
                   "SAM 2; floor: no tracker node at all, a plain rclpy node answering with "
                   "outputs of the same sizes (the transport floor)")
    p.add_argument("--cost-ms", type=float, default=10.0,
                   help="stand-in tracker: time per frame (ms; the CUDA fast path aims at ~10)")
    p.add_argument("--objects", type=int, default=1)
    p.add_argument("--object-area", type=float, default=0.2,
                   help="stand-in tracker: fraction of the frame the objects cover together")
    p.add_argument("--model", default="tiny")
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--keep-ratio", type=float, default=0.3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--sizes", default=",".join(f"{w}x{h}" for w, h in SIZES))
    p.add_argument("--sets", default=",".join(OUTPUT_SETS))
    p.add_argument("--frames", type=int, default=40, help="latency frames per size and set")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--gap-ms", type=float, default=30.0, help="pause between latency frames")
    p.add_argument("--rate", type=float, default=30.0, help="input rate of the rate run (Hz, 0 = skip)")
    p.add_argument("--rate-seconds", type=float, default=4.0)
    p.add_argument("--fastdds-profile", default="",
                   help="Fast DDS XML profile for both processes (FASTRTPS_DEFAULT_PROFILES_FILE)")
    p.add_argument("--domain-id", type=int, default=None,
                   help="ROS domain of both processes (default: $ROS_DOMAIN_ID, else 0)")
    p.add_argument("--label", default="", help="free text stored in the JSON (e.g. the commit)")
    p.add_argument("--json", help="write the results here")
    args = p.parse_args(argv)
    if args.domain_id is None:  # (read after parsing: a bad one must not break --help)
        env_domain = os.environ.get("ROS_DOMAIN_ID", "").strip() or "0"
        if not env_domain.isdigit():
            p.error(f"ROS_DOMAIN_ID must be a whole number, got {env_domain!r}")
        args.domain_id = int(env_domain)
    return args


#: The bench's own options -> their range (the tracker's image_size and keep_ratio are checked
#: with the core's table): checked before any process starts
NUMERIC_LIMITS = {"cost_ms": Range(0.0, 1e6), "objects": PARAMETER_RANGES["max_objects"],
                  "object_area": Range(0.0, 1.0, low_open=True), "frames": Range(1, 10 ** 6),
                  "warmup": Range(0, 10 ** 6), "gap_ms": Range(0.0, 1e6), "rate": Range(0.0, 1e4),
                  "rate_seconds": Range(0.0, 1e6, low_open=True),
                  "domain_id": Range(0, 232)}  # DDS ports above 232 do not exist


def check_numeric_options(args: argparse.Namespace) -> None:
    """ValueError naming the first option out of range (a bad one used to make the stand-in fail
    on every frame while the probe waited 10 s for each, or the node refuse its configuration
    while the probe waited for it, or end in a traceback)."""
    limits = {**NUMERIC_LIMITS, "image_size": PARAMETER_RANGES["image_size"],
              "keep_ratio": PARAMETER_RANGES["keep_ratio"]}
    for name, rng in limits.items():
        value = getattr(args, name)
        if not math.isfinite(value) or not rng.contains(value):
            raise ValueError(f"--{name.replace('_', '-')} must be in {rng.describe()}, got {value!r}")


def check_real_tracker_options(args: argparse.Namespace) -> None:
    """The real tracker's model and device, checked as the node's configure checks them (a bad
    one left the node unconfigured while the probe waited 600 s for it)."""
    from ..core.config import TrackerConfig
    from ..core.models import resolve_device

    TrackerConfig(model_cfg=args.model, device=args.device, image_size=args.image_size,
                  keep_ratio=args.keep_ratio, allow_random_weights=True).validate()
    resolve_device(args.device)


def _parse_size(text: str) -> Tuple[int, int]:
    """``WxH`` -> (w, h), both sides a frame may have; ValueError with the text otherwise (the
    node would refuse every frame, or making the frames would exhaust memory)."""
    parts = text.lower().split("x")
    try:
        w, h = (int(v) for v in parts) if len(parts) == 2 else (0, 0)
    except ValueError:
        w = h = 0
    if w <= 0 or h <= 0:
        raise ValueError(f"sizes must be WxH with positive integers, got {text!r}")
    if not all(MIN_IMAGE_SIDE <= v <= MAX_IMAGE_SIDE for v in (w, h)):
        raise ValueError(f"sizes: {text!r} has a side outside the {MIN_IMAGE_SIDE}..{MAX_IMAGE_SIDE} "
                         "pixels a frame may have")
    return w, h


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--serve-node"]:
        return serve_node(argv[1:])
    if argv[:1] == ["--serve-floor"]:
        return serve_floor(argv[1:])
    args = parse_args(argv)
    printable_output()  # its lines name --json, whatever its name
    try:
        from ..eval.cli import check_output_file

        check_numeric_options(args)
        check_output_file(args.json, "--json")  # before the node starts, not after the run
        if args.fastdds_profile:  # (the shell leaves ~ alone in --fastdds-profile=~/p.xml)
            args.fastdds_profile = str(Path(args.fastdds_profile).expanduser().resolve())
            if not Path(args.fastdds_profile).is_file():
                raise ValueError(f"--fastdds-profile {args.fastdds_profile}: no such file")
        if args.tracker == "real":  # what the node would refuse at configure, then wait for
            check_real_tracker_options(args)
        sizes = [_parse_size(s) for s in args.sizes.split(",") if s]
        sets = [s for s in args.sets.split(",") if s]
        if not sizes or not sets:
            raise ValueError(f"--{'sizes' if not sizes else 'sets'} names none: nothing to measure")
        unknown = [s for s in sets if s not in OUTPUT_SETS]
        if unknown:
            raise ValueError(f"unknown output set(s) {unknown} (known: {', '.join(OUTPUT_SETS)})")
    except (ValueError, OSError) as exc:
        print(f"fastsam2-bench --node: error: {exc}", file=sys.stderr)
        return 2
    env = dict(os.environ, ROS_DOMAIN_ID=str(args.domain_id),
               ROS_AUTOMATIC_DISCOVERY_RANGE=os.environ.get("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST"))
    if args.fastdds_profile:
        env["FASTRTPS_DEFAULT_PROFILES_FILE"] = args.fastdds_profile
    os.environ.update({k: env[k] for k in ("ROS_AUTOMATIC_DISCOVERY_RANGE",)})
    if args.fastdds_profile:
        os.environ["FASTRTPS_DEFAULT_PROFILES_FILE"] = env["FASTRTPS_DEFAULT_PROFILES_FILE"]
    keep_freed_memory()
    results: List[dict] = []
    try:
        with sigterm_as_ctrl_c():
            measure_all(args, env, sizes, sets, results)
    except (RuntimeError, InputError) as exc:
        print(f"fastsam2-bench --node: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C, SIGTERM: what was measured is kept
        with no_interrupts():
            write_report(args, results, interrupted=True)
        print(f"fastsam2-bench --node: interrupted after {len(results)} point(s)"
              + (f", written to {args.json} (\"interrupted\": true)" if args.json else ""),
              file=sys.stderr)
        return 130
    write_report(args, results, interrupted=False)
    return 0


def measure_all(args, env: Dict[str, str], sizes, sets, results: List[dict]) -> None:
    """Start the node process and the probe and measure every point into ``results`` (where the
    points so far stay when the run is interrupted); both are stopped however it ends."""
    node = subprocess.Popen(node_command(args), env=env)
    probe = None
    try:
        probe = Probe(args.domain_id)
        probe.wait_node(600.0 if args.tracker == "real" else 120.0)
        timeout = 60.0 if args.tracker == "real" else 10.0
        for w, h in sizes:
            frames = [probe.make_frame(w, h, seed) for seed in range(3)]
            if args.tracker == "real":
                probe.call_trigger("reset")
                key, _ = probe.publish(frames[0])
                probe.wait_outputs(key, ("stats",), timeout)
                probe.add_object_at(w / 2, h / 2)
            for name in sets:
                probe.set_parameters(OUTPUT_SETS[name])
                topics = SET_TOPICS[name]
                lat = measure_latency(probe, frames, topics, args.frames, args.warmup,
                                      args.gap_ms / 1e3, timeout)
                row = {"size": [w, h], "outputs": name, "latency": lat}
                if args.rate > 0:
                    row["rate"] = measure_rate(probe, frames, topics, args.rate, args.rate_seconds,
                                               lat["mask_latency_ms"]["p95"])
                results.append(row)
                print_row(row, flush=True)
    finally:
        with no_interrupts():  # a second Ctrl-C must not leave the node process running
            if probe is not None:
                probe.close()
            stop_node_process(node)


def stop_node_process(node: subprocess.Popen) -> None:
    """Ctrl-C to the node process (its orderly shutdown), then SIGKILL after 30 s."""
    node.send_signal(signal.SIGINT)
    try:
        node.wait(timeout=30)
    except subprocess.TimeoutExpired:
        node.kill()
        node.wait()


def write_report(args, results: List[dict], interrupted: bool) -> None:
    """The JSON of ``--json`` (nothing without it): the settings, the machine, every point."""
    if not args.json:
        return
    report = {
        "schema_version": SCHEMA_VERSION, "tracker": args.tracker,
        "tracker_cost_ms": args.cost_ms if args.tracker == "standin" else None,
        "model": args.model if args.tracker == "real" else None,
        "image_size": args.image_size if args.tracker == "real" else None,
        "keep_ratio": args.keep_ratio if args.tracker == "real" else None,
        "device": args.device if args.tracker == "real" else None,
        "warmup_frames": args.warmup, "gap_ms": args.gap_ms, "rate_hz": args.rate,
        "rate_seconds": args.rate_seconds,
        "objects": args.objects if args.tracker == "standin" else 1,
        "object_area": args.object_area if args.tracker == "standin" else None,
        "transport": "fastdds profile " + Path(args.fastdds_profile).name if args.fastdds_profile
        else "fastdds defaults",
        "keep_freed_memory": os.environ.get("FASTSAM2_KEEP_FREED_MEMORY", "1") != "0",
        "frames_per_point": args.frames, "label": args.label, "host": platform.node(),
        "cpu_count": os.cpu_count(), "load_average_at_end": list(os.getloadavg()),
        "interrupted": interrupted, "results": results,
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2))
    print(f"wrote {args.json}")


def _fmt(s: Optional[dict]) -> str:
    if not s or s.get("median") is None:
        return "-"
    return f"{s['median']:.1f}/{s['p95']:.1f}"


def print_row(row: dict, flush: bool = False) -> None:
    lat, rate = row["latency"], row.get("rate")
    w, h = row["size"]
    parts = [f"{w}x{h}", f"{row['outputs']:<20}", f"mask {_fmt(lat['mask_latency_ms'])}",
             f"all {_fmt(lat['complete_latency_ms'])}", f"tracker {_fmt(lat['tracker_ms'])}",
             f"node {_fmt(lat['node_cost_ms'])}"]
    parts += [f"{f.split('_')[0]} {_fmt(lat.get('node_' + f))}" for f in NODE_STAT_FIELDS
              if lat.get("node_" + f)]
    if lat["lost"]:
        parts.append(f"LOST {lat['lost']}")
    if rate:
        parts.append(f"@{rate['input_hz']:g}Hz: {rate['output_hz']:.1f} Hz out, "
                     f"{rate['with_mask']}/{rate['sent']} masks, lat {_fmt(rate['mask_latency_ms'])}"
                     f"{'' if rate['followed'] else ' (fell behind)'}")
    print("  ".join(parts), flush=flush)


if __name__ == "__main__":
    sys.exit(main())

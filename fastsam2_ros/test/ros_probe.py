"""A probe node for the tracker-node tests: publishes inputs on every prompt and image topic,
records every output, calls the services. Shared by the node test modules (import it; it is not a
test module itself)."""

import array
import contextlib
import threading
import time
from collections import defaultdict

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import Point, PointStamped
from lifecycle_msgs.srv import ChangeState, GetState
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import String
from std_srvs.srv import SetBool, Trigger

from fastsam2_msgs.msg import Prompt, TrackedObjectArray, TrackerStats
from fastsam2_msgs.srv import AddObject, RemoveObject
from fastsam2_ros.image_messages import numpy_to_image, rgb_to_compressed

H, W = 60, 80
OUT_TIMEOUT = 90.0  # generous: CI machines are shared; waits end as soon as the message is there
OUTPUTS = {"mask": Image, "labels": Image, "overlay": Image, "stats": TrackerStats,
           "objects": TrackedObjectArray}


def wait_for(cond, timeout=OUT_TIMEOUT, step=0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(step)
    return bool(cond())


def frame_rgb(seed=0, shift=0):
    rng = np.random.default_rng(seed)
    img = (rng.random((H, W, 3)) * 60 + 60).astype(np.uint8)
    yy, xx = np.mgrid[:H, :W]
    img[(xx - 30 - shift) ** 2 + (yy - 30) ** 2 < 12 ** 2] = (220, 40, 40)
    return img


class Probe(Node):
    """Publishes inputs, records outputs (keyed by topic), calls services of the node in ``ns``."""

    def __init__(self, ctx, ns):
        super().__init__("fastsam2_test_probe", context=ctx)
        NS = ns
        self.lock = threading.Lock()
        self.msgs = defaultdict(list)
        rel = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        # a reliable image publisher must connect to the node's best-effort (sensor-data) subscription
        self.image = self.create_publisher(Image, f"{NS}/image", rel)
        self.compressed = self.create_publisher(CompressedImage, f"{NS}/image/compressed",
                                                qos_profile_sensor_data)
        self.prompt = self.create_publisher(Prompt, f"{NS}/prompt", 10)
        self.text = self.create_publisher(String, f"{NS}/text_prompt", 10)
        self.click = self.create_publisher(Point, f"{NS}/click", 10)
        self.clicked = self.create_publisher(PointStamped, "/clicked_point", 10)
        self.info = self.create_publisher(CameraInfo, f"{NS}/camera_info", qos_profile_sensor_data)
        for name, typ in OUTPUTS.items():
            self.create_subscription(typ, f"{NS}/{name}", self._rec(name), rel)
        try:  # vision_msgs is optional (not on PyPI); the node publishes detections where it is
            from vision_msgs.msg import Detection2DArray

            self.create_subscription(Detection2DArray, f"{NS}/detections", self._rec("detections"), rel)
        except ImportError:
            pass
        self.create_subscription(DiagnosticArray, "/diagnostics", self._rec("diag"), 50)
        self.add = self.create_client(AddObject, f"{NS}/add_object")
        self.remove = self.create_client(RemoveObject, f"{NS}/remove_object")
        self.reset = self.create_client(Trigger, f"{NS}/reset")
        self.enable = self.create_client(SetBool, f"{NS}/enable")
        self.auto_prompt = self.create_client(Trigger, f"{NS}/auto_prompt")
        self.change_state = self.create_client(ChangeState, f"{NS}/fastsam2_tracker/change_state")
        self.get_state = self.create_client(GetState, f"{NS}/fastsam2_tracker/get_state")
        self.stamp_sec = 1000

    def _rec(self, name):
        def cb(msg):
            with self.lock:
                self.msgs[name].append(msg)
        return cb

    def got(self, name):
        with self.lock:
            return list(self.msgs[name])

    def by_stamp(self, name, key):
        return [m for m in self.got(name) if (m.header.stamp.sec, m.header.stamp.nanosec) == key]

    def next_header(self, frame_id="cam_optical"):
        from std_msgs.msg import Header

        self.stamp_sec += 1
        h = Header(frame_id=frame_id)
        h.stamp.sec, h.stamp.nanosec = self.stamp_sec, 123456
        return h

    def publish_frame(self, rgb=None, encoding="rgb8", pad=0, frame_id="cam_optical"):
        rgb = frame_rgb() if rgb is None else rgb
        header = self.next_header(frame_id)
        if encoding == "compressed":
            self.compressed.publish(rgb_to_compressed(rgb, "png", header))
            return (header.stamp.sec, header.stamp.nanosec)
        opaque = np.full(rgb.shape[:2], 255, np.uint8)
        arr = {"rgb8": lambda: rgb, "bgr8": lambda: rgb[:, :, ::-1],
               "rgba8": lambda: np.dstack([rgb, opaque]),
               "bgra8": lambda: np.dstack([rgb[:, :, ::-1], opaque]),
               "mono8": lambda: rgb[:, :, 0],
               "mono16": lambda: rgb[:, :, 0].astype(np.uint16) * 257}[encoding]()
        msg = numpy_to_image(np.ascontiguousarray(arr), encoding, header)
        if pad:
            row = msg.step
            data = bytes(msg.data)
            padded = b"".join(data[r * row:(r + 1) * row] + b"\xAB" * pad for r in range(msg.height))
            msg.step = row + pad
            msg.data = array.array("B", padded)
        self.image.publish(msg)
        return (header.stamp.sec, header.stamp.nanosec)

    def wait_outputs(self, key, names=("mask", "labels", "overlay", "stats"), timeout=OUT_TIMEOUT):
        ok = wait_for(lambda: all(self.by_stamp(n, key) for n in names), timeout)
        assert ok, f"no outputs {names} for stamp {key}: got {[(n, len(self.got(n))) for n in names]}"
        return {n: self.by_stamp(n, key)[-1] for n in names}

    def publish_until_answered(self, topic="mask", timeout=OUT_TIMEOUT, period=1.0):
        """Publish frames until the node answers one on ``topic``: a best-effort image
        subscription drops the frames sent while it is still matching a new publisher."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            key = self.publish_frame()
            if wait_for(lambda: self.by_stamp(topic, key), period):
                return key
        raise AssertionError(f"the node answered no frame on {topic} within {timeout:g} s")

    def call(self, client, request, timeout=OUT_TIMEOUT):
        assert client.wait_for_service(timeout_sec=10.0), f"service {client.srv_name} not available"
        fut = client.call_async(request)
        assert wait_for(fut.done, timeout), f"{client.srv_name} did not answer"
        return fut.result()


def prompt_msg(obj_id=1, new=True, points=(), labels=None, text="", box=None):
    m = Prompt()
    m.object_id, m.new_object, m.text = obj_id, new, text
    m.points = [Point(x=float(x), y=float(y)) for x, y in points]
    m.labels = list(labels if labels is not None else [1] * len(points))
    if box is not None:
        m.has_box, m.box = True, [float(v) for v in box]
    return m


def add_request(**kw):
    req = AddObject.Request()
    req.prompt = prompt_msg(**kw)
    return req




def image_reader_matched(node, ns):
    """The node's image subscription knows the probe's publisher. Matching is per side: the probe
    may see the node's reader before that reader sees the probe's writer, and a (best-effort)
    frame sent in between is lost."""
    return any(s.topic_name == f"{ns}/image" and s.get_publisher_count() > 0 for s in node._subs)


@contextlib.contextmanager
def spinning_probe(domain_id, ns):
    """A Probe for a node in another process, on its own context, spun in a background thread;
    torn down on exit (the caller ends that process first)."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=domain_id)
    probe = Probe(ctx, ns)
    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(probe)
    threading.Thread(target=ex.spin, daemon=True).start()
    try:
        yield probe
    finally:
        ex.shutdown(timeout_sec=5.0)
        probe.destroy_node()
        rclpy.shutdown(context=ctx)


@contextlib.contextmanager
def running_node(domain_id, ns, params, tracker_factory=None):
    """A started TrackerNode (configured + active) and a discovered Probe on their own context,
    spun by a MultiThreadedExecutor in a background thread; torn down on exit."""
    import rclpy
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.parameter import Parameter

    from fastsam2_ros.ros.tracker_node import EXECUTOR_THREADS, TrackerNode, spin_until_stopped

    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=domain_id)
    node = TrackerNode(context=ctx, namespace=ns, tracker_factory=tracker_factory,
                       parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
    probe = Probe(ctx, ns)
    ex = MultiThreadedExecutor(num_threads=EXECUTOR_THREADS, context=ctx)
    ex.add_node(node)
    ex.add_node(probe)
    stop = threading.Event()  # spun as main() spins it: a failing callback does not end spinning
    thread = threading.Thread(target=spin_until_stopped, args=(ex, stop, node.get_logger()),
                              daemon=True)
    thread.start()
    try:
        assert node.autostart(), node.health.fatal
        assert wait_for(lambda: probe.image.get_subscription_count() > 0
                        and probe.prompt.get_subscription_count() > 0
                        and probe.count_publishers(f"{ns}/stats") > 0
                        and probe.count_publishers(f"{ns}/mask") > 0
                        and image_reader_matched(node, ns), 20.0), "discovery failed"
        yield node, probe, ctx
    finally:
        stop.set()
        ex.shutdown(timeout_sec=5.0)
        node.destroy_node()
        probe.destroy_node()
        rclpy.shutdown(context=ctx)
        thread.join(timeout=5.0)

"""Ctrl-C (SIGINT) or SIGTERM while frames are in flight: the node stops its worker before its
publishers and the ROS context go, so it exits 0 without an error or a traceback (issue 8, item 5).
The node runs as ``ros2 run`` runs it (its console entry point, in its own process) with the real
tracker (random weights, 64 px, CPU)."""

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
from domains import domain_id  # noqa: E402
DOMAIN_ID = domain_id(8)

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("fastsam2_msgs.msg", reason="fastsam2_msgs not built (scripts/setup_env.sh)")
pytest.importorskip("sam2")

from lifecycle_msgs.msg import Transition  # noqa: E402
from lifecycle_msgs.srv import ChangeState  # noqa: E402
from ros_probe import add_request, frame_rgb, spinning_probe, wait_for  # noqa: E402

NS = "/sd"
NODE_ARGS = ["--ros-args", "-r", f"__ns:={NS}", "-p", "allow_random_weights:=true",
             "-p", "model_cfg:=tiny", "-p", "image_size:=64", "-p", "device:=cpu",
             "-p", "mc_passes:=0"]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_with_frames_in_flight_exits_cleanly(sig):
    env = dict(os.environ, ROS_DOMAIN_ID=str(DOMAIN_ID), OMP_NUM_THREADS="2",
               RCUTILS_LOGGING_BUFFERED_STREAM="0")
    proc = subprocess.Popen([sys.executable, "-m", "fastsam2_ros.ros.tracker_node", *NODE_ARGS],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    stop_feeding = threading.Event()
    feeder = None
    with spinning_probe(DOMAIN_ID, NS) as probe:
        try:
            assert wait_for(lambda: probe.image.get_subscription_count() > 0
                            and probe.count_publishers(f"{NS}/mask") > 0, 120.0), "node did not come up"
            probe.publish_until_answered("mask")
            assert probe.call(probe.add, add_request(obj_id=1, points=[(30, 30)])).success

            def feed():  # faster than inference: there is always a frame in flight
                while not stop_feeding.is_set():
                    probe.publish_frame(frame_rgb(shift=len(probe.got("mask")) % 7))
                    time.sleep(0.01)

            feeder = threading.Thread(target=feed, daemon=True)
            feeder.start()
            n = len(probe.got("mask"))
            assert wait_for(lambda: len(probe.got("mask")) >= n + 3, 60.0)
            proc.send_signal(sig)
            out, _ = proc.communicate(timeout=60)
        finally:
            stop_feeding.set()
            if feeder is not None:  # ended before the probe goes: a publish then was InvalidHandle
                feeder.join(10.0)
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert proc.returncode == 0, out[-3000:]
    for bad in ("Traceback", "RCLError", "context is invalid", "inference failed", "terminate called"):
        assert bad not in out, out[-3000:]
    assert "shutting down" in out


SLOW_START = """
import os, sys, time
sys.path.insert(0, {test_dir!r})
from scene_tracker import SceneTracker
from fastsam2_ros.ros import tracker_node

def slow(cfg):  # a large checkpoint from a slow disk, or a first torch.compile
    print("loading the model", flush=True)
    time.sleep(60)
    return SceneTracker(cfg)

os._exit(tracker_node.main({args!r}, tracker_factory=slow))  # (as the console entry point exits)
"""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_during_the_start_up_model_load_ends_the_node_at_once(sig):
    """The signal only set a flag that main() read after auto start had loaded the model AND
    activated the node: a 20 s load took 22 s to act on Ctrl-C, past ros2 launch's escalation to
    SIGTERM (5 s) and SIGKILL (10 s)."""
    env = dict(os.environ, ROS_DOMAIN_ID=str(DOMAIN_ID), RCUTILS_LOGGING_BUFFERED_STREAM="0")
    code = SLOW_START.format(test_dir=os.path.dirname(os.path.abspath(__file__)),
                             args=["--ros-args", "-r", "__ns:=/slowstart", "-p",
                                   "allow_random_weights:=true"])
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if "loading the model" in line:
                break
        time.sleep(0.5)
        t0 = time.monotonic()
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=50)
        took = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    out = "".join(lines) + out
    assert proc.returncode == 0, out[-3000:]
    assert took < 15.0, f"{took:.1f} s after the signal\n{out[-3000:]}"
    assert "interrupted while starting up" in out and "active:" not in out, out[-3000:]
    assert "Traceback" not in out, out[-3000:]


SLOW_AUTO_PROMPT = """
import os, sys, time
sys.path.insert(0, {test_dir!r})
from scene_tracker import SceneTracker
from fastsam2_ros.ros import tracker_node

class SlowAutoPrompt(SceneTracker):
    def auto_prompt(self, obj_id, image=None):  # proposals and a caption on a CPU
        print("automatic prompt started", flush=True)
        time.sleep(60)
        raise RuntimeError("not reached in time")

from fastsam2_ros.ros import frame_worker
stop = frame_worker.FrameWorker.stop
def say_stop(self, *args, **kwargs):
    print("worker stop waits", flush=True)
    return stop(self, *args, **kwargs)
frame_worker.FrameWorker.stop = say_stop

os._exit(tracker_node.main({args!r}, tracker_factory=SlowAutoPrompt))
"""


@pytest.mark.parametrize("while_deactivating", [False, True])
def test_a_signal_during_a_long_automatic_prompt_ends_the_node_in_time(while_deactivating):
    """After start-up a signal made the node wait for the tracker call in progress for up to
    STOP_TIMEOUT_S (120 s), a second Ctrl-C included: ros2 launch SIGKILLs a node 10 s after its
    SIGINT, and an automatic prompt takes tens of seconds on a CPU. A deactivate that already
    waited for that call held the node's stop lock for its own 120 s (review diff7)."""
    ns = "/slowauto_deactivating" if while_deactivating else "/slowauto"
    env = dict(os.environ, ROS_DOMAIN_ID=str(DOMAIN_ID), RCUTILS_LOGGING_BUFFERED_STREAM="0")
    code = SLOW_AUTO_PROMPT.format(test_dir=os.path.dirname(os.path.abspath(__file__)),
                                   args=["--ros-args", "-r", f"__ns:={ns}", "-p",
                                         "allow_random_weights:=true", "-p",
                                         "auto_prompt_on_start:=true"])
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines, started, stop_waits = [], threading.Event(), threading.Event()

    def read():
        for line in proc.stdout:
            lines.append(line)
            if "automatic prompt started" in line:
                started.set()
            if "worker stop waits" in line:
                stop_waits.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    with spinning_probe(DOMAIN_ID, ns) as probe:
        try:
            assert wait_for(lambda: probe.image.get_subscription_count() > 0, 120.0), "node did not come up"
            deadline = time.monotonic() + 60.0
            while not started.wait(0.5) and time.monotonic() < deadline:
                probe.publish_frame()  # (best effort: the first ones may go before the match)
            assert started.is_set(), "".join(lines)[-3000:]
            if while_deactivating:
                assert probe.change_state.wait_for_service(10.0)
                probe.change_state.call_async(ChangeState.Request(
                    transition=Transition(id=Transition.TRANSITION_DEACTIVATE)))
                assert stop_waits.wait(30.0), "".join(lines)[-3000:]
            t0 = time.monotonic()
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=50)
            except subprocess.TimeoutExpired:
                pass
            took = time.monotonic() - t0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    reader.join(5.0)
    out = "".join(lines)
    assert took < 10.0, f"still running {took:.1f} s after the signal\n{out[-3000:]}"
    assert proc.returncode == 0, out[-3000:]
    assert "shutting down" in out and "Traceback" not in out, out[-3000:]

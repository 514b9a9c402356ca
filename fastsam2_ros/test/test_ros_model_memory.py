"""A model released on deactivate leaves the process: each activate builds the model on one of
the executor's threads, in that thread's malloc arena, and the freed one stayed there (figures in
ros/process_memory.py; Python objects stayed flat)."""

import gc
import os
import sys

import pytest

os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
from domains import domain_id  # noqa: E402
DOMAIN_ID = domain_id(11)

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("fastsam2_msgs.msg", reason="fastsam2_msgs not built (scripts/setup_env.sh)")
if not sys.platform.startswith("linux"):
    pytest.skip("reads the resident set size from /proc", allow_module_level=True)

from lifecycle_msgs.msg import Transition  # noqa: E402
from lifecycle_msgs.srv import ChangeState  # noqa: E402
from ros_probe import add_request, frame_rgb, running_node, wait_for  # noqa: E402

from fastsam2_ros.ros.process_memory import keep_freed_memory  # noqa: E402


def rss_mb() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) // 1024 for line in status if line.startswith("VmRSS:"))


def test_deactivate_activate_cycles_do_not_pile_up_released_models():
    keep_freed_memory()  # as the node's entry point does
    params = dict(model_cfg="tiny", allow_random_weights=True, image_size=128, device="cpu",
                  mc_passes=0)
    with running_node(DOMAIN_ID, "/memory", params) as (node, probe, ctx):
        def cycle():
            probe.publish_until_answered("stats")
            assert probe.call(probe.add, add_request(obj_id=0, points=[(30, 30)])).success
            key = probe.publish_frame(frame_rgb(shift=2))
            assert wait_for(lambda: probe.by_stamp("stats", key), 20)
            with probe.lock:
                probe.msgs.clear()
            for transition in (Transition.TRANSITION_DEACTIVATE, Transition.TRANSITION_ACTIVATE):
                request = ChangeState.Request(transition=Transition(id=transition))
                assert probe.call(probe.change_state, request).success

        for _ in range(2):
            cycle()
        gc.collect()
        start = rss_mb()
        for _ in range(20):
            cycle()
        gc.collect()
        grown = rss_mb() - start
    assert grown < 400, f"RSS grew {grown} MB over 20 deactivate/activate cycles"

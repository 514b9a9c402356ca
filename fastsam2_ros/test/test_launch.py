"""launch_testing test of launch/tracker.launch.py: the node comes up active from the launch file,
accepts an image on the remapped topic and publishes a mask with the image's header.

Runs where ``launch``, ``launch_ros`` and ``launch_testing`` are installed (a ROS 2 installation
from apt/source, after ``colcon build`` and ``. install/setup.sh``); skips with the reason where
they are not (the PyPI wheels used by CI have none of them). The launch file's structure is
checked everywhere by test_ros_launch_file.py.
"""

import os
import unittest

import pytest

_REASON = ("launch_testing / launch_ros are not installed (not on PyPI; they come with a full ROS 2 "
           "installation) — test_ros_launch_file.py covers the launch file statically")
launch_testing = pytest.importorskip("launch_testing", reason=_REASON)
pytest.importorskip("launch_ros", reason=_REASON)
pytest.importorskip("fastsam2_msgs.msg", reason="fastsam2_msgs not built")

import launch  # noqa: E402
import launch_testing.actions  # noqa: E402
import launch_testing.asserts  # noqa: E402
import numpy as np  # noqa: E402
import rclpy  # noqa: E402
from ament_index_python.packages import get_package_share_directory  # noqa: E402
from launch.launch_description_sources import PythonLaunchDescriptionSource  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("ROS_DOMAIN_ID", str(int(os.environ.get("FASTSAM2_TEST_DOMAIN_BASE", "60")) + 5))

NS = "launchtest"


def _launch_file():
    try:
        return os.path.join(get_package_share_directory("fastsam2_ros"), "launch", "tracker.launch.py")
    except Exception:  # noqa: BLE001 - not installed with colcon: use the source tree
        return os.path.join(os.path.dirname(__file__), "..", "launch", "tracker.launch.py")


@pytest.mark.launch_test
def generate_test_description():
    include = launch.actions.IncludeLaunchDescription(
        PythonLaunchDescriptionSource(_launch_file()),
        launch_arguments={
            "namespace": NS, "image": "/lt_camera/image_raw", "allow_random_weights": "true",
            "model_cfg": "tiny", "image_size": "128", "device": "cpu", "keep_ratio": "0.5",
        }.items())
    return launch.LaunchDescription([include, launch_testing.actions.ReadyToTest()])


class TestTrackerLaunch(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        rclpy.init()
        cls.node = rclpy.create_node("fastsam2_launch_test_probe")

    @classmethod
    def tearDownClass(cls):
        cls.node.destroy_node()
        rclpy.shutdown()

    def test_mask_published_with_input_header(self):
        from rclpy.executors import SingleThreadedExecutor

        from fastsam2_ros.image_messages import image_to_numpy, numpy_to_image

        got = []
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.node.create_subscription(Image, f"/{NS}/mask", got.append, qos)
        pub = self.node.create_publisher(Image, "/lt_camera/image_raw", qos)
        ex = SingleThreadedExecutor()
        ex.add_node(self.node)
        rgb = (np.random.default_rng(0).random((48, 64, 3)) * 255).astype(np.uint8)
        msg = numpy_to_image(rgb, "rgb8")
        msg.header.frame_id = "lt_cam"
        msg.header.stamp.sec = 77
        deadline = self.node.get_clock().now().nanoseconds + int(180e9)  # model load + first frame
        while not got and self.node.get_clock().now().nanoseconds < deadline:
            if pub.get_subscription_count() > 0:
                pub.publish(msg)
            ex.spin_once(timeout_sec=1.0)
        self.assertTrue(got, "no mask from the launched node")
        m = got[0]
        self.assertEqual((m.header.frame_id, m.header.stamp.sec), ("lt_cam", 77))
        self.assertEqual((m.encoding, m.height, m.width), ("mono8", 48, 64))
        self.assertTrue(set(np.unique(image_to_numpy(m)).tolist()) <= {0, 255})


@launch_testing.post_shutdown_test()
class TestShutdown(unittest.TestCase):
    def test_exit_code(self, proc_info):
        launch_testing.asserts.assertExitCodes(proc_info, allowable_exit_codes=[0, -2, -15])

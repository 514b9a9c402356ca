"""launch_testing test of launch/tracker.launch.py: the node comes up active from the launch file,
gets the values of its parameter file in the launch namespace, accepts an image on the remapped
topic and publishes a mask with the image's header.

It needs the ROS 2 launch stack (launch, launch_ros and what launch_ros imports, such as
composition_interfaces, launch_testing) and fastsam2_ros registered in the ament index (built with
colcon: scripts/setup_env.sh, or ``colcon build`` in a workspace). Where a piece is missing, the
module still imports and a single test skips naming that piece, so pytest never stops at
collection (launch_testing's plugin imports this module itself) and a lone run of this file ends
"1 skipped", not "found no collectors". test_ros_launch_file.py checks the launch file everywhere.
"""

import importlib
import os
import unittest

import pytest
from domains import domain_id


def missing_pieces():
    """Why the launch test cannot run here: one reason per missing piece (empty: it can run)."""
    reasons = []
    for module, what in (("launch", "the ROS 2 launch package"),
                         ("launch_ros", "the ROS 2 launch_ros package"),
                         ("launch_testing", "the ROS 2 launch_testing package"),
                         ("fastsam2_msgs.msg", "fastsam2_msgs (build it: scripts/setup_env.sh)")):
        try:
            if getattr(importlib.import_module(module), "__file__", None) is None:
                # a bare folder named like the package (e.g. fastsam2_ros/launch on sys.path)
                raise ImportError(f"no module named {module!r}", name=module)
        except ImportError as exc:
            name = getattr(exc, "name", None) or module
            if name.split(".")[0] == module.split(".")[0]:
                reasons.append(f"{name} is not installed ({what})")
            else:  # e.g. launch_ros imports composition_interfaces, which has no PyPI wheel
                reasons.append(f"{name} is not installed ({module} imports it)")
    if not reasons:
        from ament_index_python.packages import PackageNotFoundError, get_package_prefix

        try:
            prefix = get_package_prefix("fastsam2_ros")
        except PackageNotFoundError:
            reasons.append("fastsam2_ros is not in the ament index (AMENT_PREFIX_PATH): build it "
                           "with colcon (scripts/setup_env.sh) and source the install")
        else:
            exe = os.path.join(prefix, "lib", "fastsam2_ros", "tracker_node")
            if not os.path.exists(exe):
                reasons.append(f"{exe} is missing (colcon build of fastsam2_ros incomplete)")
    return reasons


MISSING = missing_pieces()

if MISSING:
    def test_launch_file_end_to_end():
        pytest.skip("launch test not run: " + "; ".join(MISSING))

else:
    import launch
    import launch_testing.actions
    import launch_testing.asserts
    import numpy as np
    import rclpy
    from ament_index_python.packages import get_package_share_directory
    from launch.launch_description_sources import PythonLaunchDescriptionSource
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    # its own domain also where the user exports ROS_DOMAIN_ID (a robot's): never the user's
    os.environ["ROS_DOMAIN_ID"] = str(domain_id(5))
    NS = "launchtest"

    #: a value that only the parameter file sets: the node must get it in the launch namespace
    FILE_ONLY = ("diagnostics_warn_hold", 7.5)
    TEMP_FILES = []

    def _params_file():
        """The package's parameter file with one value changed (a temporary copy)."""
        import tempfile

        import yaml

        share = get_package_share_directory("fastsam2_ros")
        data = yaml.safe_load(open(os.path.join(share, "config", "tracker.yaml")))
        (section,) = data.values()
        section["ros__parameters"][FILE_ONLY[0]] = FILE_ONLY[1]
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
            yaml.safe_dump(data, f)
        TEMP_FILES.append(f.name)
        return f.name

    @pytest.mark.launch_test
    def generate_test_description():
        launch_file = os.path.join(get_package_share_directory("fastsam2_ros"), "launch",
                                   "tracker.launch.py")  # found through the ament index
        include = launch.actions.IncludeLaunchDescription(
            PythonLaunchDescriptionSource(launch_file),
            launch_arguments={
                "namespace": NS, "image": "/lt_camera/image_raw", "allow_random_weights": "true",
                "model_cfg": "tiny", "image_size": "128", "device": "cpu", "keep_ratio": "0.5",
                "params_file": _params_file(),
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

        def test_parameter_file_reaches_the_namespaced_node(self):
            from rcl_interfaces.srv import GetParameters

            client = self.node.create_client(GetParameters, f"/{NS}/fastsam2_tracker/get_parameters")
            self.assertTrue(client.wait_for_service(timeout_sec=60.0), "no parameter service")
            future = client.call_async(GetParameters.Request(names=[FILE_ONLY[0], "keep_ratio"]))
            rclpy.spin_until_future_complete(self.node, future, timeout_sec=30.0)
            values = [v.double_value for v in future.result().values]
            self.assertEqual(values, [FILE_ONLY[1], 0.5])  # the file's value, and the launch argument

    @launch_testing.post_shutdown_test()
    class TestShutdown(unittest.TestCase):
        def test_exit_code(self, proc_info):
            for path in TEMP_FILES:
                os.unlink(path)
            launch_testing.asserts.assertExitCodes(proc_info, allowable_exit_codes=[0, -2, -15])

"""fastsam2_ros: streaming SAM 2 tracking with text-guided token pruning, plus its ROS 2 node.

The ``core`` subpackage is ROS-free (tracker, pruning, memory bank, metrics); ``ros`` holds the
thin rclpy adapters. Nothing here imports rclpy at package import time.
"""

__version__ = "0.1.0"

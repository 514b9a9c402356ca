"""ROS 2 adapters of the tracker core (rclpy, fastsam2_msgs). Importing this package does not
import rclpy; import the submodules (``tracker_node``, ``demo``) for that."""

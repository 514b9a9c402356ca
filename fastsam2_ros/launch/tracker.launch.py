"""Launch the fastsam2_ros tracker lifecycle node.

    ros2 launch fastsam2_ros tracker.launch.py image:=/camera/color/image_raw \
        checkpoint:=$HOME/models/sam2.1_hiera_tiny.pt

The node configures and activates itself (``auto_start`` in the params file); set
``auto_start:=false`` to leave the transitions to a lifecycle manager. Arguments left empty keep the
value of the params file (default: the package's config/tracker.yaml).
"""

import difflib
import os

import launch.logging
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import LifecycleNode
from launch_ros.substitutions import FindPackageShare

NODE_NAME = "fastsam2_tracker"

#: the launch arguments that are not node parameters (remappings, the file, the node's place)
LAUNCH_ARGUMENTS = ("namespace", "image", "camera_info", "click", "params_file", "log_level")

#: launch argument -> (parameter type, description); empty value = keep the params file's value
PARAMETER_ARGUMENTS = {
    "checkpoint": (str, "Path to the official SAM 2.1 checkpoint, e.g. ~/models/sam2.1_hiera_tiny.pt "
                        "(download from the facebookresearch/sam2 release)"),
    "model_cfg": (str, "Model: tiny | small | base_plus | large (must match the checkpoint)"),
    "device": (str, "Torch device: auto | cpu | cuda | cuda:N"),
    "keep_ratio": (float, "Fraction of image tokens kept before memory attention, (0, 1]; 1.0 = dense SAM 2"),
    "image_size": (int, "SAM 2 input side in pixels (1024 = trained resolution; smaller is faster)"),
    "publish_overlay": (bool, "Publish the rgb8 overlay image (true/false)"),
    "auto_start": (bool, "Configure and activate the node at start-up (true/false)"),
    "allow_random_weights": (bool, "Run without a checkpoint on random weights (smoke tests only)"),
    "clip_weights": (str, "open_clip weights for text prompts (ViT-B-16)"),
    "image_reliability": (str, "QoS of the image subscription: best_effort (any camera) | reliable "
                               "(every frame of a reliable driver; large frames)"),
    "image_transport": (str, "Camera stream to subscribe to: raw (<image>) | compressed "
                             "(<image>/compressed, jpeg/png)"),
}


def parameter_overrides(values):
    """Typed parameter overrides from launch-argument strings, read as ``-p name:=value`` reads
    them (rcl's words for true/false, C's numbers); empty strings are left out."""
    from fastsam2_ros.core.config import rcl_scalar

    out = {}
    for name, (kind, _) in PARAMETER_ARGUMENTS.items():
        text = str(values.get(name, "")).strip()
        if not text:
            continue
        if kind is str:
            out[name] = text
            continue
        value = rcl_scalar(text)
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if kind is bool and isinstance(value, bool):
            out[name] = value
        elif kind is int and number and isinstance(value, int):
            out[name] = value
        elif kind is float and number:
            out[name] = float(value)
        else:
            needed = {bool: "true or false", int: "an integer", float: "a number"}[kind]
            raise ValueError(f"launch argument {name} must be {needed}, got {text!r}")
    return out


def unread_argument_warnings(configurations, parameters):
    """Warnings for launch configurations this file does not read that look meant for it: a node
    parameter that is no launch argument (set it in params_file), or a near miss of a name (a
    typo). Others are left alone: a parent launch file's configurations are visible here too."""
    ours = list(LAUNCH_ARGUMENTS) + list(PARAMETER_ARGUMENTS)
    out = []
    for key in sorted(set(configurations) - set(ours)):
        if key in parameters:
            out.append(f"launch argument {key} is ignored: {key} is a parameter of the node, not "
                       "an argument of this launch file; set it in params_file (or with "
                       "`ros2 param set`)")
            continue
        close = difflib.get_close_matches(key, ours + sorted(parameters), n=1, cutoff=0.8)
        if close:
            out.append(f"launch argument {key} is ignored: no argument or parameter has that "
                       f"name (did you mean {close[0]}?)")
    return out


def params_file_path(text):
    """The params_file argument as a path, ``~`` expanded (the shell leaves it alone after
    ``:=``); ValueError unless it is a file: launch_ros only warns about a missing file and starts
    the node on its built-in defaults."""
    path = os.path.expanduser(str(text).strip())
    if not os.path.isfile(path):
        raise ValueError(f"launch argument params_file: {text!r} is not a file")
    return path


def _launch_setup(context, *args, **kwargs):
    def arg(name):
        return LaunchConfiguration(name).perform(context)

    from fastsam2_ros.core.config import check_params_file_reaches
    from fastsam2_ros.ros.parameters import spec_map

    log = launch.logging.get_logger("fastsam2_ros.tracker.launch")
    for warning in unread_argument_warnings(context.launch_configurations, set(spec_map())):
        log.warning(warning)
    image = arg("image")
    remappings = [
        ("image", image),
        ("camera_info", arg("camera_info")),
        ("click", arg("click")),
    ]
    namespace = arg("namespace")
    params = [params_file_path(arg("params_file"))]
    node_fqn = "/" + "/".join(p for p in (namespace.strip("/"), NODE_NAME) if p)
    check_params_file_reaches(params[0], node_fqn)
    overrides = parameter_overrides({name: arg(name) for name in PARAMETER_ARGUMENTS})
    if overrides:
        params.append(overrides)
    node = LifecycleNode(
        package="fastsam2_ros",
        executable="tracker_node",
        name=NODE_NAME,
        namespace=namespace,
        parameters=params,
        remappings=remappings,
        ros_arguments=["--log-level", arg("log_level")],
        output="screen",
        emulate_tty=True,
    )
    return [node]


def generate_launch_description():
    default_params = PathJoinSubstitution([FindPackageShare("fastsam2_ros"), "config", "tracker.yaml"])
    args = [
        DeclareLaunchArgument("namespace", default_value="fastsam2",
                              description="Namespace of the node and of its relative topics/services"),
        DeclareLaunchArgument("image", default_value="image",
                              description="Input image topic (sensor_msgs/Image), e.g. /camera/color/image_raw; "
                                          "<image>/compressed is used when image_transport is compressed"),
        DeclareLaunchArgument("camera_info", default_value="camera_info",
                              description="CameraInfo topic used to project RViz /clicked_point into the image"),
        DeclareLaunchArgument("click", default_value="click",
                              description="geometry_msgs/Point click topic, e.g. <image>_mouse_left from "
                                          "rqt_image_view's 'publish click location'"),
        DeclareLaunchArgument("params_file", default_value=default_params,
                              description="ROS parameter file (/**/fastsam2_tracker: ros__parameters:)"),
        DeclareLaunchArgument("log_level", default_value="info", description="Logger level of the node"),
    ]
    args += [DeclareLaunchArgument(name, default_value="", description=desc + " (empty: params file)")
             for name, (_, desc) in PARAMETER_ARGUMENTS.items()]
    return LaunchDescription(args + [OpaqueFunction(function=_launch_setup)])

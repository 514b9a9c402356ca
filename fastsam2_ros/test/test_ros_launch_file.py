"""Static checks of launch/tracker.launch.py that run without launch/launch_ros installed.

The launch file is executed against small stand-ins of the launch API (recording what it builds),
so its arguments, descriptions, remappings and parameter overrides are checked everywhere;
test_launch.py runs it for real where launch_testing is installed.
"""

import importlib.util
import sys
import types
from pathlib import Path

import pytest

from fastsam2_ros.ros.parameters import spec_map

LAUNCH_FILE = Path(__file__).resolve().parents[1] / "launch" / "tracker.launch.py"
#: stands for the package's installed params file (FindPackageShare)
PARAMS_FILE = str(LAUNCH_FILE.parents[1] / "config" / "tracker.yaml")


class _Rec:
    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


class LaunchConfiguration(_Rec):
    def perform(self, context):
        return context.values[self.args[0]]


def _stub_modules():
    launch = types.ModuleType("launch")
    launch.LaunchDescription = type("LaunchDescription", (_Rec,), {})
    actions = types.ModuleType("launch.actions")
    actions.DeclareLaunchArgument = type("DeclareLaunchArgument", (_Rec,), {})
    actions.OpaqueFunction = type("OpaqueFunction", (_Rec,), {})
    subs = types.ModuleType("launch.substitutions")
    subs.LaunchConfiguration = LaunchConfiguration
    subs.PathJoinSubstitution = type("PathJoinSubstitution", (_Rec,), {})
    launch_ros = types.ModuleType("launch_ros")
    ros_actions = types.ModuleType("launch_ros.actions")
    ros_actions.LifecycleNode = type("LifecycleNode", (_Rec,), {})
    ros_subs = types.ModuleType("launch_ros.substitutions")
    ros_subs.FindPackageShare = type("FindPackageShare", (_Rec,), {})
    return {"launch": launch, "launch.actions": actions, "launch.substitutions": subs,
            "launch_ros": launch_ros, "launch_ros.actions": ros_actions,
            "launch_ros.substitutions": ros_subs}


@pytest.fixture()
def launch_module(monkeypatch):
    for name, mod in _stub_modules().items():
        monkeypatch.setitem(sys.modules, name, mod)
    spec = importlib.util.spec_from_file_location("tracker_launch_under_test", LAUNCH_FILE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _arguments(ld):
    return {a.args[0]: a.kwargs for a in ld.args[0] if type(a).__name__ == "DeclareLaunchArgument"}


def test_arguments_have_descriptions(launch_module):
    ld = launch_module.generate_launch_description()
    args = _arguments(ld)
    for required in ("namespace", "image", "params_file", "checkpoint", "device", "keep_ratio"):
        assert required in args
    for name, kw in args.items():
        assert len(kw.get("description", "")) > 10, name
        assert "default_value" in kw, name
    specs = spec_map()
    for name in launch_module.PARAMETER_ARGUMENTS:
        assert name in specs, f"launch argument {name} is not a node parameter"


def _run_setup(mod, **values):
    ld = mod.generate_launch_description()
    args = _arguments(ld)
    defaults = {k: (v["default_value"] if isinstance(v["default_value"], str) else PARAMS_FILE)
                for k, v in args.items()}
    defaults.update(values)
    opaque = [a for a in ld.args[0] if type(a).__name__ == "OpaqueFunction"][0]
    ctx = types.SimpleNamespace(values=defaults)
    (node,) = opaque.kwargs["function"](ctx)
    return node.kwargs


def test_node_remappings_and_overrides(launch_module):
    kw = _run_setup(launch_module, image="/camera/color/image_raw", namespace="robot",
                    checkpoint="/m/sam2.1_hiera_tiny.pt", keep_ratio="0.5", image_size="512",
                    publish_overlay="true", image_reliability="reliable")
    assert kw["package"] == "fastsam2_ros" and kw["executable"] == "tracker_node"
    assert kw["name"] == "fastsam2_tracker" and kw["namespace"] == "robot"
    remap = dict(kw["remappings"])
    assert remap["image"] == "/camera/color/image_raw"
    assert "image/compressed" not in remap  # the node derives it from the resolved image topic
    params_file, overrides = kw["parameters"]
    assert params_file == PARAMS_FILE
    assert overrides == {"checkpoint": "/m/sam2.1_hiera_tiny.pt", "keep_ratio": 0.5,
                         "image_size": 512, "publish_overlay": True, "image_reliability": "reliable"}
    specs = spec_map()
    for name, value in overrides.items():
        assert type(value) is type(specs[name].default), name


def test_empty_arguments_keep_the_params_file(launch_module):
    kw = _run_setup(launch_module)
    assert len(kw["parameters"]) == 1
    with pytest.raises(ValueError, match="true or false"):
        launch_module.parameter_overrides({"publish_overlay": "maybe"})
    # a mistyped number names its argument (launch prints only the message)
    with pytest.raises(ValueError, match="image_size must be an integer, got '128.0'"):
        launch_module.parameter_overrides({"image_size": "128.0"})
    with pytest.raises(ValueError, match="keep_ratio must be a number, got 'abc'"):
        launch_module.parameter_overrides({"keep_ratio": "abc"})


def test_params_file_expands_home_and_must_be_a_file(launch_module, tmp_path, monkeypatch):
    """launch_ros only warns about a params_file that is not a file and starts the node on its
    built-in defaults; the shell leaves ~ alone after ':='."""
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "my.yaml").write_text(Path(PARAMS_FILE).read_text())
    kw = _run_setup(launch_module, params_file="~/my.yaml")
    assert kw["parameters"] == [str(tmp_path / "my.yaml")]
    for wrong in ("~/missing.yaml", "/nonexistent/dir/tracker.yaml", str(tmp_path), ""):
        with pytest.raises(ValueError, match="params_file: .* is not a file"):
            _run_setup(launch_module, params_file=wrong)

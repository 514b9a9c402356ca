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
    logging_ = types.ModuleType("launch.logging")
    logging_.warnings = []
    logging_.get_logger = lambda name: types.SimpleNamespace(warning=logging_.warnings.append)
    launch.logging = logging_
    return {"launch": launch, "launch.actions": actions, "launch.substitutions": subs,
            "launch.logging": logging_, "launch_ros": launch_ros, "launch_ros.actions": ros_actions,
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
    ctx = types.SimpleNamespace(values=defaults, launch_configurations=dict(defaults))
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


def test_arguments_are_read_as_ros_reads_a_parameter(launch_module):
    """Booleans took only true/false/1/0 where `-p` and a params file take rcl's words (yes, on,
    ...), and Python's int() read "5_12" as 512, which rcl reads as a string."""
    read = launch_module.parameter_overrides
    assert read({"publish_overlay": "yes", "auto_start": "Off"}) == {"publish_overlay": True,
                                                                     "auto_start": False}
    assert read({"keep_ratio": "1", "image_size": "512"}) == {"keep_ratio": 1.0, "image_size": 512}
    assert type(read({"keep_ratio": "1"})["keep_ratio"]) is float
    for name, text in (("image_size", "5_12"), ("keep_ratio", "1_0"), ("publish_overlay", "tRue"),
                       ("image_size", "true")):
        with pytest.raises(ValueError, match=f"launch argument {name} must be"):
            read({name: text})


def test_an_argument_meant_for_the_node_that_it_does_not_read_is_warned_about(launch_module):
    """`keep_ration:=0.5` (a typo) and `max_rate_hz:=10.0` (a parameter, not an argument) were
    dropped without a word; a parent launch file's own configurations are no concern of ours."""
    launch_module.launch.logging.warnings.clear()
    _run_setup(launch_module, keep_ration="0.5", max_rate_hz="10.0", robot_model="arm_v2")
    warned = launch_module.launch.logging.warnings
    assert len(warned) == 2, warned
    assert "keep_ration is ignored" in warned[0] and "did you mean keep_ratio?" in warned[0]
    assert "max_rate_hz is ignored: max_rate_hz is a parameter of the node" in warned[1]


@pytest.mark.parametrize("key,namespace,reaches", [
    ("/**/fastsam2_tracker", "fastsam2", True), ("/**", "robot/arm", True),
    ("fastsam2_tracker", "fastsam2", False), ("fastsam2_tracker", "", True),
    ("/fastsam2/fastsam2_tracker", "robot", False), ("/robot/*", "robot", True)])
def test_a_params_file_whose_sections_do_not_reach_the_node_is_refused(launch_module, tmp_path,
                                                                       key, namespace, reaches):
    """rcl skips a section keyed for another node without a word: a file keyed the common way
    (`fastsam2_tracker:`) started the node in /fastsam2 on its built-in defaults."""
    params = tmp_path / "p.yaml"
    params.write_text(f"{key}:\n  ros__parameters:\n    keep_ratio: 0.5\n")
    if reaches:
        assert _run_setup(launch_module, params_file=str(params), namespace=namespace)
        return
    with pytest.raises(Exception, match=rf"its section '{key}' does not apply to the node "
                                        rf"/{namespace}/fastsam2_tracker"):
        _run_setup(launch_module, params_file=str(params), namespace=namespace)


def test_which_sections_of_a_params_file_rcl_applies_to_the_node():
    """rcl's matching: `*` one part of the name, `**` any number, a key absolute with or without
    its leading "/"; a file whose sections all miss the node, or one that names the node where it
    does not run, is refused (rcl would start it without those values)."""
    from fastsam2_ros.core.config import section_applies

    node = "/fastsam2/fastsam2_tracker"
    for key in ("/**", "/**/fastsam2_tracker", "/**/*", "/*/fastsam2_tracker", "/fastsam2/*",
                "fastsam2/fastsam2_tracker", "/fastsam2/**"):
        assert section_applies(key, node), key
    for key in ("fastsam2_tracker", "/fastsam2_tracker", "/other/fastsam2_tracker", "/*",
                "/fastsam2/other", None):
        assert not section_applies(key, node), key
    assert section_applies("fastsam2_tracker", "/fastsam2_tracker")


def test_a_params_file_naming_the_node_where_it_does_not_run_is_refused(tmp_path):
    from fastsam2_ros.core.config import InputError, check_params_file_reaches

    both = tmp_path / "both.yaml"  # rcl applies /** alone: keep_ratio would be dropped
    both.write_text("/**:\n  ros__parameters: {use_sim_time: false}\n"
                    "fastsam2_tracker:\n  ros__parameters: {keep_ratio: 0.5}\n")
    with pytest.raises(InputError, match="its section 'fastsam2_tracker' does not apply"):
        check_params_file_reaches(both, "/fastsam2/fastsam2_tracker")
    check_params_file_reaches(both, "/fastsam2_tracker")  # (the root namespace's node: it does)
    other = tmp_path / "other.yaml"
    other.write_text("/**/other_node:\n  ros__parameters: {a: 1}\n"
                     "/robot/fastsam2_tracker:\n  ros__parameters: {keep_ratio: 0.5}\n")
    with pytest.raises(InputError, match="its section '/robot/fastsam2_tracker' does not apply"):
        check_params_file_reaches(other, "/fastsam2/fastsam2_tracker")

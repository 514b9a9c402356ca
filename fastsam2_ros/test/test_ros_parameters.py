"""Parameters of the tracker node: declared with descriptions and ranges, 1:1 with TrackerConfig
and with config/tracker.yaml, loaded from the YAML file through rclpy (no model is built)."""

import json
import math
import os
import re
from pathlib import Path

import pytest

os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
from domains import domain_id, ros_context  # noqa: E402
DOMAIN_ID = domain_id(1)

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("fastsam2_msgs.msg", reason="fastsam2_msgs not built (scripts/setup_env.sh)")

import yaml  # noqa: E402
from rcl_interfaces.msg import ParameterType  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402

from fastsam2_ros.core.config import TrackerConfig, load_ros_params, params_file_key  # noqa: E402
from fastsam2_ros.core.errors import InputError  # noqa: E402
from fastsam2_ros.ros import parameters as P  # noqa: E402

YAML = Path(__file__).resolve().parents[1] / "config" / "tracker.yaml"


def yaml_params():
    return load_ros_params(YAML)


@pytest.fixture(scope="module")
def ctx():
    with ros_context(DOMAIN_ID) as c:
        yield c


def make_node(ctx, **kw):
    from fastsam2_ros.ros.tracker_node import TrackerNode

    return TrackerNode(context=ctx, **kw)


def test_specs_cover_tracker_config_one_to_one():
    core = [s for s in P.parameter_specs() if s.group == "core"]
    assert [s.name for s in core] == list(TrackerConfig.field_names())
    assert all(s.name in P.TRACKER_PARAMETER_DOCS for s in core), "every core field has its own description"
    names = [s.name for s in P.parameter_specs()]
    assert len(names) == len(set(names))
    defaults = TrackerConfig().to_dict()
    assert all(s.default == defaults[s.name] for s in core)


def test_yaml_has_every_parameter_and_nothing_else():
    params = yaml_params()
    specs = P.spec_map()
    assert set(params) == set(specs), (set(params) ^ set(specs))
    for name, value in params.items():
        default = specs[name].default
        assert type(value) is type(default), f"{name}: yaml {value!r} vs declared {default!r}"
        assert value == default, f"{name}: yaml value {value!r} differs from the default {default!r}"


def test_docs_parameter_table_has_every_parameter_with_its_default_range_and_when_it_applies():
    doc = (Path(__file__).resolve().parents[2] / "docs" / "ros.md")
    if not doc.is_file():
        pytest.skip("docs/ros.md not in this checkout")
    # name, default, range / choices, applied, description (what `ros2 param describe` says)
    row = re.compile(r"^\| `(\w+)` \| `([^`]*)` \| ([^|]*) \| ([\w-]+) \| (.*) \|$")

    def prose(text):  # the table may mark names as code, and writes "|" as "\|" or " / "
        return text.replace("`", "").replace("\\|", "|").replace(" / ", " | ")

    rows = {m[1]: (m[2], m[3].strip(), m[4], prose(m[5].strip()))
            for m in map(row.match, doc.read_text().splitlines()) if m}
    for spec in P.parameter_specs():
        assert spec.name in rows, f"{spec.name} missing from the parameter table of docs/ros.md"
        assert rows[spec.name] == (json.dumps(spec.default), spec.allowed(" / "),
                                   spec.takes_effect, prose(spec.description)), spec.name


def test_a_node_setting_names_a_lifecycle_step_that_reads_it():
    assert {spec.node_step for spec in P.NODE_PARAMETERS} <= set(P.NODE_STEP_RANK)
    with pytest.raises(ValueError, match="node_step 'activte' is none of start-up, configure"):
        P.ParamSpec("x", 1, "a misspelt step", node_step="activte")


def test_numeric_parameters_have_ranges_containing_default():
    for s in P.parameter_specs():
        if isinstance(s.default, (int, float)) and not isinstance(s.default, bool):
            assert s.range is not None, f"{s.name} has no range"
            assert s.range.contains(s.default), s.name


def test_descriptor_ranges_are_the_core_table():
    from fastsam2_ros.core.config import PARAMETER_CHOICES, PARAMETER_RANGES

    specs = P.spec_map()
    for name, rng in PARAMETER_RANGES.items():
        d = P.descriptor(specs[name])
        r = (d.integer_range or d.floating_point_range)[0]
        assert (r.from_value, r.to_value) == (rng.low, rng.high), name
        if d.integer_range:
            assert r.step == rng.step, name
        if rng.low_open:
            assert rng.describe() in d.additional_constraints, name
    assert specs["image_size"].range.step == 32
    for name, choices in PARAMETER_CHOICES.items():
        assert ", ".join(choices) in P.descriptor(specs[name]).additional_constraints


def test_model_cfg_descriptor_says_config_names_are_taken_too():
    """Its choices are the short names; a sam2 config name is taken as well (`ros2 param
    describe` listed the short names as a closed set)."""
    text = P.descriptor(P.spec_map()["model_cfg"]).additional_constraints
    example = re.search(r"or an official sam2 config name such as (configs/\S+\.yaml)", text)
    assert example, text
    assert TrackerConfig(model_cfg=example[1]).model_cfg == example[1]


def test_declared_with_descriptors(ctx):
    node = make_node(ctx)
    try:
        for s in P.parameter_specs():
            assert node.has_parameter(s.name)
            d = node.describe_parameter(s.name)
            assert d.description and len(d.description) > 15, s.name
            if isinstance(s.default, bool):
                assert d.type == ParameterType.PARAMETER_BOOL
            elif isinstance(s.default, int):
                assert d.type == ParameterType.PARAMETER_INTEGER and d.integer_range, s.name
            elif isinstance(s.default, float):
                assert d.type == ParameterType.PARAMETER_DOUBLE and d.floating_point_range, s.name
            else:
                assert d.type == ParameterType.PARAMETER_STRING
        assert node.lifecycle_state == "unconfigured"  # auto_start is applied by main()
        # ranges are enforced by rclpy
        res = node.set_parameters([Parameter("keep_ratio", value=0.0)])
        assert not res[0].successful
        res = node.set_parameters([Parameter("keep_ratio", value=0.5)])
        assert res[0].successful
        res = node.set_parameters([Parameter("image_depth", value=0)])
        assert not res[0].successful
        # the core's open lower end, which a ROS range cannot express, is enforced too
        res = node.set_parameters([Parameter("keep_ratio", value=0.0)])
        assert not res[0].successful and "(0, 1]" in res[0].reason
        res = node.set_parameters([Parameter("image_size", value=112)])
        assert not res[0].successful
        res = node.set_parameters([Parameter("image_reliability", value="sometimes")])
        assert not res[0].successful and "best_effort" in res[0].reason
    finally:
        node.destroy_node()


def test_params_file_maps_onto_tracker_config(ctx, tmp_path):
    params = yaml_params()
    params.update(keep_ratio=0.5, image_size=256, model_cfg="tiny", mc_passes=2, publish_overlay=True)
    f = tmp_path / "p.yaml"
    f.write_text(yaml.safe_dump({params_file_key(): {"ros__parameters": params}}))
    c = rclpy.Context()
    rclpy.init(context=c, domain_id=DOMAIN_ID, args=["--ros-args", "--params-file", str(f)])
    try:
        node = make_node(c)
        try:
            cfg = P.tracker_config_from_node(node)
            assert cfg == TrackerConfig.from_yaml(f)
            assert (cfg.keep_ratio, cfg.image_size, cfg.model_cfg, cfg.mc_passes) == (0.5, 256, "tiny", 2)
            assert P.node_settings(node)["publish_overlay"] is True
        finally:
            node.destroy_node()
    finally:
        rclpy.shutdown(context=c)


def test_start_up_parameters_are_read_only(ctx):
    """auto_start is read once when the node starts: `ros2 param set` took a new value later
    and nothing used it."""
    node = make_node(ctx)
    try:
        for spec in P.parameter_specs():
            assert node.describe_parameter(spec.name).read_only == (spec.takes_effect == "start-up"), \
                spec.name
        r = node.set_parameters([Parameter("auto_start", value=False)])[0]
        assert not r.successful and "read-only" in r.reason, r.reason
        assert node.get_parameter("auto_start").value is True
    finally:
        node.destroy_node()


def _log_lines(capfd):
    """The messages (no level, time, name) of the "take effect" lines the node logged."""
    return [line.split("]: ", 1)[-1] for line in capfd.readouterr().err.splitlines()
            if "take effect" in line]


def test_a_value_set_after_the_step_that_reads_it_is_logged_with_that_step(ctx, capfd):
    """image_reliability, image_depth, image_transport (... every node setting that is not live)
    set while active were taken without a word and changed nothing until the next activate; only
    core parameters said when they apply. One rule: a setting whose step has run says which
    step applies it, one that the coming step reads says nothing."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from rclpy.lifecycle import TransitionCallbackReturn
    from scene_tracker import SceneTracker

    overrides = dict(model_cfg="tiny", allow_random_weights=True, device="cpu", image_size=64)
    node = make_node(ctx, tracker_factory=lambda cfg: SceneTracker(cfg),
                     parameter_overrides=[Parameter(k, value=v) for k, v in overrides.items()])

    def set_(**values):
        capfd.readouterr()
        assert node.set_parameters_atomically(
            [Parameter(k, value=v) for k, v in values.items()]).successful
        return _log_lines(capfd)

    try:
        assert node.autostart(), node.health.fatal
        lines = set_(image_reliability="reliable", image_depth=7, image_transport="compressed",
                     use_tf=False, auto_prompt_on_start=True, publish_mask=False, keep_ratio=0.5)
        assert lines == ["parameter(s) image_reliability, image_depth, image_transport, use_tf, "
                         "auto_prompt_on_start take effect on the next activate"], lines
        lines = set_(output_qos_depth=3, keep_model_when_inactive=True, image_size=96)
        assert sorted(lines) == sorted([
            "parameter(s) output_qos_depth take effect on the next configure",
            "parameter(s) keep_model_when_inactive take effect on the next deactivate",
            "parameter(s) image_size take effect when the model is built next (configure, or "
            "activate after a release)"]), lines
        assert not set_(max_rate_hz=5.0, overlay_alpha=0.3, diagnostics_period=2.0)  # live
        node.set_parameters([Parameter("keep_model_when_inactive", value=False)])
        assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS  # model released
        assert not set_(image_reliability="best_effort", image_size=128)  # the coming activate
        assert set_(output_qos_depth=4) == [
            "parameter(s) output_qos_depth take effect on the next configure"]
    finally:
        node.destroy_node()


def test_the_docs_call_live_only_parameters_that_are_live():
    """docs/ros.md called image_reliability and image_depth "the live parameters" while they
    apply at activate (the table, the descriptor)."""
    doc = Path(__file__).resolve().parents[2] / "docs" / "ros.md"
    if not doc.is_file():
        pytest.skip("docs/ros.md not in this checkout")
    text = " ".join(doc.read_text().split())
    specs = P.spec_map()
    for m in re.finditer(r"\blive (?:parameters?|settings?)((?: (?:and |or )?`\w+`,?)+)", text):
        for name in re.findall(r"`(\w+)`", m[1]):
            assert name not in specs or specs[name].live, f"docs/ros.md: {m[0]!r}: {name} applies " \
                f"at {specs[name].takes_effect}"


def test_diagnostics_period_applies_live(ctx):
    node = make_node(ctx)
    try:
        assert node.set_parameters([Parameter("diagnostics_period", value=2.5)])[0].successful
        assert node._diag_timer.timer_period_ns == 2_500_000_000
        assert node.set_parameters([Parameter("diagnostics_period", value=0.01)])[0].successful is False
        assert node._diag_timer.timer_period_ns == 2_500_000_000
    finally:
        node.destroy_node()


@pytest.mark.parametrize("namespace", ["", "fastsam2", "robot1/perception"])
def test_package_params_file_reaches_the_node_in_any_namespace(tmp_path, namespace):
    """The launch file starts the node in a namespace ("fastsam2"); rcl silently ignores a section
    keyed by the bare node name there, so the package's file must be keyed for every namespace."""
    data = yaml.safe_load(YAML.read_text())
    assert list(data) == [params_file_key()]
    data[params_file_key()]["ros__parameters"].update(keep_ratio=0.77, max_rate_hz=3.0)
    f = tmp_path / "p.yaml"
    f.write_text(yaml.safe_dump(data))
    c = rclpy.Context()
    rclpy.init(context=c, domain_id=DOMAIN_ID, args=["--ros-args", "--params-file", str(f)])
    try:
        node = make_node(c, namespace=namespace)
        try:
            assert P.tracker_config_from_node(node).keep_ratio == 0.77
            assert P.node_settings(node)["max_rate_hz"] == 3.0
        finally:
            node.destroy_node()
    finally:
        rclpy.shutdown(context=c)


@pytest.mark.parametrize("name,value,match", [
    ("keep_ratio", 1.5, "keep_ratio"),
    ("image_size", 100, "image_size"),
    ("keep_ratio", 1, "keep_ratio"),  # an int for a double parameter (what -p keep_ratio:=1 gives)
    ("image_depth", 0, "image_depth"),
    ("max_rate_hz", -1.0, "max_rate_hz"),
])
def test_out_of_range_start_up_value_fails_configure_not_the_node(ctx, name, value, match):
    from rclpy.lifecycle import TransitionCallbackReturn

    built = []
    node = make_node(ctx, parameter_overrides=[Parameter(name, value=value)],
                     tracker_factory=lambda cfg: built.append(cfg))
    try:
        assert name in node.rejected_parameters
        assert node.get_parameter(name).value == P.spec_map()[name].default  # declared anyway
        assert node.trigger_configure() == TransitionCallbackReturn.FAILURE
        assert node.lifecycle_state == "unconfigured" and not built
        assert match in (node.health.fatal or "") and "rejected" in node.health.fatal
        # a set refused as a whole (its other member is invalid) changes nothing, not even that
        good = P.spec_map()[name].default
        bad_other = Parameter("image_reliability", value="sometimes")
        assert not node.set_parameters_atomically([Parameter(name, value=good), bad_other]).successful
        assert name in node.rejected_parameters
        assert node.trigger_configure() == TransitionCallbackReturn.FAILURE and not built
        # a valid value given later clears the rejection
        assert node.set_parameters([Parameter(name, value=good)])[0].successful
        assert name not in node.rejected_parameters
    finally:
        node.destroy_node()


def test_a_rejected_start_up_setting_keeps_its_default_and_configure_runs(ctx):
    """auto_start is read once at start-up and read-only, so no ``ros2 param set`` could clear its
    rejection: configure failed until a restart. It keeps its default (logged) instead."""
    from rclpy.lifecycle import TransitionCallbackReturn

    built = []
    node = make_node(ctx, parameter_overrides=[Parameter("auto_start", value=1),  # auto_start:=1
                                               Parameter("device", value="cpu")],
                     tracker_factory=lambda cfg: built.append(cfg) or object())
    try:
        assert node.get_parameter("auto_start").value is P.spec_map()["auto_start"].default
        assert "auto_start" not in node.rejected_parameters
        assert not node.set_parameters([Parameter("auto_start", value=False)])[0].successful
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS and len(built) == 1
    finally:
        node.destroy_node()


@pytest.mark.parametrize("name,value,needed", [
    ("max_rate_hz", 10, "a decimal number, with a point (10.0, not 10)"),  # -p max_rate_hz:=10
    ("image_depth", 2.0, "an integer"),
    ("publish_mask", 1, "true or false"),
])
def test_start_up_value_of_the_wrong_type_names_the_type_not_the_range(ctx, name, value, needed):
    node = make_node(ctx, parameter_overrides=[Parameter(name, value=value)])
    try:
        reason = node.rejected_parameters[name]
        assert f"(must be {needed})" in reason and "must be in" not in reason, reason
    finally:
        node.destroy_node()


def test_set_parameters_answers_every_value(ctx, monkeypatch):
    """rclpy's parameter service sends no reply when the callback raises (`ros2 param set` waits
    until it times out): every failure is a refusal, and a huge value is not echoed whole."""
    import importlib.util

    from fastsam2_ros.ros import tracker_node

    node = make_node(ctx)
    try:
        if importlib.util.find_spec("sam2") is not None:  # the name is checked against sam2's
            long_name = "configs/sam2.1/" + "a" * 300 + ".yaml"  # over NAME_MAX: OSError from the OS
            r = node.set_parameters([Parameter("model_cfg", value=long_name)])[0]
            assert not r.successful and "not a config of the installed sam2" in r.reason, r.reason
        r = node.set_parameters([Parameter("model_cfg", value="x" * 100000)])[0]
        assert not r.successful and "unknown model_cfg" in r.reason
        assert len(r.reason) <= 300 and r.reason.endswith("configs/sam2.1/sam2.1_hiera_t.yaml")

        def broken():
            raise RuntimeError("a bug")

        monkeypatch.setattr(tracker_node, "spec_map", broken)
        r = node.set_parameters([Parameter("keep_ratio", value=0.5)])[0]
        assert not r.successful and "RuntimeError: a bug" in r.reason, r.reason
    finally:
        node.destroy_node()


def _typo_params_file(tmp_path):
    params = yaml_params()
    params.update(keep_ration=0.5, imag_size=256, use_sim_time=False,
                  qos_overrides={"/fastsam2/mask": {"publisher": {"depth": 3, "durability": "volatile"}}})
    f = tmp_path / "typo.yaml"
    f.write_text(yaml.safe_dump({params_file_key(): {"ros__parameters": params}}))
    return f


TYPO_WARNING = "unknown parameter(s), ignored: imag_size (did you mean image_size?), " \
               "keep_ration (did you mean keep_ratio?), qos_overrides./fastsam2/mask.publisher.durability " \
               "(a QoS override is qos_overrides.<topic>.<publisher|subscription>.<history|depth|reliability>)"


def test_unknown_keys_of_the_params_file_are_a_warning_of_the_node(tmp_path, capfd):
    """rcl ignores a key no parameter reads: a typo left the default in place without a word."""
    f = _typo_params_file(tmp_path)
    c = rclpy.Context()
    rclpy.init(context=c, domain_id=DOMAIN_ID, args=["--ros-args", "--params-file", str(f)])
    try:
        capfd.readouterr()
        node = make_node(c)
        try:
            err = capfd.readouterr().err
            assert "WARN" in err and TYPO_WARNING in err, err
            assert not node.rejected_parameters  # a warning: configure still runs
        finally:
            node.destroy_node()
    finally:
        rclpy.shutdown(context=c)


def test_unknown_keys_of_the_params_file_are_a_warning_of_the_offline_tools(tmp_path, caplog):
    f = _typo_params_file(tmp_path)
    with caplog.at_level("WARNING"):
        assert TrackerConfig.from_yaml(f) == TrackerConfig()
    assert [r.getMessage() for r in caplog.records] == [f"{f}: {TYPO_WARNING}"]
    caplog.clear()
    with caplog.at_level("WARNING"):
        TrackerConfig.from_yaml(YAML)  # node parameters are known keys
    assert not caplog.records


def test_invalid_core_value_fails_configure_not_the_node(ctx):
    node = make_node(ctx, parameter_overrides=[Parameter("text_mode", value="bogus")])
    try:
        from rclpy.lifecycle import TransitionCallbackReturn

        assert node.trigger_configure() == TransitionCallbackReturn.FAILURE
        assert node.lifecycle_state == "unconfigured"
        assert "text_mode" in (node.health.fatal or "")
    finally:
        node.destroy_node()


def test_missing_checkpoint_fails_configure_with_clear_error(ctx):
    node = make_node(ctx, parameter_overrides=[
        Parameter("checkpoint", value="/nonexistent/sam2.1_hiera_tiny.pt"), Parameter("device", value="cpu")])
    try:
        assert not node.autostart()
        assert node.lifecycle_state == "unconfigured"
        msg = node.health.fatal or ""
        assert "checkpoint not found" in msg and "/nonexistent/sam2.1_hiera_tiny.pt" in msg
        snap = node.health.snapshot()
        assert snap.level == 2  # ERROR on /diagnostics
        assert snap.values["last_error"] == msg
    finally:
        node.destroy_node()


@pytest.mark.parametrize("text", [
    # a robot's file: shared values under /**, the node's own below; rcl applies both
    "/**:\n  ros__parameters:\n    image_size: 512\n    keep_ratio: 0.4\n"
    "/**/fastsam2_tracker:\n  ros__parameters:\n    keep_ratio: 0.5\n",
    # what `ros2 param dump /fastsam2/fastsam2_tracker` writes
    "/fastsam2/fastsam2_tracker:\n  ros__parameters:\n    image_size: 512\n    keep_ratio: 0.5\n",
])
def test_the_node_and_the_offline_tools_read_one_params_file_alike(text, tmp_path):
    """load_ros_params took only the first matching section (a file with '/**' and
    '/**/fastsam2_tracker' ran the node at 512 px and fastsam2-eval at 1024), and refused the
    fully qualified key of a `ros2 param dump` that the node takes."""
    f = tmp_path / "p.yaml"
    f.write_text(text)
    c = rclpy.Context()
    rclpy.init(context=c, domain_id=DOMAIN_ID, args=["--ros-args", "--params-file", str(f)])
    try:
        node = make_node(c, namespace="fastsam2")
        try:
            from_node = P.tracker_config_from_node(node)
        finally:
            node.destroy_node()
    finally:
        rclpy.shutdown(context=c)
    from_file = TrackerConfig.from_yaml(f)
    assert (from_node.image_size, from_node.keep_ratio) == (512, 0.5)
    assert from_file == from_node


def _node_outcome(path):
    """What the node makes of a params file: the TrackerConfig its configure would build, or the
    InputError text configure fails with (a rejected start-up value included)."""
    c = rclpy.Context()
    rclpy.init(context=c, domain_id=DOMAIN_ID, args=["--ros-args", "--params-file", str(path)])
    try:
        node = make_node(c, namespace="fastsam2")
        try:
            return node._tracker_config(), dict(node.rejected_parameters)
        except InputError as exc:
            return exc, dict(node.rejected_parameters)
        finally:
            node.destroy_node()
    finally:
        rclpy.shutdown(context=c)


@pytest.mark.parametrize("key,text", [
    # from_yaml converted what the node refuses: keep_ratio: 1, image_size: 512.0, bf16: "no"
    # (and bf16: 0.5 read as true)
    ("keep_ratio", "1"), ("image_size", "512.0"), ("bf16", '"no"'), ("bf16", "0.5"),
    ("model_cfg", "3"),
    # PyYAML's YAML 1.1 rules are not rcl's (review rev_params): rcl reads a plain scalar as
    # its bool words, else strtol(.., 0), else strtod, else text; quoted is always text
    ("keep_ratio", "5e-1"), ("mask_threshold", "0.5e0"), ("keep_ratio", "1.e-1"),
    ("mc_dropout", "5e-2"), ("image_size", "0x200"), ("seed", "010"),
    ("bf16", "n"), ("bf16", "y"), ("allow_random_weights", "Y"), ("bf16", "off"),
    ("checkpoint", "~"), ("model_cfg", "null"), ("compile_cache_dir", "~"),
    ("seed", "1_000"), ("clip_model", "1e3"), ("clip_model", "'1e3'"),
    ("seed", "9223372036854775808"), ("keep_ratio", "1e-400"), ("checkpoint", "!!str 5"),
    ("keep_ratio", "|-\n      0.5"),
])
def test_the_offline_tools_refuse_a_params_file_value_the_node_refuses(key, text, tmp_path):
    """One params file, one reading: where the node's configure fails, from_yaml refuses, and
    otherwise both build the same TrackerConfig (from_yaml used yaml.safe_load: `5e-1`, `0.5e0`
    were text, `n`/`y` text, `~`/`null` None, `1_000` the number 1000, `1e3` text)."""
    f = tmp_path / "p.yaml"
    f.write_text(f"{params_file_key()}:\n  ros__parameters:\n    {key}: {text}\n")
    node, rejected = _node_outcome(f)
    try:
        offline = TrackerConfig.from_yaml(f)
    except InputError as exc:
        offline = exc
    if isinstance(node, InputError):
        assert isinstance(offline, InputError), \
            f"{key}: {text}: the node refuses it ({node}); from_yaml took {getattr(offline, key)!r}"
        if key in rejected:  # the descriptor refused its type: so does from_yaml, saying so
            assert f"{key} must be" in str(offline) and "the node refuses it too" in str(offline)
    else:
        assert not isinstance(offline, InputError), \
            f"{key}: {text}: the node takes {getattr(node, key)!r}; from_yaml: {offline}"
        assert offline == node and type(getattr(offline, key)) is type(getattr(node, key))


def test_params_files_are_typed_as_rcl_types_them(tmp_path):
    """load_ros_params against rcl's own reading of the same file (a node that declares
    whatever the file holds): every value of the same type and value."""
    texts = ["5e-1", "0.5e0", "1.e-1", ".5", "5.", "+5", "-0x10", "010", "08", "0o10", "1_000",
             "1e3", "1e400", "1e-310", "0x1p-1074", "0x1.8p1", "9223372036854775807",
             "9223372036854775808", "inf", "-Infinity", ".inf", "-.INF", "+.nan", "y", "N",
             "yes", "Off", "tRue", "~", "null", "NULL", "2001-12-14", "12:30", "1,5", "'5'",
             '"true"', "!!str 5", "!!float 1", "! 5", "|-\n      7", "|\n      7", "hello world",
             "0", "-0", "0x"]
    body = "".join(f"    k{i}: {t}\n" for i, t in enumerate(texts))
    f = tmp_path / "p.yaml"
    f.write_text("/**:\n  ros__parameters:\n" + body)
    ours = load_ros_params(f, "typed")
    c = rclpy.Context()
    rclpy.init(context=c, domain_id=DOMAIN_ID, args=["--ros-args", "--params-file", str(f)])
    try:
        node = rclpy.create_node("typed", context=c, allow_undeclared_parameters=True,
                                 automatically_declare_parameters_from_overrides=True)
        try:
            for i, text in enumerate(texts):
                theirs, mine = node.get_parameter(f"k{i}").value, ours[f"k{i}"]
                nans = isinstance(mine, float) and math.isnan(mine) and math.isnan(theirs)
                assert type(mine) is type(theirs) and (mine == theirs or nans), \
                    f"{text!r}: rcl {theirs!r}, load_ros_params {mine!r}"
        finally:
            node.destroy_node()
    finally:
        rclpy.shutdown(context=c)


@pytest.mark.parametrize("text,what", [
    ("    keep_ratio:\n", "no value"),
    ("    seed: &s 3\n    mc_passes: *s\n", "an alias"),
    ("    x: [1, 2.0]\n", "a list of values of different types"),
])
def test_a_params_file_rcl_refuses_is_refused_by_the_offline_tools(text, what, tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text(f"{params_file_key()}:\n  ros__parameters:\n{text}")
    c = rclpy.Context()
    with pytest.raises(Exception, match="Couldn't parse params file"):
        rclpy.init(context=c, domain_id=DOMAIN_ID, args=["--ros-args", "--params-file", str(f)])
    with pytest.raises(InputError, match=f"cannot parse parameter file .*: {what}"):
        TrackerConfig.from_yaml(f)

"""ROS's standard QoS overrides (``qos_overrides.<topic>.<publisher|subscription>.<policy>``) on
the node's topics: given at start-up they win over the node's own QoS parameters, policy by policy,
through every lifecycle cycle. Real rclpy, no DDS traffic: the profiles the entities were created
with are read back (the model is the scene test double)."""

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
from domains import domain_id, ros_context  # noqa: E402
DOMAIN_ID = domain_id(4)

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("fastsam2_msgs.msg", reason="fastsam2_msgs not built (scripts/setup_env.sh)")

from rclpy.lifecycle import TransitionCallbackReturn  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import QoSReliabilityPolicy  # noqa: E402

SUCCESS = TransitionCallbackReturn.SUCCESS
IMAGE = "qos_overrides./image.subscription."


@pytest.fixture(scope="module")
def ctx():
    with ros_context(DOMAIN_ID) as c:
        yield c


@pytest.fixture
def make_node(ctx):
    sys.path.insert(0, str(Path(__file__).parent))
    from scene_tracker import SceneTracker

    from fastsam2_ros.ros.tracker_node import TrackerNode

    nodes = []

    def make(**overrides):
        values = dict(model_cfg="tiny", allow_random_weights=True, device="cpu", image_size=64,
                      auto_start=False, **overrides)
        node = TrackerNode(context=ctx, tracker_factory=lambda cfg: SceneTracker(cfg),
                           parameter_overrides=[Parameter(k, value=v) for k, v in values.items()])
        nodes.append(node)
        return node

    yield make
    for node in nodes:
        node.destroy_node()


def image_qos(node):
    (sub,) = node._image_subscriptions()
    return sub.qos_profile.reliability, sub.qos_profile.depth


def depths(node):
    return {name: pub.qos_profile.depth for name, pub in node._outputs._pubs.items()}


def test_the_overridable_policies_are_rclpys_default_ones():
    from rclpy.qos_overriding_options import QoSOverridingOptions

    from fastsam2_ros.ros.parameters import QOS_OVERRIDABLE_POLICIES

    assert QOS_OVERRIDABLE_POLICIES == tuple(
        k.name.lower() for k in QoSOverridingOptions.with_default_policies().policy_kinds)


def test_an_image_override_wins_over_image_reliability_and_image_depth(make_node):
    node = make_node(**{IMAGE + "reliability": "reliable", IMAGE + "depth": 2,
                        "qos_overrides./mask.publisher.depth": 3, "image_reliability": "best_effort"})
    assert node.autostart(), node.health.fatal
    assert image_qos(node) == (QoSReliabilityPolicy.RELIABLE, 2)
    # one publisher's override is its own (rclpy writes it into the profile it is given)
    assert depths(node)["mask"] == 3 and depths(node)["labels"] == 5
    assert node.describe_parameter(IMAGE + "reliability").read_only  # rclpy's: a start-up value
    assert node.get_parameter(IMAGE + "depth").value == 2


def test_without_an_override_the_node_parameters_decide_at_each_activate(make_node):
    """No override declares nothing (rclpy would freeze a declared policy at its first value)."""
    node = make_node(**{"qos_overrides./labels.publisher.depth": 4})
    assert node.autostart(), node.health.fatal
    assert image_qos(node) == (QoSReliabilityPolicy.BEST_EFFORT, 5)
    assert node.set_parameters_atomically([Parameter("image_reliability", value="reliable"),
                                           Parameter("image_depth", value=7)]).successful
    assert node.trigger_deactivate() == SUCCESS and node.trigger_activate() == SUCCESS
    assert image_qos(node) == (QoSReliabilityPolicy.RELIABLE, 7)
    assert sorted(n for n in node._parameters if n.startswith("qos_overrides.")) == [
        "qos_overrides./labels.publisher.depth"]
    assert depths(node)["labels"] == 4 and depths(node)["mask"] == 5


def test_overrides_hold_through_cleanup_and_configure_again(make_node):
    """The entities are created again on each configure / activate: the override parameters,
    declared once, are read again, not declared twice."""
    node = make_node(**{IMAGE + "reliability": "reliable", "qos_overrides./mask.publisher.depth": 3,
                        "image_depth": 4})
    for _ in range(2):
        assert node.autostart(), node.health.fatal
        assert image_qos(node) == (QoSReliabilityPolicy.RELIABLE, 4)
        assert depths(node)["mask"] == 3
        assert node.trigger_deactivate() == SUCCESS and node.trigger_cleanup() == SUCCESS


@pytest.mark.parametrize("policy, value, error", [
    ("reliability", "sometimes", "Unexpected QoS override for policy `reliability`: `sometimes`"),
    ("depth", "five", "Trying to set parameter 'qos_overrides./image.subscription.depth' to "
                      "'five' of type 'STRING', expecting type 'INTEGER'"),
])
def test_a_bad_override_fails_activate_with_rclpys_reason(make_node, policy, value, error):
    node = make_node(**{IMAGE + policy: value})
    assert node.trigger_configure() == SUCCESS
    assert node.trigger_activate() != SUCCESS
    assert node.lifecycle_state == "unconfigured"  # on_error released everything
    assert error in node.health.fatal, node.health.fatal


def test_well_formed_overrides_are_not_warned_about_and_others_are():
    from fastsam2_ros.ros.parameters import unknown_parameter_warning

    assert unknown_parameter_warning([IMAGE + "reliability", "qos_overrides./t/mask.publisher.depth",
                                      "qos_overrides./clicked_point.subscription.history"]) is None
    assert unknown_parameter_warning(["qos_overrides./mask.publisher.durability"]) == (
        "unknown parameter(s), ignored: qos_overrides./mask.publisher.durability (a QoS override "
        "is qos_overrides.<topic>.<publisher|subscription>.<history|depth|reliability>)")


def test_diagnostics_takes_an_override_too(make_node):
    """/diagnostics is made when the node is (depth 10 as diagnostic_updater's): an override of
    it was dropped without a word."""
    default, node = make_node(), make_node(**{"qos_overrides./diagnostics.publisher.depth": 3})
    assert default._diag_pub.qos_profile.depth == 10
    assert default._diag_pub.qos_profile.reliability == QoSReliabilityPolicy.RELIABLE
    assert node._diag_pub.qos_profile.depth == 3

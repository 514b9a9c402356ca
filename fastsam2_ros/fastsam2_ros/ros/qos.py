"""QoS profiles of the node's topics, and the incompatible-QoS event hook of its image input.

The image subscription's reliability is a parameter (``image_reliability``) because the choice is
a trade-off the user must make (docs/ros.md, "Image QoS"): best effort connects to every camera
driver but lets DDS drop large frames silently; reliable delivers them but connects only to
reliable publishers. An incompatible pairing is not silent here: it is logged and counted.

ROS's standard ``qos_overrides.<topic>.<publisher|subscription>.<policy>`` start-up parameters
win over these profiles (:func:`overriding_options`).
"""

from __future__ import annotations

from typing import Callable

try:
    from rclpy.event_handler import SubscriptionEventCallbacks
except ImportError:  # Humble: the module is rclpy.qos_event (renamed in Iron)
    from rclpy.qos_event import SubscriptionEventCallbacks
from rclpy.qos import (QoSDurabilityPolicy, QoSHistoryPolicy, QoSPolicyKind, QoSProfile,
                       QoSReliabilityPolicy, qos_policy_name_from_kind)
from rclpy.qos_overriding_options import QoSOverridingOptions

from .parameters import QOS_OVERRIDABLE_POLICIES, qos_override_name, set_image_reliability

RELIABILITY = {"best_effort": QoSReliabilityPolicy.BEST_EFFORT,
               "reliable": QoSReliabilityPolicy.RELIABLE}


def reliable(depth: int) -> QoSProfile:
    """Outputs, prompts, services: reliable, volatile, keep last ``depth``."""
    return QoSProfile(history=QoSHistoryPolicy.KEEP_LAST, depth=int(depth),
                      reliability=QoSReliabilityPolicy.RELIABLE,
                      durability=QoSDurabilityPolicy.VOLATILE)


def latched() -> QoSProfile:
    """A state topic (``description``): reliable, transient local, keep last 1, so a subscriber
    that comes later still gets the last message (the ROS 1 "latched" topic)."""
    return QoSProfile(history=QoSHistoryPolicy.KEEP_LAST, depth=1,
                      reliability=QoSReliabilityPolicy.RELIABLE,
                      durability=QoSDurabilityPolicy.TRANSIENT_LOCAL)


def image_qos(reliability: str, depth: int) -> QoSProfile:
    """Camera input: ``best_effort`` (sensor data) or ``reliable``, volatile, keep last ``depth``."""
    return QoSProfile(history=QoSHistoryPolicy.KEEP_LAST, depth=int(depth),
                      reliability=RELIABILITY[reliability],
                      durability=QoSDurabilityPolicy.VOLATILE)


def overriding_options(node, entity: str, topic: str) -> QoSOverridingOptions:
    """The rule: the node's own parameters give a topic's profile, and a ``qos_overrides``
    value given at start-up (params file, ``-p``) wins, policy by policy.

    Only the policies given are declared: rclpy declares each one, read-only, with the profile's
    value when the entity is first created and reuses the declared value at every later creation,
    so a policy not given would keep its first value (``image_reliability`` set later, read at
    the next activate, would be ignored). rclpy keeps the start-up values in a private attribute;
    without it there are no overrides."""
    given = getattr(node, "_parameter_overrides", None) or {}
    resolved = node.resolve_topic_name(topic)
    return QoSOverridingOptions([QoSPolicyKind[p.upper()] for p in QOS_OVERRIDABLE_POLICIES
                                 if qos_override_name(resolved, entity, p) in given])


def incompatible_qos_events(topic: str, report: Callable[[str], None]) -> SubscriptionEventCallbacks:
    """Event callbacks that ``report`` a publisher on ``topic`` this subscription cannot hear."""

    def on_incompatible(event) -> None:
        policy = qos_policy_name_from_kind(event.last_policy_kind)
        # (the one incompatible reliability: a reliable subscription, a best-effort publisher)
        hint = (f" (the publisher is best effort: {set_image_reliability('best_effort')})"
                if policy == "RELIABILITY" else "")
        report(f"a publisher on {topic} offers incompatible QoS (policy {policy}); its images "
               f"never reach the node{hint}")

    return SubscriptionEventCallbacks(incompatible_qos=on_incompatible)


def unreachable_publishers(node, subscriptions) -> int:
    """Publishers that the reliable ones of ``subscriptions`` cannot hear (best-effort cameras).
    The incompatible-QoS event fires once per publisher; this is asked every diagnostics period,
    so the WARN lasts as long as the mismatch does."""
    return sum(1 for sub in subscriptions if sub.qos_profile.reliability == QoSReliabilityPolicy.RELIABLE
               for info in node.get_publishers_info_by_topic(sub.topic_name)
               if info.qos_profile.reliability == QoSReliabilityPolicy.BEST_EFFORT)


def best_effort_publishers(node, subscriptions) -> int:
    """Publishers that the best-effort ones of ``subscriptions`` hear: DDS may lose their large
    frames whole (over 512 KiB between processes with Fast DDS' defaults), without a trace."""
    return sum(1 for sub in subscriptions
               if sub.qos_profile.reliability == QoSReliabilityPolicy.BEST_EFFORT
               for _ in node.get_publishers_info_by_topic(sub.topic_name))


__all__ = ["RELIABILITY", "reliable", "latched", "image_qos", "incompatible_qos_events",
           "overriding_options",
           "unreachable_publishers", "best_effort_publishers"]

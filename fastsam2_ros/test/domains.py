"""The ROS domain of each test module that runs nodes: ``FASTSAM2_TEST_DOMAIN_BASE`` (default 60)
plus the module's own offset, so that modules (and test runs given other bases) running at the
same time on one machine never discover each other's nodes."""

import os
from contextlib import contextmanager

#: the largest offset a module uses (test_tools' node benchmark)
MAX_OFFSET = 12
#: Fast DDS refuses larger domain ids (its port formula overflows past 232)
MAX_DOMAIN_ID = 232


def domain_id(offset: int) -> int:
    """``FASTSAM2_TEST_DOMAIN_BASE`` + ``offset`` (1..MAX_OFFSET), refusing a base that would put a
    module past Fast DDS's last domain: its nodes would fail to start, a test run ending with
    no output."""
    if not 1 <= offset <= MAX_OFFSET:
        raise ValueError(f"a test module's domain offset is 1..{MAX_OFFSET}, got {offset}")
    text = os.environ.get("FASTSAM2_TEST_DOMAIN_BASE", "60")
    try:
        base = int(text)
    except ValueError:
        raise ValueError(f"FASTSAM2_TEST_DOMAIN_BASE must be an integer, got {text!r}") from None
    if not 0 <= base <= MAX_DOMAIN_ID - MAX_OFFSET:
        raise ValueError(f"FASTSAM2_TEST_DOMAIN_BASE must be in [0, {MAX_DOMAIN_ID - MAX_OFFSET}]: the "
                         f"tests use it + 1..{MAX_OFFSET} and Fast DDS takes domain ids up to "
                         f"{MAX_DOMAIN_ID}; got {base}")
    return base + offset


@contextmanager
def ros_context(domain: int, args=None):
    """An rclpy context of its own in ``domain`` (a test module's nodes, apart from other
    modules'), shut down on exit."""
    import rclpy

    context = rclpy.Context()
    rclpy.init(context=context, domain_id=domain, args=args)
    try:
        yield context
    finally:
        rclpy.shutdown(context=context)

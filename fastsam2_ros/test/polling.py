"""Test helper: wait for a condition instead of sleeping a fixed time."""

import time


def wait_for(condition, seconds: float = 10.0, step: float = 0.01) -> bool:
    """Poll ``condition`` every ``step`` s until it holds or ``seconds`` pass; its last value."""
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(step)
    return condition()

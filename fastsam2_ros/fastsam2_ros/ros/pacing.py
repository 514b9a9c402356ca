"""Frames sent at a fixed rate, as a camera sends them: ``fastsam2-demo --rate`` and the node
benchmark's rate run share this rule."""

from __future__ import annotations

import time
from typing import Optional


class FixedRate:
    """Ticks at fixed deadlines ``t0 + k / rate_hz`` (t0: the first tick), so the sender's own
    work between ticks (reading and converting the next frame, writing outputs) does not lengthen
    the period: the demo slept 1/rate after that work and sent ``--rate 30`` at 18.7 Hz. A sender
    that falls behind sends at once until it is on time again; ``late`` counts the ticks that came
    more than one period after their deadline."""

    def __init__(self, rate_hz: float) -> None:
        self.period = 1.0 / float(rate_hz)
        self.ticks = 0
        self.late = 0
        self._start: Optional[float] = None

    def wait(self) -> None:
        """Return at the next tick's deadline (at once when it has passed)."""
        now = time.perf_counter()
        if self._start is None:
            self._start = now
        due = self._start + self.ticks * self.period
        self.ticks += 1
        if due > now:
            time.sleep(due - now)
        elif now - due > self.period:
            self.late += 1


__all__ = ["FixedRate"]

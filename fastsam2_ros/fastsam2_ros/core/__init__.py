"""ROS-free tracker core: SAM 2 streaming tracker, token pruning, memory bank, statistics.

Heavy modules (torch, sam2) load on first use of the names below, so importing the package for
its configuration or errors stays cheap.
"""

from .config import TrackerConfig
from .errors import AutoPromptFailed, CheckpointError, FastSam2Error, InputError
from .stats import FrameResult, FrameStats

__all__ = ["TrackerConfig", "StreamingTracker", "FrameResult", "FrameStats", "InputError",
           "AutoPromptFailed", "CheckpointError", "FastSam2Error"]


def __getattr__(name):
    if name == "StreamingTracker":
        from .tracker import StreamingTracker

        return StreamingTracker
    raise AttributeError(name)

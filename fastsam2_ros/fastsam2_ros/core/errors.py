"""Error types of the tracker core, so callers (the ROS node, the CLIs) can tell bad input from bugs."""


class FastSam2Error(Exception):
    """Base class of every error the core raises on purpose."""


class InputError(FastSam2Error, ValueError):
    """A caller passed something the tracker cannot use (bad image, prompt, id, parameter).

    The tracker state is left unchanged when this is raised, so the caller can keep going.
    """


class CheckpointError(FastSam2Error, FileNotFoundError):
    """A model, CLIP or router weight file is missing or unreadable."""

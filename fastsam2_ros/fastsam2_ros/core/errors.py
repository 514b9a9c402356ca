"""Error types of the tracker core, so callers (the ROS node, the CLIs) can tell bad input from bugs."""

from pathlib import Path


class FastSam2Error(Exception):
    """Base class of every error the core raises on purpose."""


class InputError(FastSam2Error, ValueError):
    """A caller passed something the tracker cannot use (bad image, prompt, id, parameter).

    The tracker state is left unchanged when this is raised, so the caller can keep going.
    """


class AutoPromptFailed(InputError):
    """The automatic prompt started no object. ``tracked``: the FrameResult of the new frame that
    ``auto_prompt(image=...)`` tracked for the objects already tracked before it looked for a
    region; the state then moved on by that frame (the one exception to InputError's rule), and
    the caller must not track the frame again. None: the state is unchanged."""

    def __init__(self, message: str, tracked=None) -> None:
        super().__init__(message)
        self.tracked = tracked


class CheckpointError(FastSam2Error, FileNotFoundError):
    """A model, CLIP or router weight file is missing or unreadable."""


def path_not_found(what: str, path: Path, folder: bool) -> str:
    """The message for a ``what`` (e.g. "dataset folder") that ``path`` does not hold: missing, or
    a file where a folder is wanted (or the reverse), which "not found" would misstate."""
    if not path.exists():
        return f"{what} not found: {path}"
    if path.is_dir() != folder and (path.is_dir() or path.is_file()):
        return f"{what} {path} is a {'file' if folder else 'folder'}, not a {'folder' if folder else 'file'}"
    return f"{what} {path} is not a {'folder' if folder else 'regular file'}"

"""What the processes started from a command line share (``fastsam2-demo``, ``fastsam2-bench
--node``, ``tracker_node``): SIGTERM ends a run as Ctrl-C does, a second signal cannot cut the
teardown short, a burst of signals is one, a child process ends with its parent, and any file
name prints.

The context managers act in the main thread only (Python runs signal handlers there); elsewhere
they do nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import threading
import time
from typing import Callable, List

#: prctl(2)'s option: the signal a process gets when the thread that started it ends
PR_SET_PDEATHSIG = 1
#: Where there is no prctl (not Linux): how often a child looks whether its parent is there, s
PARENT_POLL_S = 1.0


@contextlib.contextmanager
def sigterm_as_ctrl_c():
    """SIGTERM (kill, systemd, a CI timeout) ends the run as Ctrl-C does: the outputs so far are
    written and child processes stopped (main thread only; the previous handler restored after)."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread: nothing to install
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def no_interrupts():
    """SIGINT and SIGTERM ignored while the outputs are written and ROS and child processes are
    torn down (main thread only; restored after)."""
    try:
        previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread: nothing to guard
        yield
        return
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def interrupts_after():
    """SIGINT and SIGTERM held back while the block runs and delivered when it ends (main thread
    only): a write that a Ctrl-C would cut short (an overlay taken but not yet written) finishes
    first, and the run then ends as the signal says. A block that fails ends with its error
    instead (the run ends either way, and the error says more)."""
    held: List[int] = []
    try:
        previous = {sig: signal.signal(sig, lambda signum, frame: held.append(signum))
                    for sig in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread: nothing to hold back
        yield
        return
    failed = True
    try:
        yield
        failed = False
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if held and not failed:
            signal.raise_signal(held[0])


def first_signal_only(handler: Callable[[int, object], None]) -> Callable[[int, object], None]:
    """``handler`` for the first signal, nothing for those after it. Signals come in bursts (the
    parent-death signal once for each thread of the child, again for each exiting thread of its
    parent; a terminal's Ctrl-C with a supervisor's SIGINT): one that came while the handler held
    ``threading.Event``'s lock in ``set()`` ran the handler again inside it, which then waited
    for its own lock forever, and the process never ended."""
    handled: List[int] = []

    def on_first(signum: int, frame: object) -> None:
        if handled:
            return
        handled.append(signum)
        handler(signum, frame)

    return on_first


def exit_with_parent(parent_pid: int, sig: int = signal.SIGINT) -> None:
    """Send ``sig`` (the child's Ctrl-C: its orderly shutdown) to this process when process
    ``parent_pid`` ends. A parent that is killed (SIGKILL, the OOM killer) cannot stop its child,
    which would run on as an orphan (ppid 1) with its topics in the ROS domain. Linux: prctl's
    parent-death signal (sent when the parent's thread that started this process ends); elsewhere
    a thread polls ``os.getppid()``. A parent already gone before that sends ``sig`` at once."""
    if not _set_parent_death_signal(sig):
        threading.Thread(target=_watch_parent, args=(parent_pid, sig), name="fastsam2_parent_watch",
                         daemon=True).start()
    if os.getppid() != parent_pid:
        os.kill(os.getpid(), sig)


def _set_parent_death_signal(sig: int) -> bool:
    """prctl(PR_SET_PDEATHSIG, sig); False where there is no prctl (not Linux) or it fails."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return False
    prctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong)
    return prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0


def _watch_parent(parent_pid: int, sig: int) -> None:
    """The fallback of :func:`exit_with_parent`: an orphan's parent becomes another process."""
    while os.getppid() == parent_pid:
        time.sleep(PARENT_POLL_S)
    os.kill(os.getpid(), sig)


def printable_output() -> None:
    """stdout and stderr write a file name that is not UTF-8 (a Latin-1 folder name, which
    Python decodes to surrogates) with backslash escapes instead of raising UnicodeEncodeError
    in the middle of a run (a terminal's stderr already does; its stdout does not)."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="backslashreplace")


__all__ = ["sigterm_as_ctrl_c", "no_interrupts", "first_signal_only", "exit_with_parent",
           "printable_output"]

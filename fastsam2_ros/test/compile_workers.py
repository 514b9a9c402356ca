"""Test helper: Inductor's compile-worker processes below this process (Linux ``/proc``)."""

import os


def compile_worker_processes() -> set:
    """Pids of Inductor's compile-worker sidecar below this process and of its workers (Linux)."""
    parents, cmdlines = {}, {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdlines[int(entry)] = f.read().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError, ValueError):
            continue  # exited meanwhile
    found = {p for p, ppid in parents.items()
             if ppid == os.getpid() and "compile_worker" in cmdlines.get(p, "")}
    grew = True
    while grew:
        below = {p for p, ppid in parents.items() if ppid in found} - found
        found |= below
        grew = bool(below)
    return found

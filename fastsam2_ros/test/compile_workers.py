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


def inductor_pool_state(sidecar_log=None) -> str:
    """What Inductor's pool bookkeeping says, for a test that waited in vain for workers: the
    readiness probe's state, each pool's sidecar exit code, and the sidecar's own output."""
    from torch._inductor import async_compile

    ready = async_compile.AsyncCompile._ready_future
    ready_state = "none" if ready is None else getattr(ready, "_state", "?")
    pools = [f"{type(pool).__name__}(running={getattr(pool, 'running', '?')}, sidecar exit="
             f"{pool.process.poll() if hasattr(pool, 'process') else '?'})"
             for pool in async_compile._pool_set]
    text = f"ready probe: {ready_state}; pools: {pools or 'none'}; workers: {compile_worker_processes()}"
    if sidecar_log is not None and os.path.exists(sidecar_log):
        with open(sidecar_log, errors="replace") as f:
            text += "\nsidecar output:\n" + f.read()[-3000:]
    return text

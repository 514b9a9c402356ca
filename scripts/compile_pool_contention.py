"""Does a starting torch.compile worker pool slow the tracker? A CPU experiment, no GPU needed.

On CUDA, every torch.compile call wakes Inductor's compile-worker pool (a sidecar process and one
worker per core, each importing torch), even when every kernel then comes from the on-disk cache.
This script starts the pool the same way while a tracker runs on the CPU and prints the median
time per frame in three 4-second windows:

  none      no pool (the reference)
  pool      the pool starts just before the timed frames (a restart from the kernel cache)
  released  the pool starts and is shut down at once (what the tracker does after a new step)

Usage: scripts/run.sh python scripts/compile_pool_contention.py [--frames DIR] [--rounds N]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
import warnings

MODES = ("none", "pool", "released")
WINDOWS_S = ((0, 4), (4, 8), (8, 12))


def run_mode(mode: str, frames_dir: str) -> str:
    """One mode in this process: warm a tracker up, then time frames for 12 s."""
    warnings.filterwarnings("ignore")
    import numpy as np
    from torch._inductor import async_compile

    from fastsam2_ros.bench import load_frames
    from fastsam2_ros.core.config import TrackerConfig
    from fastsam2_ros.core.models import build_predictor, release_compile_workers
    from fastsam2_ros.core.tracker import StreamingTracker

    cfg = TrackerConfig(model_cfg="tiny", allow_random_weights=True, device="cpu", image_size=128,
                        keep_ratio=0.3, mc_passes=0)
    frames = load_frames(frames_dir or None, 8)
    tracker = StreamingTracker(cfg, model=build_predictor(cfg))
    height, width = frames[0].shape[:2]
    tracker.add_prompt(1, points=[[width / 2, height / 2]], labels=[1], image=frames[0])
    for frame in frames[1:4]:
        tracker.track(frame)
    if mode != "none":  # what compile_fx does on every compile with CUDA inputs
        async_compile.AsyncCompile.warm_pool()
        async_compile.AsyncCompile.wakeup()
    if mode == "released":
        release_compile_workers()
    t0 = time.perf_counter()
    times = []  # (seconds since t0, ms of the frame)
    while time.perf_counter() - t0 < WINDOWS_S[-1][1]:
        start = time.perf_counter()
        tracker.track(frames[len(times) % len(frames)])
        times.append((start - t0, (time.perf_counter() - start) * 1e3))
    async_compile.shutdown_compile_workers()
    cells = [f"{a}-{b} s {np.median([ms for s, ms in times if a <= s < b]):6.1f}" for a, b in WINDOWS_S]
    return f"{mode:9s} median ms/frame   " + "   ".join(cells)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", default="", help="folder of images or video (default: generated)")
    p.add_argument("--rounds", type=int, default=2, help="times each mode runs, interleaved")
    p.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)  # one mode, in a child process
    args = p.parse_args(argv)
    if args.rounds < 1:
        p.error("--rounds must be >= 1")
    if args.mode:
        print(run_mode(args.mode, args.frames), flush=True)
        return 0
    for _ in range(args.rounds):
        for mode in MODES:  # a fresh process each: no pool left over from the previous mode
            subprocess.run([sys.executable, __file__, "--mode", mode, "--frames", args.frames],
                           check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``fastsam2-bench``: ours (dense and pruned) vs the official SAM 2 predictor, same frames, one run.

Every mode tracks the same objects (positive clicks on frame 0) over the same frames with the
same weights, and is warmed up on the same first frames before it is timed. Reported per mode:

* **FPS, wall clock**: a loop over frames 1..N-1 with no per-stage synchronisation. For ours the
  step is the whole job a robot needs — a uint8 host frame in, every object's mask at the input
  resolution back on the host (``track``); ``fps_pipelined`` submits frame t+1 before collecting
  frame t (``submit``/``result``). The official predictor has its frames preprocessed and loaded
  on the device before its loop (``init_state``), as sam2 runs it.
* **Per-frame wall times** of that loop (``frame_ms``) and their p50 / p90 / p99 / max.
* **Stage latencies** from a separate profiling pass (eager, synchronised stage timers).
* Start-up (build, warm-up, graph capture), tokens kept, bank / predictor-state bytes, peak GPU
  memory, and the per-frame mask IoU against the official predictor.

``--repeats N`` times every mode in N interleaved rounds (official, dense, pruned, then again)
and reports the medians and each round's ratios, so a machine whose speed drifts during the run
slows every mode alike. ``--objects N`` tracks N objects (default: one per ``--click``),
``--soak N`` streams N frames and traces GPU memory (ours at the first keep ratio vs official),
``--official-vos`` also runs sam2's compiled ``SAM2VideoPredictorVOS`` in a child process with a
time limit (its compile time is reported).

``fastsam2-bench --node ...`` measures the ROS node's own cost instead
(:mod:`fastsam2_ros.ros.node_bench`, its own options).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import multiprocessing
import os
import platform
import queue as queue_module
import sys
import time
import warnings
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from .core.config import ATTENTION_BACKENDS, COMPILE_MODES, PREPROCESS_MODES, TrackerConfig
from .core.cuda_device import synchronize
from .core.errors import FastSam2Error, InputError
from .core.preprocess import resolve_preprocess
from .core.stats import STAGE_ANNOTATION, STAGES, peak_gpu_memory, reset_peak_gpu_memory

SCHEMA_VERSION = 3
Click = Tuple[float, float]


class ModuleStageTimer:
    """Stage latencies of an unmodified SAM 2 model via forward hooks on its submodules."""

    STAGE_MODULES = {"encoder": ("image_encoder",), "memory_attention": ("memory_attention",),
                     "decoder": ("sam_prompt_encoder", "sam_mask_decoder"),
                     "memory_encoder": ("memory_encoder",)}

    def __init__(self, model) -> None:
        self.device = model.device
        self.cuda = model.device.type == "cuda"
        self.ms = {s: 0.0 for s in self.STAGE_MODULES}
        self._t0: Dict[str, float] = {}
        self._handles = []
        for stage, names in self.STAGE_MODULES.items():
            for name in names:
                module = getattr(model, name)
                self._handles.append(module.register_forward_pre_hook(self._pre(stage)))
                self._handles.append(module.register_forward_hook(self._post(stage)))

    def _sync(self):
        if self.cuda:
            synchronize(self.device)

    def _pre(self, stage):
        def hook(*_):
            self._sync()
            self._t0[stage] = time.perf_counter()
        return hook

    def _post(self, stage):
        def hook(*_):
            self._sync()
            self.ms[stage] += (time.perf_counter() - self._t0.pop(stage)) * 1e3
        return hook

    def take(self) -> Dict[str, float]:
        out, self.ms = self.ms, {s: 0.0 for s in self.STAGE_MODULES}
        return out

    def remove(self) -> None:
        for h in self._handles:
            h.remove()


def source_commit() -> Optional[str]:
    """The git commit of the checkout this module runs from, ``-dirty`` with uncommitted changes
    (``FASTSAM2_COMMIT`` where the copy has no .git, as on a lent GPU machine); None when unknown,
    also when the module is installed inside another repository (a workspace under git)."""
    import subprocess

    if os.environ.get("FASTSAM2_COMMIT"):
        return os.environ["FASTSAM2_COMMIT"]
    here = Path(__file__).resolve()

    def git(*args: str) -> Optional[str]:
        try:
            out = subprocess.run(["git", *args], cwd=here.parent, capture_output=True, text=True,
                                 timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    top = git("rev-parse", "--show-toplevel")
    if not top or here != (Path(top) / "fastsam2_ros" / "fastsam2_ros" / here.name).resolve():
        return None  # not this project's checkout
    commit = git("rev-parse", "HEAD")
    if not commit:
        return None
    return commit + ("-dirty" if git("status", "--porcelain", "--untracked-files=no") else "")


def package_versions() -> Dict[str, Optional[str]]:
    """Versions the numbers depend on (Pillow: the PIL-exact preprocessing; sam2: the baseline)."""
    from importlib import metadata

    out: Dict[str, Optional[str]] = {"torch": torch.__version__, "cuda": torch.version.cuda}
    for dist in ("sam2", "Pillow", "numpy", "opencv-python-headless", "opencv-python"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def load_frames(source: Optional[str], max_frames: int, seed: int = 0,
                topic: Optional[str] = None) -> List[np.ndarray]:
    """The frames of ``source`` (``topic``: the image topic of a rosbag), or generated ones."""
    if source:
        from .frame_sources import open_frames

        frames = list(open_frames(source, topic=topic, max_frames=max_frames))
    elif topic:
        raise InputError("--topic selects the image topic of a rosbag given with --frames")
    else:
        from .eval.synthetic import generate_sequence

        frames, _, _ = generate_sequence(np.random.default_rng(seed), (640, 480), max_frames, 2)
    if len(frames) < 2:
        raise FastSam2Error(f"need at least 2 frames, got {len(frames)}")
    return frames


def parse_clicks(spec: Optional[str]) -> List[Click]:
    """``"x,y;x,y"`` -> the clicks, one per object."""
    clicks = []
    for part in spec.split(";") if spec else ():
        try:
            x, y = (float(v) for v in part.split(","))
        except ValueError:
            raise InputError(f"--click expects X,Y[;X,Y...], got {spec!r}") from None
        clicks.append((x, y))
    return clicks


def object_count(clicks: Sequence[Click], objects: Optional[int]) -> int:
    """--objects, by default one object per click (at least one); fewer objects than clicks is an
    error, since a click left out would silently track fewer objects than were clicked."""
    count = max(1, len(clicks)) if objects is None else objects
    if count < 1:
        raise InputError("--objects must be >= 1")
    if len(clicks) > count:
        raise InputError(f"--click gives {len(clicks)} clicks but --objects is {count}: "
                         "give at most one click per object")
    return count


def object_clicks(clicks: Sequence[Click], count: int, width: int, height: int) -> List[Click]:
    """One click per object: the given ones, the missing ones spread over the frame."""
    clicks = list(clicks)
    grid = [(0.5, 0.5), (0.25, 0.3), (0.75, 0.7), (0.25, 0.7), (0.75, 0.3), (0.5, 0.2), (0.5, 0.8)]
    for i in range(len(clicks), count):
        fx, fy = grid[i % len(grid)]
        clicks.append((fx * (width - 1), fy * (height - 1) * (1 - 0.02 * (i // len(grid)))))
    return clicks


def _mean_stages(rows: List[Dict[str, float]], ms_per_frame: float) -> Dict[str, float]:
    """Mean stage latencies of a profiling pass; "total" is the timed run's wall ms per frame."""
    out = {s: float(np.mean([r.get(s, 0.0) for r in rows])) if rows else 0.0
           for s in STAGES if s != "total"}
    out["total"] = ms_per_frame
    return out


def _allocated_bytes(device) -> int:
    """CUDA bytes allocated now (0 off CUDA)."""
    return int(torch.cuda.memory_allocated(device)) if torch.device(device).type == "cuda" else 0


def _release_unused(device) -> None:
    """Free what earlier modes left (so a mode's peak memory is its own)."""
    gc.collect()
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()


# ------------------------------------------------------------------------------------ ours
def _prompt_all(tracker, frame0: np.ndarray, clicks: Sequence[Click]):
    for obj_id, click in enumerate(clicks, start=1):
        tracker.add_prompt(obj_id, points=[list(click)], labels=[1],
                           image=frame0 if obj_id == 1 else None)


def _prompt_all_official(session, clicks: Sequence[Click]) -> None:
    for obj_id, click in enumerate(clicks, start=1):
        session.add_prompt(0, obj_id, points=[list(click)], labels=[1])


def _stream(tracker, frames, clicks, pipelined: bool = False,
            before_frame: Callable[[int], object] = lambda index: None):
    """Prompt frame 0, track frames 1..N-1 (``before_frame(i)`` before tracking frame i, not
    timed); returns (results, wall seconds of the loop, each frame's wall ms: for ``track`` its
    latency, pipelined the time between two results)."""
    _prompt_all(tracker, frames[0], clicks)
    synchronize(tracker.device)
    results = []
    t0 = time.perf_counter()
    stamps = [t0]
    if pipelined:
        pending = tracker.submit(frames[1])
        for frame in frames[2:]:
            nxt = tracker.submit(frame)
            results.append(pending.result())
            stamps.append(time.perf_counter())
            pending = nxt
        results.append(pending.result())
        stamps.append(time.perf_counter())
    else:
        for index, frame in enumerate(frames[1:], start=1):
            before_frame(index)
            results.append(tracker.track(frame))
            stamps.append(time.perf_counter())
    return results, stamps[-1] - t0, list(np.diff(stamps) * 1e3)


#: Tracked frames of a profiling pass traced for ``stage_kernel_ms``: the last ones, with the
#: memory bank full (a trace of every frame took seconds per frame to read back; a captured
#: step's kernels take the same time every frame, so a few frames give its per-frame mean).
KERNEL_PROFILE_FRAMES = 4


#: Stages whose heaviest ops a profiling pass lists (``stage_kernel_ops``): what pruning adds
#: and what it shrinks; the OPS_LISTED heaviest of each in the JSON.
OP_LIST_STAGES = ("router", "memory_attention")
OPS_LISTED = 12
OPS_PRINTED = 6  # (the report's line; the JSON keeps OPS_LISTED)


def _profiled_pass(tracker, frames, clicks):
    """The profiling pass: (its results, ``stage_kernel_ms`` and ``stage_kernel_ops`` of its last
    KERNEL_PROFILE_FRAMES tracked frames)."""
    trace = _kernel_profiler(tracker.device)
    first = max(1, len(frames) - KERNEL_PROFILE_FRAMES)
    results = _stream(tracker, frames, clicks,
                      before_frame=lambda index: index == first and trace.start())[0]
    synchronize(tracker.device)
    trace.stop()
    traced, kind = len(frames) - first, tracker.device.type
    try:
        events = trace.events()
        kernels = stage_kernel_ms(events, traced, kind)
        ops = stage_kernel_ops(events, traced, kind)
    except Exception as exc:  # noqa: BLE001 - a trace we cannot read must not cost the run
        kernels = {"error": f"{type(exc).__name__}: {exc}"}  # (its timings are measured already)
        ops = None
    return results, kernels, ops


def _spent(event, device_type: str) -> float:
    """An event's kernel time (µs, its children's included); off CUDA its CPU time."""
    return event.device_time_total if device_type == "cuda" else event.cpu_time_total


def _annotated_below(event):
    """The stage ranges nested anywhere under ``event``, outermost only."""
    for child in event.cpu_children:
        if child.name.startswith(STAGE_ANNOTATION):
            yield child
        else:
            yield from _annotated_below(child)


def _own_time(event, device_type: str) -> float:
    """``event``'s time less that of the stages nested in it (they count in themselves)."""
    return _spent(event, device_type) - sum(_spent(c, device_type) for c in _annotated_below(event))


def stage_kernel_ms(events, frames: int, device_type: str) -> Dict[str, float]:
    """Per-frame milliseconds of the kernels each stage launched, from the torch.profiler events
    of a profiling pass (its stages are ``record_function`` ranges, ``StageTimer(annotate=True)``):
    what a stage costs the device without launch gaps and synchronisations, which is what a
    captured step pays. A stage nested in another (the router and memory attention in the
    decoder) counts only in itself; ``other`` is what ran outside every stage (preprocessing,
    mask packing, bank writes) and ``total`` all of it. Off CUDA it is the ranges' CPU time."""
    out = {s: 0.0 for s in STAGES if s != "total"}
    for event, name in _stage_ranges(events):
        out[name] = out.get(name, 0.0) + _own_time(event, device_type)
    total = sum(_spent(e, device_type) for e in events
                if e.device_type.name == "CPU" and e.cpu_parent is None)
    out["other"] = total - sum(out.values())
    out["total"] = total
    scale = 1e-3 / max(1, frames)  # µs over the pass -> ms per frame
    return {name: value * scale for name, value in out.items()}


def _stage_ranges(events):
    """(event, stage name) of every stage range of a trace (its host side: not the GPU-side
    copies of the annotations)."""
    for event in events:
        if event.device_type.name == "CPU" and event.name.startswith(STAGE_ANNOTATION):
            yield event, event.name[len(STAGE_ANNOTATION):]


def stage_kernel_ops(events, frames: int, device_type: str, stages: Sequence[str] = OP_LIST_STAGES,
                     top: int = OPS_LISTED) -> Dict[str, list]:
    """The ops each of ``stages`` called itself (a nested stage's ops count in that stage), the
    ``top`` heaviest first, as [op, kernel ms per frame, calls per frame]: which of the router's
    dozens of small kernels cost it, and where memory attention's time goes (same trace and
    units as ``stage_kernel_ms``)."""
    totals: Dict[str, Dict[str, list]] = {s: {} for s in stages}
    for event, name in _stage_ranges(events):
        if name not in totals:
            continue
        for op in event.cpu_children:
            if op.name.startswith(STAGE_ANNOTATION):
                continue
            row = totals[name].setdefault(op.name, [0.0, 0])
            row[0] += _own_time(op, device_type)
            row[1] += 1
    per_frame = 1.0 / max(1, frames)
    return {stage: [[op, ms * 1e-3 * per_frame, calls * per_frame]
                    for op, (ms, calls) in sorted(ops.items(), key=lambda kv: -kv[1][0])[:top]]
            for stage, ops in totals.items()}


def _kernel_profiler(device: torch.device):
    """A torch.profiler over the device's kernels (and the host ranges that launched them)."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    return profile(activities=activities)


def _timed_pass(wall: float, frame_ms: Sequence[float]) -> dict:
    """What a timed pass of any mode reports: the wall clock over frames 1..N-1 per frame and as
    FPS, and each frame's time with its percentiles."""
    n = len(frame_ms)
    return {"frames_timed": n, "ms_per_frame": wall * 1e3 / n, "fps": n / wall,
            "latency_ms": latency_summary(frame_ms), "frame_ms": [round(x, 3) for x in frame_ms]}


def latency_summary(frame_ms: Sequence[float]) -> Dict[str, float]:
    """Percentiles of per-frame wall times: a median that one slow stretch cannot move, and the
    tail a robot's control loop sees."""
    if not len(frame_ms):
        return {}
    p50, p90, p99 = np.percentile(frame_ms, [50, 90, 99])
    return {"p50": float(p50), "p90": float(p90), "p99": float(p99), "max": float(np.max(frame_ms))}


def run_ours(cfg: TrackerConfig, model, frames, clicks, keep_ratio: float,
             warmup_frames: int, profile: bool) -> Tuple[dict, list]:
    from .core.tracker import StreamingTracker

    n = len(frames)
    mode_cfg = cfg.replace(keep_ratio=keep_ratio)
    _release_unused(model.device)
    t0 = time.perf_counter()
    # the clip length is passed so keep 1.0 can be compared with the official predictor, which
    # scales pointer time encodings by min(num_frames, 16); a live stream uses 16
    tracker = StreamingTracker(mode_cfg, model=model, num_frames_hint=n)
    _stream(tracker, frames[:warmup_frames], clicks)  # warm-up: captures the CUDA graphs
    synchronize(model.device)
    startup_s = time.perf_counter() - t0
    tracker.reset(num_frames_hint=n)
    reset_peak_gpu_memory(model.device)
    results, wall, frame_ms = _stream(tracker, frames, clicks)
    peak = peak_gpu_memory(model.device)
    cuda = model.device.type == "cuda"
    wall_pipe = wall  # off CUDA a step is synchronous: nothing to overlap
    if cuda:
        tracker.reset(num_frames_hint=n)
        _, wall_pipe, _ = _stream(tracker, frames, clicks, pipelined=True)
    last = results[-1].stats
    stage_rows = [r.stats.stage_ms for r in results]  # off CUDA the timers cost nothing
    kernel_ms = kernel_ops = None
    if profile and cuda:  # eager with synchronised, annotated stage timers, in a kernel trace
        profiler = StreamingTracker(mode_cfg.replace(cuda_graphs=False), model=model,
                                    num_frames_hint=n, profile_stages=True)
        profiled, kernel_ms, kernel_ops = _profiled_pass(profiler, frames, clicks)
        stage_rows = [r.stats.stage_ms for r in profiled]
    timed = _timed_pass(wall, frame_ms)
    out = {"keep_ratio": keep_ratio, "objects": len(clicks), **timed,
           "fps_pipelined": (n - 1) / wall_pipe,
           "stage_ms": _mean_stages(stage_rows, timed["ms_per_frame"]),
           "stage_kernel_ms": kernel_ms, "stage_kernel_ops": kernel_ops,
           "gpu_ms_per_frame": float(np.mean([r.stats.gpu_ms for r in results])),
           "startup_s": startup_s, "capture_s": tracker.runner.capture_s,
           "graphs": len(tracker.runner), "capture_failures": dict(
               (str(k), v) for k, v in tracker.runner.failures.items()),
           "step_mode": tracker.step_mode, "preprocess": tracker.preprocess_mode,
           "tokens_total": last.tokens_total, "tokens_kept": float(np.mean(
               [np.mean(list(r.stats.tokens_kept.values())) for r in results])),
           "router_mode": last.router_mode, "state_bytes": last.bank_bytes,
           "bank_frames": last.bank_frames, "bank_tokens": last.bank_tokens,
           "bank_full": [bool(r.stats.bank_full) for r in results],
           "peak_gpu_memory_bytes": peak}
    masks = [{o: r.masks[o] for o in r.masks} for r in results]
    tracker.release_graphs()
    return out, masks


# ------------------------------------------------------------------------------------ rounds
#: what one timed pass measures; with --repeats the report gives their median over the rounds
TIMED_FIELDS = ("ms_per_frame", "fps_pipelined", "gpu_ms_per_frame")
RATE_FIELDS = ("fps_pipelined",)  # of TIMED_FIELDS: frames per second, not ms


def run_round(cfg: TrackerConfig, model, frames, clicks, modes, ratios, warmup_frames: int,
              profile: bool,
              on_mode: Optional[Callable[[Dict[str, dict], Dict[str, list]], None]] = None,
              ) -> Tuple[Dict[str, dict], Dict[str, list]]:
    """Every asked mode once, each warmed up and then timed: official, dense, each keep ratio.
    ``on_mode(results, mask_sets)`` after each mode: what is measured survives a killed run."""
    from .core.models import build_official_predictor

    results: Dict[str, dict] = {}
    mask_sets: Dict[str, list] = {}
    done = on_mode or (lambda *_: None)
    if "official" in modes:
        _release_unused(model.device)
        resident = _allocated_bytes(model.device)  # our model: not the official predictor's
        official = build_official_predictor(cfg, state_dict=model.state_dict())
        results["official"], mask_sets["official"] = run_official(
            cfg, official, frames, clicks, warmup_frames, profile=profile, resident_bytes=resident)
        del official
        done(results, mask_sets)
    runs = ([("dense", 1.0)] if "dense" in modes else []) + \
           ([(pruned_mode_name(r), r) for r in ratios] if "pruned" in modes else [])
    for name, keep in runs:
        results[name], mask_sets[name] = run_ours(cfg, model, frames, clicks, keep, warmup_frames,
                                                  profile)
        done(results, mask_sets)
    return results, mask_sets


def merge_rounds(rounds: List[Dict[str, dict]]) -> Dict[str, dict]:
    """Round 1's results with its timings replaced by the median over all rounds; each round's
    timings and frame times are kept under ``rounds`` (for the per-round ratios). The last round
    may lack modes not measured yet (a run saved mode by mode)."""
    merged = {name: dict(r) for name, r in rounds[0].items()}
    if len(rounds) < 2:
        return merged
    for name, r in merged.items():
        per = [rnd[name] for rnd in rounds if name in rnd]  # (the last round may be partial)
        r["rounds"] = [{k: p[k] for k in TIMED_FIELDS + ("frame_ms",) if k in p} for p in per]
        for k in TIMED_FIELDS:
            if k in r:
                values = [p[k] for p in per]
                # a rate is the median of its time per frame, as fps is: with an even number of
                # rounds the median of rates is another average than 1000 / median of times
                r[k] = (1e3 / float(np.median([1e3 / v for v in values])) if k in RATE_FIELDS
                        else float(np.median(values)))
        r["fps"] = 1e3 / r["ms_per_frame"]
        r["stage_ms"] = dict(r["stage_ms"], total=r["ms_per_frame"])
        r["frame_ms"] = [x for p in per for x in p["frame_ms"]]
        r["latency_ms"] = latency_summary(r["frame_ms"])
    return merged


def pruned_mode_name(keep_ratio: float) -> str:
    """``pruned@0.3``; every digit where the short form would name another ratio (0.3000001 is
    not ``pruned@0.3``: its result would replace that one's)."""
    from .eval.runner import keep_ratio_text

    return f"pruned@{keep_ratio_text(keep_ratio, 'g')}"


#: --keep-ratios when not given
BENCH_KEEP_RATIOS = "0.1,0.3,0.5"


def keep_ratios(spec: str) -> List[float]:
    """--keep-ratios as floats; one that is not a number is an InputError naming the flag (their
    range and repeats are checked where the modes are made, ``mode_specs``)."""
    ratios = []
    for text in (t.strip() for t in spec.split(",")):
        if text:
            try:
                ratios.append(float(text))
            except ValueError:
                raise InputError(f"--keep-ratios: {text!r} is not a number") from None
    return ratios


def _per_round_speedup(mode: dict, base: dict) -> Optional[List[float]]:
    """``base``'s ms per frame over ``mode``'s, round by round (None without --repeats)."""
    if "rounds" not in mode or "rounds" not in base:
        return None
    return [b["ms_per_frame"] / m["ms_per_frame"] for m, b in zip(mode["rounds"], base["rounds"])]


def add_bank_full_times(results: Dict[str, dict]) -> None:
    """Give every timed mode ``ms_per_frame_bank_full``: its mean wall ms over the frames whose
    step read a full memory bank (our modes' ``bank_full``; the official predictor's over the
    same frames), the median over rounds, each round's in ``bank_full_ms_by_round``. That is
    the steady state of a long stream: while the bank fills (the first 15 frames after the
    prompt) our captured step's attention takes a key mask, which on a GPU costs dense more than
    pruned modes, so the whole clip's ratio flatters pruning."""
    flags = next((r["bank_full"] for r in results.values() if any(r.get("bank_full") or ())), None)
    if flags is None:
        return
    for r in results.values():
        if "frame_ms" not in r:
            continue
        own = r.get("bank_full") or flags
        passes = [p["frame_ms"] for p in r.get("rounds", ())] or [r["frame_ms"]]
        per_round = [float(np.mean(kept)) for kept in
                     ([ms for ms, full in zip(fm, own) if full] for fm in passes) if kept]
        if per_round:
            r["ms_per_frame_bank_full"] = float(np.median(per_round))
            r["bank_full_ms_by_round"] = per_round
            r["frames_bank_full"] = int(sum(bool(f) for f in own[:len(passes[0])]))


def _bank_full_speedup(mode: dict, base: dict, row: dict, key: str) -> None:
    """``row[key + "_bank_full"]`` (and ``_by_round``): ``base``'s full-bank ms over ``mode``'s."""
    if "ms_per_frame_bank_full" not in mode or "ms_per_frame_bank_full" not in base:
        return
    row[f"{key}_bank_full"] = base["ms_per_frame_bank_full"] / mode["ms_per_frame_bank_full"]
    rounds = list(zip(mode["bank_full_ms_by_round"], base["bank_full_ms_by_round"]))
    if len(rounds) > 1:
        row[f"{key}_bank_full_by_round"] = [b / m for m, b in rounds]


# ------------------------------------------------------------------------------------ official
def run_official(cfg: TrackerConfig, predictor, frames, clicks, warmup_frames: int,
                 profile: bool, resident_bytes: int = 0) -> Tuple[dict, list]:
    """The official predictor warmed up, then timed. ``resident_bytes``: device memory held by
    others (our model, built before it) that its peak must not count: its peak is its own
    weights and state, as ours is our weights and state."""
    from .core.official import OfficialVideoSession

    _release_unused(predictor.device)
    reset_peak_gpu_memory(predictor.device)
    t0 = time.perf_counter()
    session = OfficialVideoSession(predictor, frames, autocast_bf16=cfg.bf16)

    def one_run(timer=None, max_frames=None):
        session.reset()
        _prompt_all_official(session, clicks)
        masks, rows, stamps = [], [], []
        if timer is not None:
            timer.take()
        for t, m in session.propagate(0, max_frames):
            stamps.append(time.perf_counter())  # frame 0's stamp starts the clock
            if t == 0:
                if timer is not None:
                    timer.take()
                continue
            masks.append(m)
            if timer is not None:
                rows.append(timer.take())
        synchronize(predictor.device)
        stamps[-1] = time.perf_counter()
        return masks, rows, stamps[-1] - stamps[0], list(np.diff(stamps) * 1e3)

    one_run(max_frames=warmup_frames - 1)  # ours' warm-up frames (sam2 counts those after frame 0)
    startup_s = time.perf_counter() - t0
    cuda = predictor.device.type == "cuda"
    # off CUDA the hooks do not synchronise anything: time and profile in one pass
    timer = ModuleStageTimer(predictor) if profile else None
    try:
        reset_peak_gpu_memory(predictor.device)
        masks, rows, wall, frame_ms = one_run(None if cuda else timer)
        peak = peak_gpu_memory(predictor.device)
        if cuda and timer is not None:
            _, rows, _, _ = one_run(timer)
    finally:
        if timer is not None:
            timer.remove()
    tokens = (predictor.image_size // 16) ** 2
    timed = _timed_pass(wall, frame_ms)
    out = {"keep_ratio": 1.0, "objects": len(clicks), **timed,
           "stage_ms": _mean_stages(rows, timed["ms_per_frame"]), "startup_s": startup_s,
           "load_ms": session.load_ms,
           "tokens_total": tokens, "tokens_kept": float(tokens), "router_mode": "official",
           "state_bytes": session.state_bytes(),
           "peak_gpu_memory_bytes": max(0, peak - resident_bytes) if peak else 0,
           "resident_other_bytes": resident_bytes}
    return out, masks


def _vos_child(queue, cfg_dict, state_dict, frames, clicks) -> None:
    warnings.filterwarnings("ignore")
    from .core.models import build_official_predictor

    try:
        cfg = TrackerConfig(**cfg_dict)
        t0 = time.perf_counter()
        vos = build_official_predictor(cfg, vos_optimized=True, state_dict=state_dict)
        build_s = time.perf_counter() - t0
        out, _ = run_official(cfg, vos, frames, clicks, len(frames), profile=False)
        # the build plus run_official's start-up (frames loaded, warm-up = compilation); not the
        # timed pass that follows
        out["build_s"] = build_s
        out["compile_and_warmup_s"] = build_s + out["startup_s"]
        queue.put(out)
    except Exception as exc:  # reported, not raised: the parent keeps its other results
        queue.put({"error": f"{type(exc).__name__}: {exc}"})


def run_official_vos(cfg: TrackerConfig, model, frames, clicks, time_limit: float,
                     child_main=_vos_child) -> dict:
    """sam2's torch.compile'd predictor in a child process (``child_main``), stopped after
    ``time_limit`` s; a child that dies without reporting is reported at once."""
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    child = ctx.Process(target=child_main, args=(queue, cfg.to_dict(), state, frames, clicks))
    t0 = time.perf_counter()
    child.start()
    result = None
    try:
        while result is None and time.perf_counter() - t0 < time_limit:
            try:
                result = queue.get(timeout=min(1.0, max(0.01, time_limit - (time.perf_counter() - t0))))
            except queue_module.Empty:
                if not child.is_alive() and queue.empty():  # died without a word (a crash)
                    result = {"error": f"the child process ended with exit code {child.exitcode} "
                                       "before reporting"}
        if result is None:
            result = {"error": f"did not compile and run within {time_limit:.0f} s"}
    finally:
        if child.is_alive():
            child.terminate()
        child.join(10)
    result["wall_s"] = time.perf_counter() - t0
    return result


# ------------------------------------------------------------------------------------ soak
def _traces_gpu_memory(device: torch.device) -> bool:
    """Off CUDA there is no GPU memory to trace: the soak says so instead of reporting 0 bytes."""
    return device.type == "cuda"


def run_soak(cfg: TrackerConfig, model, frames, clicks, keep_ratio: float, length: int,
             every: int = 50) -> dict:
    """GPU memory over a ``length``-frame stream (frames cycled): ours vs the official predictor."""
    from .core.official import OfficialVideoSession
    from .core.tracker import StreamingTracker

    running = {"peak": 0}
    traced = _traces_gpu_memory(model.device)

    def sample(t, extra, resident=0):
        """One trace row: allocated now, the peak since the previous row (a window, so that
        growth below the start-up peak shows) and the running peak; then a new window."""
        if not traced:
            return {"frame": t, "allocated_bytes": None, "window_peak_bytes": None,
                    "peak_bytes": None, **extra}
        window = max(0, peak_gpu_memory(model.device) - resident)
        running["peak"] = max(running["peak"], window)
        row = {"frame": t, "allocated_bytes": max(0, _allocated_bytes(model.device) - resident),
               "window_peak_bytes": window, "peak_bytes": running["peak"]}
        row.update(extra)
        reset_peak_gpu_memory(model.device)
        return row

    def growth(trace, key):  # after the first sixth (prompting, graph capture) to the end
        if not traced:
            return None
        late = [r[key] for r in trace[len(trace) // 6:]]
        return (max(late) - min(late)) if late else 0

    stream = [frames[i % len(frames)] for i in range(length)]
    trace_ours, trace_official = [], []
    reset_peak_gpu_memory(model.device)
    tracker = StreamingTracker(cfg.replace(keep_ratio=keep_ratio), model=model)
    _prompt_all(tracker, stream[0], clicks)
    for t in range(1, length):
        res = tracker.track(stream[t])
        if t % every == 0 or t == length - 1:
            trace_ours.append(sample(t, {"state_bytes": res.stats.bank_bytes}))
    tracker.release_graphs()
    del tracker
    from .core.models import build_official_predictor

    _release_unused(model.device)
    resident = _allocated_bytes(model.device)  # our model's weights: not the official's
    running["peak"] = 0
    official = build_official_predictor(cfg, state_dict=model.state_dict())
    reset_peak_gpu_memory(model.device)
    session = OfficialVideoSession(official, stream, autocast_bf16=cfg.bf16)
    _prompt_all_official(session, clicks)
    for t, _ in session.propagate(0):
        if t and (t % every == 0 or t == length - 1):
            trace_official.append(sample(t, {"state_bytes": session.state_bytes()}, resident))
    del session, official
    ours_peak, off_peak = trace_ours[-1]["peak_bytes"], trace_official[-1]["peak_bytes"]
    return {"frames": length, "keep_ratio": keep_ratio, "objects": len(clicks),
            "gpu_memory_traced": traced,
            "ours": trace_ours, "official": trace_official, "official_resident_other_bytes": resident,
            "ours_window_peak_growth_after_first_sixth": growth(trace_ours, "window_peak_bytes"),
            "ours_allocated_growth_after_first_sixth": growth(trace_ours, "allocated_bytes"),
            "peak_vs_official_at_end": ours_peak / off_peak if traced and off_peak else None}


# ------------------------------------------------------------------------------------ report
def compare_masks(ours: List[Dict[int, np.ndarray]], official: List[Dict[int, np.ndarray]]) -> dict:
    """Per-frame IoU of every object's mask against the official one (empty vs empty = 1)."""
    ious, diffs = [], []
    for mine, ref in zip(ours, official):
        for obj_id, r in ref.items():
            m = mine[obj_id]
            union = np.logical_or(m, r).sum()
            ious.append(1.0 if union == 0 else float(np.logical_and(m, r).sum() / union))
            diffs.append(int((m != r).sum()))
    pixels = next(iter(official[0].values())).size
    return {"min_iou": min(ious), "mean_iou": float(np.mean(ious)),
            "max_mask_diff_pixels": max(diffs), "max_mask_diff_fraction": max(diffs) / pixels,
            "frames_compared": len(official)}


def _attention_vs_dense(stages: Optional[dict], dense_stages: Optional[dict], kind: str) -> dict:
    """Dense's memory attention over a mode's, alone and with the mode's router, from one kind of
    stage times (``kind`` "": the synchronised ``stage_ms``; "_kernels": ``stage_kernel_ms``)."""
    if (not stages or not dense_stages or stages.get("memory_attention", 0.0) <= 0
            or "memory_attention" not in dense_stages):  # (a kernel profile that failed: its error)
        return {}
    mem = stages["memory_attention"]
    return {f"memory_attention{kind}_vs_dense": dense_stages["memory_attention"] / mem,
            f"memory_attention_plus_router{kind}_vs_dense":
                dense_stages["memory_attention"] / (mem + stages["router"])}


def ratios_of(results: Dict[str, dict]) -> Dict[str, dict]:
    """Speed-ups of every mode against dense and official (>1 = faster)."""
    out = {}
    dense, official = results.get("dense"), results.get("official")
    for name, r in results.items():
        if "fps" not in r:
            continue
        row = {}
        if dense is not None and name != "dense":
            row.update(_attention_vs_dense(r["stage_ms"], dense["stage_ms"], ""))
            row.update(_attention_vs_dense(r.get("stage_kernel_ms"), dense.get("stage_kernel_ms"),
                                           "_kernels"))
            row["fps_vs_dense"] = r["fps"] / dense["fps"]
            by_round = _per_round_speedup(r, dense)
            if by_round:
                row["fps_vs_dense_by_round"] = by_round
            _bank_full_speedup(r, dense, row, "fps_vs_dense")
        if official is not None and name != "official":
            mem = r["stage_ms"]["memory_attention"]
            if mem > 0 and official["stage_ms"]["memory_attention"] > 0:
                row["memory_attention_vs_official"] = official["stage_ms"]["memory_attention"] / mem
            row["fps_vs_official"] = r["fps"] / official["fps"]
            by_round = _per_round_speedup(r, official)
            if by_round:
                row["fps_vs_official_by_round"] = by_round
            _bank_full_speedup(r, official, row, "fps_vs_official")
            if "fps_pipelined" in r:
                row["fps_pipelined_vs_official"] = r["fps_pipelined"] / official["fps"]
            if official["state_bytes"]:
                row["state_bytes_vs_official"] = r["state_bytes"] / official["state_bytes"]
            if official["peak_gpu_memory_bytes"]:
                row["peak_gpu_memory_vs_official"] = r["peak_gpu_memory_bytes"] / official["peak_gpu_memory_bytes"]
        out[name] = row
    return out


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="fastsam2-bench", description=__doc__.splitlines()[0],
                                allow_abbrev=False)  # "--nod" would not route to --node
    p.add_argument("--node", action="store_true",
                   help="benchmark the ROS node's own cost instead (its options: fastsam2-bench --node --help)")
    p.add_argument("--frames", help="folder of images, video file or rosbag (default: generated frames)")
    p.add_argument("--topic", help="image topic of a rosbag --frames (default: its only image topic)")
    p.add_argument("--max-frames", type=int, default=20)
    p.add_argument("--image-size", type=int, default=1024)
    p.add_argument("--keep-ratios", default=None,
                   help=f"the pruned mode's keep ratios, and the first one the soak's "
                        f"(default {BENCH_KEEP_RATIOS})")
    p.add_argument("--model", default="tiny", help="tiny|small|base_plus|large or a sam2 config name")
    weights = p.add_mutually_exclusive_group(required=True)
    weights.add_argument("--checkpoint", help="official SAM 2 checkpoint (.pt)")
    weights.add_argument("--random-weights", action="store_true",
                         help="random weights: timing only, masks are meaningless")
    p.add_argument("--device", default="auto")
    p.add_argument("--no-bf16", action="store_true", help="disable bf16 autocast on CUDA")
    p.add_argument("--no-graphs", action="store_true", help="run our step eagerly (no CUDA graphs)")
    p.add_argument("--preprocess", default="auto", choices=PREPROCESS_MODES,
                   help="our frame preprocessing: auto (device on CUDA), pil (sam2's exact loader), device")
    p.add_argument("--torch-compile", default="none", choices=COMPILE_MODES,
                   help="torch.compile our router or SAM 2's modules (CUDA; the first start compiles)")
    p.add_argument("--compile-cache-dir", default="", help="cache of compiled kernels")
    p.add_argument("--attention-backend", default=TrackerConfig.attention_backend,
                   choices=ATTENTION_BACKENDS,
                   help="the sdpa kernel our memory attention tries first (auto: torch's choice, "
                        "as the official predictor; the tracker's attention_backend)")
    p.add_argument("--mc-passes", type=int, default=5)
    p.add_argument("--click", help="X,Y[;X,Y...] positive clicks on frame 0, one per object "
                                   "(default: spread over the frame)")
    p.add_argument("--objects", type=int, default=None,
                   help="objects to track (default: one per --click, else 1); objects without a "
                        "click get one spread over the frame; fewer objects than clicks is an error")
    p.add_argument("--modes", default="official,dense,pruned",
                   help="comma-separated official,dense,pruned, any case (default: all)")
    p.add_argument("--warmup-frames", type=int, default=None,
                   help="frames of every mode's warm-up run, the prompted frame 0 included; at "
                        "least 2, so that every mode runs its tracking step (and ours captures "
                        "its CUDA graphs) before it is timed (default: all on CUDA, 3 on CPU)")
    p.add_argument("--no-profile", action="store_true", help="skip the stage-profiling passes")
    p.add_argument("--repeats", type=int, default=1, metavar="N",
                   help="time every mode in N interleaved rounds and report medians and per-round "
                        "ratios (a drifting machine then slows every mode alike; default 1)")
    p.add_argument("--soak", type=int, default=0, metavar="N",
                   help="also stream N frames (cycled) and trace GPU memory, ours vs official")
    p.add_argument("--official-vos", action="store_true",
                   help="also run sam2's torch.compile'd SAM2VideoPredictorVOS (CUDA only)")
    p.add_argument("--vos-time-limit", type=float, default=300.0,
                   help="seconds the compiled predictor may take to compile and run (default 300)")
    p.add_argument("--json", help="write the results here")
    return p.parse_args(argv)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--node" in argv:
        from .ros.node_bench import main as node_main

        return node_main([a for a in argv if a != "--node"])
    args = parse_args(argv)
    warnings.filterwarnings("ignore", message=".*RANDOM weights.*")
    started = time.time()
    try:
        return _run(args)
    except (FastSam2Error, ValueError, OSError) as exc:  # OSError: e.g. --json cannot be written
        print(f"fastsam2-bench: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        json_file = Path(args.json) if args.json else None
        saved = (f"; {json_file} holds the modes measured so far"
                 if json_file is not None and json_file.is_file()
                 and json_file.stat().st_mtime >= started else "")  # (not an earlier run's file)
        print(f"fastsam2-bench: interrupted{saved}", file=sys.stderr)
        return 130


def _run(args: argparse.Namespace) -> int:
    """The benchmark of :func:`main`; bad input raises (FastSam2Error, ValueError, OSError)."""
    from .eval.cli import check_output_file
    from .eval.runner import mode_specs

    ratios = keep_ratios(BENCH_KEEP_RATIOS if args.keep_ratios is None else args.keep_ratios)
    given_clicks = parse_clicks(args.click)
    objects = object_count(given_clicks, args.objects)
    if args.repeats < 1:
        raise InputError("--repeats must be >= 1")
    if args.soak and args.soak < 2:
        raise InputError("--soak must be 0 (off) or at least 2 frames")
    if args.warmup_frames is not None and args.warmup_frames < 2:
        raise InputError("--warmup-frames must be >= 2 (frame 0 and one tracked frame)")
    if not (math.isfinite(args.vos_time_limit) and args.vos_time_limit > 0):
        raise InputError("--vos-time-limit must be a finite number of seconds > 0")
    check_output_file(args.json, "--json")  # before all the work
    cfg = TrackerConfig(model_cfg=args.model, checkpoint=args.checkpoint or "",
                        allow_random_weights=args.random_weights, device=args.device,
                        bf16=not args.no_bf16, image_size=args.image_size,
                        mc_passes=args.mc_passes, cuda_graphs=not args.no_graphs,
                        preprocess=args.preprocess,
                        torch_compile=args.torch_compile,
                        attention_backend=args.attention_backend,
                        compile_cache_dir=args.compile_cache_dir,
                        max_objects=max(16, objects))
    for r in ratios:
        cfg.replace(keep_ratio=r)
    modes = {spec.mode for spec in mode_specs(
        [m for m in args.modes.split(",") if m.strip()], ratios)}  # as fastsam2-eval
    if args.keep_ratios is not None and "pruned" not in modes and not args.soak:
        # (as fastsam2-eval: a report that reads as if made with them, though nothing used them)
        raise InputError("--keep-ratios only apply with the pruned mode in --modes or --soak, "
                         "which are not given")
    frames = load_frames(args.frames, args.max_frames, topic=args.topic)
    h, w = frames[0].shape[:2]
    clicks = object_clicks(given_clicks, objects, w, h)
    from .core.models import build_predictor, compile_errors, uses_compiled_modules

    t0 = time.perf_counter()
    model = build_predictor(cfg)
    build_s = time.perf_counter() - t0
    cuda = model.device.type == "cuda"
    warmup = min(len(frames),  # what runs: a warm-up never has more frames than the clip
                 args.warmup_frames if args.warmup_frames is not None else (len(frames) if cuda else 3))
    profile = not args.no_profile

    def report_of(results: Dict[str, dict], mask_sets: Dict[str, list], partial: Optional[str],
                  soak: Optional[dict] = None) -> dict:
        results = {name: dict(r) for name, r in results.items()}
        add_bank_full_times(results)
        if "official" in mask_sets:
            for name, masks in mask_sets.items():
                if name != "official" and name in results:
                    results[name]["vs_official"] = compare_masks(masks, mask_sets["official"])
        report = {
            "schema_version": SCHEMA_VERSION, "model": cfg.model_cfg, "image_size": cfg.image_size,
            "device": str(model.device), "bf16": bool(cfg.bf16 and cuda),
            "random_weights": bool(args.random_weights), "frames": len(frames),
            "frame_size": [w, h], "source": args.frames or "generated", "topic": args.topic,
            "clicks": clicks, "objects": len(clicks), "warmup_frames": warmup,
            "model_build_s": build_s,
            # what ran: off CUDA torch.compile is skipped (with a warning), whatever was asked
            "torch_compile": cfg.torch_compile if uses_compiled_modules(model) else "none",
            "torch_compile_requested": cfg.torch_compile, "compile_errors": compile_errors(model),
            "inductor_emulate_precision_casts": inductor_emulate_precision_casts(model),
            "mc_passes": cfg.mc_passes, "attention_backend": cfg.attention_backend,
            # what ran (graphs are captured on CUDA only), next to what was asked
            "cuda_graphs": bool(cfg.cuda_graphs and cuda), "cuda_graphs_requested": cfg.cuda_graphs,
            "preprocess": resolve_preprocess(cfg.preprocess, model.device),
            "preprocess_requested": cfg.preprocess,
            "repeats": args.repeats, "commit": source_commit(), "versions": package_versions(),
            "torch": torch.__version__, "cpu_threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name(model.device) if cuda else None,
            "host": platform.node(), "modes": results, "ratios": ratios_of(results),
        }
        if partial:
            report["partial"] = partial
        if "dense" in results and "vs_official" in results["dense"]:
            report["dense_vs_official"] = results["dense"]["vs_official"]
        if soak is not None:
            report["soak"] = soak
        return report

    def save(report: dict) -> None:
        if args.json:
            write_json_atomically(Path(args.json), report)

    rounds, mask_sets = [], {}
    for index in range(args.repeats):  # round 1 also profiles and keeps the masks
        def mode_done(timed, masks, index=index):  # saved after every measured mode
            name = list(timed)[-1]  # (its time per frame here: a run cut later keeps it in the log)
            ms = timed[name].get("ms_per_frame")
            print(f"fastsam2-bench: round {index + 1}/{args.repeats}: {name} measured"
                  + (f", {ms:.2f} ms/frame" if ms is not None else ""), file=sys.stderr, flush=True)
            save(report_of(merge_rounds(rounds + [timed]), mask_sets or masks,
                           f"round {index + 1} of {args.repeats}: {', '.join(timed)} measured"))

        timed, masks = run_round(cfg, model, frames, clicks, modes, ratios, warmup,
                                 profile and index == 0, on_mode=mode_done)
        rounds.append(timed)
        mask_sets = mask_sets or masks
    results = merge_rounds(rounds)
    if args.official_vos:
        if not cuda:
            print("--official-vos needs CUDA; skipped", file=sys.stderr)
            results["official_vos"] = {"error": "skipped: sam2's compiled predictor needs CUDA"}
        else:
            save(report_of(results, mask_sets, "official_vos running"))
            results["official_vos"] = run_official_vos(cfg, model, frames, clicks,
                                                       args.vos_time_limit)
    soak = None
    if args.soak:
        save(report_of(results, mask_sets, "soak running"))
        soak = run_soak(cfg, model, frames, clicks, ratios[0] if ratios else 1.0, args.soak)
    report = report_of(results, mask_sets, None, soak)
    print_report(report)
    save(report)
    if args.json:
        print(f"wrote {args.json}")
    return 0


def inductor_emulate_precision_casts(model) -> Optional[bool]:
    """For a run that compiled: whether Inductor rounded to bf16 where eager does
    (TORCHINDUCTOR_EMULATE_PRECISION_CASTS; ``gpu_check.sh``'s ``+casts`` modes), which decides
    how close compiled keep 1.0 comes to the official predictor. None when nothing compiled."""
    from .core.models import uses_compiled_modules

    if not uses_compiled_modules(model):
        return None
    import torch._inductor.config as inductor_config

    return bool(inductor_config.emulate_precision_casts)


def write_json_atomically(path: Path, data: dict) -> None:
    """Write through a temporary file and a rename: a run killed while writing (a step's time
    limit) leaves the previous complete file, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


def summary_lines(report: dict, label: str = "") -> List[str]:
    """One short line per mode of a report (or of a partial one): what a reader of a cut-off log
    needs first — time per frame, FPS, the step's GPU time, the ratios and the kernel profile's
    router, memory attention and total (``scripts/gpu_check.sh`` prints them for every JSON)."""
    prefix = f"{label} " if label else ""
    lines = [f"{prefix}PARTIAL ({report['partial']})"] if report.get("partial") else []
    for name, r in report.get("modes", {}).items():
        if "ms_per_frame" not in r:
            lines.append(f"{prefix}{name}: {r.get('error', 'no result')}")
            continue
        ratio = report.get("ratios", {}).get(name, {})
        parts = [f"{r['ms_per_frame']:.2f} ms/frame", f"{r['fps']:.1f} FPS"]
        if "fps_pipelined" in r:
            parts.append(f"pipe {r['fps_pipelined']:.1f} FPS")
        if "gpu_ms_per_frame" in r:
            parts.append(f"GPU {r['gpu_ms_per_frame']:.2f} ms")
        for key, what in (("fps_vs_official", "official"), ("fps_vs_dense", "dense"),
                          ("fps_vs_dense_bank_full", "dense, full bank")):
            if key in ratio:
                rounds = ratio.get(f"{key}_by_round")
                parts.append(f"x {what} {ratio[key]:.3f}" + (
                    " (" + ", ".join(f"{x:.2f}" for x in rounds) + ")" if rounds else ""))
        if "ms_per_frame_bank_full" in r:
            parts.append(f"full bank {r['ms_per_frame_bank_full']:.2f} ms/frame "
                         f"({r['frames_bank_full']} frames)")
        kernels = r.get("stage_kernel_ms") or {}
        if kernels and "error" not in kernels:
            parts.append("kernels " + " ".join(f"{k} {kernels[k]:.2f}" for k in
                                               ("router", "memory_attention", "total") if k in kernels))
        lines.append(f"{prefix}{name}: " + ", ".join(parts))
    return lines


def print_report(report: dict) -> None:
    print(f"fastsam2-bench  model={report['model']}  image_size={report['image_size']}  "
          f"device={report['device']}{' (' + report['gpu'] + ')' if report['gpu'] else ''}  "
          f"frames={report['frames']} {report['frame_size'][0]}x{report['frame_size'][1]}  "
          f"objects={report['objects']}  weights={'random' if report['random_weights'] else 'checkpoint'}")
    head = ["mode", "FPS", "FPS pipe", "ms/frame", "p50/p99 ms", "GPU ms", "start s", "enc", "router",
            "memattn", "dec", "memenc", "kept", "state MiB", "peak GPU MiB", "IoU min", "FPS x official",
            "FPS x dense"]
    print(" | ".join(head))
    for name, r in report["modes"].items():
        if "fps" not in r:
            print(f"{name} | {r.get('error', 'no result')}")
            continue
        s, ratio = r["stage_ms"], report["ratios"].get(name, {})
        print(" | ".join([
            name, f"{r['fps']:.1f}", f"{r.get('fps_pipelined', float('nan')):.1f}",
            f"{r['ms_per_frame']:.2f}",
            "/".join(f"{r['latency_ms'].get(q, float('nan')):.2f}" for q in ("p50", "p99")),
            f"{r.get('gpu_ms_per_frame', float('nan')):.2f}",
            f"{r['startup_s']:.1f}", f"{s['encoder']:.1f}",
            f"{s['router']:.1f}", f"{s['memory_attention']:.1f}", f"{s['decoder']:.1f}",
            f"{s['memory_encoder']:.1f}", f"{r['tokens_kept']:.0f}/{r['tokens_total']}",
            f"{r['state_bytes'] / 2**20:.2f}", f"{r['peak_gpu_memory_bytes'] / 2**20:.0f}",
            f"{r.get('vs_official', {}).get('min_iou', float('nan')):.4f}",
            f"{ratio.get('fps_vs_official', float('nan')):.2f}",
            f"{ratio.get('fps_vs_dense', float('nan')):.2f}"]))
    for name, ratio in report["ratios"].items():
        for key, label in (("fps_vs_official_by_round", "x official"),
                           ("fps_vs_dense_by_round", "x dense"),
                           ("fps_vs_dense_bank_full_by_round", "x dense (full bank)")):
            if key in ratio:
                print(f"{name} {label} by round: " + " ".join(f"{x:.2f}" for x in ratio[key]))
    for name, r in report["modes"].items():
        if "ms_per_frame_bank_full" in r:
            ratio = report["ratios"].get(name, {})
            print(f"{name} full bank ({r['frames_bank_full']} frames): "
                  f"{r['ms_per_frame_bank_full']:.2f} ms/frame" + "".join(
                      f", x {what} {ratio[key]:.2f}" for key, what in
                      (("fps_vs_official_bank_full", "official"), ("fps_vs_dense_bank_full", "dense"))
                      if key in ratio))
        kernels = r.get("stage_kernel_ms") or {}
        if "error" in kernels:
            print(f"{name} kernel profile failed: {kernels['error']}")
        elif kernels:
            print(f"{name} kernel ms/frame (last {KERNEL_PROFILE_FRAMES} frames): " + " ".join(
                f"{stage} {ms:.2f}" for stage, ms in kernels.items()))
        for stage, ops in (r.get("stage_kernel_ops") or {}).items():
            if ops:
                print(f"{name} {stage} heaviest ops (ms/frame x calls/frame): " + ", ".join(
                    f"{op} {ms:.3f} x{calls:g}" for op, ms, calls in ops[:OPS_PRINTED]))
    if "dense_vs_official" in report:
        d = report["dense_vs_official"]
        print(f"dense (keep 1.0) vs official: max mask difference {d['max_mask_diff_pixels']} px "
              f"({100 * d['max_mask_diff_fraction']:.4f}%), min IoU {d['min_iou']:.4f} over "
              f"{d['frames_compared']} frames")
    if "soak" in report:
        s = report["soak"]
        ours, off = s["ours"][-1], s["official"][-1]
        memory = "GPU memory not traced (not on CUDA)"
        if s["gpu_memory_traced"]:
            memory = (f"peak GPU memory ours {ours['peak_bytes'] / 2**20:.0f} MiB (growth after the "
                      f"first sixth: window peaks "
                      f"{s['ours_window_peak_growth_after_first_sixth'] / 2**20:.1f} MiB, allocated "
                      f"{s['ours_allocated_growth_after_first_sixth'] / 2**20:.1f} MiB), "
                      f"official {off['peak_bytes'] / 2**20:.0f} MiB")
        print(f"soak {s['frames']} frames: {memory}; state ours {ours['state_bytes'] / 2**20:.2f} MiB, "
              f"official {off['state_bytes'] / 2**20:.1f} MiB")


if __name__ == "__main__":
    sys.exit(main())

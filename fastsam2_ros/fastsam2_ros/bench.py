"""``fastsam2-bench``: dense vs pruned vs official SAM 2 on the same frames, in one run.

Every mode tracks the same object (one positive click on frame 0) over the same frames with the
same weights. Per mode it reports stage latencies (frames after the prompt frame), end-to-end FPS,
tokens kept, memory-bank / predictor-state bytes and peak CUDA memory; then the ratios the
project's targets are about (memory attention pruned vs dense, end-to-end vs official) and the
largest mask difference between dense (keep 1.0) and the official predictor.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import warnings
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch

from .core.config import TrackerConfig
from .core.errors import FastSam2Error
from .core.stats import STAGES, peak_gpu_memory, reset_peak_gpu_memory

SCHEMA_VERSION = 1


class ModuleStageTimer:
    """Stage latencies of an unmodified SAM 2 model via forward hooks on its submodules."""

    STAGE_MODULES = {"encoder": ("image_encoder",), "memory_attention": ("memory_attention",),
                     "decoder": ("sam_prompt_encoder", "sam_mask_decoder"),
                     "memory_encoder": ("memory_encoder",)}

    def __init__(self, model) -> None:
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
            torch.cuda.synchronize()

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


def load_frames(source: Optional[str], max_frames: int, seed: int = 0) -> List[np.ndarray]:
    if source:
        from .frame_sources import open_frames

        frames = list(open_frames(source, max_frames=max_frames))
    else:
        from .eval.synthetic import generate_sequence

        frames, _, _ = generate_sequence(np.random.default_rng(seed), (640, 480), max_frames, 2)
    if len(frames) < 2:
        raise FastSam2Error(f"need at least 2 frames, got {len(frames)}")
    return frames


def _summary(stage_rows: List[Dict[str, float]], total_ms: List[float]) -> dict:
    stages = {s: float(np.mean([r.get(s, 0.0) for r in stage_rows])) for s in STAGES if s != "total"}
    stages["total"] = float(np.mean(total_ms))
    return {"stage_ms": stages, "fps": 1000.0 / stages["total"] if stages["total"] > 0 else 0.0}


def run_streaming(cfg: TrackerConfig, model, frames, click, keep_ratio: float) -> dict:
    from .core.tracker import StreamingTracker

    # The clip length is passed so keep 1.0 can be compared with the official predictor, which
    # scales pointer time encodings by min(num_frames, 16); a live stream uses 16.
    tracker = StreamingTracker(cfg.replace(keep_ratio=keep_ratio), model=model, return_logits=True,
                               num_frames_hint=len(frames))
    reset_peak_gpu_memory(model.device)
    res = tracker.add_prompt(1, points=[click], labels=[1], image=frames[0])
    logits, rows, totals, kept = [res.logits[1]], [], [], []
    for frame in frames[1:]:
        res = tracker.track(frame)
        rows.append(res.stats.stage_ms)
        totals.append(res.stats.stage_ms["total"])
        kept.append(res.stats.tokens_kept.get(1, 0))
        logits.append(res.logits[1])
    out = _summary(rows, totals)
    out.update(keep_ratio=keep_ratio, tokens_total=res.stats.tokens_total,
               tokens_kept=float(np.mean(kept)), router_mode=res.stats.router_mode,
               state_bytes=res.stats.bank_bytes, bank_frames=res.stats.bank_frames,
               bank_tokens=res.stats.bank_tokens, peak_gpu_memory_bytes=peak_gpu_memory(model.device))
    tracker.reset()
    return out, logits


def run_official(cfg: TrackerConfig, predictor, frames, click) -> dict:
    from .core.official import OfficialVideoSession

    timer = ModuleStageTimer(predictor)
    try:
        reset_peak_gpu_memory(predictor.device)
        session = OfficialVideoSession(predictor, frames, autocast_bf16=cfg.bf16)
        session.add_prompt(0, 1, points=[click], labels=[1])
        timer.take()
        rows, masks = [], []
        for t, m in session.propagate(0):
            masks.append(m[1])
            row = timer.take()
            if t > 0:
                rows.append(row)
        totals = [session.frame_ms[t] for t in range(1, len(frames))]
        out = _summary(rows, totals)
        n_tok = (predictor.image_size // 16) ** 2
        out.update(keep_ratio=1.0, tokens_total=n_tok, tokens_kept=float(n_tok),
                   router_mode="official", state_bytes=session.state_bytes(),
                   load_ms=session.load_ms, peak_gpu_memory_bytes=peak_gpu_memory(predictor.device))
    finally:
        timer.remove()
    return out, masks


def compare_masks(dense_logits, official_masks) -> dict:
    diffs = [int(((lg > 0) != m).sum()) for lg, m in zip(dense_logits, official_masks)]
    pixels = official_masks[0].size
    return {"max_mask_diff_pixels": max(diffs), "max_mask_diff_fraction": max(diffs) / pixels,
            "frames_compared": len(diffs)}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="fastsam2-bench", description=__doc__.splitlines()[0])
    p.add_argument("--frames", help="folder of images, video file or rosbag (default: generated frames)")
    p.add_argument("--max-frames", type=int, default=20)
    p.add_argument("--image-size", type=int, default=1024)
    p.add_argument("--keep-ratios", default="0.1,0.3,0.5")
    p.add_argument("--model", default="tiny", help="tiny|small|base_plus|large or a sam2 config name")
    weights = p.add_mutually_exclusive_group(required=True)
    weights.add_argument("--checkpoint", help="official SAM 2 checkpoint (.pt)")
    weights.add_argument("--random-weights", action="store_true",
                         help="random weights: timing only, masks are meaningless")
    p.add_argument("--device", default="auto")
    p.add_argument("--no-bf16", action="store_true", help="disable bf16 autocast on CUDA")
    p.add_argument("--mc-passes", type=int, default=5)
    p.add_argument("--click", help="X,Y of the positive click on frame 0 (default: image centre)")
    p.add_argument("--modes", default="official,dense,pruned")
    p.add_argument("--official-vos", action="store_true",
                   help="also run sam2's torch.compile'd SAM2VideoPredictorVOS (CUDA only)")
    p.add_argument("--json", help="write the results here")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    warnings.filterwarnings("ignore", message=".*RANDOM weights.*")
    try:
        ratios = [float(r) for r in args.keep_ratios.split(",") if r.strip()]
        cfg = TrackerConfig(model_cfg=args.model, checkpoint=args.checkpoint or "",
                            allow_random_weights=args.random_weights, device=args.device,
                            bf16=not args.no_bf16, image_size=args.image_size,
                            mc_passes=args.mc_passes)
        for r in ratios:
            cfg.replace(keep_ratio=r)
        modes = {m.strip() for m in args.modes.split(",")}
        frames = load_frames(args.frames, args.max_frames)
        h, w = frames[0].shape[:2]
        click = [float(v) for v in args.click.split(",")] if args.click else [w / 2.0, h / 2.0]
        from .core.models import build_official_predictor, build_predictor

        model = build_predictor(cfg)
        results: Dict[str, dict] = {}
        dense_logits = official_masks = None
        if "official" in modes:
            official = build_official_predictor(cfg, state_dict=model.state_dict())
            results["official"], official_masks = run_official(cfg, official, frames, click)
            del official
            if args.official_vos:
                if model.device.type != "cuda":
                    print("--official-vos needs CUDA; skipped", file=sys.stderr)
                else:
                    vos = build_official_predictor(cfg, vos_optimized=True, state_dict=model.state_dict())
                    results["official_vos"], _ = run_official(cfg, vos, frames, click)
                    del vos
        if "dense" in modes:
            results["dense"], dense_logits = run_streaming(cfg, model, frames, click, 1.0)
        if "pruned" in modes:
            for r in ratios:
                results[f"pruned@{r:g}"], _ = run_streaming(cfg, model, frames, click, r)
    except (FastSam2Error, ValueError) as exc:
        print(f"fastsam2-bench: error: {exc}", file=sys.stderr)
        return 2

    report = {
        "schema_version": SCHEMA_VERSION, "model": cfg.model_cfg, "image_size": cfg.image_size,
        "device": str(model.device), "bf16": bool(cfg.bf16 and model.device.type == "cuda"),
        "random_weights": bool(args.random_weights), "frames": len(frames),
        "frame_size": [w, h], "source": args.frames or "generated", "click": click,
        "torch": torch.__version__, "cpu_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(model.device) if model.device.type == "cuda" else None,
        "host": platform.node(), "modes": results, "ratios": ratios_of(results),
    }
    if dense_logits is not None and official_masks is not None:
        report["dense_vs_official"] = compare_masks(dense_logits, official_masks)
    print_report(report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
        print(f"wrote {args.json}")
    return 0


def ratios_of(results: Dict[str, dict]) -> Dict[str, dict]:
    """Speed-ups of every mode against dense and official (>1 = faster)."""
    out = {}
    dense, official = results.get("dense"), results.get("official")
    for name, r in results.items():
        row = {}
        if dense is not None and name != "dense":
            mem = r["stage_ms"]["memory_attention"]
            if mem > 0:
                row["memory_attention_vs_dense"] = dense["stage_ms"]["memory_attention"] / mem
                row["memory_attention_plus_router_vs_dense"] = (
                    dense["stage_ms"]["memory_attention"] / (mem + r["stage_ms"]["router"]))
            row["fps_vs_dense"] = r["fps"] / dense["fps"]
        if official is not None and name != "official":
            mem = r["stage_ms"]["memory_attention"]
            if mem > 0:
                row["memory_attention_vs_official"] = official["stage_ms"]["memory_attention"] / mem
            row["fps_vs_official"] = r["fps"] / official["fps"]
            if official["state_bytes"]:
                row["state_bytes_vs_official"] = r["state_bytes"] / official["state_bytes"]
            if official["peak_gpu_memory_bytes"]:
                row["peak_gpu_memory_vs_official"] = r["peak_gpu_memory_bytes"] / official["peak_gpu_memory_bytes"]
        out[name] = row
    return out


def print_report(report: dict) -> None:
    print(f"fastsam2-bench  model={report['model']}  image_size={report['image_size']}  "
          f"device={report['device']}{' (' + report['gpu'] + ')' if report['gpu'] else ''}  "
          f"frames={report['frames']} {report['frame_size'][0]}x{report['frame_size'][1]}  "
          f"weights={'random' if report['random_weights'] else 'checkpoint'}")
    head = ["mode", "enc", "router", "memattn", "dec", "memenc", "total ms", "FPS", "kept",
            "state MB", "peak GPU MB", "memattn x dense", "FPS x official"]
    print(" | ".join(head))
    for name, r in report["modes"].items():
        s, ratio = r["stage_ms"], report["ratios"].get(name, {})
        print(" | ".join([
            name, f"{s['encoder']:.1f}", f"{s['router']:.1f}", f"{s['memory_attention']:.1f}",
            f"{s['decoder']:.1f}", f"{s['memory_encoder']:.1f}", f"{s['total']:.1f}",
            f"{r['fps']:.2f}", f"{r['tokens_kept']:.0f}/{r['tokens_total']}",
            f"{r['state_bytes'] / 2**20:.2f}", f"{r['peak_gpu_memory_bytes'] / 2**20:.0f}",
            f"{ratio.get('memory_attention_vs_dense', float('nan')):.2f}",
            f"{ratio.get('fps_vs_official', float('nan')):.2f}"]))
    if "dense_vs_official" in report:
        d = report["dense_vs_official"]
        print(f"dense (keep 1.0) vs official: max mask difference {d['max_mask_diff_pixels']} px "
              f"({100 * d['max_mask_diff_fraction']:.4f}%) over {d['frames_compared']} frames")


if __name__ == "__main__":
    sys.exit(main())

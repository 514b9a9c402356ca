"""Reports of evaluation runs: JSON (stable schema), a markdown table like the paper's Table 1, and
a PNG plot of J&F and FPS against the keep ratio.

JSON schema (``schema_version`` 2) of ``fastsam2-eval run``::

    {schema_version, tool, created_utc, accuracy_valid, input{...}, model{...}, tracker_config{...},
     protocol{...}, environment{...},
     prompts{seq: {obj_id: {frame, click, text?, texts{variant: text}?, auto{...}?}}},
     auto_prompt{prompt, objects_per_sequence, text_variants[], phrase_used_as_text,
                 stage_ms{proposals|caption|refinement: {mean, median, count} | null}, notes{}} | null,
     runs: [{label, mode, keep_ratio, frames, seconds, fps, ms_per_frame,
             "J&F", J{mean, recall, decay}, F{mean, recall, decay},       # null without GT
             latency_ms{stage: {mean, median}} | null,                    # FrameStats.stage_ms
             peak_gpu_memory_bytes | null, tokens_total | null,
             tokens_kept_mean | null,    # per object, mean over frames given to track()
             memory_bank_bytes{mean, max} | null,
             clicks{total, initial, refinement, rounds}, text_used, notes[],
             per_sequence{seq: {frames, seconds, fps, clicks, rounds, refined_frames, "J&F", J, F}},
             per_object{"<seq>_<k>": {sequence, object, "J&F", J, F}},
             text_variant}]}                                               # null or TEXT_VARIANTS

Version 2 added ``auto_prompt``, ``prompts[..].texts/auto`` and ``runs[].text_variant``.

``fastsam2-eval score`` writes ``{schema_version, tool, gt, pred, overall, per_sequence,
per_object, conventions, notes[]}`` (its version 2 added ``notes``: the sequences not scored).
Fractions are in [0, 1]; NaN is written as null. Keys are only ever added in a later schema
version, never renamed.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from ..core.stats import STAGES
from .runner import ModeRun, keep_ratio_text
from .scoring import CONVENTIONS, ScoreResult

SCHEMA_VERSION = 2  # of fastsam2-eval run reports
SCORE_SCHEMA_VERSION = 2  # of fastsam2-eval score reports
RUN_KEYS = ("label", "mode", "keep_ratio", "frames", "seconds", "fps", "ms_per_frame", "J&F", "J",
            "F", "latency_ms", "peak_gpu_memory_bytes", "tokens_total", "tokens_kept_mean",
            "memory_bank_bytes", "clicks", "text_used", "notes", "per_sequence", "per_object",
            "text_variant")

METHOD_NAMES = {"official": "SAM 2 (official video predictor)",
                "dense": "Streaming SAM 2, dense (keep 1.00)"}


def clean(obj: Any) -> Any:
    """JSON-safe copy: NaN/inf -> None, numpy scalars -> Python, tuples -> lists, keys -> str."""
    if isinstance(obj, dict):
        return {str(k): clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_json(path, data: Dict[str, Any]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(clean(data), indent=1, allow_nan=False) + "\n")
    return path


def environment() -> Dict[str, Any]:
    env: Dict[str, Any] = {"python": platform.python_version(), "platform": platform.platform(),
                           "cpu_count": os.cpu_count()}
    try:
        import torch

        env["torch"] = torch.__version__
        env["cuda_available"] = bool(torch.cuda.is_available())
        env["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
        env["torch_threads"] = torch.get_num_threads()
    except Exception:  # pragma: no cover - torch is a dependency
        pass
    try:
        from importlib.metadata import version

        env["sam2"] = version("sam2")
    except Exception:
        env["sam2"] = None
    return env


def score_report(result: ScoreResult, gt: str, pred: str, per_frame: bool = False) -> Dict[str, Any]:
    d = {"schema_version": SCORE_SCHEMA_VERSION, "tool": "fastsam2-eval score", "gt": str(gt),
         "pred": str(pred)}
    d.update(result.to_dict(per_frame=per_frame))
    return clean(d)


def _stat(xs: Sequence[float]) -> Optional[Dict[str, float]]:
    if not xs:
        return None
    a = np.asarray(xs, dtype=np.float64)
    return {"mean": float(a.mean()), "median": float(np.median(a))}


def run_entry(run: ModeRun) -> Dict[str, Any]:
    """One element of ``runs`` (see the module docstring)."""
    score = run.score
    d: Dict[str, Any] = {"label": run.spec.label, "mode": run.spec.mode, "keep_ratio": run.spec.keep_ratio,
                         "frames": run.frames, "seconds": run.seconds, "fps": run.fps,
                         "ms_per_frame": 1e3 * run.seconds / run.frames if run.frames else None}
    if score is not None:
        o = score.overall()
        d.update({"J&F": o["J&F"], "J": o["J"], "F": o["F"]})
    else:
        d.update({"J&F": None, "J": None, "F": None})
    has_stats = any(run.stage_ms[s] for s in STAGES)
    d["latency_ms"] = {s: _stat(run.stage_ms[s]) for s in STAGES} if has_stats else None
    d["peak_gpu_memory_bytes"] = run.peak_gpu_memory_bytes
    d["tokens_total"] = run.tokens_total or None
    d["tokens_kept_mean"] = float(np.mean(run.tokens_kept)) if run.tokens_kept else None
    d["memory_bank_bytes"] = ({"mean": float(np.mean(run.bank_bytes)), "max": int(max(run.bank_bytes))}
                              if run.bank_bytes else None)
    d["clicks"] = {"total": sum(s.clicks for s in run.sequences),
                   "initial": sum(s.clicks_initial for s in run.sequences),
                   "refinement": sum(s.clicks_refine for s in run.sequences),
                   "rounds": sum(s.rounds for s in run.sequences)}
    d["text_used"] = bool(run.text_used)
    d["notes"] = list(run.notes)
    per_seq: Dict[str, Any] = {}
    for s in run.sequences:
        e: Dict[str, Any] = {"frames": s.frames, "seconds": s.seconds,
                             "fps": s.frames / s.seconds if s.seconds > 0 else None,
                             "clicks": s.clicks, "rounds": s.rounds,
                             "refined_frames": list(s.refined_frames)}
        if s.score is not None:
            sm = s.score.summary()
            e.update({"J&F": sm["J&F"], "J": sm["J"], "F": sm["F"], "objects": sm["objects"],
                      "frames_scored": sm["frames_scored"]})
        per_seq[s.name] = e
    d["per_sequence"] = per_seq
    d["per_object"] = score.to_dict()["per_object"] if score is not None else {}
    d["text_variant"] = run.spec.text_variant
    assert tuple(d) == RUN_KEYS, tuple(d)
    return d


def run_report(runs: Sequence[ModeRun], *, input_info: Dict[str, Any], model_info: Dict[str, Any],
               tracker_config: Dict[str, Any], protocol: Dict[str, Any],
               prompts: Dict[str, Any], accuracy_valid: bool,
               auto_prompt: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    return clean({
        "schema_version": SCHEMA_VERSION,
        "tool": "fastsam2-eval run",
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "accuracy_valid": bool(accuracy_valid),
        "input": input_info,
        "model": model_info,
        "tracker_config": tracker_config,
        "protocol": protocol,
        "scoring_conventions": CONVENTIONS,
        "environment": environment(),
        "prompts": prompts,
        "auto_prompt": auto_prompt,
        "runs": [run_entry(r) for r in runs],
    })


# --------------------------------------------------------------------------------------------------
def _pct(x) -> str:
    return "–" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{100 * x:.1f}"


def _num(x, fmt="{:.1f}") -> str:
    return "–" if x is None or (isinstance(x, float) and not math.isfinite(x)) else fmt.format(x)


def _gib(b) -> str:
    return "–" if not b else f"{b / 2 ** 30:.2f} GiB"


def method_name(entry: Dict[str, Any]) -> str:
    if entry["mode"] == "pruned":
        name = f"Streaming SAM 2, pruned (keep {keep_ratio_text(entry['keep_ratio'])})"
    else:
        name = METHOD_NAMES.get(entry["mode"], entry["label"])
    return with_text_variant(name, entry.get("text_variant"))


def with_text_variant(name: str, variant: Optional[str]) -> str:
    """A run's name in the table and the plot's legend, with its text variant if it has one."""
    return f"{name}, text: {variant}" if variant else name


def markdown_table(report: Dict[str, Any]) -> str:
    """Table 1 (Method | J | F | J&F | FPS | GPU mem | clicks) plus a cost breakdown table."""
    lines = ["| Method | J | F | J&F | FPS | GPU mem | clicks |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for e in report["runs"]:
        j = e["J"]["mean"] if e["J"] else None
        f = e["F"]["mean"] if e["F"] else None
        lines.append(f"| {method_name(e)} | {_pct(j)} | {_pct(f)} | {_pct(e['J&F'])} | "
                     f"{_num(e['fps'])} | {_gib(e['peak_gpu_memory_bytes'])} | {e['clicks']['total']} |")
    lines += ["", "| Method | ms/frame | " + " | ".join(f"{s} ms" for s in STAGES if s != "total")
              + " | tokens kept / total | memory bank (max) |",
              "|---|---:|" + "---:|" * (len(STAGES) - 1) + "---:|---:|"]
    for e in report["runs"]:
        lat = e["latency_ms"] or {}
        cells = [_num((lat.get(s) or {}).get("mean")) for s in STAGES if s != "total"]
        tok = ("–" if e["tokens_kept_mean"] is None else
               f"{e['tokens_kept_mean']:.0f} / {e['tokens_total']}")
        bank = "–" if not e["memory_bank_bytes"] else f"{e['memory_bank_bytes']['max'] / 2 ** 20:.2f} MiB"
        lines.append(f"| {method_name(e)} | {_num(e['ms_per_frame'])} | " + " | ".join(cells)
                     + f" | {tok} | {bank} |")
    auto = report.get("auto_prompt")
    if auto:
        lines += ["", "| automatic prompt stage | mean ms | median ms | runs |", "|---|---:|---:|---:|"]
        for stage, st in auto["stage_ms"].items():
            lines.append(f"| {stage} | {_num((st or {}).get('mean'))} | {_num((st or {}).get('median'))} "
                         f"| {(st or {}).get('count', 0)} |")
    notes = []
    if auto and auto.get("prompt") == "auto":
        notes.append("Prompts: automatic (proposal -> caption -> phrase -> click on the first frame, no "
                     "ground truth used); predicted objects matched to GT ids (Hungarian on (J+F)/2) "
                     "to score; unmatched GT objects score 0.")
    if not report.get("accuracy_valid", False):
        notes.append("Accuracy columns are NOT meaningful: the model ran with random weights "
                     "or without ground truth.")
    inp = report.get("input", {})
    env = report.get("environment", {})
    notes.append(f"Input: {inp.get('path')} ({inp.get('kind')}, {len(inp.get('sequences', []))} "
                 f"sequence(s), {inp.get('frames')} frames); device: {report.get('model', {}).get('device')}"
                 f" ({env.get('gpu') or 'CPU'}); image size {report.get('model', {}).get('image_size')}.")
    notes.append("J, F, J&F: DAVIS 2017 semi-supervised conventions (x100, first and last frame not "
                 "scored, mean over objects). FPS: frames / tracker time (decoding, scoring and "
                 "writing excluded; refinement clicks included).")
    return "\n".join(lines + [""] + [f"* {n}" for n in notes]) + "\n"


#: File types ``plot`` writes (matplotlib picks the format from the name).
PLOT_SUFFIXES = (".png", ".pdf", ".svg")


def streaming_lines(runs: List[Dict[str, Any]]) -> Dict[Optional[str], List[Dict[str, Any]]]:
    """The streaming runs of each text variant (None: no variant), by keep ratio: one plotted line
    each. One line through all of them zig-zagged between the variants at every keep ratio."""
    lines: Dict[Optional[str], List[Dict[str, Any]]] = {}
    for e in runs:
        if e["keep_ratio"] is not None:
            lines.setdefault(e.get("text_variant"), []).append(e)
    return {v: sorted(es, key=lambda e: e["keep_ratio"]) for v, es in lines.items()}


def plot(report: Dict[str, Any], path) -> Optional[Path]:
    """J&F and FPS against keep ratio (dense at 1.0; one line per text variant; official as a
    dashed line). None if no run has a keep ratio."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = report["runs"]
    lines = streaming_lines(runs)
    official = next((e for e in runs if e["mode"] == "official"), None)
    if not lines and official is None:
        return None
    has_acc = any(e["J&F"] is not None for e in runs)
    ncols = 2 if has_acc else 1
    fig, axes = plt.subplots(1, ncols, figsize=(5.2 * ncols, 3.8), squeeze=False)
    panels = ([("J&F", lambda e: None if e["J&F"] is None else 100 * e["J&F"], "J&F (x100)")]
              if has_acc else []) + [("FPS", lambda e: e["fps"], "frames / s")]
    for ax, (title, get, ylabel) in zip(axes[0], panels):
        for variant, stream in lines.items():
            xs = [e["keep_ratio"] for e in stream if get(e) is not None]
            ys = [get(e) for e in stream if get(e) is not None]
            if xs:
                ax.plot(xs, ys, "o-", label=with_text_variant("streaming (ours)", variant))
        if official is not None and get(official) is not None:
            ax.axhline(get(official), color="gray", linestyle="--", label="official SAM 2")
        ax.set_xlabel("keep ratio")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.set_xlim(0, 1.05)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if not report.get("accuracy_valid", False) and has_acc:
        fig.suptitle("random weights / no GT: accuracy not meaningful", fontsize=9, color="red")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


__all__ = ["SCHEMA_VERSION", "SCORE_SCHEMA_VERSION", "RUN_KEYS", "PLOT_SUFFIXES", "clean",
           "write_json", "score_report", "run_entry",
           "run_report", "markdown_table", "plot", "streaming_lines", "environment", "method_name"]

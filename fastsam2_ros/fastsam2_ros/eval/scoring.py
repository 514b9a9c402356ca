"""Scoring label maps of whole sequences and DAVIS-layout folders (semi-supervised protocol).

Protocol of the DAVIS 2017 semi-supervised evaluation:

* objects of a sequence = ids 1..max(label of the first annotated frame) (255 = void excluded); an
  id missing from the prediction is an empty mask, a predicted id above that count is an error;
* scored frames = the annotated frames without the first and the last one (a sequence with fewer
  than 3 annotated frames has none: it is skipped with a note, as its NaN would turn every global
  mean into NaN);
* void pixels (GT label 255) are background, as in the reference's semi-supervised task (its
  ``get_all_masks`` sets 255 to 0 and ``_evaluate_semisupervised`` gets no void mask): a
  prediction spilling into void counts as false positive;
* each object gets (mean, recall, decay) of J and of F over its scored frames; the global numbers
  are means over **all objects of all sequences** (not over sequences), J&F = (J mean + F mean)/2.

The per-sequence numbers (mean over the objects of a sequence) are an addition of this tool; the
reference's "per-sequence" table is per object (``<seq>_<k>``), which we also report.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Union

import numpy as np

from ..core.errors import path_not_found
from .davis_io import (VOID_LABEL, DatasetError, annotation_root, image_frame_names, label_files,
                       list_sequences, prediction_root, read_label_png, select_sequences)
from .metrics import boundary_f, db_statistics, region_j

PathLike = Union[str, Path]

CONVENTIONS = {
    "reference": "davisvideochallenge/davis2017-evaluation (semi-supervised)",
    "drop_first_last_frame": True,
    "boundary_tolerance": "ceil(0.008 * image diagonal) px, disk dilation",
    "both_empty_J": 1.0,
    "recall_threshold": 0.5,
    "decay_bins": 4,
    "void_label": VOID_LABEL,
    "objects": "ids 1..max(first annotated frame)",
    "global_average": "mean over all objects of all sequences",
}


def _stats_dict(values: np.ndarray) -> Dict[str, float]:
    m, r, d = db_statistics(values)
    return {"mean": m, "recall": r, "decay": d}


@dataclass
class ObjectScore:
    """J and F of one object on every scored frame, and their statistics."""

    sequence: str
    obj_id: int
    j: np.ndarray
    f: np.ndarray

    @property
    def key(self) -> str:
        return f"{self.sequence}_{self.obj_id}"

    @property
    def J(self) -> Dict[str, float]:
        return _stats_dict(self.j)

    @property
    def F(self) -> Dict[str, float]:
        return _stats_dict(self.f)

    @property
    def JF(self) -> float:
        return (self.J["mean"] + self.F["mean"]) / 2.0


@dataclass
class SequenceScore:
    name: str
    frames_scored: List[str]
    objects: List[ObjectScore] = field(default_factory=list)

    def summary(self) -> Dict[str, object]:
        return _summarise(self.objects, extra={"frames_scored": len(self.frames_scored)})


def _mean(xs: Sequence[float]) -> float:
    # np.mean (not nanmean), like the reference's global means: a NaN object makes the mean NaN
    return float(np.mean(xs)) if len(xs) else float("nan")


def _summarise(objects: Sequence[ObjectScore], extra: Optional[dict] = None) -> Dict[str, object]:
    js = [o.J for o in objects]
    fs = [o.F for o in objects]
    J = {k: _mean([d[k] for d in js]) for k in ("mean", "recall", "decay")}
    F = {k: _mean([d[k] for d in fs]) for k in ("mean", "recall", "decay")}
    out: Dict[str, object] = {"J&F": (J["mean"] + F["mean"]) / 2.0, "J": J, "F": F,
                              "objects": len(objects)}
    out.update(extra or {})
    return out


@dataclass
class ScoreResult:
    """Scores of a set of sequences; ``to_dict`` is the JSON block written by the tool."""

    sequences: List[SequenceScore] = field(default_factory=list)
    drop_first_last: bool = True
    objects_rule: str = "first"
    notes: List[str] = field(default_factory=list)  # e.g. sequences skipped (not_scored_note)

    @property
    def objects(self) -> List[ObjectScore]:
        return [o for s in self.sequences for o in s.objects]

    def overall(self) -> Dict[str, object]:
        return _summarise(self.objects, extra={"sequences": len(self.sequences)})

    def to_dict(self, per_frame: bool = False) -> Dict[str, object]:
        per_object: Dict[str, object] = {}
        for s in self.sequences:
            for o in s.objects:
                d: Dict[str, object] = {"sequence": s.name, "object": o.obj_id, "J&F": o.JF,
                                        "J": o.J, "F": o.F}
                if per_frame:
                    d["frames"] = list(s.frames_scored)
                    d["J_per_frame"] = [float(x) for x in o.j]
                    d["F_per_frame"] = [float(x) for x in o.f]
                per_object[o.key] = d
        conv = dict(CONVENTIONS, drop_first_last_frame=self.drop_first_last)
        if self.objects_rule == "all":
            conv["objects"] = "ids 1..max(any annotated frame) (objects appearing later; not DAVIS)"
        return {
            "overall": self.overall(),
            "per_sequence": {s.name: s.summary() for s in self.sequences},
            "per_object": per_object,
            "conventions": conv,
            "notes": list(self.notes),
        }


def scored_frame_indices(n_annotated: int, drop_first_last: bool = True) -> List[int]:
    """Positions of the scored frames among a sequence's annotated frames: all but the first and
    the last under the DAVIS protocol (so a sequence needs 3 annotated frames to be scored)."""
    return list(range(1, n_annotated - 1)) if drop_first_last else list(range(n_annotated))


def not_scored_note(name: str, n_annotated: int, drop_first_last: bool = True) -> str:
    """Why a sequence without scored frames (see :func:`scored_frame_indices`) is skipped."""
    why = " (the first and the last are not scored)" if drop_first_last else ""
    return f"{name}: not scored, {n_annotated} annotated frame(s) leave no frame to score{why}"


def why_no_objects(labels: Iterable[np.ndarray]) -> str:
    """Why label maps hold no object id. A binary 0/255 mask (DAVIS 2016's annotations, the usual
    single-object format) is not background: every object pixel is 255, the void label."""
    if any((np.asarray(lab) == VOID_LABEL).any() for lab in labels):
        return ("all its non-zero pixels are 255, the void label; objects are ids 1..254: write a "
                "binary mask's object as 1")
    return "all background"


def no_objects_note(name: str, gt: Sequence[np.ndarray], objects: str = "first") -> str:
    """Why a sequence scores no object: without the note, ``score`` printed "0 objects" and J&F
    n/a, which reads like a scoring failure."""
    if objects == "first":
        return f"{name}: 0 objects, its first annotated frame has no object ({why_no_objects(gt[:1])})"
    return f"{name}: 0 objects, its annotations have no object ({why_no_objects(gt)})"


def num_objects(first_gt: np.ndarray) -> int:
    """Object count of a sequence: the largest non-void label of its first annotated frame."""
    lab = first_gt[first_gt != VOID_LABEL]
    return int(lab.max()) if lab.size else 0


def score_sequence(name: str, frame_names: Sequence[str], gt: Sequence[np.ndarray],
                   pred: Sequence[np.ndarray], drop_first_last: bool = True,
                   pred_where: Optional[Sequence[str]] = None,
                   gt_where: Optional[Sequence[str]] = None, objects: str = "first") -> SequenceScore:
    """Score one sequence given its annotated frames in order and the predictions of those frames.

    ``gt[i]``/``pred[i]`` are uint8 label maps of frame ``frame_names[i]``; only frames
    ``1 .. n-2`` are scored when ``drop_first_last`` (predictions of the first and last frame
    are not even looked at, so they may be None). ``objects="first"`` (DAVIS) scores ids
    1..max(first annotated frame); ``"all"`` scores ids up to the largest id of any annotated
    frame (for datasets whose objects appear later; the DAVIS reference refuses those).
    ``pred_where``/``gt_where`` name the files in error messages. A sequence without scored
    frames is a DatasetError (callers skip it with :func:`not_scored_note`).
    """
    if not (len(frame_names) == len(gt) == len(pred)):
        raise ValueError("frame_names, gt and pred must have the same length")
    if not frame_names:
        raise DatasetError(f"sequence {name!r} has no annotated frames")
    if objects not in ("first", "all"):
        raise ValueError(f"objects must be 'first' or 'all', got {objects!r}")
    if objects == "first":
        n_obj = num_objects(np.asarray(gt[0]))
    else:
        n_obj = max(num_objects(np.asarray(g)) for g in gt)
    idx = scored_frame_indices(len(frame_names), drop_first_last)
    if not idx:
        raise DatasetError(not_scored_note(f"sequence {name!r}", len(frame_names), drop_first_last))
    where_p = pred_where or [f"sequence {name!r} frame {n} (prediction)" for n in frame_names]
    where_g = gt_where or [f"sequence {name!r} frame {n} (ground truth)" for n in frame_names]
    j = np.zeros((n_obj, len(idx)))
    f = np.zeros((n_obj, len(idx)))
    for col, i in enumerate(idx):
        g = np.asarray(gt[i])
        p = pred[i]
        if p is None:
            raise DatasetError(f"missing prediction: {where_p[i]}")
        p = np.asarray(p)
        if g.shape != p.shape:
            raise DatasetError(
                f"{where_p[i]} is {p.shape[1] if p.ndim > 1 else '?'}x{p.shape[0]} but {where_g[i]} is "
                f"{g.shape[1]}x{g.shape[0]}")
        if p.size and int(p.max()) > n_obj:
            which = "its first annotated frame" if objects == "first" else "its annotations"
            hint = " (objects appearing later are scored with objects='all' / --objects all)" \
                if objects == "first" else ""
            raise DatasetError(
                f"{where_p[i]} contains object id {int(p.max())} but sequence {name!r} has only "
                f"{n_obj} object(s) (ids 1..{n_obj} of {which}){hint}")
        for k in range(1, n_obj + 1):  # void is background: no void mask (see the module doc)
            gk, pk = g == k, p == k
            j[k - 1, col] = region_j(gk, pk)
            f[k - 1, col] = boundary_f(gk, pk)
    scored = [frame_names[i] for i in idx]
    objs = [ObjectScore(name, k, j[k - 1], f[k - 1]) for k in range(1, n_obj + 1)]
    return SequenceScore(name, scored, objs)


def annotations_of_first_frames(files: Sequence[Path], max_frames: Optional[int],
                                frame_names: Optional[Sequence[str]] = None) -> List[Path]:
    """The annotations of a sequence's first ``max_frames`` frames, as ``run --max-frames`` reads
    the sequence, so that its masks re-score: the frames are the sequence's images where known
    (``frame_names``: an annotation may be missing for some frames), else its annotated frames."""
    if max_frames is None:
        return list(files)
    if frame_names is None:
        return list(files[:max_frames])
    first = set(frame_names[:max_frames])
    return [p for p in files if p.stem in first]


def score_folders(gt_dir: PathLike, pred_dir: PathLike, sequences: Optional[Sequence[str]] = None,
                  resolution: Optional[str] = None, drop_first_last: bool = True,
                  imageset: Optional[str] = None,
                  progress: Optional[Callable[[Iterable], Iterable]] = None,
                  objects: str = "first", max_frames: Optional[int] = None) -> ScoreResult:
    """Score the predictions in ``pred_dir`` against ``gt_dir`` (both DAVIS layout or folders of
    sequence folders). Sequences: given, from an image set, or every GT sequence folder.
    ``objects``: see :func:`score_sequence` (``"first"`` = DAVIS). ``max_frames``: only the first
    frames of each sequence (:func:`annotations_of_first_frames`). ``resolution``: the ground
    truth's resolution folder (:func:`davis_io.resolution_folder`; None: the default one where
    there are resolution folders)."""
    gt_root = annotation_root(gt_dir, resolution)
    names, imageset_path = select_sequences(gt_dir, sequences, imageset)
    if names is None:
        names = list_sequences(gt_root)
    if not names:
        raise DatasetError(f"no sequence folders with PNG annotations in {gt_root}")
    pred_root = prediction_root(pred_dir, resolution, names)
    result = ScoreResult(drop_first_last=drop_first_last)
    if imageset_path is not None:
        result.notes.append(f"sequences of image set {imageset_path}")
    if max_frames is not None:
        result.notes.append(f"the first {max_frames} frames of each sequence (--max-frames)")
    it: Iterable[str] = progress(names) if progress else names
    for seq in it:
        gdir, pdir = gt_root / seq, pred_root / seq
        if not gdir.is_dir():
            raise DatasetError(path_not_found(f"ground-truth folder of sequence {seq!r}", gdir,
                                              folder=True))
        if not pdir.is_dir():
            raise DatasetError(path_not_found(f"prediction folder of sequence {seq!r}", pdir,
                                              folder=True))
        gfiles = label_files(gdir)
        if not gfiles:
            raise DatasetError(f"no annotation PNGs in {gdir}")
        if max_frames is not None:
            gfiles = annotations_of_first_frames(gfiles, max_frames,
                                                 image_frame_names(gt_dir, seq, resolution))
        idx = scored_frame_indices(len(gfiles), drop_first_last)
        if not idx:
            result.notes.append(not_scored_note(seq, len(gfiles), drop_first_last))
            continue
        frame_names = [p.stem for p in gfiles]
        gts = [read_label_png(p) for p in gfiles]
        for p, g in zip(gfiles[1:], gts[1:]):
            if g.shape != gts[0].shape:
                raise DatasetError(f"annotation {p} is {g.shape[1]}x{g.shape[0]} but {gfiles[0]} is "
                                   f"{gts[0].shape[1]}x{gts[0].shape[0]}")
        preds: List[Optional[np.ndarray]] = [None] * len(gfiles)
        pfiles = [pdir / f"{n}.png" for n in frame_names]
        for i in idx:
            if not pfiles[i].is_file():
                raise DatasetError(f"missing prediction {pfiles[i]} (ground truth {gfiles[i]} exists)")
            preds[i] = read_label_png(pfiles[i])
        scored = score_sequence(seq, frame_names, gts, preds, drop_first_last,
                                pred_where=[str(p) for p in pfiles],
                                gt_where=[str(p) for p in gfiles], objects=objects)
        if not scored.objects:
            result.notes.append(no_objects_note(seq, gts, objects))
        result.sequences.append(scored)
    result.objects_rule = objects
    return result


def _fmt(x: float, scale: float = 100.0) -> str:
    return "  n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x * scale:5.1f}"


def format_scores(result: ScoreResult) -> str:
    """Plain-text table: per object, per sequence, overall (values x100)."""
    lines = ["per object:", f"  {'object':<28} {'J&F':>5} {'J':>5} {'F':>5}"]
    for o in result.objects:
        lines.append(f"  {o.key:<28} {_fmt(o.JF)} {_fmt(o.J['mean'])} {_fmt(o.F['mean'])}")
    lines += ["per sequence:", f"  {'sequence':<28} {'J&F':>5} {'J':>5} {'F':>5} {'objs':>4}"]
    for s in result.sequences:
        d = s.summary()
        lines.append(f"  {s.name:<28} {_fmt(d['J&F'])} {_fmt(d['J']['mean'])} {_fmt(d['F']['mean'])} "
                     f"{d['objects']:>4}")
    o = result.overall()
    lines += ["overall (mean over objects):",
              f"  J&F {_fmt(o['J&F'])} | J {_fmt(o['J']['mean'])} recall {_fmt(o['J']['recall'])} "
              f"decay {_fmt(o['J']['decay'])} | F {_fmt(o['F']['mean'])} recall {_fmt(o['F']['recall'])} "
              f"decay {_fmt(o['F']['decay'])} | {o['objects']} objects in {o['sequences']} sequences"]
    lines += [f"note: {n}" for n in result.notes]
    return "\n".join(lines)


__all__ = ["ObjectScore", "SequenceScore", "ScoreResult", "score_sequence", "score_folders",
           "annotations_of_first_frames", "scored_frame_indices", "not_scored_note", "no_objects_note", "why_no_objects",
           "num_objects", "format_scores", "CONVENTIONS"]

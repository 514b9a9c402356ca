"""Running the tracker over sequences in several modes with one prompt protocol, and measuring it.

Modes (one :class:`ModeSpec` each):

* ``official`` — sam2's ``SAM2VideoPredictor`` through ``core.official.OfficialVideoSession``
  (the whole video is handed over up front; propagation stops at each frame that gets a prompt
  or a correction, the clicks are added there and propagation resumes after it);
* ``dense`` — our :class:`StreamingTracker` with ``keep_ratio = 1.0`` (the dense SAM 2 path);
* ``pruned`` — the streaming tracker with a keep ratio < 1 (one mode per ratio).

Protocol (paper): one positive click per object on the first frame where its GT mask is non-empty,
at the distance-transform peak of that mask (``core.prompts.representative_click``). Prompts are
computed once per sequence and shared by every mode. Optional simulated refinement: after a frame
is produced, if the mean over its objects of (J+F)/2 is below ``refine_threshold``, one correction
round puts up to ``clicks_per_round`` clicks on the largest error regions of that frame (positive
inside a missed region, negative inside a false-positive one, each at the region's distance
transform peak); at most ``max_rounds`` rounds per sequence and one per frame. Every click counts.

Timing covers the tracker calls only (frames are decoded before the clock starts; metric
computation and mask writing happen outside it); refinement calls are included because they are
tracker work. Model building is not timed; ``warmup_frames`` frames are run untimed first.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
from scipy import ndimage

from ..core.errors import InputError
from ..core.prompts import representative_click
from ..core.stats import STAGES, peak_gpu_memory, reset_peak_gpu_memory
from .davis_io import VOID_LABEL, DatasetError, label_files, write_label_png
from .metrics import boundary_f, region_j
from .scoring import (ScoreResult, SequenceScore, not_scored_note, num_objects, score_sequence,
                      scored_frame_indices, why_no_objects)

LOG = logging.getLogger(__name__)

MODES = ("official", "dense", "pruned")
#: Texts an object can be prompted with in the text-robustness runs (paper Table 6): the user's
#: (--text-prompts), the automatic phrase, a vague one (its head noun) and a verbose one (the caption).
TEXT_VARIANTS = ("user", "auto", "vague", "verbose")
#: Keep ratios of the pruned mode when none are given.
DEFAULT_KEEP_RATIOS = (0.3, 0.5)


# --------------------------------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------------------------------
@dataclass
class ModeSpec:
    mode: str  # official | dense | pruned
    keep_ratio: Optional[float] = None  # dense: 1.0, pruned: < 1, official: None
    text_variant: Optional[str] = None  # one of TEXT_VARIANTS: every object gets that text

    @property
    def label(self) -> str:
        base = f"pruned_{keep_ratio_text(self.keep_ratio)}" if self.mode == "pruned" else self.mode
        return f"{base}+{self.text_variant}" if self.text_variant else base


def is_mode_label(name: str) -> bool:
    """Whether ``name`` is one of the labels :attr:`ModeSpec.label` gives (a run's OUT/<label>
    folders), so ``score`` can tell a run's OUT from a folder of resolutions."""
    base, plus, variant = name.partition("+")
    if plus and variant not in TEXT_VARIANTS:
        return False
    if base.startswith("pruned_"):
        try:
            return 0.0 < float(base[len("pruned_"):]) < 1.0
        except ValueError:
            return False
    return base in MODES and base != "pruned"  # the pruned mode's labels carry their ratio


def keep_ratio_text(keep_ratio: float, spec: str = ".2f") -> str:
    """A keep ratio as labels and tables show it: in ``spec`` (two decimals, ``0.30``), or every
    digit it was given with when that would change it (``0.301``), so that distinct ratios never
    share a label."""
    short = format(keep_ratio, spec)
    return short if float(short) == keep_ratio else repr(float(keep_ratio))


def mode_specs(modes: Sequence[str], keep_ratios: Optional[Sequence[float]] = None,
               text_variants: Sequence[str] = ()) -> List[ModeSpec]:
    """Expand ``official,dense,pruned`` x keep ratios (x text variants for the streaming modes:
    the official predictor takes no text) into the runs to make. ``keep_ratios`` None: the
    pruned mode runs ``DEFAULT_KEEP_RATIOS``."""
    modes = [m.strip().lower() for m in modes]
    unknown = next((m for m in modes if m not in MODES), None)
    if unknown is not None:
        raise InputError(f"unknown mode {unknown!r}; choose from {', '.join(MODES)}")
    if keep_ratios is None:
        keep_ratios = DEFAULT_KEEP_RATIOS
    specs: List[ModeSpec] = []
    for m in modes:
        if m == "official":
            specs.append(ModeSpec("official"))
        elif m == "dense":
            specs.append(ModeSpec("dense", 1.0))
        else:
            if not keep_ratios:
                raise InputError("mode 'pruned' needs at least one keep ratio (--keep-ratios)")
            for i, k in enumerate(keep_ratios):
                k = float(k)
                if k in [float(r) for r in keep_ratios[:i]]:
                    raise InputError(f"keep ratio {k} is given twice (--keep-ratios); give each once")
                if not (0.0 < k <= 1.0) or not math.isfinite(k):
                    raise InputError(f"keep ratio must be in (0, 1], got {k}")
                if k >= 1.0:
                    raise InputError("keep ratio 1.0 is the dense mode; use --modes dense")
                specs.append(ModeSpec("pruned", k))
    variants = [v.strip().lower() for v in text_variants]
    bad = [v for v in variants if v not in TEXT_VARIANTS]
    if bad:
        raise InputError(f"unknown text variant(s) {bad}; choose from {', '.join(TEXT_VARIANTS)}")
    if variants:
        specs = [s if s.mode == "official" else ModeSpec(s.mode, s.keep_ratio, v)
                 for s in specs for v in (variants if s.mode != "official" else [None])]
    seen = set()
    out = []
    for s in specs:
        if s.label not in seen:
            seen.add(s.label)
            out.append(s)
    if not out:
        raise InputError("no modes to run")
    return out


@dataclass
class Protocol:
    refine: bool = False
    refine_threshold: float = 0.8
    max_rounds: int = 10
    clicks_per_round: int = 3
    drop_first_last: bool = True  # DAVIS scoring

    def to_dict(self) -> dict:
        return {"prompt": "one positive click per object at the distance-transform peak of its "
                          "first non-empty GT mask",
                "refine": self.refine, "refine_threshold": self.refine_threshold,
                "max_rounds_per_sequence": self.max_rounds, "clicks_per_round": self.clicks_per_round,
                "drop_first_last_frame": self.drop_first_last}


@dataclass
class ObjectPrompt:
    obj_id: int
    frame: int  # index of the first frame with a non-empty GT mask
    click: Tuple[int, int]  # (x, y)
    text: Optional[str] = None
    texts: Dict[str, str] = field(default_factory=dict)  # text variant -> text (see TEXT_VARIANTS)
    auto: Optional[dict] = None  # the automatic prompt that made it (AutoPromptResult.to_dict)

    def to_dict(self) -> dict:
        d = {"frame": self.frame, "click": [int(self.click[0]), int(self.click[1])]}
        if self.text:
            d["text"] = self.text
        if self.texts:
            d["texts"] = dict(self.texts)
        if self.auto is not None:
            d["auto"] = dict(self.auto)
        return d


@dataclass
class SequenceInput:
    """One sequence, decoded: frames, ground truth (possibly only some frames) and prompts."""

    name: str
    frames: List[np.ndarray]
    frame_names: List[str]
    gt: Dict[int, np.ndarray]  # frame index -> uint8 labels (0 bg, k object, 255 void)
    prompts: List[ObjectPrompt]

    def scorable(self, drop_first_last: bool = True) -> bool:
        """Whether scoring has a frame to score (3 annotated frames under the DAVIS protocol)."""
        return bool(scored_frame_indices(len(self.gt), drop_first_last))

    def with_text_variant(self, variant: Optional[str]) -> "SequenceInput":
        """The same sequence with every prompt's text replaced by its ``variant`` text."""
        if variant is None:
            return self
        missing = [p.obj_id for p in self.prompts if not p.texts.get(variant)]
        if missing:
            raise InputError(f"sequence {self.name!r}: no {variant!r} text for object(s) {missing}")
        prompts = [dataclasses.replace(p, text=p.texts[variant]) for p in self.prompts]
        return dataclasses.replace(self, prompts=prompts)


def plan_prompts(gt: Dict[int, np.ndarray], texts: Optional[Dict[int, str]] = None,
                 where: str = "") -> List[ObjectPrompt]:
    """One click per object id of the GT (255 = void excluded), on its first non-empty frame."""
    first: Dict[int, int] = {}
    for t in sorted(gt):
        ids = np.unique(gt[t])
        for k in ids.tolist():
            if k not in (0, VOID_LABEL) and k not in first:
                first[k] = t
    if not first:
        raise DatasetError(f"{where or 'sequence'}: the ground truth contains no object "
                           f"({why_no_objects(gt.values())})")
    texts = texts or {}
    unknown = sorted(set(texts) - set(first))
    if unknown:
        raise InputError(f"{where}: text prompts for object id(s) {unknown} that the ground truth does not contain")
    return [ObjectPrompt(k, first[k], representative_click(gt[first[k]] == k), texts.get(k))
            for k in sorted(first)]


# --------------------------------------------------------------------------------------------------
# refinement
# --------------------------------------------------------------------------------------------------
def frame_quality(gt: np.ndarray, pred: np.ndarray, obj_ids: Iterable[int]) -> Dict[int, float]:
    """(J+F)/2 of each object on one frame (void ignored)."""
    void = gt == VOID_LABEL
    vd = void if void.any() else None
    out = {}
    for k in obj_ids:
        g, p = gt == k, pred == k
        out[k] = 0.5 * (region_j(g, p, vd) + boundary_f(g, p, vd))
    return out


def corrective_clicks(gt: np.ndarray, pred: np.ndarray, obj_ids: Iterable[int],
                      max_clicks: int) -> List[Tuple[int, Tuple[int, int], int]]:
    """Up to ``max_clicks`` (obj_id, (x, y), label) at the largest error regions of the frame.

    Error regions are the 4-connected components of each object's misses (GT k, predicted not k:
    positive click) and false positives (predicted k, GT neither k nor void: negative click),
    ranked by area over all objects; each click sits at its region's distance-transform peak.
    """
    void = gt == VOID_LABEL
    regions: List[Tuple[int, int, int, np.ndarray]] = []  # (-area, order, obj, mask) and label
    labels_of: List[int] = []
    order = 0
    for k in obj_ids:
        g, p = gt == k, pred == k
        for err, lab in ((g & ~p, 1), (p & ~g & ~void, 0)):
            if not err.any():
                continue
            comp, n = ndimage.label(err)
            sizes = np.bincount(comp.ravel())[1:]
            for c in np.argsort(-sizes, kind="stable")[:max_clicks]:
                regions.append((-int(sizes[c]), order, k, comp == (c + 1)))
                labels_of.append(lab)
                order += 1
    ranked = sorted(range(len(regions)), key=lambda i: (regions[i][0], regions[i][1]))[:max_clicks]
    return [(regions[i][2], representative_click(regions[i][3]), labels_of[i]) for i in ranked]


def group_clicks(clicks) -> Dict[int, Tuple[list, list]]:
    """``{obj_id: (points, labels)}`` of corrective clicks, in click order."""
    grouped: Dict[int, Tuple[list, list]] = {}
    for obj, xy, lab in clicks:
        pts, labs = grouped.setdefault(obj, ([], []))
        pts.append([int(xy[0]), int(xy[1])])
        labs.append(lab)
    return grouped


def compose_labels(masks: Dict[int, np.ndarray], shape: Tuple[int, int]) -> np.ndarray:
    """uint8 label map of object masks; a higher id wins where masks overlap (as label_image)."""
    out = np.zeros(shape, np.uint8)
    for k in sorted(masks):
        if not 1 <= k <= 254:
            raise InputError(f"object id {k} cannot be written to a DAVIS label PNG (1..254)")
        m = np.asarray(masks[k], dtype=bool)
        if m.shape != tuple(shape):
            raise InputError(f"mask of object {k} has shape {m.shape}, expected {tuple(shape)}")
        out[m] = k
    return out


# --------------------------------------------------------------------------------------------------
# measurements
# --------------------------------------------------------------------------------------------------
@dataclass
class SequenceRun:
    name: str
    frames: int = 0
    seconds: float = 0.0
    clicks_initial: int = 0
    clicks_refine: int = 0
    rounds: int = 0
    refined_frames: List[int] = field(default_factory=list)
    score: Optional[SequenceScore] = None
    scored_ids: str = "first"  # score_sequence's objects: "all" when objects appear later

    @property
    def clicks(self) -> int:
        return self.clicks_initial + self.clicks_refine


@dataclass
class ModeRun:
    """Everything measured for one mode over all sequences."""

    spec: ModeSpec
    sequences: List[SequenceRun] = field(default_factory=list)
    stage_ms: Dict[str, List[float]] = field(default_factory=lambda: {s: [] for s in STAGES})
    tokens_kept: List[float] = field(default_factory=list)  # mean over objects, per frame
    tokens_total: int = 0
    bank_bytes: List[int] = field(default_factory=list)
    peak_gpu_memory_bytes: Optional[int] = None
    device: str = "cpu"
    text_used: bool = False  # a frame's FrameStats.text_mode said a text reached the router
    notes: List[str] = field(default_factory=list)
    drop_first_last: bool = True

    @property
    def frames(self) -> int:
        return sum(s.frames for s in self.sequences)

    @property
    def seconds(self) -> float:
        return sum(s.seconds for s in self.sequences)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else float("nan")

    @property
    def score(self) -> Optional[ScoreResult]:
        scored = [s.score for s in self.sequences if s.score is not None]
        if not scored:
            return None
        return ScoreResult(sequences=scored, drop_first_last=self.drop_first_last)


class _FrameLog:
    """Per-frame accumulation of FrameStats (several tracker calls may touch one frame)."""

    def __init__(self, run: ModeRun) -> None:
        self.run = run
        self.ms = {s: 0.0 for s in STAGES}
        self.last = None
        self.tracked = None

    def add(self, res, tracked: bool = False) -> None:
        """``tracked``: the result of a plain ``track()`` (every object propagated through the
        pruned memory attention; prompted frames run dense and would blur the token count)."""
        st = getattr(res, "stats", None)
        if st is None:
            return
        for s in STAGES:
            self.ms[s] += float(st.stage_ms.get(s, 0.0))
        self.run.text_used |= st.text_mode != "none"  # the tracker's word: a text reached the router
        self.last = st
        if tracked:
            self.tracked = st

    def close(self) -> None:
        if self.last is None:
            return
        for s in STAGES:
            self.run.stage_ms[s].append(self.ms[s])
        st = self.last
        if self.tracked is not None and self.tracked.tokens_kept:
            self.run.tokens_kept.append(float(np.mean(list(self.tracked.tokens_kept.values()))))
        self.run.tokens_total = max(self.run.tokens_total, int(st.tokens_total))
        self.run.bank_bytes.append(int(st.bank_bytes))
        if st.peak_gpu_memory_bytes:
            self.run.peak_gpu_memory_bytes = max(self.run.peak_gpu_memory_bytes or 0,
                                                 int(st.peak_gpu_memory_bytes))


def _sync(device: str) -> None:
    if str(device).startswith("cuda"):
        from ..core.cuda_device import synchronize

        synchronize(device)  # that device (cuda:N), not the thread's current one


class _Clock:
    def __init__(self, device: str) -> None:
        self.device = device
        self.seconds = 0.0

    def __enter__(self):
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        _sync(self.device)
        self.seconds += time.perf_counter() - self.t0


def prompts_by_frame(seq: SequenceInput) -> Dict[int, List[ObjectPrompt]]:
    """Each frame's first clicks (objects start on the frame they first appear on)."""
    by_frame: Dict[int, List[ObjectPrompt]] = {}
    for p in seq.prompts:
        by_frame.setdefault(p.frame, []).append(p)
    return by_frame


def correction_due(protocol: Protocol, gt: Optional[np.ndarray], pred: np.ndarray,
                   appeared: List[int], srun: SequenceRun) -> List[Tuple[int, Tuple[int, int], int]]:
    """The corrective clicks the refinement protocol gives this frame ([] = none): refinement on,
    the frame annotated, objects present, rounds left, mean (J+F)/2 below the threshold. One rule
    for the streaming and the official modes."""
    if not (protocol.refine and gt is not None and appeared and srun.rounds < protocol.max_rounds):
        return []
    q = frame_quality(gt, pred, appeared)
    if float(np.mean(list(q.values()))) >= protocol.refine_threshold:
        return []
    return corrective_clicks(gt, pred, appeared, protocol.clicks_per_round)


def count_round(srun: SequenceRun, t: int, clicks: list) -> None:
    srun.rounds += 1
    srun.clicks_refine += len(clicks)
    srun.refined_frames.append(t)


# --------------------------------------------------------------------------------------------------
# streaming modes
# --------------------------------------------------------------------------------------------------
def run_streaming_sequence(tracker, seq: SequenceInput, protocol: Protocol, run: ModeRun,
                           use_text: bool = True, on_frame: Optional[Callable[[], None]] = None,
                           device: str = "cpu") -> Tuple[SequenceRun, List[np.ndarray]]:
    """Track one sequence frame by frame with the StreamingTracker API; returns labels per frame."""
    tracker.reset(num_frames_hint=len(seq.frames))  # same pointer encoding as the official mode
    srun = SequenceRun(seq.name)
    clock = _Clock(device)
    shape = seq.frames[0].shape[:2]
    by_frame = prompts_by_frame(seq)
    preds: List[np.ndarray] = []
    appeared: List[int] = []
    for t, frame in enumerate(seq.frames):
        log = _FrameLog(run)
        masks: Dict[int, np.ndarray] = {}
        new = by_frame.get(t, [])
        with clock:
            if not new:
                res = tracker.track(frame)
                log.add(res, tracked=True)
                masks = dict(res.masks)
            for i, p in enumerate(new):
                kw = {"text": p.text} if (use_text and p.text) else {}
                res = tracker.add_prompt(p.obj_id, points=[list(p.click)], labels=[1],
                                         image=frame if i == 0 else None, **kw)
                log.add(res)
                masks.update(res.masks)
        for p in new:
            appeared.append(p.obj_id)
            srun.clicks_initial += 1
        pred = compose_labels(masks, shape)
        clicks = correction_due(protocol, seq.gt.get(t), pred, appeared, srun)
        if clicks:
            with clock:
                for obj, (pts, labs) in group_clicks(clicks).items():
                    res = tracker.add_prompt(obj, points=pts, labels=labs)
                    log.add(res)
                    masks.update(res.masks)
            count_round(srun, t, clicks)
            pred = compose_labels(masks, shape)
        log.close()
        preds.append(pred)
        srun.frames += 1
        if on_frame:
            on_frame()
    srun.seconds = clock.seconds
    return srun, preds


# --------------------------------------------------------------------------------------------------
# official mode
# --------------------------------------------------------------------------------------------------
def _official_session_class():
    try:
        from ..core.official import OfficialVideoSession
    except ImportError as exc:
        raise InputError(
            "mode 'official' needs fastsam2_ros.core.official.OfficialVideoSession, which is not "
            f"available ({exc})") from exc
    return OfficialVideoSession


def _next_frame(gen, t: int, name: str) -> Dict[int, np.ndarray]:
    item = next(gen, None)
    if item is None or item[0] != t:
        got = "nothing" if item is None else f"frame {item[0]}"
        raise RuntimeError(f"official session gave {got} where frame {t} of {name} was due")
    return item[1]


def run_official_sequence(make_session, seq: SequenceInput, protocol: Protocol, run: ModeRun,
                          on_frame: Optional[Callable[[], None]] = None,
                          device: str = "cpu") -> Tuple[SequenceRun, List[np.ndarray]]:
    """sam2's video predictor under the streaming modes' protocol, frame by frame: an object is
    clicked when propagation reaches its first frame (so no frame is predicted from a later
    prompt), the frame's masks (propagated, or the prompt's output where objects appear) get the
    refinement check at once, and a prompt or correction stops propagation, is added on that frame
    and propagation resumes after it. Frames before the first prompt are background, as tracking
    without objects gives (sam2 cannot propagate without a prompt)."""
    srun = SequenceRun(seq.name)
    clock = _Clock(device)
    shape = seq.frames[0].shape[:2]
    T = len(seq.frames)
    by_frame = prompts_by_frame(seq)
    first = min(by_frame, default=T)
    preds: List[np.ndarray] = [np.zeros(shape, np.uint8) for _ in range(min(first, T))]
    for _ in preds:
        if on_frame:
            on_frame()
    if first >= T:  # e.g. no automatic prompt: all background, as the streaming modes give
        srun.frames = T
        return srun, preds
    # sam2 replaces an object's earlier clicks on a frame with the new ones: keep them to resend
    given: Dict[Tuple[int, int], Tuple[list, list]] = {}
    appeared: List[int] = []
    gen = None  # propagation in progress; None: (re)start it from the previous frame

    def click(t: int, obj: int, pts: list, labs: list) -> Dict[int, np.ndarray]:
        old_pts, old_labs = given.get((t, obj), ([], []))
        given[(t, obj)] = (old_pts + pts, old_labs + labs)
        return session.add_prompt(t, obj, points=given[(t, obj)][0], labels=given[(t, obj)][1])

    with clock:
        session = make_session(seq.frames)
    try:
        for t in range(first, T):
            masks: Dict[int, np.ndarray] = {}
            with clock:
                if t > first:
                    if gen is None:  # resume after the frame just prompted (sam2's preflight
                        gen = session.propagate(t)  # stores its prompts: no frame is run twice)
                    masks = _next_frame(gen, t, seq.name)
                new = by_frame.get(t, [])
                if new and gen is not None:
                    gen.close()
                    gen = None
                for p in new:  # the output holds every object's mask on this frame
                    masks = {**masks, **click(t, p.obj_id, [list(p.click)], [1])}
            appeared += [p.obj_id for p in new]
            srun.clicks_initial += len(new)
            pred = compose_labels(masks, shape)
            clicks = correction_due(protocol, seq.gt.get(t), pred, appeared, srun)
            if clicks:
                with clock:
                    if gen is not None:
                        gen.close()
                        gen = None
                    for obj, (pts, labs) in group_clicks(clicks).items():
                        masks = {**masks, **click(t, obj, pts, labs)}
                count_round(srun, t, clicks)
                pred = compose_labels(masks, shape)
            preds.append(pred)
            if on_frame:
                on_frame()
        if gen is not None:
            gen.close()
            gen = None
        state_bytes = getattr(session, "state_bytes", None)
        if callable(state_bytes):  # sam2 keeps every frame's outputs: largest at the end
            run.bank_bytes.append(int(state_bytes()))
    finally:
        if gen is not None:
            gen.close()
        close = getattr(session, "close", None)
        if callable(close):
            close()
    srun.frames = T
    srun.seconds = clock.seconds
    return srun, preds


# --------------------------------------------------------------------------------------------------
# driver
# --------------------------------------------------------------------------------------------------
SequenceLoader = Callable[[], Iterable[SequenceInput]]


@dataclass
class RunOptions:
    protocol: Protocol = field(default_factory=Protocol)
    warmup_frames: int = 2
    save_masks: Optional[Path] = None  # write predictions as <dir>/<mode label>/<seq>/<frame>.png
    progress: bool = True
    use_text: bool = True
    #: text variant (None: the user's texts) -> a text the timed runs of that variant give the
    #: tracker (``any_prompt_text``): the streaming warm-up uses it when its sequence has none,
    #: so the text encoder is built before the clock runs (and never for runs without texts)
    warmup_texts: Dict[Optional[str], str] = field(default_factory=dict)
    #: prompts not made from the GT (automatic): map predicted ids onto GT ids before scoring
    match_objects: bool = False


def any_prompt_text(prompts: Dict[str, List[ObjectPrompt]],
                    variant: Optional[str] = None) -> Optional[str]:
    """The first text the runs of text ``variant`` (None: the user's texts) give any object of any
    sequence (None: they give none); ``RunOptions.warmup_texts``."""
    for ps in prompts.values():
        for p in ps:
            text = p.texts.get(variant) if variant else p.text
            if text:
                return text
    return None


def texts_unused_note(run: ModeRun, texts_given: bool) -> None:
    """Say so when a streaming run was given texts but the tracker used none (``text_mode:
    none``): its rows would otherwise look like text-guided runs."""
    if texts_given and not run.text_used:
        run.notes.append("the tracker's text_mode is none: text prompts are not used")


def _peak(device: str) -> Optional[int]:
    """Peak CUDA bytes of the run; None off CUDA (the report's "not measured")."""
    return peak_gpu_memory(device) if str(device).startswith("cuda") else None


def _progress(total: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="frame", disable=not enabled, leave=True,
                dynamic_ncols=True)


def _warmup_streaming(tracker, seq: SequenceInput, n: int, use_text: bool = True,
                      any_text: Optional[str] = None) -> None:
    """A few untimed frames (also loads what the tracker builds lazily, e.g. the CLIP text
    encoder on the first text prompt). ``any_text``: a text of the timed runs, given when ``seq``
    has none, so the encoder is not built inside a later sequence's timed calls."""
    if n <= 0 or not seq.prompts:
        return
    p = next((q for q in seq.prompts if q.text), seq.prompts[0])
    text = (p.text or any_text) if use_text else None
    kw = {"text": text} if text else {}
    tracker.reset()
    tracker.add_prompt(p.obj_id, points=[list(p.click)], labels=[1], image=seq.frames[p.frame], **kw)
    for f in seq.frames[p.frame + 1: p.frame + n]:
        tracker.track(f)
    tracker.reset()


def _warmup_official(make_session, seq: SequenceInput, n: int) -> None:
    if n <= 0 or not seq.prompts:
        return
    p = seq.prompts[0]
    frames = seq.frames[p.frame: p.frame + max(1, n)]
    session = make_session(frames)
    try:
        session.add_prompt(0, p.obj_id, points=[list(p.click)], labels=[1])
        for _ in session.propagate(0):
            pass
    finally:
        close = getattr(session, "close", None)
        if callable(close):
            close()


def mask_folder(save_masks: Path, label: str, sequence: str) -> Path:
    """``save_masks/<mode label>/<sequence>``, where a run writes a sequence's masks. A sequence name
    that is not one plain folder name is refused: ``..`` would put every mode's masks in OUT itself
    and a rerun's :func:`remove_earlier_masks` would delete the PNGs there."""
    if sequence in ("", ".", "..") or "/" in sequence or os.sep in sequence:
        raise DatasetError(f"sequence name {sequence!r} is not a folder name, so its masks would not "
                           f"go to {Path(save_masks) / label}/<sequence>/; name the sequence (its "
                           "folder) without '/' and other than '.' or '..'")
    return Path(save_masks) / label / sequence


def remove_earlier_masks(folder: Path) -> None:
    """Delete the mask PNGs an earlier run wrote to ``folder`` (OUT/<mode>/<sequence>): a shorter
    rerun into the same --out would otherwise leave its later frames there, and ``score`` would
    score the mix. Only the label PNGs directly in that folder (``label_files``) go; other files
    and folders stay."""
    if folder.is_dir():
        for png in label_files(folder):
            png.unlink()


def _finish_sequence(run: ModeRun, seq: SequenceInput, srun: SequenceRun, preds: List[np.ndarray],
                     opts: RunOptions) -> None:
    if opts.match_objects:
        from .auto_prompts import match_to_ground_truth

        preds, mapping = match_to_ground_truth(preds, seq.gt)
        run.notes.append(f"{seq.name}: automatic objects matched to GT ids {mapping}")
    if opts.save_masks is not None:
        d = mask_folder(opts.save_masks, run.spec.label, seq.name)
        remove_earlier_masks(d)
        for name, lab in zip(seq.frame_names, preds):
            write_label_png(d / f"{name}.png", lab)
    drop = opts.protocol.drop_first_last
    if not seq.scorable(drop):
        run.notes.append(not_scored_note(seq.name, len(seq.gt), drop))
    else:
        idx = sorted(seq.gt)
        gts = [seq.gt[i] for i in idx]
        # DAVIS scores the ids of the first annotated frame; objects that appear later (not in
        # DAVIS 2017) are prompted on their first frame, so score them too.
        rule = "all" if max(num_objects(g) for g in gts) > num_objects(gts[0]) else "first"
        if rule == "all":
            note = (f"{seq.name}: objects appear after the first annotated frame; scored over all "
                    "GT ids (the DAVIS reference would refuse these predictions)")
            if note not in run.notes:
                run.notes.append(note)
        srun.scored_ids = rule
        srun.score = score_sequence(seq.name, [seq.frame_names[i] for i in idx], gts,
                                    [preds[i] for i in idx],
                                    drop_first_last=drop, objects=rule)
    run.sequences.append(srun)


def run_modes(specs: Sequence[ModeSpec], load_sequences: SequenceLoader, total_frames: int,
              make_tracker: Optional[Callable[[float], object]] = None,
              make_official: Optional[Callable[[], Callable[[List[np.ndarray]], object]]] = None,
              opts: Optional[RunOptions] = None, device: str = "cpu") -> List[ModeRun]:
    """Run every mode over every sequence (mode by mode, so each mode's peak memory is its own).

    ``load_sequences()`` yields decoded :class:`SequenceInput` (called once per mode; prompts must
    be identical each time). ``make_tracker(keep_ratio)`` builds a StreamingTracker (reused by all
    streaming modes via ``set_keep_ratio``); ``make_official()`` returns a factory
    ``frames -> session`` for the official mode (its model is freed after the mode).
    """
    opts = opts or RunOptions()
    runs: List[ModeRun] = []
    tracker = None
    try:
        for spec in specs:
            run = ModeRun(spec, device=str(device), drop_first_last=opts.protocol.drop_first_last)
            reset_peak_gpu_memory(device)
            bar = _progress(total_frames, spec.label, opts.progress)
            try:
                if spec.mode == "official":
                    if make_official is None:
                        raise InputError("mode 'official' requested but no official session factory given")
                    if tracker is not None:  # free the streaming model before measuring official
                        tracker.release()
                        tracker = None
                        reset_peak_gpu_memory(device)
                    factory = make_official()
                    warmed = had_text = False
                    for seq in load_sequences():
                        if not warmed:
                            _warmup_official(factory, seq, opts.warmup_frames)
                            reset_peak_gpu_memory(device)
                            warmed = True
                        had_text |= any(p.text for p in seq.prompts)
                        srun, preds = run_official_sequence(factory, seq, opts.protocol, run,
                                                            on_frame=bar.update, device=device)
                        _finish_sequence(run, seq, srun, preds, opts)
                    release = getattr(factory, "release", None)
                    if callable(release):
                        release()
                    del factory
                    if had_text:
                        run.notes.append("official SAM 2 takes no text: text prompts are not used")
                else:
                    if make_tracker is None:
                        raise InputError(f"mode {spec.mode!r} requested but no tracker factory given")
                    if tracker is None:
                        tracker = make_tracker(float(spec.keep_ratio))
                    tracker.set_keep_ratio(float(spec.keep_ratio))
                    warmed = texts_given = False
                    for seq in load_sequences():
                        seq = seq.with_text_variant(spec.text_variant)  # warm up on what is timed
                        if not warmed:
                            _warmup_streaming(tracker, seq, opts.warmup_frames, opts.use_text,
                                              opts.warmup_texts.get(spec.text_variant))
                            reset_peak_gpu_memory(device)
                            warmed = True
                        texts_given |= opts.use_text and any(p.text for p in seq.prompts)
                        srun, preds = run_streaming_sequence(tracker, seq, opts.protocol, run,
                                                             use_text=opts.use_text,
                                                             on_frame=bar.update, device=device)
                        _finish_sequence(run, seq, srun, preds, opts)
                    texts_unused_note(run, texts_given)
            finally:
                bar.close()
            peak = _peak(device)
            if peak is not None:
                run.peak_gpu_memory_bytes = max(run.peak_gpu_memory_bytes or 0, peak)
            runs.append(run)
    finally:
        if tracker is not None:
            tracker.release()
    return runs


__all__ = [
    "MODES", "TEXT_VARIANTS", "ModeSpec", "is_mode_label", "keep_ratio_text", "mode_specs", "Protocol",
    "ObjectPrompt",
    "SequenceInput", "plan_prompts", "DEFAULT_KEEP_RATIOS", "any_prompt_text",
    "frame_quality", "corrective_clicks", "mask_folder", "compose_labels", "SequenceRun", "ModeRun",
    "run_streaming_sequence", "run_official_sequence", "RunOptions", "run_modes",
]


class OfficialFactory:
    """``frames -> OfficialVideoSession`` over one official SAM 2 predictor built from ``cfg``
    (same config, weights rules and bf16 autocast as the streaming tracker); ``progress``: whether
    sam2's own progress bars show."""

    def __init__(self, cfg, progress: bool = True) -> None:
        self.session_cls = _official_session_class()
        from ..core.models import build_official_predictor

        self.cfg = cfg
        self.progress = progress
        self.predictor = build_official_predictor(cfg)

    def __call__(self, frames: List[np.ndarray]):
        if self.predictor is None:
            raise InputError("the official predictor was released")
        return self.session_cls(self.predictor, frames, autocast_bf16=bool(self.cfg.bf16),
                                progress=self.progress)

    def release(self) -> None:
        self.predictor = None
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:  # pragma: no cover
            pass


def official_factory(cfg, progress: bool = True) -> OfficialFactory:
    return OfficialFactory(cfg, progress)

"""Prompts made without ground truth, and the texts of the text-robustness runs.

* ``--prompt auto`` — the paper's fully automatic protocol (§3.3): on each sequence's first frame
  the automatic prompt (``core.auto_prompt.AutoPrompter``) picks up to ``n`` object-like regions,
  each gives a distance-transform click and (with a caption model) a phrase. No ground truth is
  used to prompt; scoring then maps the predicted objects onto the GT objects
  (:func:`match_to_ground_truth`, Hungarian on (mean J + mean F) / 2 over the annotated frames,
  as the unsupervised DAVIS evaluation matches); GT objects left unmatched score 0.
* ``--text-variants`` — the same clicks with different texts (paper Table 6): ``user`` (the
  ``--text-prompts`` file), ``auto`` (the phrase the automatic prompt distils from a caption of the
  object's region), ``vague`` (that phrase's head noun) and ``verbose`` (the whole caption).
"""

from __future__ import annotations

import logging
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..core.auto_prompt import AUTO_STAGES, head_noun, region_crop
from ..core.errors import InputError
from ..core.prompts import shorten_text
from ..core.stats import StageTimer
from .davis_io import VOID_LABEL
from .metrics import boundary_f, region_j
from .runner import ObjectPrompt

LOG = logging.getLogger(__name__)


def variant_texts(caption: Optional[str], phrase: Optional[str], max_length: int,
                  clip_model: Optional[str] = None) -> Dict[str, str]:
    """``auto``/``vague``/``verbose`` texts of an automatic description ({} without a phrase),
    each cut the same way to ``max_length`` characters and to what the text encoder of open_clip
    ``clip_model`` reads (``fit_clip_context``: a caption without spaces is cut between
    characters), so that no variant's run is refused after the others ran."""
    from ..core.clip_text import clip_tokenizer, fit_clip_context

    if not phrase:
        return {}
    tokenizer = clip_tokenizer(clip_model) if clip_model else None
    texts = {"auto": phrase, "vague": head_noun(phrase) or phrase, "verbose": caption or phrase}
    return {k: fit_clip_context(tokenizer, shorten_text(t, max_length)) for k, t in texts.items()}


def plan_auto_prompts(frame: np.ndarray, prompter, n_objects: int = 1,
                      use_phrase: bool = True) -> Tuple[List[ObjectPrompt], List[str]]:
    """Up to ``n_objects`` automatic prompts (ids 1..n) on ``frame`` and notes. Each next object
    avoids the regions already chosen; fewer are returned when the frame has no more."""
    prompts: List[ObjectPrompt] = []
    taken: List[np.ndarray] = []
    notes: List[str] = []
    for k in range(1, int(n_objects) + 1):
        try:
            plan = prompter.plan(frame, taken, obj_id=k)
        except InputError as exc:
            notes.append(f"object {k}: {exc}")
            break
        taken.append(plan.mask)
        notes.extend(plan.notes)
        prompts.append(ObjectPrompt(k, 0, plan.click, text=plan.phrase if use_phrase else None,
                                    texts=variant_texts(plan.caption, plan.phrase,
                                                        prompter.cfg.max_text_length,
                                                        prompter.cfg.text_encoder),
                                    auto={k2: v for k2, v in plan.to_dict().items() if k2 != "obj_id"}))
    return prompts, notes


def describe_objects(prompts: Sequence[ObjectPrompt], frames: Sequence[np.ndarray],
                     gt: Dict[int, np.ndarray], prompter) -> None:
    """Caption each prompted object's GT region on its prompt frame and fill its variant texts
    (``user`` is its --text-prompts text). The GT only says *which* object is described; the text
    itself comes from the caption model and the refiner."""
    for p in prompts:
        if p.text:
            p.texts["user"] = p.text
        region = gt[p.frame] == p.obj_id
        ys, xs = np.nonzero(region)
        box = (int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max()))
        timer = StageTimer(prompter.device)
        caption, phrase, _, notes = prompter.describe(region_crop(frames[p.frame], box), timer)
        p.texts.update(variant_texts(caption, phrase, prompter.cfg.max_text_length,
                                     prompter.cfg.text_encoder))
        p.auto = {"caption": caption, "phrase": phrase, "notes": notes,
                  "timings_ms": {s: float(timer.ms.get(f"auto_{s}", 0.0)) for s in AUTO_STAGES}}


def match_to_ground_truth(preds: Sequence[np.ndarray], gt: Dict[int, np.ndarray]
                          ) -> Tuple[List[np.ndarray], Dict[int, int]]:
    """Relabel predicted objects with the GT ids they match best: Hungarian assignment on
    (mean J + mean F) / 2 over the annotated frames, the score the unsupervised DAVIS evaluation
    maximises (J alone can pick another pairing). Unmatched predictions become background."""
    from scipy.optimize import linear_sum_assignment

    frames = sorted(gt)
    pred_ids = sorted({int(k) for t in frames for k in np.unique(preds[t]) if k != 0})
    gt_ids = sorted({int(k) for t in frames for k in np.unique(gt[t]) if k not in (0, VOID_LABEL)})
    if not pred_ids or not gt_ids:
        return [np.zeros_like(p) for p in preds], {}
    score = np.zeros((len(pred_ids), len(gt_ids)))
    for t in frames:
        void = gt[t] == VOID_LABEL
        vd = void if void.any() else None
        for i, p in enumerate(pred_ids):
            for j, g in enumerate(gt_ids):
                gm, pm = gt[t] == g, preds[t] == p
                score[i, j] += (region_j(gm, pm, vd) + boundary_f(gm, pm, vd)) / 2
    rows, cols = linear_sum_assignment(-score)
    mapping = {pred_ids[i]: gt_ids[j] for i, j in zip(rows, cols)}
    table = np.zeros(256, dtype=np.uint8)
    for p, g in mapping.items():
        table[p] = g
    return [table[np.asarray(p, dtype=np.uint8)] for p in preds], mapping


def stage_summary(prompts: Dict[str, List[ObjectPrompt]]) -> Dict[str, Optional[dict]]:
    """Mean and median ms of each automatic-prompt stage over every described object (stages that
    never ran are None)."""
    out: Dict[str, Optional[dict]] = {}
    for s in AUTO_STAGES:
        vals = [float(p.auto["timings_ms"][s]) for ps in prompts.values() for p in ps
                if p.auto and p.auto.get("timings_ms", {}).get(s)]
        out[s] = ({"mean": float(np.mean(vals)), "median": float(np.median(vals)), "count": len(vals)}
                  if vals else None)
    return out


__all__ = ["variant_texts", "plan_auto_prompts", "describe_objects", "match_to_ground_truth",
           "stage_summary"]

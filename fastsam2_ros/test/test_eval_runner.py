"""Runner logic (prompt protocol, refinement, click counting, reports) with scripted trackers.

The trackers here are stand-ins with the StreamingTracker / OfficialVideoSession call contract
whose masks follow a script (ground truth, nothing, everything, ...), so every expected number is
known exactly. The real model runs in test_eval_cli.py.
"""

import argparse
import dataclasses
import hashlib
import json

import numpy as np
import pytest

from fastsam2_ros.core.errors import InputError
from fastsam2_ros.core.stats import STAGES, FrameResult, FrameStats
from fastsam2_ros.eval import cli
from fastsam2_ros.eval.davis_io import DatasetError, DavisDataset, read_label_png, write_label_png
from fastsam2_ros.eval.report import RUN_KEYS, markdown_table, plot, run_report
from fastsam2_ros.eval.runner import (ModeSpec, Protocol, RunOptions, SequenceInput,
                                      compose_labels, corrective_clicks, mode_specs, plan_prompts,
                                      run_modes)
from fastsam2_ros.eval.synthetic import generate_dataset


def key(img):
    return hashlib.sha1(np.ascontiguousarray(img).tobytes()).hexdigest()


class ScriptedTracker:
    """StreamingTracker stand-in. policy: oracle | blind | everything | fix_on_click.
    ``text_mode``: what its FrameStats say once an object has a text (``none`` ignores texts)."""

    def __init__(self, gt_by_frame, policy="oracle", text_mode="clip_ridge"):
        self.gt_by_frame = gt_by_frame  # frame hash -> labels
        self.policy = policy
        self.text_mode = text_mode
        self.calls = []
        self.keep_ratios = []
        self.released = False
        self.clip_lengths = []
        self.reset()

    def reset(self, num_frames_hint=None):
        self.clip_lengths.append(num_frames_hint)
        self.t = -1
        self.objects = []
        self.texted = set()  # objects whose text reached the router
        self.frame = None
        self.clicked = set()

    def set_keep_ratio(self, k):
        self.keep_ratios.append(k)

    def release(self):
        self.released = True

    def _next(self, image):
        self.t += 1
        self.frame = image
        self.clicked = set()

    def _result(self):
        gt = self.gt_by_frame[key(self.frame)]
        masks = {}
        for k in self.objects:
            if self.policy == "oracle" or (self.policy == "fix_on_click" and k in self.clicked):
                masks[k] = gt == k
            elif self.policy == "everything":
                masks[k] = np.ones(gt.shape, bool)
            else:
                masks[k] = np.zeros(gt.shape, bool)
        st = FrameStats(frame_index=self.t, stage_ms={s: 1.0 for s in STAGES}, tokens_total=16,
                        tokens_kept={k: 8 for k in self.objects}, bank_bytes=100 * (self.t + 1),
                        object_ids=list(self.objects),
                        text_mode=self.text_mode if self.texted else "none")
        return FrameResult(self.t, masks, {k: 1.0 for k in masks}, st)

    def track(self, image):
        self._next(image)
        self.calls.append(("track", self.t))
        return self._result()

    def add_prompt(self, obj_id, points=None, labels=None, box=None, mask=None, text=None, image=None):
        if image is not None:
            self._next(image)
        assert self.frame is not None, "add_prompt before any frame"
        self.calls.append(("prompt", self.t, obj_id, [list(p) for p in points], list(labels),
                           image is not None, text))
        if text is not None and self.text_mode != "none":
            self.texted.add(obj_id)
        if obj_id not in self.objects:
            self.objects.append(obj_id)
        else:
            self.clicked.add(obj_id)
        return self._result()


def synth_inputs(tmp_path, frames=5, objects=2, seed=3):
    root = generate_dataset(tmp_path / "synth", sequences=1, frames=frames, size=(64, 48),
                            objects=objects, seed=seed)
    ds = DavisDataset(root)
    sd = ds.sequence(ds.sequence_names[0])
    fr = sd.read_frames()
    labs = sd.read_labels(fr[0].shape)
    gt = {i: labs[n] for i, n in enumerate(sd.frame_names)}
    return root, SequenceInput(sd.name, fr, sd.frame_names, gt, plan_prompts(gt))


def test_hidden_apple_double_files_are_neither_frames_nor_annotations(tmp_path):
    """``run`` refused such a copy: "annotation ._00000.png has no frame ._00000.jpg"; the masks
    of a rerun are removed without the hidden files, which are not masks."""
    from fastsam2_ros.eval.runner import remove_earlier_masks
    from test_eval_scoring import apple_double

    root = generate_dataset(tmp_path / "synth", sequences=1, frames=3, size=(32, 32), objects=1)
    for sub in ("JPEGImages", "Annotations"):
        apple_double(root / sub / "480p")
        apple_double(root / sub / "480p" / "synth000")
    ds = DavisDataset(root)
    sd = ds.sequence("synth000")
    assert ds.available_sequences() == ["synth000"]
    assert sd.frame_names == list(sd.label_files) == ["00000", "00001", "00002"]
    masks = root / "Annotations" / "480p" / "synth000"
    remove_earlier_masks(masks)
    assert sorted(p.name for p in masks.iterdir()) == ["._00000.png", "._00001.png", "._00002.png"]


def run_scripted(seq, policy, specs=None, protocol=None, save=None, text_mode="clip_ridge",
                 seqs=None, **options):
    """``seqs``: several sequences (default: ``seq`` alone); ``options``: of RunOptions."""
    seqs = seqs or [seq]
    gt_by_frame = {key(f): s.gt[i] for s in seqs for i, f in enumerate(s.frames)}
    trackers = []

    def make(kr):
        trackers.append(ScriptedTracker(gt_by_frame, policy, text_mode))
        return trackers[-1]

    options = {"warmup_frames": 0, **options}
    runs = run_modes(specs or [ModeSpec("dense", 1.0)], lambda: seqs,
                     sum(len(s.frames) for s in seqs), make_tracker=make,
                     opts=RunOptions(protocol=protocol or Protocol(), save_masks=save,
                                     progress=False, **options))
    return runs, trackers


# ------------------------------------------------------------------------------------ prompts
def test_plan_prompts_click_at_distance_transform_peak_on_first_nonempty_frame():
    a = np.zeros((20, 30), np.uint8)
    a[2:9, 3:10] = 1  # 7 x 7 block: the only deepest pixel is its centre (x 6, y 5)
    a[:, 29] = 255  # void is not an object
    b = np.zeros((20, 30), np.uint8)
    b[10:15, 20:25] = 2  # object 2 appears on frame 1 only
    prompts = plan_prompts({0: a, 1: np.maximum(a, b)}, texts={2: "a box"})
    assert [(p.obj_id, p.frame, p.click, p.text) for p in prompts] == [
        (1, 0, (6, 5), None), (2, 1, (22, 12), "a box")]
    with pytest.raises(InputError, match=r"object id\(s\) \[7\]"):
        plan_prompts({0: a}, texts={7: "nothing"})
    with pytest.raises(DatasetError, match="no object"):
        plan_prompts({0: np.zeros((4, 4), np.uint8)})


def test_a_binary_0_255_mask_is_named_as_all_void_not_as_background(tmp_path, capsys):
    """DAVIS 2016's annotations (and most single-object masks) are 0/255: every object pixel is
    void. The error said "all background" of a mask that is visibly not background."""
    binary = np.zeros((48, 64), np.uint8)
    binary[10:30, 20:40] = 255
    with pytest.raises(DatasetError, match=r"^sequence 's': the ground truth contains no object \(all "
                       r"its non-zero pixels are 255, the void label; objects are ids 1\.\.254: "
                       r"write a binary mask's object as 1\)$"):
        plan_prompts({0: binary, 1: binary}, where="sequence 's'")
    with pytest.raises(DatasetError, match=r"no object \(all background\)$"):
        plan_prompts({0: np.zeros((4, 4), np.uint8)})
    root = generate_dataset(tmp_path / "d", sequences=1, frames=3, size=(64, 48), objects=1)
    write_label_png(tmp_path / "first.png", binary)
    rc = cli.main(["run", "--frames", str(root / "JPEGImages" / "480p" / "synth000"), "--first-mask",
                   str(tmp_path / "first.png"), "--random-weights", "--model", "tiny", "--image-size",
                   "64", "--device", "cpu", "--modes", "dense", "--out", str(tmp_path / "o"),
                   "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert "first.png: the ground truth contains no object (all its non-zero pixels are 255" in err[0]


def test_corrective_clicks_largest_regions_first_with_signs():
    gt = np.zeros((30, 30), np.uint8)
    gt[0:10, 0:10] = 1
    pred = np.zeros((30, 30), np.uint8)
    pred[0:10, 0:4] = 1  # object 1 misses a 10x6 strip (60 px): positive click
    pred[20:25, 20:30] = 1  # false positive 5x10 (50 px): negative click
    pred[28, 0] = 1  # 1-px false positive: third
    gt[29, 29] = 255  # void: never an error
    pred[29, 29] = 1
    clicks = corrective_clicks(gt, pred, [1], max_clicks=2)
    # distance-transform peaks (image border = background, ties -> first in row-major order):
    # miss rows 0-9 x cols 4-9: depth 3 first reached at (x 6, y 2); false positive rows 20-24 x
    # cols 20-29: depth 3 first reached at (x 22, y 22).
    assert clicks == [(1, (6, 2), 1), (1, (22, 22), 0)]
    assert len(corrective_clicks(gt, pred, [1], max_clicks=3)) == 3
    assert corrective_clicks(gt, gt.copy(), [1], max_clicks=3) == []


def test_compose_labels_higher_id_wins_and_rejects_bad_ids():
    a = np.zeros((4, 4), bool)
    a[:2] = True
    b = np.zeros((4, 4), bool)
    b[1:3] = True
    lab = compose_labels({2: b, 1: a}, (4, 4))
    assert lab[:, 0].tolist() == [1, 2, 2, 0]
    with pytest.raises(InputError, match="255"):
        compose_labels({255: a}, (4, 4))


def test_mode_specs():
    specs = mode_specs(["official", "dense", "pruned"], [0.3, 0.5])
    assert [s.label for s in specs] == ["official", "dense", "pruned_0.30", "pruned_0.50"]
    assert [s.label for s in mode_specs(["pruned"])] == ["pruned_0.30", "pruned_0.50"]  # default
    with pytest.raises(InputError, match="unknown mode"):
        mode_specs(["fast"], [0.3])
    with pytest.raises(InputError, match="dense"):
        mode_specs(["pruned"], [1.0])
    with pytest.raises(InputError, match=r"\(0, 1\]"):
        mode_specs(["pruned"], [0.0])


def test_keep_ratios_that_round_alike_keep_their_own_run_and_label():
    # labelled with two decimals, 0.301 and 0.3 were both pruned_0.30 and 0.301 was dropped
    specs = mode_specs(["pruned"], [0.3, 0.301, 0.25, 0.254])
    assert [(s.label, s.keep_ratio) for s in specs] == [
        ("pruned_0.30", 0.3), ("pruned_0.301", 0.301), ("pruned_0.25", 0.25), ("pruned_0.254", 0.254)]
    from fastsam2_ros.eval.report import method_name

    assert method_name({"mode": "pruned", "keep_ratio": 0.301}) == "Streaming SAM 2, pruned (keep 0.301)"
    with pytest.raises(InputError, match=r"keep ratio 0.3 is given twice"):
        mode_specs(["pruned"], [0.3, 0.5, 0.30])


def test_keep_ratios_default_only_where_none_are_given():
    """(fastsam2-eval refuses --keep-ratios without the pruned mode; fastsam2-bench gives its own.)"""
    assert [s.label for s in mode_specs(["official", "dense"])] == ["official", "dense"]
    assert [s.label for s in mode_specs(["Pruned"])] == ["pruned_0.30", "pruned_0.50"]
    assert [s.label for s in mode_specs(["dense", "pruned"], [0.1])] == ["dense", "pruned_0.10"]


# ---------------------------------------------------------------------------- streaming runs
def test_a_rerun_into_the_same_out_removes_the_masks_of_the_earlier_run(tmp_path):
    _, seq = synth_inputs(tmp_path)
    out = tmp_path / "out"
    run_scripted(seq, "oracle", save=out)
    folder = out / "dense" / seq.name
    (folder / "notes.txt").write_text("mine")  # not a mask: left alone
    shorter = dataclasses.replace(seq, frames=seq.frames[:3], frame_names=seq.frame_names[:3],
                                  gt={i: seq.gt[i] for i in range(3)})
    run_scripted(shorter, "oracle", save=out)
    assert sorted(p.name for p in folder.iterdir()) == ["00000.png", "00001.png", "00002.png",
                                                        "notes.txt"]


def test_oracle_tracker_scores_one_and_its_masks_are_written(tmp_path):
    _, seq = synth_inputs(tmp_path)
    specs = [ModeSpec("dense", 1.0), ModeSpec("pruned", 0.5)]
    runs, trackers = run_scripted(seq, "oracle", specs, save=tmp_path / "out")
    assert len(trackers) == 1 and trackers[0].keep_ratios == [1.0, 0.5] and trackers[0].released
    for run in runs:
        o = run.score.overall()
        assert o["J&F"] == 1.0 and o["objects"] == 2
        assert run.frames == 5 and run.sequences[0].clicks == 2 and run.sequences[0].rounds == 0
        # frame 0: two prompt calls (1 ms each per stage), the other frames one track call
        assert run.stage_ms["total"] == [2.0, 1.0, 1.0, 1.0, 1.0]
        assert run.tokens_kept == [8.0] * 4  # tracked frames only, not the prompt frame 0
        assert run.bank_bytes == [100, 200, 300, 400, 500]
        for i, name in enumerate(seq.frame_names):
            png = tmp_path / "out" / run.spec.label / seq.name / f"{name}.png"
            assert np.array_equal(read_label_png(png), seq.gt[i])
    calls = trackers[0].calls[:3]
    assert calls[0][:2] == ("prompt", 0) and calls[0][5] is True  # first object brings the image
    assert calls[1][:3] == ("prompt", 0, 2) and calls[1][5] is False
    assert calls[2] == ("track", 1)
    # each sequence run tells the tracker its length (pointer encodings as the official mode)
    assert trackers[0].clip_lengths[1:] == [5, 5]


def test_sequence_with_two_annotated_frames_is_skipped_with_a_note(tmp_path):
    # two annotated frames leave nothing once the first and last are dropped: its NaN must not
    # make the overall J&F null (run --max-frames 2 did that to every run)
    _, seq = synth_inputs(tmp_path, frames=4)
    short = SequenceInput("short", seq.frames[:2], seq.frame_names[:2],
                          {0: seq.gt[0], 1: seq.gt[1]}, seq.prompts)
    assert seq.scorable() and not short.scorable() and short.scorable(drop_first_last=False)
    gt_by = {key(f): seq.gt[i] for i, f in enumerate(seq.frames)}
    runs = run_modes([ModeSpec("dense", 1.0)], lambda: [seq, short], 6,
                     make_tracker=lambda kr: ScriptedTracker(gt_by, "oracle"),
                     opts=RunOptions(warmup_frames=0, progress=False))
    assert runs[0].score.overall()["J&F"] == 1.0 and runs[0].score.overall()["sequences"] == 1
    assert runs[0].sequences[1].score is None and runs[0].frames == 6
    assert any(n.startswith("short: not scored, 2 annotated frame(s)") for n in runs[0].notes)


def test_refinement_rounds_are_capped_and_every_click_counted(tmp_path):
    _, seq = synth_inputs(tmp_path, frames=5)
    proto = Protocol(refine=True, max_rounds=2, clicks_per_round=3, refine_threshold=0.8)
    runs, trackers = run_scripted(seq, "fix_on_click", protocol=proto)
    s = runs[0].sequences[0]
    # blind until clicked: frames 0 and 1 get one round each (one positive click per object,
    # both objects fixed); later frames are blind but the 2 rounds are used up.
    assert s.rounds == 2 and s.refined_frames == [0, 1]
    assert s.clicks_initial == 2 and s.clicks_refine == 4 and s.clicks == 6
    refine_calls = [c for c in trackers[0].calls if c[0] == "prompt"][2:]  # after the 2 initial
    assert [(c[1], c[2]) for c in refine_calls] == [(0, 1), (0, 2), (1, 1), (1, 2)]
    for c in refine_calls:  # one positive click per object, on the object
        assert c[4] == [1] and c[5] is False
        x, y = c[3][0]
        assert seq.gt[c[1]][y, x] == c[2]
    # scored frames 1..3: frame 1 perfect, frames 2 and 3 empty -> J = F = 1/3 per object
    o = runs[0].score.overall()
    assert o["J"]["mean"] == pytest.approx(1 / 3) and o["F"]["mean"] == pytest.approx(1 / 3)
    assert o["J"]["recall"] == pytest.approx(1 / 3)


def test_false_positives_get_negative_clicks_outside_the_object(tmp_path):
    _, seq = synth_inputs(tmp_path, frames=4)
    proto = Protocol(refine=True, max_rounds=10, clicks_per_round=3)
    runs, trackers = run_scripted(seq, "everything", protocol=proto)
    s = runs[0].sequences[0]
    assert s.rounds == 4 and 0 < s.clicks_refine <= 12
    refine = [c for c in trackers[0].calls if c[0] == "prompt"][2:]
    labels = [lab for c in refine for lab in c[4]]
    assert len(labels) == s.clicks_refine and set(labels) <= {0, 1}
    for c in refine:
        for (x, y), lab in zip(c[3], c[4]):
            inside = seq.gt[c[1]][y, x] == c[2]
            assert inside == (lab == 1)


def test_no_refinement_without_protocol_or_above_threshold(tmp_path):
    _, seq = synth_inputs(tmp_path, frames=4)
    runs, _ = run_scripted(seq, "blind")  # refine off
    assert runs[0].sequences[0].clicks == 2 and runs[0].score.overall()["J&F"] == 0.0
    runs, _ = run_scripted(seq, "oracle", protocol=Protocol(refine=True))
    assert runs[0].sequences[0].rounds == 0


def with_texts(seq, texts=None, variants=None):
    """``seq`` with these texts (obj id -> text) and text variants (obj id -> {variant: text})."""
    texts, variants = texts or {}, variants or {}
    prompts = [dataclasses.replace(p, text=texts.get(p.obj_id), texts=variants.get(p.obj_id, {}))
               for p in seq.prompts]
    return dataclasses.replace(seq, prompts=prompts)


def test_warm_up_prompts_with_a_text_when_the_timed_runs_have_one(tmp_path):
    """The tracker builds its CLIP text encoder on the first text prompt: the warm-up must give
    one, or the build (seconds) is timed. It ran on the sequence before its text variant was
    applied, and without text when only a later sequence had one."""
    _, seq = synth_inputs(tmp_path, frames=4)
    variants = with_texts(seq, variants={1: {"auto": "red ring"}, 2: {"auto": "blue star"}})
    _, trackers = run_scripted(variants, "oracle", [ModeSpec("dense", 1.0, "auto")],
                               warmup_frames=1)
    assert trackers[0].calls[0][0] == "prompt" and trackers[0].calls[0][6] == "red ring"
    from fastsam2_ros.eval.runner import any_prompt_text

    later = dataclasses.replace(with_texts(seq, texts={2: "blue star"}), name="later")
    _, trackers = run_scripted(seq, "oracle", seqs=[seq, later], warmup_frames=1,
                               warmup_texts={None: any_prompt_text({"a": seq.prompts,
                                                                    "b": later.prompts})})
    assert trackers[0].calls[0][0] == "prompt" and trackers[0].calls[0][6] == "blue star"


def test_any_prompt_text_looks_at_every_sequence_for_the_runs_text_variant(tmp_path):
    from fastsam2_ros.eval.runner import any_prompt_text

    _, seq = synth_inputs(tmp_path, frames=4)
    assert any_prompt_text({"a": seq.prompts}) is None
    assert any_prompt_text({"a": seq.prompts, "b": with_texts(seq, {2: "x"}).prompts}) == "x"
    varied = {"a": with_texts(seq, variants={1: {"vague": "ring"}}).prompts}
    assert any_prompt_text(varied, "vague") == "ring"
    # a caption's phrase the user's runs do not give (--prompt auto without CLIP weights): the
    # warm-up prompted with it and failed for want of CLIP weights
    assert any_prompt_text(varied) is None and any_prompt_text(varied, "auto") is None


def test_text_used_only_when_the_tracker_used_a_text(tmp_path):
    """``text_mode: none``: the tracker ignores every text; the report said text_used true
    without a note, and +user/+auto rows looked like text-guided runs."""
    _, seq = synth_inputs(tmp_path, frames=4)
    texted = with_texts(seq, {1: "red ring"})
    runs, _ = run_scripted(texted, "oracle", text_mode="none")
    assert runs[0].text_used is False
    assert "the tracker's text_mode is none: text prompts are not used" in runs[0].notes
    runs, _ = run_scripted(texted, "oracle")
    assert runs[0].text_used is True and not any("text_mode" in n for n in runs[0].notes)
    runs, _ = run_scripted(seq, "oracle", text_mode="none")  # no texts: nothing to say
    assert runs[0].text_used is False and not any("text_mode" in n for n in runs[0].notes)


def test_late_object_is_clicked_on_its_first_frame_with_its_text(tmp_path):
    _, seq = synth_inputs(tmp_path, frames=5)
    gt = {i: np.where(g == 2, 0, g).astype(np.uint8) if i < 2 else g for i, g in seq.gt.items()}
    prompts = plan_prompts(gt, texts={1: "first thing", 2: "late thing"})
    assert [(p.obj_id, p.frame) for p in prompts] == [(1, 0), (2, 2)]
    late = SequenceInput(seq.name, seq.frames, seq.frame_names, gt, prompts)
    runs, trackers = run_scripted(late, "oracle")
    prompt_calls = [c for c in trackers[0].calls if c[0] == "prompt"]
    assert [(c[1], c[2], c[5], c[6]) for c in prompt_calls] == [
        (0, 1, True, "first thing"), (2, 2, True, "late thing")]
    assert ("track", 1) in trackers[0].calls and ("track", 2) not in trackers[0].calls
    assert runs[0].text_used and runs[0].score.overall()["J&F"] == 1.0
    assert runs[0].score.overall()["objects"] == 2  # the late object is scored too ...
    assert any("appear after the first annotated frame" in n for n in runs[0].notes)  # ... said so


# ------------------------------------------------------------------------------ official mode
class ScriptedSession:
    """OfficialVideoSession stand-in: an object's mask on frame t is its GT once a correction (a
    click after the object's first) was added on frame t, else empty. ``log`` records prompts,
    propagation starts and, per yielded frame, the objects the session had."""

    log = []

    def __init__(self, frames, gt):
        self.frames, self.gt = frames, gt
        self.objects = set()
        self.fixed = set()

    def _masks(self, t):
        g = self.gt[t]
        return {k: (g == k) if (t, k) in self.fixed else np.zeros(g.shape, bool)
                for k in sorted(self.objects)}

    def add_prompt(self, frame_idx, obj_id, points=None, labels=None, box=None, mask=None):
        ScriptedSession.log.append(("prompt", frame_idx, obj_id, len(points)))
        if obj_id in self.objects:
            self.fixed.add((frame_idx, obj_id))
        self.objects.add(obj_id)
        return self._masks(frame_idx)  # sam2: every object's mask on that frame

    def propagate(self, start_idx=0):
        if not self.objects:  # sam2's own check
            raise RuntimeError("No input points or masks are provided for any object")
        ScriptedSession.log.append(("propagate", start_idx))
        for t in range(start_idx, len(self.frames)):
            ScriptedSession.log.append(("yield", t, sorted(self.objects)))
            yield t, self._masks(t)


def test_official_loop_refines_like_the_streaming_modes(tmp_path):
    _, seq = synth_inputs(tmp_path, frames=5)
    ScriptedSession.log = []
    proto = Protocol(refine=True, max_rounds=3, clicks_per_round=3)
    runs = run_modes([ModeSpec("official")], lambda: [seq], 5,
                     make_official=lambda: (lambda frames: ScriptedSession(frames, seq.gt)),
                     opts=RunOptions(protocol=proto, warmup_frames=0, progress=False))
    s = runs[0].sequences[0]
    # frame 0's prompt output and frames 1, 2 come out empty and get one round each (one positive
    # click per object); frame 0 is corrected before anything is propagated (as the streaming
    # modes do), 1 and 2 stop propagation, which resumes from them; frame 3 finds the rounds
    # used up. Propagation resumes on the frame after the one prompted: none is run twice.
    assert s.rounds == 3 and s.refined_frames == [0, 1, 2] and s.frames == 5
    assert [e for e in ScriptedSession.log if e[0] == "propagate"] == [
        ("propagate", 1), ("propagate", 2), ("propagate", 3)]
    assert ScriptedSession.log.index(("propagate", 1)) > max(
        i for i, e in enumerate(ScriptedSession.log) if e[0] == "prompt" and e[1] == 0)
    assert s.clicks_initial == 2 and s.clicks_refine == 6 and s.clicks == 8
    # sam2 replaces an object's clicks on a frame: the refinement on frame 0 resends the first click
    frame0 = [e for e in ScriptedSession.log if e[0] == "prompt" and e[1] == 0]
    assert [e[3] for e in frame0] == [1, 1, 2, 2]
    o = runs[0].score.overall()  # scored frames 1, 2 (fixed) and 3 (empty): 2/3
    assert o["J"]["mean"] == pytest.approx(2 / 3) and o["F"]["mean"] == pytest.approx(2 / 3)
    assert runs[0].stage_ms["total"] == []  # no FrameStats from the official predictor


def test_official_loop_clicks_a_late_object_when_propagation_reaches_it(tmp_path):
    # object 2 first appears on frame 2: sam2 must not get its click before then (it would
    # predict frames 0-1 from that future conditioning frame)
    _, seq = synth_inputs(tmp_path, frames=5)
    gt = {i: np.where(g == 2, 0, g).astype(np.uint8) if i < 2 else g for i, g in seq.gt.items()}
    late = SequenceInput(seq.name, seq.frames, seq.frame_names, gt, plan_prompts(gt))
    ScriptedSession.log = []
    runs = run_modes([ModeSpec("official")], lambda: [late], 5,
                     make_official=lambda: (lambda frames: ScriptedSession(frames, gt)),
                     opts=RunOptions(warmup_frames=0, progress=False))
    assert ScriptedSession.log == [
        ("prompt", 0, 1, 1), ("propagate", 1), ("yield", 1, [1]), ("yield", 2, [1]),
        ("prompt", 2, 2, 1), ("propagate", 3), ("yield", 3, [1, 2]), ("yield", 4, [1, 2])]
    assert runs[0].sequences[0].clicks_initial == 2 and runs[0].frames == 5


def test_official_mode_without_prompts_predicts_background_like_dense(tmp_path):
    # --prompt auto may accept no proposal: sam2 refuses to propagate without any prompt
    _, seq = synth_inputs(tmp_path, frames=4)
    seq.prompts = []
    runs = run_modes([ModeSpec("official"), ModeSpec("dense", 1.0)], lambda: [seq], 4,
                     make_tracker=lambda kr: ScriptedTracker(
                         {key(f): seq.gt[i] for i, f in enumerate(seq.frames)}, "oracle"),
                     make_official=lambda: (lambda frames: ScriptedSession(frames, seq.gt)),
                     opts=RunOptions(warmup_frames=0, save_masks=tmp_path / "out", progress=False))
    for run in runs:
        assert run.frames == 4 and run.score.overall()["J&F"] == 0.0
        for name in seq.frame_names:
            assert not read_label_png(tmp_path / "out" / run.spec.label / seq.name / f"{name}.png").any()


# ---------------------------------------------------------------------------------- reports
def test_report_schema_markdown_and_plot(tmp_path):
    _, seq = synth_inputs(tmp_path, frames=4)
    runs, _ = run_scripted(seq, "oracle", [ModeSpec("dense", 1.0), ModeSpec("pruned", 0.3)])
    rep = run_report(runs, input_info={"kind": "davis", "path": "x", "sequences": [seq.name], "frames": 4},
                     model_info={"device": "cpu", "image_size": 64}, tracker_config={},
                     protocol=Protocol().to_dict(),
                     prompts={seq.name: {str(p.obj_id): p.to_dict() for p in seq.prompts}},
                     accuracy_valid=False)
    json.dumps(rep, allow_nan=False)
    assert rep["schema_version"] == 2 and [tuple(r) for r in rep["runs"]] == [RUN_KEYS] * 2
    r = rep["runs"][1]
    assert r["label"] == "pruned_0.30" and r["J&F"] == 1.0 and r["clicks"]["total"] == 2
    assert r["latency_ms"]["total"]["mean"] == pytest.approx(5 / 4)  # 2 + 1 + 1 + 1 ms
    assert r["tokens_kept_mean"] == 8.0 and r["memory_bank_bytes"]["max"] == 400
    assert r["peak_gpu_memory_bytes"] is None  # CPU
    assert r["per_sequence"][seq.name]["clicks"] == 2
    md = markdown_table(rep)
    assert "| Method | J | F | J&F | FPS | GPU mem | clicks |" in md
    assert "pruned (keep 0.30) | 100.0 | 100.0 | 100.0 |" in md and "NOT meaningful" in md
    png = plot(rep, tmp_path / "p.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_draws_one_line_per_text_variant(tmp_path, monkeypatch):
    """With --text-variants, every streaming run of every variant was one line "streaming
    (ours)" sorted by keep ratio only, zig-zagging between the variants at each keep ratio."""
    import matplotlib.axes

    drawn = []
    real_plot = matplotlib.axes.Axes.plot

    def spy(ax, xs, ys, *args, **kwargs):
        drawn.append((ax, kwargs.get("label"), list(xs), list(ys)))  # titled after the lines
        return real_plot(ax, xs, ys, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "plot", spy)

    def entry(mode, keep_ratio, variant, jf, fps):
        return {"label": mode, "mode": mode, "keep_ratio": keep_ratio, "text_variant": variant,
                "J&F": jf, "fps": fps}

    runs = [entry("official", None, None, 0.8, 10.0)]
    for variant, jf in (("user", 0.8), ("vague", 0.4)):  # the pruned run first: sorted per line
        runs += [entry("pruned", 0.3, variant, jf - 0.1, 30.0), entry("dense", 1.0, variant, jf, 20.0)]
    assert plot({"runs": runs, "accuracy_valid": True}, tmp_path / "p.png").is_file()
    assert [(d[0].get_title(), *d[1:3]) for d in drawn] == [
        ("J&F", "streaming (ours), text: user", [0.3, 1.0]),
        ("J&F", "streaming (ours), text: vague", [0.3, 1.0]),
        ("FPS", "streaming (ours), text: user", [0.3, 1.0]),
        ("FPS", "streaming (ours), text: vague", [0.3, 1.0])]
    assert [d[3] for d in drawn] == [pytest.approx(ys) for ys in ([70, 80], [30, 40], [30, 20], [30, 20])]
    drawn.clear()
    plot({"runs": [entry("dense", 1.0, None, 0.5, 20.0)], "accuracy_valid": True}, tmp_path / "q.png")
    assert [d[1] for d in drawn] == ["streaming (ours)", "streaming (ours)"]  # no variant: as before


# --------------------------------------------------------------------- rosbag / video inputs
def test_frames_input_from_a_rosbag_with_first_mask(tmp_path):
    from test_frame_sources import colour_frame, write_bag

    bag = write_bag(tmp_path / "bag", "mcap", n=4)
    first = np.zeros((24, 32), np.uint8)
    first[5:15, 5:15] = 1
    write_label_png(tmp_path / "first.png", first)
    args = argparse.Namespace(dataset=None, frames=str(bag), first_mask=str(tmp_path / "first.png"),
                              topic=None, max_frames=3, sequences=None, imageset=None,
                              resolution=None)
    load, prompts, total, info = cli._sequence_sources(args, {})
    seqs = list(load())
    assert total == 3 and info["kind"] == "rosbag" and info["topic"] == "/cam/image_raw"
    s = seqs[0]
    assert len(s.frames) == 3 and np.array_equal(s.frames[1], colour_frame(1))
    assert [(p.obj_id, p.frame, p.click) for p in s.prompts] == [(1, 0, (9, 9))]
    assert not s.scorable()
    gt_by = {key(f): (first if i == 0 else np.zeros_like(first)) for i, f in enumerate(s.frames)}
    runs = run_modes([ModeSpec("dense", 1.0)], load, total,
                     make_tracker=lambda kr: ScriptedTracker(gt_by, "oracle"),
                     opts=RunOptions(warmup_frames=0, progress=False))
    assert runs[0].frames == 3 and runs[0].score is None and runs[0].sequences[0].clicks == 1
    bad = np.zeros((20, 32), np.uint8)
    bad[2:5, 2:5] = 1
    write_label_png(tmp_path / "bad.png", bad)
    args.first_mask = str(tmp_path / "bad.png")
    load, *_ = cli._sequence_sources(args, {})
    with pytest.raises(DatasetError, match=r"bad\.png is 32x20 but the frames of .*bag are 32x24"):
        list(load())

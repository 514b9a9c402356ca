"""At keep ratio 1.0 the streaming tracker reproduces sam2's official SAM2VideoPredictor.

The tracker always runs its own path (static padded memory bank, all objects batched, gathered-RoPE
memory attention with a key mask while the bank has empty slots); with every token kept that path
must give the official logits, and the same binary masks, on every frame."""

import numpy as np
import pytest
import torch
from PIL import Image

from fastsam2_ros.core import TrackerConfig, pruned_predictor
from fastsam2_ros.core.models import build_official_predictor, build_predictor
from fastsam2_ros.core.official import OfficialVideoSession
from fastsam2_ros.core.tracker import StreamingTracker

NUM_FRAMES = 12
REFINE_AT = 6
#: The logits agree within this; a pixel whose official logit is closer to 0 may binarise either
#: way on another CPU (another kernel's float32 rounding), so its mask value is not compared.
LOGIT_TOL = 1e-4


def assert_same_mask(mask: np.ndarray, official_logits: np.ndarray, what: str) -> None:
    """The binary mask equals the official one wherever the official logit is clearly signed
    (a random-weight model puts a few logits within 1e-8 of 0; one flipped with MKL_CBWR set)."""
    clear = np.abs(official_logits) > LOGIT_TOL
    assert clear.mean() > 0.99, f"{what}: too few clearly signed logits to compare"
    assert np.array_equal(mask[clear], official_logits[clear] > 0), what


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory, video):
    """The test video as JPEGs (what the official predictor loads) and the decoded frames."""
    frames, _, _ = video
    d = tmp_path_factory.mktemp("jpg")
    for i, f in enumerate(frames[:NUM_FRAMES]):
        Image.fromarray(f).save(d / f"{i:05d}.jpg", quality=95)
    decoded = [np.asarray(Image.open(d / f"{i:05d}.jpg").convert("RGB")) for i in range(NUM_FRAMES)]
    return str(d), decoded


@pytest.fixture(scope="module")
def models():
    cfg = TrackerConfig(model_cfg="tiny", allow_random_weights=True, image_size=256,
                        keep_ratio=1.0, device="cpu")
    ours = build_predictor(cfg)
    official = build_official_predictor(cfg, state_dict=ours.state_dict())
    return cfg, ours, official


def run_official(official, clip_path, first_prompts, refines):
    """Prompts on frame 0, track frames 0..REFINE_AT, refine on REFINE_AT (clicks of one object
    accumulate), track to the end."""
    state = official.init_state(clip_path)
    logits = {}
    with torch.inference_mode():
        for obj_id, kwargs in first_prompts.items():
            official.add_new_points_or_box(state, 0, obj_id, **kwargs)
        for t, _, masks in official.propagate_in_video(state, 0, max_frame_num_to_track=REFINE_AT):
            logits[t] = masks[:, 0].numpy()
        for i, (obj_id, kwargs) in enumerate(refines):
            again = any(o == obj_id for o, _ in refines[:i])
            official.add_new_points_or_box(state, REFINE_AT, obj_id, clear_old_points=not again,
                                           **kwargs)
        for t, _, masks in official.propagate_in_video(state, REFINE_AT):
            logits[t] = masks[:, 0].numpy()
    return logits


def run_streaming(cfg, model, frames, first_prompts, refines, **tracker_kwargs):
    tracker = StreamingTracker(cfg, model=model, num_frames_hint=len(frames), return_logits=True,
                               **tracker_kwargs)
    out = {}
    for i, (obj_id, kwargs) in enumerate(first_prompts.items()):
        res = tracker.add_prompt(obj_id, image=frames[0] if i == 0 else None, **kwargs)
    out[0] = res
    for t in range(1, len(frames)):
        res = tracker.track(frames[t])
        if t == REFINE_AT:
            for obj_id, kwargs in refines:
                res = tracker.add_prompt(obj_id, **kwargs)
        out[t] = res
    return out, tracker


SCENARIOS = {
    "one_object_box_then_click": (
        {1: dict(box=[20, 40, 62, 82])},
        [(1, dict(points=[[70, 60]], labels=[1]))]),
    "two_objects_clicks_then_negative": (
        {1: dict(points=[[40, 60]], labels=[1]), 2: dict(points=[[120, 35]], labels=[1])},
        [(1, dict(points=[[60, 75]], labels=[0]))]),
    # the second click must not read the memory the first one stored on this frame
    "two_clicks_on_a_tracked_frame": (
        {1: dict(points=[[40, 60]], labels=[1]), 2: dict(points=[[120, 35]], labels=[1])},
        [(1, dict(points=[[60, 60]], labels=[1])), (2, dict(points=[[110, 40]], labels=[1])),
         (1, dict(points=[[100, 40]], labels=[0]))]),
}


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_dense_tracker_matches_official_predictor(name, models, clip_dir):
    cfg, ours, official = models
    clip_path, frames = clip_dir
    first, refines = SCENARIOS[name]
    ref = run_official(official, clip_path, first, refines)
    got, tracker = run_streaming(cfg, ours, frames, first, refines)
    assert sorted(ref) == list(range(NUM_FRAMES))
    for t in range(NUM_FRAMES):
        ids = sorted(first)
        mine = np.stack([got[t].logits[i] for i in ids])
        assert mine.shape == ref[t].shape == (len(ids),) + frames[0].shape[:2]
        np.testing.assert_allclose(mine, ref[t], atol=LOGIT_TOL, rtol=0, err_msg=f"frame {t}")
        for k, i in enumerate(ids):
            assert_same_mask(got[t].masks[i], ref[t][k], f"frame {t} object {i}")
    # the refined object now has two conditioning frames, as in the official state
    row = tracker.objects[refines[0][0]].row
    assert sorted(f for f in tracker.bank.cond_frames[row] if f >= 0) == [0, REFINE_AT]


#: Prompts by frame, as a stream gets them: {frame: [(object id, prompt), ...]}. The official
#: predictor propagates from each prompted frame to the next, which is what a stream sees.
STREAMED = {
    # an object started on frame 5 while object 1 is tracked, then a click refining object 1
    "object_added_mid_stream_then_another_refined": {
        0: [(1, dict(points=[[40, 60]], labels=[1]))],
        5: [(2, dict(points=[[116, 37]], labels=[1]))],
        8: [(1, dict(points=[[70, 62]], labels=[1]))]},
    # an object started from negative clicks only, refined with a box and a click
    "negative_only_start_then_box_and_click": {
        0: [(1, dict(points=[[40, 60]], labels=[1]))],
        5: [(2, dict(points=[[30, 30], [100, 100]], labels=[0, 0]))],
        7: [(2, dict(box=[95, 30, 125, 50], points=[[110, 40]], labels=[1]))]},
}


@pytest.mark.parametrize("name", list(STREAMED))
def test_dense_tracker_matches_official_on_prompts_that_come_mid_stream(name, models, clip_dir):
    cfg, ours, official = models
    clip_path, frames = clip_dir
    schedule = STREAMED[name]
    state = official.init_state(clip_path)
    ref = {}
    starts = sorted(schedule)
    with torch.inference_mode():
        for i, start in enumerate(starts):
            for obj_id, kwargs in schedule[start]:
                official.add_new_points_or_box(state, start, obj_id, **kwargs)
            end = starts[i + 1] if i + 1 < len(starts) else NUM_FRAMES - 1
            for t, ids, masks in official.propagate_in_video(state, start, end - start):
                ref[t] = dict(zip(ids, masks[:, 0].numpy()))
    tracker = StreamingTracker(cfg, model=ours, num_frames_hint=NUM_FRAMES, return_logits=True)
    for t in range(NUM_FRAMES):
        res = tracker.track(frames[t]) if t else None
        for obj_id, kwargs in schedule.get(t, []):
            res = tracker.add_prompt(obj_id, image=frames[0] if res is None else None, **kwargs)
        assert sorted(res.logits) == sorted(ref[t]), f"frame {t}"
        for obj_id, official_logits in ref[t].items():
            np.testing.assert_allclose(res.logits[obj_id], official_logits, atol=LOGIT_TOL, rtol=0,
                                       err_msg=f"frame {t} object {obj_id}")
            assert_same_mask(res.masks[obj_id], official_logits, f"frame {t} object {obj_id}")


def test_official_session_tracks_an_object_first_prompted_after_frame_0_on_cpu(models, clip_dir):
    """sam2 stores memory features in bf16; an object whose only memory is a later conditioning
    frame used to reach memory attention as bf16 against fp32 weights (RuntimeError on the CPU)."""
    _, _, official = models
    _, frames = clip_dir
    session = OfficialVideoSession(official, frames[:4])
    session.add_prompt(0, 1, points=[[40, 60]], labels=[1])
    session.add_prompt(2, 2, points=[[116, 37]], labels=[1])
    out = dict(session.propagate(0))
    assert sorted(out) == [0, 1, 2, 3] and all(sorted(m) == [1, 2] for m in out.values())
    # what sam2 stores is untouched (still bf16), and nothing stays hooked on the shared model
    stored = session.state["output_dict_per_obj"][1]["cond_frame_outputs"][2]["maskmem_features"]
    assert stored.dtype == torch.bfloat16
    assert not official.memory_attention._forward_pre_hooks


def test_static_buffer_protocol_matches_official(models, clip_dir, monkeypatch):
    """The CUDA-graph input/output buffer discipline (run eagerly on the CPU) changes nothing, and
    both objects run through the gathered-RoPE attention as one batch on every tracked frame."""
    cfg, ours, official = models
    clip_path, frames = clip_dir
    first, refines = SCENARIOS["two_objects_clicks_then_negative"]
    ref = run_official(official, clip_path, first, refines)
    batches = []
    real = pruned_predictor.pruned_memory_attention
    monkeypatch.setattr(pruned_predictor, "pruned_memory_attention",
                        lambda module, curr, *a, **k: batches.append(curr.shape[0]) or real(module, curr, *a, **k))
    got, tracker = run_streaming(cfg, ours, frames, first, refines, static_buffers=True)
    # tracked frames run both objects as one batch; the refinement runs alone
    assert batches == [2] * REFINE_AT + [1] + [2] * (NUM_FRAMES - 1 - REFINE_AT)
    assert len(tracker.runner._entries) == 2  # padded early bank (masked) and the refined layout
    for t in range(NUM_FRAMES):
        mine = np.stack([got[t].logits[i] for i in sorted(first)])
        np.testing.assert_allclose(mine, ref[t], atol=LOGIT_TOL, rtol=0, err_msg=f"frame {t}")
        for k, i in enumerate(sorted(first)):
            assert_same_mask(got[t].masks[i], ref[t][k], f"frame {t} object {i}")


def _first_and_latest(frame_idx, cond_outputs, max_cond):
    """The bank's documented conditioning read (the first prompt pinned + the latest others), in
    the form of sam2's ``select_closest_cond_frames``: (selected, unselected)."""
    before = sorted(t for t in cond_outputs if t < frame_idx)
    selected = before if len(before) <= max_cond else before[:1] + before[1 - max_cond:]
    return ({t: cond_outputs[t] for t in selected},
            {t: v for t, v in cond_outputs.items() if t not in selected})


def test_prompted_frames_left_out_of_the_conditioning_read_are_read_as_recent_ones(
        models, clip_dir, monkeypatch):
    """With more prompted frames than ``max_cond_frames`` sam2 reads the ones it leaves out as
    ordinary recent memories and pointers while they are among the last frames. sam2 gets the
    bank's first-and-latest rule (its own is "closest"); everything else is its code. Object 1
    is clicked on 4, 5 and 6 (max 2: frame 6 reads 0 and 5, frame 7 reads 0 and 6, and frame 4's
    slot is replaced by then); object 2, tracked in the same batch, only on 0."""
    import sam2.modeling.sam2_base as sam2_base

    cfg, ours, official = models
    cfg = cfg.replace(max_cond_frames=2)
    clip_path, frames = clip_dir
    monkeypatch.setattr(sam2_base, "select_closest_cond_frames", _first_and_latest)
    monkeypatch.setattr(official, "max_cond_frames_in_attn", 2)
    first = {1: dict(points=[[40, 60]], labels=[1]), 2: dict(points=[[120, 35]], labels=[1])}
    clicks = {4: dict(points=[[52, 60]], labels=[1]), 5: dict(points=[[30, 30]], labels=[0]),
              6: dict(points=[[70, 62]], labels=[1])}
    state = official.init_state(clip_path)
    ref = {}
    with torch.inference_mode():
        for obj_id, kwargs in first.items():
            official.add_new_points_or_box(state, 0, obj_id, **kwargs)
        start = 0
        for t, kwargs in clicks.items():
            for f, _, masks in official.propagate_in_video(state, start, t - start):
                ref[f] = masks[:, 0].numpy()
            official.add_new_points_or_box(state, t, 1, **kwargs)
            start = t
        for f, _, masks in official.propagate_in_video(state, start):
            ref[f] = masks[:, 0].numpy()
    assert sorted(ref) == list(range(NUM_FRAMES))
    for static_buffers in (False, True):  # the compact layout and the padded one
        tracker = StreamingTracker(cfg, model=ours, num_frames_hint=len(frames),
                                   return_logits=True, static_buffers=static_buffers)
        for obj_id, kwargs in first.items():
            res = tracker.add_prompt(obj_id, image=frames[0] if obj_id == 1 else None, **kwargs)
        for t in range(NUM_FRAMES):
            if t:
                res = tracker.track(frames[t])
            if t in clicks:
                res = tracker.add_prompt(1, **clicks[t])
            mine = np.stack([res.logits[i] for i in sorted(first)])
            np.testing.assert_allclose(mine, ref[t], atol=LOGIT_TOL, rtol=0,
                                       err_msg=f"frame {t} static_buffers={static_buffers}")
            for k, i in enumerate(sorted(first)):
                assert_same_mask(res.masks[i], ref[t][k], f"frame {t} object {i}")
        assert sorted(tracker.bank.cond_frames[tracker.objects[1].row]) == [0, 5, 6]

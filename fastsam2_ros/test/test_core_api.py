"""Tracker core API: bad input, checkpoints, configuration, text relevance, representative click."""

from pathlib import Path

import numpy as np
import pytest
import torch

from fastsam2_ros.core import CheckpointError, InputError, TrackerConfig
from fastsam2_ros.core.config import load_ros_params
from fastsam2_ros.core.models import build_predictor
from fastsam2_ros.core.prompts import representative_click
from fastsam2_ros.core.router import TokenRouter
from fastsam2_ros.core.text_relevance import fit_clip_ridge, fit_paper_lsq
from fastsam2_ros.core.tracker import StreamingTracker

CONFIG = Path(__file__).resolve().parents[1] / "config" / "tracker.yaml"


@pytest.fixture(scope="module")
def tracker_cfg():
    return TrackerConfig(model_cfg="tiny", allow_random_weights=True, image_size=128,
                         device="cpu", keep_ratio=0.3, mc_passes=3)


@pytest.fixture(scope="module")
def model(tracker_cfg):
    return build_predictor(tracker_cfg)


# ------------------------------------------------------------------------------ bad input
BAD_FRAMES = {
    "float image": np.zeros((40, 50, 3), np.float32),
    "gray image": np.zeros((40, 50), np.uint8),
    "four channels": np.zeros((40, 50, 4), np.uint8),
    "empty image": np.zeros((0, 0, 3), np.uint8),
    "list": [[1, 2, 3]],
}
BAD_PROMPTS = {
    "NaN click": dict(points=[[np.nan, 3.0]], labels=[1]),
    "click outside": dict(points=[[500.0, 3.0]], labels=[1]),
    "negative click": dict(points=[[-1.0, 3.0]], labels=[1]),
    "label 2": dict(points=[[5.0, 3.0]], labels=[2]),
    "labels count": dict(points=[[5.0, 3.0], [6, 6]], labels=[1]),
    "points without labels": dict(points=[[5.0, 3.0]]),
    "empty box": dict(box=[10, 10, 5, 20]),
    "box outside": dict(box=[300, 300, 400, 400]),
    "NaN box": dict(box=[0, 0, np.nan, 5]),
    "mask shape": dict(mask=np.ones((3, 3), bool)),
    "empty mask": dict(mask=np.zeros((120, 160), bool)),
    "numeric-string label": dict(points=[[5.0, 3.0]], labels=["1"]),
    "numeric-string click": dict(points=[["20", "30"]], labels=[1]),
    "numeric-string box": dict(box=["5", "5", "30", "30"]),
    "complex mask": dict(mask=np.ones((120, 160), np.complex64)),
    "huge text": dict(text="x" * 100_000),
    "lone surrogate text": dict(text="red \udc80 ball"),  # (the CLIP tokenizer raised TypeError)
    "empty text": dict(text="   "),
    "nothing": dict(),
    "restart not a bool": dict(points=[[5.0, 3.0]], labels=[1], restart="no"),
}


def test_bad_input_raises_clear_errors_and_tracker_keeps_working(tracker_cfg, model, video):
    frames, _, _ = video
    tracker = StreamingTracker(tracker_cfg, model=model)
    with pytest.raises(InputError, match="no frame"):
        tracker.add_prompt(1, points=[[5, 5]], labels=[1])
    first = tracker.add_prompt(1, points=[[40, 60]], labels=[1], image=frames[0])
    for name, frame in BAD_FRAMES.items():
        with pytest.raises(InputError):
            tracker.track(frame)
    for name, kwargs in BAD_PROMPTS.items():
        with pytest.raises(InputError) as err:
            tracker.add_prompt(1, **kwargs)
        assert str(err.value), name
    for bad_id in (0, -3, 70000, "1", 1.5, None, True):
        with pytest.raises(InputError, match="object id"):
            tracker.add_prompt(bad_id, points=[[5, 5]], labels=[1])
    with pytest.raises(InputError, match="unknown object id 9"):
        tracker.remove_object(9)
    for ratio in (0.0, -0.1, 1.01, float("nan"), float("inf")):
        with pytest.raises(InputError, match="keep_ratio"):
            tracker.set_keep_ratio(ratio)
    assert tracker.keep_ratio == 0.3 and tracker.object_ids == [1] and tracker.frame_index == 0
    # nothing above changed the state: a fresh tracker given the same calls agrees exactly
    res = tracker.track(frames[1])
    clean = StreamingTracker(tracker_cfg, model=model)
    clean.add_prompt(1, points=[[40, 60]], labels=[1], image=frames[0])
    ref = clean.track(frames[1])
    assert np.array_equal(res.masks[1], ref.masks[1])
    assert res.masks[1].shape == frames[1].shape[:2] and res.masks[1].dtype == bool
    assert np.array_equal(first.masks[1].shape, frames[0].shape[:2])


def test_objects_add_remove_reset_and_outputs(tracker_cfg, model, video):
    frames, _, _ = video
    tracker = StreamingTracker(tracker_cfg, model=model)
    tracker.track(frames[0])  # no object yet: nothing to do, frame becomes current
    res = tracker.add_prompt(3, box=[20, 40, 62, 82])
    res = tracker.add_prompt(7, mask=video[2][0])
    assert res.object_ids == [3, 7] and tracker.frame_index == 0
    labels = res.label_image()
    assert labels.dtype == np.uint16 and set(np.unique(labels)) <= {0, 3, 7}
    assert np.array_equal(res.union_mask() > 0, res.masks[3] | res.masks[7])
    assert set(np.unique(res.union_mask())) <= {0, 255}
    tracker.remove_object(3)
    res = tracker.track(frames[1])
    assert res.object_ids == [7] and res.stats.object_ids == [7]
    tracker.reset()
    assert tracker.object_ids == [] and tracker.frame_index == -1
    assert tracker.memory_bank_size() == {"frames": 0, "tokens": 0, "bytes": 0}
    for key in ("encoder", "router", "memory_attention", "decoder", "memory_encoder", "total"):
        assert key in res.stats.stage_ms
    assert res.stats.stage_ms["total"] >= res.stats.stage_ms["encoder"] > 0


def test_bad_num_frames_hint_is_an_input_error_that_leaves_the_tracker_alone(tracker_cfg, model,
                                                                             video):
    frames, _, _ = video
    tracker = StreamingTracker(tracker_cfg, model=model)
    tracker.add_prompt(1, points=[[40, 60]], labels=[1], image=frames[0])
    for bad in ("abc", float("nan"), float("inf"), [3], -5, 2.5, 10 ** 30, True):
        with pytest.raises(InputError, match="num_frames_hint"):
            tracker.reset(num_frames_hint=bad)
        with pytest.raises(InputError, match="num_frames_hint"):
            StreamingTracker(tracker_cfg, model=model, num_frames_hint=bad)
    assert tracker.object_ids == [1] and tracker.frame_index == 0
    tracker.reset(num_frames_hint=np.int64(12))
    assert tracker.bank.num_frames == 12 and tracker.object_ids == []


def test_frames_in_flight_across_a_reset_leave_the_new_stream_alone(tracker_cfg, model, video):
    frames, _, _ = video
    tracker = StreamingTracker(tracker_cfg, model=model)
    tracker.add_prompt(1, points=[[40, 60]], labels=[1], image=frames[0])
    old = [tracker.submit(f) for f in frames[1:3]]
    tracker.reset()
    assert [p.result().frame_index for p in old] == [1, 2]  # still collectable, masks and all
    assert old[0].result().object_ids == [1]
    res = tracker.add_prompt(1, points=[[40, 60]], labels=[1], image=frames[0])
    res = tracker.track(frames[1])
    clean = StreamingTracker(tracker_cfg, model=model)
    clean.add_prompt(1, points=[[40, 60]], labels=[1], image=frames[0])
    ref = clean.track(frames[1])
    assert res.frame_index == ref.frame_index == 1
    assert np.array_equal(res.masks[1], ref.masks[1])


def test_results_collected_later_report_the_state_their_frame_was_tracked_in(tracker_cfg, model,
                                                                            video):
    frames, _, _ = video
    sync = StreamingTracker(tracker_cfg, model=model)
    sync.add_prompt(1, points=[[40, 60]], labels=[1], image=frames[0])
    want = [sync.track(f).stats for f in frames[1:4]]
    pipe = StreamingTracker(tracker_cfg, model=model)
    pipe.add_prompt(1, points=[[40, 60]], labels=[1], image=frames[0])
    pending = [pipe.submit(f) for f in frames[1:4]]
    pipe.add_prompt(2, points=[[100, 30]], labels=[1])
    pipe.set_keep_ratio(0.7)
    got = [p.result().stats for p in pending]
    for a, b in zip(want, got):
        assert (b.bank_frames, b.object_ids, b.keep_ratio, b.tokens_kept) == \
            (a.bank_frames, a.object_ids, a.keep_ratio, a.tokens_kept)
    assert [s.bank_frames for s in got] == [2, 3, 4]


def test_a_released_tracker_answers_every_call_with_an_input_error(tracker_cfg, model, video):
    frames, _, _ = video
    tracker = StreamingTracker(tracker_cfg, model=model)
    tracker.add_prompt(1, points=[[40, 60]], labels=[1], image=frames[0])
    pending = tracker.submit(frames[1])
    tracker.release()
    tracker.release()  # twice: nothing to do
    for call in (lambda: tracker.track(frames[2]), lambda: tracker.reset(),
                 lambda: tracker.set_keep_ratio(0.5), tracker.memory_bank_size, pending.result,
                 lambda: tracker.add_prompt(1, points=[[4, 6]], labels=[1]),
                 lambda: tracker.text_state("a cup")):  # ("no current frame", it said)
        with pytest.raises(InputError, match="released"):
            call()


def test_a_frame_without_objects_gives_empty_images_of_its_size(tracker_cfg, model, video):
    frames, _, _ = video
    res = StreamingTracker(tracker_cfg, model=model).track(frames[0])
    assert res.object_ids == [] and res.image_shape == frames[0].shape[:2]
    assert res.union_mask().shape == res.label_image().shape == frames[0].shape[:2]
    assert not res.union_mask().any() and not res.label_image().any()


@pytest.mark.parametrize("shape,match", [
    (5, "height, width"), (("a", 2), "height, width"), ((7,), "height, width"),
    ((40, 50, 3), "height, width"), ((True, 40), "height, width"), ((40.0, 50), "height, width"),
    ((-3, 4), "too small"), ((0, 0), "too small"), ((40, 100_000), "too large"),
    (list(range(10_000)), "height, width")])
def test_an_empty_result_of_a_bad_image_shape_is_an_input_error(tracker_cfg, model, shape, match):
    """With no current frame, current_result(image_shape=...) makes a result of that size: the
    size is checked as a frame's is (a negative one failed later, a huge one allocated GBs); with
    one, where the shape is not used, a bad one was silently taken."""
    tracker = StreamingTracker(tracker_cfg, model=model)
    with pytest.raises(InputError, match=match) as err:
        tracker.current_result(image_shape=shape)
    assert len(str(err.value)) < 200
    res = tracker.current_result(image_shape=(np.int64(40), 50))
    assert res.image_shape == (40, 50) and res.label_image().shape == (40, 50)
    tracker.track(np.zeros((40, 50, 3), np.uint8))  # with a current frame it is checked too
    with pytest.raises(InputError, match=match):
        tracker.current_result(image_shape=shape)


def test_max_objects_limit(tracker_cfg, model, video):
    frames, _, _ = video
    tracker = StreamingTracker(tracker_cfg.replace(max_objects=1), model=model)
    tracker.add_prompt(1, points=[[40, 60]], labels=[1], image=frames[0])
    with pytest.raises(InputError, match="max_objects"):
        tracker.add_prompt(2, points=[[100, 30]], labels=[1])


# ------------------------------------------------------------------------------ checkpoints
def test_missing_checkpoint_is_a_clear_error(tmp_path):
    cfg = TrackerConfig(model_cfg="tiny", image_size=128, device="cpu")
    with pytest.raises(CheckpointError, match="sam2.1_hiera_tiny.pt"):
        build_predictor(cfg)  # no path, random weights not allowed
    missing = tmp_path / "nope.pt"
    with pytest.raises(CheckpointError, match=str(missing)):
        build_predictor(cfg.replace(checkpoint=str(missing)))
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="junk.pt"):
        build_predictor(cfg.replace(checkpoint=str(junk)))


def test_checkpoint_round_trip_and_mismatch(tmp_path, tracker_cfg, model):
    path = tmp_path / "sam2.1_hiera_tiny.pt"
    torch.save({"model": model.state_dict()}, path)
    loaded = build_predictor(tracker_cfg.replace(allow_random_weights=False, checkpoint=str(path), seed=5))
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    with pytest.raises(CheckpointError, match="does not match"):
        build_predictor(tracker_cfg.replace(model_cfg="small", allow_random_weights=False,
                                            checkpoint=str(path)))


# ------------------------------------------------------------------------------ configuration
def test_yaml_defaults_equal_dataclass_defaults():
    params = load_ros_params(CONFIG)
    defaults = TrackerConfig().to_dict()
    for name, value in defaults.items():
        assert name in params, f"{name} missing from config/tracker.yaml"
        assert params[name] == value, f"{name}: yaml {params[name]!r} != default {value!r}"
    assert TrackerConfig.from_yaml(CONFIG) == TrackerConfig()


def test_config_validation():
    with pytest.raises(InputError, match="keep_ratio"):
        TrackerConfig(keep_ratio=0)
    with pytest.raises(InputError, match="model_cfg"):
        TrackerConfig(model_cfg="huge")
    with pytest.raises(InputError, match="unknown tracker parameter"):
        TrackerConfig.from_mapping({"keep_ration": 0.3})
    with pytest.raises(InputError, match="image_size"):
        TrackerConfig(image_size=100)
    assert TrackerConfig.from_mapping({"keep_ratio": "0.5", "bf16": "false"}).bf16 is False


# ------------------------------------------------------------------------------ text relevance
def test_clip_ridge_relevance_depends_on_text_and_paper_lsq_does_not():
    g = torch.Generator().manual_seed(0)
    tokens = torch.randn(256, 32, generator=g)
    clip_dense = torch.nn.functional.normalize(tokens @ torch.randn(32, 16, generator=g), dim=-1)
    e1 = torch.nn.functional.normalize(torch.randn(16, generator=g), dim=0)
    e2 = torch.nn.functional.normalize(torch.randn(16, generator=g), dim=0)
    r1 = fit_clip_ridge(tokens, clip_dense, e1, "a").relevance(tokens)
    r2 = fit_clip_ridge(tokens, clip_dense, e2, "b").relevance(tokens)
    top1, top2 = set(torch.topk(r1, 64).indices.tolist()), set(torch.topk(r2, 64).indices.tolist())
    assert len(top1 & top2) < 40  # different texts rank tokens differently
    # the ridge map recovers the CLIP similarity it was fitted to
    target = clip_dense @ e1
    assert torch.corrcoef(torch.stack([r1, target]))[0, 1] > 0.9
    # paper eq. 4-5: e' = ||e||^2 pinv(X) 1 -> identical for any unit-norm text
    p1, p2 = fit_paper_lsq(tokens, e1, "a"), fit_paper_lsq(tokens, e2, "b")
    assert torch.nn.functional.cosine_similarity(p1.aligned, p2.aligned, dim=0) > 0.9999
    assert torch.equal(torch.argsort(p1.relevance(tokens)), torch.argsort(p2.relevance(tokens)))


def test_text_prompt_changes_token_ranking_in_the_tracker(tracker_cfg, model, video):
    frames, _, _ = video
    cfg = tracker_cfg.replace(text_mode="clip_ridge", mc_passes=0)
    kept = {}
    for text in ("a red ball", "the green box on the right"):
        tracker = StreamingTracker(cfg, model=model)
        tracker.router.mc_passes = 0
        res = tracker.add_prompt(1, points=[[40, 60]], labels=[1], text=text, image=frames[0])
        assert res.stats.text_mode == "clip_ridge"
        state = tracker.objects[1].text_state
        assert state is not None and state.text == text
        tokens, _ = tracker._current_tokens()
        kept[text] = torch.topk(state.relevance(tokens), 19).indices.tolist()
        # a refinement click with the same text keeps the fitted text map
        tracker.add_prompt(1, points=[[45, 60]], labels=[1], text=text)
        assert tracker.objects[1].text_state is state
    a, b = kept.values()
    assert set(a) != set(b)


def _kept_after_a_text(cfg, model, frames, text):
    tracker = StreamingTracker(cfg, model=model)
    tracker.add_prompt(1, points=[[40, 60]], labels=[1], text=text, image=frames[0])
    result = tracker.track(frames[1])
    return np.asarray(result.kept_tokens[1]).copy(), result.stats.text_mode


def test_the_kept_tokens_follow_the_text_in_the_default_mode_and_not_in_paper_lsq(tracker_cfg, model,
                                                                                  video):
    """The tokens memory attention works on, not only the fitted relevance: clip_ridge (the
    default) keeps other tokens for another text; the paper's text projection (paper_lsq) is the
    same for every text, so it keeps the same ones."""
    frames = video[0]
    for mode, differ in (("clip_ridge", True), ("paper_lsq", False)):
        cfg = tracker_cfg.replace(text_mode=mode, mc_passes=0)
        a, said = _kept_after_a_text(cfg, model, frames, "a red ball")
        b, _ = _kept_after_a_text(cfg, model, frames, "the green box on the right")
        assert said == mode and (not np.array_equal(a, b)) == differ, mode


def test_a_router_trained_without_texts_fits_no_text_map_and_says_so(tracker_cfg, model, video,
                                                                     tmp_path, monkeypatch):
    """Its text input stays zero (RouterMLP.reads_text): the CLIP image pass and ridge fit per
    prompt and refresh were wasted, and the stats said clip_ridge. A text-only start still works."""
    from fastsam2_ros.core.clip_text import ClipTextEncoder
    from fastsam2_ros.core.router import RouterMLP, router_inputs, save_router

    frames = video[0]
    path = tmp_path / "router.pt"
    save_router(RouterMLP(model.hidden_dim), path,
                meta=router_inputs("tiny", 0, 0.1, "none", "ViT-B-16"))
    cfg = tracker_cfg.replace(router_weights=str(path), mc_passes=0)
    passes = []
    real = ClipTextEncoder.patch_features
    monkeypatch.setattr(ClipTextEncoder, "patch_features",
                        lambda self, *a: passes.append(1) or real(self, *a))
    a, said = _kept_after_a_text(cfg, model, frames, "a red ball")
    b, _ = _kept_after_a_text(cfg, model, frames, "the green box on the right")
    assert np.array_equal(a, b) and said == "none" and passes == []
    tracker = StreamingTracker(cfg, model=model)
    assert tracker.text_mode == "none"
    assert tracker.add_prompt(1, text="a red ball", image=frames[0]).stats.auto_prompted == [1]
    assert len(passes) == 1  # the start's own CLIP relevance


def test_one_clip_image_pass_per_frame_serves_a_text_start_and_every_objects_refresh(
        tracker_cfg, model, video, monkeypatch):
    """A text-only start ran CLIP's ViT twice on its frame (the fit, then the click), and a
    refresh once per text object."""
    from fastsam2_ros.core.clip_text import ClipTextEncoder

    frames = video[0]
    passes = []
    real = ClipTextEncoder.patch_features
    monkeypatch.setattr(ClipTextEncoder, "patch_features",
                        lambda self, *a: passes.append(1) or real(self, *a))
    tracker = StreamingTracker(tracker_cfg.replace(mc_passes=0, clip_refresh_interval=1), model=model)
    tracker.add_prompt(1, text="a red ball", image=frames[0])
    assert len(passes) == 1
    tracker.add_prompt(2, points=[[118, 35]], labels=[1], text="a green box")
    tracker.add_prompt(3, points=[[100, 100]], labels=[1], text="grass")
    assert len(passes) == 1
    tracker.track(frames[1])  # every object's map refitted, from one pass
    assert len(passes) == 2 and {o.text_frame for o in tracker.objects.values()} == {1}


def test_the_same_text_again_does_not_postpone_its_refresh(tracker_cfg, model, video):
    """A client that sends its text with every click kept the map of the first frame for good:
    each repeat reset the map's age that clip_refresh_interval counts."""
    frames = video[0]
    tracker = StreamingTracker(tracker_cfg.replace(mc_passes=0, clip_refresh_interval=2), model=model)
    tracker.add_prompt(1, points=[[40, 60]], labels=[1], text="a red ball", image=frames[0])
    fitted = [tracker.objects[1].text_frame]
    for frame in frames[1:6]:
        tracker.track(frame)
        tracker.add_prompt(1, points=[[40, 60]], labels=[1], text="a red ball")
        fitted.append(tracker.objects[1].text_frame)
    assert fitted == [0, 0, 2, 2, 4, 4]


def test_a_tracker_without_clip_weights_says_at_once_that_texts_will_be_refused(
        tracker_cfg, model, tmp_path, caplog):
    import logging

    path = tmp_path / "sam.pt"
    torch.save({"model": model.state_dict()}, path)
    cfg = tracker_cfg.replace(allow_random_weights=False, checkpoint=str(path))
    with caplog.at_level(logging.WARNING, logger="fastsam2_ros.core.tracker"):
        StreamingTracker(cfg, model=model)
        StreamingTracker(cfg.replace(text_mode="none"), model=model)
    said = [r.getMessage() for r in caplog.records if "text prompts will be refused" in r.getMessage()]
    assert len(said) == 1 and "clip_weights" in said[0]


def test_first_prompt_of_the_first_text_object_is_routed_with_its_text(tracker_cfg, model, video,
                                                                        monkeypatch):
    """That router call picks the tokens of the object's pinned conditioning frame; the object
    joins ``objects`` only after it, so its text must reach the plan another way."""
    frames, _, _ = video
    seen = []
    scores = TokenRouter.scores  # (what every router call scores tokens with, prompt or tracking)
    monkeypatch.setattr(TokenRouter, "scores",
                        lambda self, sig, *a: seen.append(sig.text is not None) or scores(self, sig, *a))
    tracker = StreamingTracker(tracker_cfg.replace(text_mode="clip_ridge", mc_passes=0), model=model)
    tracker.add_prompt(1, points=[[40, 60]], labels=[1], text="a red ball", image=frames[0])
    assert seen == [True]
    seen.clear()
    tracker.add_prompt(2, points=[[100, 30]], labels=[1])  # no text: the plan still has object 1's
    tracker.track(frames[1])
    assert seen and all(seen)


def test_reset_restarts_the_dropout_masks_like_a_new_tracker(tracker_cfg, model, video):
    """Offline tools track many clips with one tracker: a clip's result must not depend on the
    clips before it."""
    frames, _, _ = video
    cfg = tracker_cfg.replace(mc_passes=3)

    def kept(tracker):
        tracker.add_prompt(1, points=[[40, 60]], labels=[1], image=frames[0])
        return [tracker.track(f).kept_tokens[1] for f in frames[1:4]]

    tracker = StreamingTracker(cfg, model=model)
    first = kept(tracker)
    tracker.reset()
    again = kept(tracker)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))


def test_stats_say_dense_when_the_keep_ratio_rounds_to_every_token(tracker_cfg, model, video):
    frames, _, _ = video
    tracker = StreamingTracker(tracker_cfg.replace(keep_ratio=0.999), model=model)
    res = tracker.add_prompt(1, points=[[40, 60]], labels=[1], image=frames[0])
    res = tracker.track(frames[1])
    assert res.stats.tokens_kept[1] == res.stats.tokens_total
    assert res.stats.router_mode == "dense"
    tracker.set_keep_ratio(0.3)
    assert tracker.track(frames[2]).stats.router_mode == "training_free"


def test_text_only_prompt_starts_tracking_by_itself(tracker_cfg, model, video):
    frames, _, _ = video
    tracker = StreamingTracker(tracker_cfg.replace(mc_passes=0), model=model)
    res = tracker.add_prompt(4, text="the red ball", image=frames[0])
    assert res.stats.auto_prompted == [4] and res.object_ids == [4]
    res = tracker.track(frames[1])
    assert res.object_ids == [4] and res.stats.auto_prompted == []
    with pytest.raises(InputError, match="text_mode"):
        StreamingTracker(tracker_cfg.replace(text_mode="none"), model=model).add_prompt(
            5, text="a cup", image=frames[0])


def test_text_needs_clip_weights_unless_random_allowed(tmp_path, tracker_cfg, model, video):
    frames, _, _ = video
    path = tmp_path / "sam.pt"
    torch.save({"model": model.state_dict()}, path)
    cfg = tracker_cfg.replace(allow_random_weights=False, checkpoint=str(path))
    tracker = StreamingTracker(cfg, model=model)
    tracker.add_prompt(1, points=[[40, 60]], labels=[1], image=frames[0])
    with pytest.raises(CheckpointError, match="clip_weights"):
        tracker.add_prompt(1, points=[[41, 60]], labels=[1], text="a red ball")
    assert tracker.track(frames[1]).object_ids == [1]
    with pytest.raises(CheckpointError, match="clip_weights"):  # refused after the frame was
        tracker.add_prompt(1, text="a red ball", restart=True, image=frames[2])  # tracked
    assert tracker.object_ids == [1] and tracker.track(frames[3]).visible.keys() == {1}


def test_restart_starts_an_object_over_only_once_its_prompt_is_accepted(tracker_cfg, model, video):
    frames, _, _ = video
    restarted = StreamingTracker(tracker_cfg, model=model, return_logits=True)
    readded = StreamingTracker(tracker_cfg, model=model, return_logits=True)
    for tracker in (restarted, readded):
        tracker.add_prompt(1, points=[[40, 60]], labels=[1], image=frames[0])
        tracker.add_prompt(2, points=[[118, 35]], labels=[1])
        tracker.track(frames[1])
    with pytest.raises(InputError, match="text_mode"):  # (text_mode none: no text-only start)
        StreamingTracker(tracker_cfg.replace(text_mode="none"), model=model).add_prompt(
            1, text="a cup", image=frames[0], restart=True)
    before = restarted.memory_bank_size()
    for bad in (dict(points=[[500, 3]], labels=[1]), dict(mask=np.zeros((120, 160), bool))):
        with pytest.raises(InputError):
            restarted.add_prompt(1, restart=True, **bad)
    assert restarted.object_ids == [1, 2] and restarted.memory_bank_size() == before
    restarted.add_prompt(1, points=[[46, 62]], labels=[1], restart=True, image=frames[2])
    readded.track(frames[2])
    readded.remove_object(1)
    readded.add_prompt(1, points=[[46, 62]], labels=[1])
    for t in (3, 4):
        a, b = restarted.track(frames[t]), readded.track(frames[t])
        assert sorted(a.object_ids) == sorted(b.object_ids) == [1, 2]
        for obj in (1, 2):
            np.testing.assert_allclose(a.logits[obj], b.logits[obj], atol=1e-5)


@pytest.mark.parametrize("start_over", ["restart", "remove and add"])
def test_a_frame_collected_after_its_object_started_over_leaves_the_new_one_alone(
        tracker_cfg, model, video, start_over):
    """Results may be collected in any order: a frame submitted before object 1 started over
    (restart=True, or removed and added again under its id) and collected after it must not
    write its per-object state (occlusion count, tokens kept) into the new object 1."""
    frames, _, _ = video
    tracker = StreamingTracker(tracker_cfg, model=model, return_logits=True)
    tracker.add_prompt(1, points=[[40, 60]], labels=[1], image=frames[0])
    pending = tracker.submit(frames[1])
    if start_over == "restart":
        prompted = tracker.add_prompt(1, box=[20, 30, 80, 90], restart=True)
    else:
        tracker.remove_object(1)
        prompted = tracker.add_prompt(1, box=[20, 30, 80, 90])
    new = tracker.objects[1]
    new.occluded_frames = 2  # (as after 2 frames without it: a stale visible frame would zero it)
    result = pending.result()
    assert result.object_ids == [1] and result.stats.tokens_kept[1] < prompted.stats.tokens_kept[1]
    assert not result.logits  # (the bank holds the new object's logits now, not this frame's)
    assert 1 not in result.stats.occluded_frames
    assert (new.occluded_frames, new.tokens_kept) == (2, prompted.stats.tokens_kept[1])
    assert tracker.current_result().stats.tokens_kept == prompted.stats.tokens_kept

def test_a_mask_prompt_that_vanishes_at_the_model_size_is_refused(tracker_cfg, model):
    """A 3x3-pixel mask on a 1024x1024 frame is empty at image_size 128: the object started with
    no pixels and an absent presence, without a word."""
    frame = np.full((1024, 1024, 3), 90, np.uint8)
    tracker = StreamingTracker(tracker_cfg, model=model)
    tiny = np.zeros((1024, 1024), bool)
    tiny[500:503, 500:503] = True
    with pytest.raises(InputError, match="vanishes"):
        tracker.add_prompt(1, mask=tiny, image=frame)
    assert tracker.object_ids == [] and tracker.frame_index == -1  # refused before tracking
    larger = np.zeros((1024, 1024), bool)
    larger[480:540, 480:540] = True
    assert tracker.add_prompt(1, mask=larger, image=frame).object_ids == [1]


# ------------------------------------------------------------------------------ click helper
def test_representative_click_lies_deep_inside_rings_and_c_shapes():
    yy, xx = np.mgrid[:101, :101]
    r = np.hypot(xx - 50, yy - 50)
    ring = (r > 30) & (r < 45)
    x, y = representative_click(ring)
    assert ring[y, x] and 36 <= np.hypot(x - 50, y - 50) <= 39  # mid-band, not the hole
    c_shape = ring & ~((xx > 50) & (np.abs(yy - 50) < 12))
    x, y = representative_click(c_shape)
    assert c_shape[y, x]
    square = np.zeros((20, 30), bool)
    square[5:16, 10:21] = True
    assert representative_click(square) == (15, 10)
    speck_and_blob = square.copy()
    speck_and_blob[0, 0] = True
    assert representative_click(speck_and_blob) == (15, 10)
    with pytest.raises(InputError):
        representative_click(np.zeros((5, 5), bool))


def test_a_flipped_mask_prompt_is_taken(tracker_cfg, model, video):
    """A flipped view (negative strides) of a valid bool mask raised torch's ValueError, which
    callers catching InputError missed."""
    frames = video[0]
    tracker = StreamingTracker(tracker_cfg, model=model)
    mask = np.zeros(frames[0].shape[:2], dtype=bool)
    mask[10:40, 20:60] = True
    tracker.add_prompt(1, mask=np.fliplr(mask), image=frames[0])
    tracker.add_prompt(2, mask=mask[::-1])
    assert tracker.object_ids == [1, 2]


def test_a_prompts_result_reports_the_other_objects_as_tracked_on_that_frame(tracker_cfg, model, video):
    """tokens_kept of an object not prompted on the call was the count of its own last prompt,
    and occluded_frames was empty (the node published 0 for an occluded object)."""
    frames = video[0]
    tracker = StreamingTracker(tracker_cfg.replace(keep_ratio=0.3), model=model)
    tracker.add_prompt(1, points=[[40, 60]], labels=[1], image=frames[0])
    tracked = tracker.track(frames[1])
    tracker.objects[1].occluded_frames = 3  # (as after 3 frames without the object)
    prompted = tracker.add_prompt(2, points=[[120, 90]], labels=[1])
    assert prompted.stats.tokens_kept[1] == tracked.stats.tokens_kept[1] < tracked.stats.tokens_total
    assert prompted.stats.occluded_frames[1] == 3


def test_an_object_found_again_by_a_prompt_is_not_reported_occluded(tracker_cfg, model, video):
    """Clicked again after 3 invisible frames and present on the prompted frame, the object was
    reported visible with occluded_frames 3 (0 means visible now)."""
    frames = video[0]
    tracker = StreamingTracker(tracker_cfg.replace(keep_ratio=0.3), model=model)
    tracker.add_prompt(1, points=[[40, 60]], labels=[1], image=frames[0])
    tracker.track(frames[1])
    tracker.objects[1].occluded_frames = 3  # (as after 3 frames without the object)
    again = tracker.add_prompt(1, points=[[43, 60]], labels=[1])
    assert again.visible[1] and again.stats.occluded_frames[1] == 0
    assert tracker.track(frames[2]).stats.occluded_frames[1] in (0, 1)  # counted from the prompt


def test_collecting_a_frame_after_a_prompt_on_it_keeps_the_prompts_state(tracker_cfg, model, video):
    """submit(frame), a prompt on that frame, then result(): the tracked step's (older) occlusion
    count and kept tokens overwrote what the prompt had set (visible, yet 'occluded 1')."""
    frames = video[0]
    tracker = StreamingTracker(tracker_cfg.replace(keep_ratio=0.3), model=model)
    tracker.add_prompt(1, points=[[40, 60]], labels=[1], image=frames[0])
    step = tracker.model.track_objects

    def object_lost(*args, **kwargs):  # the tracking step does not find the object on frame 1
        out = step(*args, **kwargs)
        rows = kwargs["plan"].shape.rows
        kwargs["bank"].presence[:rows] = -5.0
        out["presence"] = torch.full_like(out["presence"], -5.0)
        return out

    tracker.model.track_objects = object_lost
    try:
        pending = tracker.submit(frames[1])
    finally:
        del tracker.model.track_objects
    mask = np.zeros(frames[1].shape[:2], bool)
    mask[20:70, 30:80] = True
    prompted = tracker.add_prompt(1, mask=mask)  # found again on frame 1 by a mask prompt
    assert prompted.visible[1] and prompted.stats.occluded_frames[1] == 0
    tracked = pending.result()
    assert tracked.frame_index == 1 and not tracked.visible[1]
    now = tracker.current_result()
    assert now.visible[1] and now.stats.occluded_frames[1] == 0
    assert now.stats.tokens_kept[1] == prompted.stats.tokens_kept[1] == tracker._num_tokens


def test_a_frame_buffer_refilled_by_the_caller_leaves_the_current_frame_alone(tracker_cfg, model,
                                                                           video):
    """A camera loop that reads into one buffer (cv2's read(buf), SDK ring buffers): the tracker
    kept a reference, so a prompt on the current frame saw whatever the buffer held by then."""
    frames = video[0]
    tracker = StreamingTracker(tracker_cfg, model=model, return_logits=True)
    buffer = frames[0].copy()
    tracker.track(buffer)  # no objects yet: the frame is encoded when the prompt comes
    buffer[:] = frames[3]
    refilled = tracker.add_prompt(1, points=[[40, 60]], labels=[1])
    clean = StreamingTracker(tracker_cfg, model=model, return_logits=True)
    clean.track(frames[0])
    np.testing.assert_array_equal(refilled.logits[1], clean.add_prompt(1, points=[[40, 60]],
                                                                        labels=[1]).logits[1])


def test_a_prompt_with_a_new_frame_leaves_the_frame_in_flight_collectable(tracker_cfg, model, video):
    """add_prompt(image=) tracks a frame; with an earlier frame still in flight, that frame could
    no longer be collected ("collect in the order submitted") and its result was lost."""
    frames = video[0]
    tracker = StreamingTracker(tracker_cfg.replace(keep_ratio=0.3), model=model)
    tracker.add_prompt(1, points=[[40, 60]], labels=[1], image=frames[0])
    in_flight = tracker.submit(frames[1])
    tracker.add_prompt(2, box=[100, 70, 140, 110], image=frames[2])
    result = in_flight.result()
    assert result.frame_index == 1 and list(result.masks) == [1]
    # collected late, a frame's result is the same as collected at once
    ref = StreamingTracker(tracker_cfg.replace(keep_ratio=0.3), model=model)
    ref.add_prompt(1, points=[[40, 60]], labels=[1], image=frames[0])
    np.testing.assert_array_equal(ref.track(frames[1]).masks[1], result.masks[1])
    # a later frame collected first: the earlier one's result is built first and kept
    first, second = tracker.submit(frames[3]), tracker.submit(frames[4])
    assert second.result().frame_index == 4 and first.result().frame_index == 3


def test_logits_of_a_frame_in_flight_skip_an_object_removed_since(tracker_cfg, model, video):
    frames = video[0]
    tracker = StreamingTracker(tracker_cfg, model=model, return_logits=True)
    tracker.add_prompt(1, points=[[40, 60]], labels=[1], image=frames[0])
    tracker.add_prompt(2, points=[[120, 90]], labels=[1])
    pending = tracker.submit(frames[1])
    tracker.remove_object(2)
    result = pending.result()  # raised KeyError: 2, and the frame was lost
    assert set(result.masks) == {1, 2} and set(result.logits) == {1}


def _valid_tokens_stored(bank):
    """Valid tokens of the distinct stored frames, counted from the device tensors."""
    from fastsam2_ros.core.memory_bank import NO_FRAME

    total = 0
    for r in range(bank.rows):
        per_frame = {}
        for frames, valid in ((bank.cond_frames, bank.cond_tok_valid),
                              (bank.ring_frames, bank.ring_tok_valid)):
            for s, f in enumerate(frames[r]):
                if f != NO_FRAME:
                    per_frame[int(f)] = max(per_frame.get(int(f), 0), int(valid[r, s].sum()))
        total += sum(per_frame.values())
    return total


def test_bank_tokens_count_what_is_stored_after_the_keep_ratio_changes(tracker_cfg, model, video):
    """bank_tokens was stored frames x k: after set_keep_ratio raised k, frames stored before
    (the prompted one for as long as the object lives) hold their old k, not the new one."""
    frames, _, _ = video
    tracker = StreamingTracker(tracker_cfg.replace(keep_ratio=0.25, mc_passes=0), model=model)
    tracker.add_prompt(1, points=[[40, 60]], labels=[1], image=frames[0])
    tracker.add_prompt(2, box=[10, 10, 60, 50])
    tracker.track(frames[1])
    for keep, frame in ((1.0, frames[2]), (0.5, frames[3]), (0.8, frames[4])):
        tracker.set_keep_ratio(keep)
        res = tracker.track(frame)
        assert tracker.memory_bank_size()["tokens"] == _valid_tokens_stored(tracker.bank), keep
        assert res.stats.bank_tokens == tracker.memory_bank_size()["tokens"]


def test_frames_dropped_uncollected_do_not_pile_up_in_the_tracker(tracker_cfg, model, video):
    """Every submit() queued a weak reference that only a later result() removed: a caller that
    never collects (it reads the prompts' results only) grew the queue by one entry a frame."""
    frames, _, _ = video
    tracker = StreamingTracker(tracker_cfg.replace(mc_passes=0), model=model)
    tracker.add_prompt(1, points=[[40, 60]], labels=[1], image=frames[0])
    for t in range(200):
        tracker.submit(frames[1 + t % 5])  # dropped: its masks are not needed
    assert len(tracker._in_flight) <= 2
    held = tracker.submit(frames[1])  # a frame held uncollected stops the cleanup at the front
    for t in range(200):
        tracker.submit(frames[1 + t % 5])
    assert len(tracker._in_flight) <= 2 + 64
    assert held.result().frame_index == 201 and held.result().object_ids == [1]


def test_a_text_the_clip_encoder_refuses_leaves_the_frame_given_with_it_untaken(tracker_cfg, model,
                                                                              video):
    """add_prompt(image=, text=) tracked the frame before CLIP refused the text (over its 75
    tokens, no weights): the caller got an error for a frame the tracker had already taken, and
    the node's automatic start then tracked that frame a second time."""
    frames, _, _ = video
    tracker = StreamingTracker(tracker_cfg.replace(mc_passes=0), model=model)
    tracker.add_prompt(1, points=[[40, 60]], labels=[1], image=frames[0])
    with pytest.raises(InputError, match="CLIP tokens"):
        tracker.add_prompt(2, text="a red mug " * 26, image=frames[1])
    assert tracker.frame_index == 0 and tracker.object_ids == [1]
    assert tracker.track(frames[1]).frame_index == 1

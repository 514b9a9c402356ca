"""The fast path on the CPU: batching, the static memory bank, the capturable step, bf16, packing.

Everything the CUDA graphs replay runs here too (same code, no capture), so these tests cover the
GPU path's logic; test_cuda_fast_path.py adds the checks that need a GPU."""

import collections
import contextlib
import dataclasses
import functools
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from compile_workers import compile_worker_processes, inductor_pool_state
from polling import wait_for
from fastsam2_ros.core import TrackerConfig
from fastsam2_ros.core.config import COMPILE_MODES
from fastsam2_ros.core.errors import InputError
from fastsam2_ros.core.memory_bank import NO_FRAME, MemoryBank
from fastsam2_ros.core.models import build_predictor
from fastsam2_ros.core.preprocess import (FrameStager, pil_bicubic_coefficients,
                                          preprocess_on_device, preprocess_pil)
from fastsam2_ros.core.pruned_predictor import memory_token_scores, pack_mask_bits
from fastsam2_ros.core.router import router_scores
from fastsam2_ros.core.stats import BitMasks, FrameResult, FrameStats
from fastsam2_ros.core.tracker import StreamingTracker


@pytest.fixture(scope="module")
def model128():
    cfg = TrackerConfig(model_cfg="tiny", allow_random_weights=True, image_size=128, device="cpu",
                        keep_ratio=0.3, mc_passes=0)
    return cfg, build_predictor(cfg)


def _logits(results, obj_id):
    return np.stack([r.logits[obj_id] for r in results])


def _stream(tracker, frames, prompts, refine=None):
    """prompts {id: kwargs} on frame 0, then track; ``refine`` (t, id, kwargs) after frame t."""
    out = []
    for i, (obj_id, kwargs) in enumerate(prompts.items()):
        res = tracker.add_prompt(obj_id, image=frames[0] if i == 0 else None, **kwargs)
    out.append(res)
    for t in range(1, len(frames)):
        res = tracker.track(frames[t])
        if refine is not None and refine[0] == t and refine[1] in tracker.objects:
            res = tracker.add_prompt(refine[1], **refine[2])
        out.append(res)
    return out


PROMPTS = {1: dict(points=[[40, 60]], labels=[1]), 2: dict(box=[100, 20, 140, 50]),
           3: dict(points=[[120, 90]], labels=[1])}
REFINE = (4, 1, dict(points=[[60, 75]], labels=[0]))


@pytest.mark.parametrize("mc_passes", [0, 3])
def test_batched_objects_equal_objects_tracked_one_by_one(model128, video, mc_passes):
    """With Monte-Carlo dropout too: every prompt drew new dropout masks from one generator, so an
    object's kept tokens depended on how many prompts the other objects got."""
    cfg, model = model128
    cfg = cfg.replace(mc_passes=mc_passes)
    frames = video[0][:10]
    together = _stream(StreamingTracker(cfg, model=model, return_logits=True), frames, PROMPTS, REFINE)
    for obj_id, kwargs in PROMPTS.items():
        alone = _stream(StreamingTracker(cfg, model=model, return_logits=True), frames,
                        {obj_id: kwargs}, REFINE)
        np.testing.assert_allclose(_logits(together, obj_id), _logits(alone, obj_id),
                                   atol=1e-4, rtol=0, err_msg=f"object {obj_id}")


def test_removing_an_object_leaves_the_others_as_if_it_never_was(model128, video):
    cfg, model = model128
    frames = video[0][:9]
    tracker = StreamingTracker(cfg, model=model, return_logits=True)
    first = _stream(tracker, frames[:4], PROMPTS)
    tracker.remove_object(2)
    assert [o.row for o in tracker.objects.values()] == [0, 1]
    rest = [tracker.track(f) for f in frames[4:]]
    ref = _stream(StreamingTracker(cfg, model=model, return_logits=True), frames,
                  {k: v for k, v in PROMPTS.items() if k != 2})
    for obj_id in (1, 3):
        np.testing.assert_allclose(_logits(first + rest, obj_id), _logits(ref, obj_id), atol=1e-4, rtol=0)
    assert rest[-1].object_ids == [1, 3]


@pytest.mark.parametrize("order", ["sorted", "reversed"])
def test_the_order_of_the_kept_tokens_changes_nothing(model128, video, monkeypatch, order):
    """top_k_indices hands back the kept tokens unsorted (a sort is two GPU kernels a frame): the
    queries' attention, the scatter back and the stored memory go by index, not by position."""
    from fastsam2_ros.core import pruned_predictor, router

    cfg, model = model128
    frames = video[0][:8]
    plain = _stream(StreamingTracker(cfg, model=model, return_logits=True), frames, PROMPTS, REFINE)

    def reordered(scores, keep):
        idx = router.top_k_indices(scores, keep).sort(dim=-1).values
        return idx if order == "sorted" else idx.flip(-1)

    monkeypatch.setattr(pruned_predictor, "top_k_indices", reordered)
    other = _stream(StreamingTracker(cfg, model=model, return_logits=True), frames, PROMPTS, REFINE)
    for obj_id in PROMPTS:
        np.testing.assert_allclose(_logits(other, obj_id), _logits(plain, obj_id), atol=1e-4, rtol=0)
    assert [r.kept_tokens[1].sum() for r in other] == [r.kept_tokens[1].sum() for r in plain]
    assert all(np.array_equal(a.kept_tokens[1], b.kept_tokens[1]) for a, b in zip(other, plain))


class _OpCounter(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = collections.Counter()

    def __torch_dispatch__(self, func, types_, args=(), kwargs=None):
        self.ops[func.__name__.split(".")[0]] += 1
        return func(*args, **(kwargs or {}))


#: ops that read a device value on the host, or copy host data in: not allowed in a CUDA graph
HOST_SYNC_OPS = {"_local_scalar_dense", "item", "nonzero", "masked_select", "is_nonzero", "equal",
                 "lift_fresh", "lift_fresh_copy", "_assert_async", "unique", "_unique2"}


@pytest.mark.parametrize("keep,text", [(0.3, "red ball"), (1.0, None)])
def test_tracking_step_never_synchronises_with_the_host(video, keep, text):
    cfg = TrackerConfig(model_cfg="tiny", allow_random_weights=True, image_size=128, device="cpu",
                        keep_ratio=keep, mc_passes=2)
    model = build_predictor(cfg)
    tracker = StreamingTracker(cfg, model=model)
    frames = video[0]
    tracker.add_prompt(1, points=[[40, 60]], labels=[1], image=frames[0], text=text)
    tracker.add_prompt(2, box=[100, 20, 140, 50])
    counters = []
    real = model.track_objects

    def counted(*args, **kwargs):
        counters.append(_OpCounter())
        with counters[-1]:
            return real(*args, **kwargs)

    model.track_objects = counted
    for t in range(1, 4):
        tracker.track(frames[t])
    assert len(counters) == 3
    used = collections.Counter()
    for c in counters:
        used.update(c.ops)
    assert used["scaled_dot_product_attention"] > 0  # the spy saw the step
    assert not {op: n for op, n in used.items() if op in HOST_SYNC_OPS}


def test_mask_bits_round_trip_for_many_objects():
    g = torch.Generator().manual_seed(0)
    low = torch.randn(11, 1, 16, 16, generator=g) * 3
    bits = pack_mask_bits(low, (30, 41), 0.0)
    assert bits.dtype == torch.uint8 and bits.shape == (2, 30, 41)
    want = (F.interpolate(low, size=(30, 41), mode="bilinear", align_corners=False)[:, 0] > 0).numpy()
    ids = [5, 9, 1, 2, 3, 4, 6, 7, 8, 10, 11]
    masks = BitMasks(bits.numpy(), ids)
    assert list(masks) == ids and len(masks) == 11
    for i, obj_id in enumerate(ids):
        assert np.array_equal(masks[obj_id], want[i])
    as_dict = {o: want[i] for i, o in enumerate(ids)}
    stats = FrameStats()
    fast = FrameResult(0, masks, {}, stats)
    slow = FrameResult(0, as_dict, {}, stats)
    assert np.array_equal(fast.union_mask(), slow.union_mask())
    assert np.array_equal(fast.label_image(), slow.label_image())
    single = BitMasks(pack_mask_bits(low[:1], (30, 41), 0.0).numpy(), [7])
    assert single[7].dtype == np.bool_ and np.array_equal(single[7], want[0])


def _fake_model():
    return types.SimpleNamespace(memory_temporal_stride_for_eval=1, num_maskmem=7,
                                 max_obj_ptrs_in_encoder=16, image_size=64, mem_dim=64,
                                 hidden_dim=256)


def _unpacked(layout):
    from fastsam2_ros.core.memory_bank import unpack_layout

    return {k: v.tolist() for k, v in unpack_layout(layout.shape, layout.ints, layout.floats).items()}


def test_memory_bank_reads_what_sam2_reads():
    bank = MemoryBank(_fake_model(), max_objects=3, max_cond_frames=2, tokens_per_frame=5,
                      device=torch.device("cpu"), num_frames=2 ** 31 - 1)
    row = bank.add_row()
    feats, idx, score = torch.zeros(5, 64), torch.arange(5), torch.zeros(5)

    def prompt(t):
        bank.write_prompt(row, t, feats, idx, score, torch.zeros(256), torch.zeros(1, 16, 16),
                          torch.ones(1))

    prompt(0)
    for t in range(1, 10):
        bank.commit_tracked(t, slice(0, 1))
    lay = bank.layout(10, slice(0, 1))
    got = _unpacked(lay)
    # recent memories: frames 4..9 (oldest first), all stored; temporal slots 5..0
    assert [bank.ring_frames[row, p] for p in got["ring_order"]] == [4, 5, 6, 7, 8, 9]
    assert got["ring_valid"] == [[True] * 6]
    assert got["slot_tpos"] == [6, 5, 4, 3, 2, 1, 0]
    # pointers: the prompt (10 frames back), then frames 9..1; frames before 1 do not exist
    assert got["ptr_valid"] == [[True] + [True] * 9 + [False] * 6]
    np.testing.assert_allclose(got["ptr_pos"][0][:3], [10 / 15, 1 / 15, 2 / 15], rtol=1e-6)
    assert lay.masked  # pointer slots are still empty
    assert got["write_ring"] == [10 % 7] and got["write_ptr"] == [10 % 16]
    # eager steps leave the empty pointer slots out instead of masking them
    compact = bank.layout(10, slice(0, 1), compact=True)
    assert compact.shape.ptrs == 9 and compact.shape.ring == 6 and not compact.masked
    assert _unpacked(compact)["ptr_pos"][0] == got["ptr_pos"][0][:10]
    # a refinement on frame 10 (already tracked) reads frames 4..9 and becomes a conditioning frame
    bank.commit_tracked(10, slice(0, 1))
    refine = _unpacked(bank.layout(10, slice(0, 1)))
    assert refine["ring_valid"] == [[True] * 6]  # frame 10's own memory is not read
    prompt(10)
    after = _unpacked(bank.layout(11, slice(0, 1)))
    assert sorted(f for f in bank.cond_frames[row] if f != NO_FRAME) == [0, 10]
    # frame 10 is read as a conditioning frame, not as a recent one (though its ring slot holds
    # it); its pointer likewise
    assert [bank.ring_frames[row, p] for p in after["ring_order"]][-1] == 10
    assert after["ring_valid"] == [[True] * 5 + [False]]
    assert after["ptr_valid"][0][:3] == [True, True, False]
    # at most max_cond_frames (2) are read: the first prompt and the latest; the spare slot keeps
    # the one a frame's later clicks still read until tracking moves on
    prompt(12)
    assert sorted(bank.cond_frames[row]) == [0, 10, 12]  # (all three slots in use)

    def cond_read(t):
        got = _unpacked(bank.layout(t, slice(0, 1)))
        return sorted(bank.cond_frames[row][s] for s, ok in zip(got["cond_order"][0],
                                                                 got["cond_valid"][0]) if ok)

    assert cond_read(13) == [0, 12]
    # every click on frame 14 reads what the first one read, though it replaces frame 10
    assert cond_read(14) == [0, 12]
    prompt(14)
    assert sorted(bank.cond_frames[row]) == [0, 12, 14] and cond_read(14) == [0, 12]
    assert cond_read(15) == [0, 14]
    # prompted frames left out of the conditioning read (12 unread, 10 replaced) are read as
    # recent memories and pointers while recent, as sam2 reads "unselected" conditioning frames
    got = _unpacked(bank.layout(15, slice(0, 1)))
    recent = [bank.ring_frames[row, p] for p, ok in zip(got["ring_order"], got["ring_valid"][0])
              if ok]
    assert recent == [9, 10, 12]  # frames 11 and 13 were never tracked, 14 is read as conditioning
    ptr_frames = [15 - d for d, ok in enumerate(got["ptr_valid"][0][2:], start=1) if ok]
    assert ptr_frames == [12, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1]


def test_with_one_conditioning_frame_every_click_on_a_frame_reads_the_latest_prompt():
    bank = MemoryBank(_fake_model(), max_objects=1, max_cond_frames=1, tokens_per_frame=5,
                      device=torch.device("cpu"), num_frames=2 ** 31 - 1)
    row = bank.add_row()
    args = (torch.zeros(5, 64), torch.arange(5), torch.zeros(5), torch.zeros(256),
            torch.zeros(1, 16, 16), torch.ones(1))

    def cond_read(t):
        got = _unpacked(bank.layout(t, slice(0, 1)))
        return [bank.cond_frames[row][s] for s, ok in zip(got["cond_order"][0], got["cond_valid"][0])
                if ok]

    for t in (0, 3, 6):
        before = cond_read(t)
        bank.write_prompt(row, t, *args)
        assert cond_read(t) == before  # a second click on t reads the same
        assert cond_read(t + 1) == [t]  # the latest prompt, then
    assert sorted(f for f in bank.cond_frames[row] if f >= 0) == [3, 6]


def test_memory_bank_pads_mixed_objects_and_stays_unmasked_when_full():
    bank = MemoryBank(_fake_model(), max_objects=2, max_cond_frames=3, tokens_per_frame=4,
                      device=torch.device("cpu"), num_frames=2 ** 31 - 1)
    a, b = bank.add_row(), bank.add_row()
    args = (torch.zeros(4, 64), torch.arange(4), torch.zeros(4), torch.zeros(256),
            torch.zeros(1, 16, 16), torch.ones(1))
    bank.write_prompt(a, 0, *args)
    bank.write_prompt(b, 0, *args)
    bank.write_prompt(a, 1, *args)
    for t in range(2, 20):
        bank.commit_tracked(t, slice(0, 2))
    lay = bank.layout(20, slice(0, 2))
    got = _unpacked(lay)
    assert lay.shape.n_cond == 2 and got["cond_valid"] == [[True, True], [True, False]]
    assert lay.masked  # object b's second conditioning slot is padding
    bank.remove_row(a)
    full = bank.layout(20, slice(0, 1))
    assert full.shape.rows == 1 and full.shape.n_cond == 1 and not full.masked
    # few-frame clips read min(num_frames, 16) pointers, as SAM 2 does
    bank.set_num_frames(5)
    short = _unpacked(bank.layout(20, slice(0, 1)))
    assert sum(short["ptr_valid"][0]) == 1 + 4
    np.testing.assert_allclose(short["ptr_pos"][0][1], 1 / 4, rtol=1e-6)


def test_keep_ratio_changes_mid_stream(model128, video):
    cfg, model = model128
    frames = video[0]
    tracker = StreamingTracker(cfg, model=model)
    tracker.add_prompt(1, points=[[40, 60]], labels=[1], image=frames[0])
    sizes = []
    for t, keep in zip(range(1, 13), [0.3] * 3 + [0.5] * 3 + [1.0] * 3 + [0.1] * 3):
        tracker.set_keep_ratio(keep)
        res = tracker.track(frames[t])
        assert res.stats.tokens_kept == {1: max(1, round(keep * 64))}
        assert tracker.bank.k == max(1, round(keep * 64))
        sizes.append(res.stats.bank_bytes)
        assert res.masks[1].shape == frames[0].shape[:2]
    assert sizes[0] < sizes[3] < sizes[6] and sizes[9] < sizes[0]


def test_points_on_one_frame_are_capped(model128, video):
    cfg, model = model128
    frames = video[0]
    tracker = StreamingTracker(cfg, model=model)
    tracker.add_prompt(1, points=[[40, 60]] * 60, labels=[1] * 60, image=frames[0])
    for _ in range(4):
        tracker.add_prompt(1, points=[[41, 61]], labels=[1])
    with pytest.raises(InputError, match="at most 64"):
        tracker.add_prompt(1, points=[[42, 62]], labels=[0])
    tracker.track(frames[1])  # a new frame starts a new set of clicks
    tracker.add_prompt(1, points=[[42, 62]], labels=[0])


def test_bf16_autocast_text_start_clicks_and_tracking(video):
    """bf16 tensors reach every host conversion, as under CUDA autocast."""
    cfg = TrackerConfig(model_cfg="tiny", allow_random_weights=True, image_size=128, device="cpu",
                        keep_ratio=0.3, mc_passes=2, text_mode="clip_ridge", clip_refresh_interval=2)
    tracker = StreamingTracker(cfg)
    frames = video[0]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        res = tracker.add_prompt(3, text="the red ball", image=frames[0])
        assert res.stats.auto_prompted == [3]
        tracker.add_prompt(4, box=[100, 20, 140, 50], text="a green box")
        for t in range(1, 5):
            res = tracker.track(frames[t])
            assert set(res.masks) == {3, 4} and res.masks[3].dtype == np.bool_
        res = tracker.add_prompt(3, points=[[60, 75]], labels=[0])
        assert np.isfinite(list(res.scores.values())).all()
    assert tracker.objects[3].text_frame == 4  # clip_refresh_interval refitted the text map
    tracker.remove_object(3)  # outside the tracker's inference mode, with text buffers in the bank
    tracker.set_keep_ratio(0.5)
    tracker.reset()


def test_device_preprocessing_equals_sams_pil_loader(video):
    """Bit for bit, also for portrait, tiny and odd shapes (Pillow 13 picks the pass order per
    shape; each pass rounds to uint8 levels, so the order changes values). A float resize was off
    by one level on a few values in 10^5, which bf16 amplified to 1.2% IoU on SAM 2 large."""
    rng = np.random.default_rng(0)
    frames = list(video[0][:2]) + [rng.integers(0, 256, shape, dtype=np.uint8) for shape in
                                   ((150, 40, 3), (40, 150, 3), (1, 1, 3), (3, 2, 3), (97, 203, 3))]
    for image in frames:
        for size in (256, 128, 64, 7):
            want = preprocess_pil(image, size)
            got = preprocess_on_device(torch.from_numpy(image), size)[0]
            assert torch.equal(want, got), (image.shape, size)


def test_pil_bicubic_coefficients_are_normalised_fixed_point():
    """Each output's taps sum to 1.0 in PIL's fixed point (up to rounding of each tap), index
    inside the source, and unused taps weigh nothing."""
    for in_size, out_size in ((960, 1024), (1920, 1024), (7, 300), (300, 7), (1, 5)):
        index, weights = pil_bicubic_coefficients(in_size, out_size)
        assert index.min() >= 0 and index.max() < in_size
        sums = weights.astype(np.int64).sum(1)
        assert np.abs(sums - (1 << 22)).max() <= weights.shape[1]


def test_pipelined_submit_equals_track(model128, video):
    cfg, model = model128
    frames = video[0][:8]
    sync = StreamingTracker(cfg, model=model)
    sync.add_prompt(1, points=[[40, 60]], labels=[1], image=frames[0])
    want = [sync.track(f) for f in frames[1:]]
    pipe = StreamingTracker(cfg, model=model)
    pipe.add_prompt(1, points=[[40, 60]], labels=[1], image=frames[0])
    pending = [pipe.submit(f) for f in frames[1:3]]
    got = [p.result() for p in pending] + [pipe.track(f) for f in frames[3:]]
    for a, b in zip(want, got):
        assert a.frame_index == b.frame_index and np.array_equal(a.masks[1], b.masks[1])
    late = pipe.submit(frames[0])
    pipe.submit(frames[1]).result()  # builds the earlier frame's result first, and keeps it
    assert late.result().frame_index == late.frame_index == 8


def test_modules_that_torch_compile_compiles_trace_as_whole_graphs(video, monkeypatch):
    """torch_compile=all compiles these with fullgraph=True; dynamo's tracing (the eager backend:
    no code generation) must see no graph break in any of them, with masks and bf16 autocast."""
    from fastsam2_ros.core import models, pruned_attention

    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="eager"))
    cfg = TrackerConfig(model_cfg="tiny", allow_random_weights=True, image_size=64, device="cpu",
                        keep_ratio=0.3, mc_passes=2)
    model = build_predictor(cfg)
    assert set(models.COMPILE_TARGETS) == set(COMPILE_MODES) - {"none"}
    wrapped = {name: models.CompiledOrEager(name, getattr(model, name).forward)
               for name in models.COMPILE_TARGETS["all"]}
    for name, fn in wrapped.items():
        getattr(model, name).forward = fn
    model.compiled_memory_attention = models.CompiledOrEager(
        "memory_attention", pruned_attention.pruned_memory_attention)
    model.compiled_router = models.CompiledOrEager("router", router_scores)
    model.compiled_memory_tokens = models.CompiledOrEager("memory_tokens", memory_token_scores)
    calls, chosen = [], []
    model.compiled_router.compiled = spy(model.compiled_router.compiled, calls)
    model.compiled_memory_tokens.compiled = spy(model.compiled_memory_tokens.compiled, chosen)
    tracker = StreamingTracker(cfg, model=model)
    # the dropout masks' generator as on CUDA (the default one: a compiled router runs only there)
    monkeypatch.setattr(tracker.router, "_generator", lambda device, frame_idx=None: None)
    frames = video[0]
    with torch.autocast("cpu", dtype=torch.bfloat16, cache_enabled=False):
        tracker.add_prompt(1, points=[[40, 60]], labels=[1], image=frames[0])
        tracker.add_prompt(2, box=[100, 20, 140, 50])
        tracker.track(frames[1])
    assert models.compile_errors(model) == {}
    assert calls and all(kwargs["frame_idx"] is None for _, kwargs in calls)  # no int to specialise on
    assert chosen


def test_keep_one_never_runs_the_compiled_router(video):
    """torch_compile router compiles only what pruned frames run: at keep 1.0 (dense, equal to the
    official predictor) neither the router nor the memory-token choice goes through it."""
    from fastsam2_ros.core import models

    cfg = TrackerConfig(model_cfg="tiny", allow_random_weights=True, image_size=64, device="cpu",
                        keep_ratio=1.0, mc_passes=0)
    model = build_predictor(cfg)

    def refuse(*_, **__):
        raise AssertionError("a dense step ran compiled router code")

    model.compiled_router = models.CompiledOrEager("router", router_scores)
    model.compiled_memory_tokens = models.CompiledOrEager("memory_tokens", memory_token_scores)
    model.compiled_router.compiled = model.compiled_memory_tokens.compiled = refuse
    tracker = StreamingTracker(cfg, model=model)
    tracker.add_prompt(1, points=[[40, 60]], labels=[1], image=video[0][0])
    for frame in video[0][1:4]:
        tracker.track(frame)
    assert models.compile_errors(model) == {}


#: ops that only view or allocate (no kernel)
VIEW_OPS = {"view", "reshape", "permute", "unsqueeze", "squeeze", "numpy_T", "t", "transpose",
            "select", "slice", "flatten", "expand", "as_strided", "alias", "detach", "empty"}


def test_the_eager_router_stays_a_few_dozen_kernels():
    """A captured step pays per kernel, and the router is what pruning adds to it (0.39 ms of
    kernels, ~85 of them, on an H200 before this bound): its scores at 1024 px (64x64 tokens, five
    Monte-Carlo passes, a previous mask) dispatch at most 46 ops that are not views (57 before
    logsumexp, standardize, minmax and the dropout were written for fewer kernels)."""
    from fastsam2_ros.core.router import TokenRouter

    cfg = TrackerConfig(model_cfg="tiny", allow_random_weights=True, image_size=64, device="cpu")
    layer = build_predictor(cfg).memory_attention.layers[0]
    tokens, prev = torch.randn(64 * 64, 256), torch.randn(1, 1, 256, 256)
    with torch.inference_mode(), _OpCounter() as counter:
        router_scores(TokenRouter(256, 5, 0.1), tokens, (64, 64), layer, None, prev, 1, frame_idx=2)
    working = {op: n for op, n in counter.ops.items() if op not in VIEW_OPS}
    assert sum(working.values()) <= 46, working


def test_device_preprocessing_takes_two_kernels_a_tap():
    """The device resize runs inside every captured step: each tap of a pass is a gather and one
    fused multiply-add, and the normalisation one lookup, so a 960x540 camera frame to 1024 px
    (5 taps per axis) takes at most 29 ops that are not views and a 1920x1080 frame (9 and 7) 41
    (41 and 59 when each tap was a gather, a multiply and an add, and the mean and std two more
    full-frame kernels)."""
    for height, width in ((540, 960), (1080, 1920)):
        taps = sum(pil_bicubic_coefficients(n, 1024)[0].shape[1] for n in (height, width))
        frame = torch.zeros((height, width, 3), dtype=torch.uint8)
        preprocess_on_device(frame, 1024)  # (taps, pass order and constants made before counting)
        with torch.inference_mode(), _OpCounter() as counter:
            preprocess_on_device(frame, 1024)
        working = {op: n for op, n in counter.ops.items() if op not in VIEW_OPS}
        assert sum(working.values()) <= 2 * taps + 9, ((height, width), working)


def spy(fn, calls: list):
    """``fn``, recording each call's arguments in ``calls``."""
    def called(*args, **kwargs):
        calls.append((args, kwargs))
        return fn(*args, **kwargs)
    return called


@pytest.mark.skipif(shutil.which("c++") is None and shutil.which("g++") is None,
                    reason="Inductor's CPU code needs a C++ compiler")
def test_the_compiled_router_keeps_the_tokens_the_eager_one_keeps(tmp_path, monkeypatch):
    """torch_compile router / all fuse the router's scoring (dozens of kernels; Inductor, here its CPU
    code): the same scores to float rounding and so the same keep sets, with and without text
    rows and a trained MLP (dropout off: compiled code draws its own random numbers); the same
    for the scores that pick a pruned frame's stored tokens. It never touches keep 1.0."""
    from fastsam2_ros.core.models import CompiledOrEager
    from fastsam2_ros.core.pruned_predictor import choose_memory_tokens
    from fastsam2_ros.core.router import RouterMLP, TokenRouter, top_k_indices
    from fastsam2_ros.core.text_relevance import TextRows

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))
    cfg = TrackerConfig(model_cfg="tiny", allow_random_weights=True, image_size=64, device="cpu")
    layer = build_predictor(cfg).memory_attention.layers[0]
    torch.manual_seed(0)
    rows, channels, grid, clip_dim = 2, 256, (32, 32), 16
    tokens = torch.randn(grid[0] * grid[1], channels)
    prev = torch.randn(rows, 1, 128, 128)
    text = TextRows(weight=torch.randn(rows, channels, clip_dim), bias=torch.randn(rows, clip_dim),
                    mean=torch.randn(rows, channels), embedding=torch.randn(rows, clip_dim),
                    vector=torch.randn(rows, channels), has_text=torch.tensor([1.0, 0.0]))
    for router, text_rows in ((TokenRouter(channels, mc_passes=0), None),
                              (TokenRouter(channels, mc_passes=0, mlp=RouterMLP(channels).eval()), text)):
        compiled = CompiledOrEager("router", router_scores)
        with torch.inference_mode():
            eager = router_scores(router, tokens, grid, layer, text_rows, prev, rows)
            fused = compiled(router, tokens, grid, layer, text_rows, prev, rows)
        assert compiled.error is None
        assert torch.allclose(fused, eager, atol=1e-4, rtol=1e-4)
        assert torch.equal(top_k_indices(fused, 307).sort(-1).values,  # the same keep sets
                           top_k_indices(eager, 307).sort(-1).values)
    maskmem, high_res = torch.randn(rows, 64, *grid), torch.randn(rows, 1, 128, 128)
    compiled = CompiledOrEager("memory_tokens", memory_token_scores)
    eager = memory_token_scores(high_res, grid, fused, 2.0)
    score = compiled(high_res, grid, fused, 2.0)
    assert compiled.error is None and torch.allclose(score, eager, atol=1e-6)
    for a, b in zip(choose_memory_tokens(maskmem, score, 307), choose_memory_tokens(maskmem, eager, 307)):
        assert torch.allclose(a.float(), b.float(), atol=1e-6)


def test_a_live_keep_ratio_change_recompiles_nothing(video, monkeypatch):
    """The compiled router scores tokens; the keep ratio (a live parameter) only picks how many
    of them: top-k stays outside the compiled functions, so a change is no recompile (dynamo
    stops recompiling after 8 shapes; every keep ratio tried was one before)."""
    from fastsam2_ros.core import models

    compiled_calls = []

    def counting_backend(graph, example_inputs):
        compiled_calls.append(graph)
        return graph.forward

    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend=counting_backend))
    torch._dynamo.reset()
    cfg = TrackerConfig(model_cfg="tiny", allow_random_weights=True, image_size=64, device="cpu",
                        keep_ratio=0.3, mc_passes=0)
    model = build_predictor(cfg)
    model.compiled_router = models.CompiledOrEager("router", router_scores)
    model.compiled_memory_tokens = models.CompiledOrEager("memory_tokens", memory_token_scores)
    tracker = StreamingTracker(cfg, model=model)
    tracker.add_prompt(1, points=[[40, 60]], labels=[1], image=video[0][0])
    tracker.track(video[0][1])
    compiled = len(compiled_calls)
    assert compiled == 2  # the router's scores and the stored tokens' scores, once each
    kept = []
    for keep, frame in zip((0.5, 0.2, 0.1, 0.6, 0.3), video[0][2:7]):
        tracker.set_keep_ratio(keep)
        kept.append(tracker.track(frame).stats.tokens_kept[1])
    assert len(compiled_calls) == compiled and models.compile_errors(model) == {}
    assert kept == [8, 3, 2, 10, 5]  # (16 tokens at 64 px)


@pytest.mark.parametrize("blocker", ["file", "read_only"])
def test_an_unusable_compile_cache_dir_is_a_clear_error(tmp_path, blocker, monkeypatch):
    """compile_cache_dir is made before anything compiles: a path through a file, or a folder
    that cannot be written, is an InputError naming it (a bare OSError from mkdir before)."""
    from types import SimpleNamespace

    from fastsam2_ros.core import models
    from fastsam2_ros.core.models import compile_modules

    if blocker == "file":
        (tmp_path / "f").write_text("x")
        folder = tmp_path / "f" / "cache"
    else:
        folder = tmp_path / "ro"
        folder.mkdir()
        folder.chmod(0o500)
        real_access = models.os.access  # root may write anywhere: the folder reads as read-only
        monkeypatch.setattr(models.os, "access", lambda path, mode: False if Path(path) == folder
                            else real_access(path, mode))
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    stand_in = SimpleNamespace(device=torch.device("cuda"))  # compile_modules does nothing off CUDA
    with pytest.raises(InputError, match="compile_cache_dir .*writable folder"):
        compile_modules(stand_in, "encoder", str(folder))
    assert "TORCHINDUCTOR_CACHE_DIR" not in os.environ


def test_the_compile_cache_checked_is_the_one_inductor_will_use(tmp_path, monkeypatch):
    """With compile_cache_dir empty a TORCHINDUCTOR_CACHE_DIR the user set is used: it is the
    folder checked (an unusable one was a bare NotADirectoryError from torch later), and an
    unusable default under HOME is then no error (it named a compile_cache_dir nobody set)."""
    from types import SimpleNamespace

    from fastsam2_ros.core.models import compile_modules

    (tmp_path / "file").write_text("x")
    monkeypatch.setenv("HOME", str(tmp_path / "file"))  # e.g. a service user's HOME
    stand_in = SimpleNamespace(device=torch.device("cuda"), image_encoder=SimpleNamespace(
        forward=lambda x: x))
    usable = tmp_path / "inductor"
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(usable))
    compile_modules(stand_in, "encoder", "")
    assert usable.is_dir() and os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(usable)
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "file" / "cache"))
    with pytest.raises(InputError, match="TORCHINDUCTOR_CACHE_DIR .*cannot be made"):
        compile_modules(stand_in, "encoder", "")
    given = tmp_path / "given"  # compile_cache_dir wins over the environment
    compile_modules(stand_in, "encoder", str(given))
    assert given.is_dir() and os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(given)


def test_a_failing_compile_falls_back_to_eager(caplog):
    from fastsam2_ros.core.models import CompiledOrEager

    wrapped = CompiledOrEager("toy", lambda x: x + 1)
    wrapped.compiled = lambda x: (_ for _ in ()).throw(RuntimeError("inductor exploded"))
    assert wrapped(torch.ones(2)).tolist() == [2.0, 2.0]
    assert "inductor exploded" in wrapped.error and "runs eagerly" in caplog.text
    assert wrapped(torch.zeros(1)).tolist() == [1.0]  # and stays eager


def test_shapes_beyond_the_recompile_limit_run_eagerly_and_the_compiled_ones_stay(monkeypatch):
    """Each object count, conditioning-slot count or prompt step's memory length is a new shape;
    after dynamo's 8 recompiles the wrapper took the refusal for a failed compile and ran the
    module eagerly for good, also for the per-frame shapes it had compiled."""
    import torch._dynamo

    from fastsam2_ros.core.models import CompiledOrEager

    compiled_runs = []

    def counting_backend(gm, example_inputs):
        def run(*args):
            compiled_runs.append(tuple(args[0].shape))
            return gm.forward(*args)
        return run

    torch._dynamo.reset()
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend=counting_backend))
    wrapped = CompiledOrEager("toy", lambda x: x * 2 + 1)
    try:
        for n in range(1, 13):  # 12 shapes, beyond the limit of 8
            assert wrapped(torch.ones(n)).tolist() == [3.0] * n
        assert wrapped.error is None and wrapped.eager_calls > 0
        before = len(compiled_runs)
        assert wrapped(torch.ones(1)).tolist() == [3.0]  # a shape compiled before the limit
        assert compiled_runs[before:] == [(1,)]
        # a shape refused once goes straight to the eager function: dynamo's refusal cost ~4 ms
        # and a warning at every call
        refused = []
        compiled = wrapped.compiled
        wrapped.compiled = lambda *a, **k: refused.append(a[0].shape) or compiled(*a, **k)
        eager_before = wrapped.eager_calls
        for _ in range(3):
            assert wrapped(torch.ones(12)).tolist() == [3.0] * 12
        assert refused == [] and wrapped.eager_calls == eager_before + 3
        assert wrapped(torch.ones(1)).tolist() == [3.0] and refused == [(1,)]  # still compiled
    finally:
        torch._dynamo.reset()


def test_a_call_signature_tells_the_shapes_dynamo_specialises_on():
    from types import SimpleNamespace

    from fastsam2_ros.core.models import call_signature
    from fastsam2_ros.core.text_relevance import TextRows

    def rows(n):
        return TextRows(*[torch.zeros(n, 4)] * 5, has_text=torch.ones(n))

    module = SimpleNamespace()
    base = call_signature((module, torch.zeros(2, 3), rows(2), (4, 4), 7), {"frame_idx": None})
    assert base == call_signature((module, torch.ones(2, 3), rows(2), (4, 4), 7), {"frame_idx": None})
    for other in ((module, torch.zeros(2, 4), rows(2), (4, 4), 7),   # shape
                  (module, torch.zeros(2, 3, dtype=torch.float64), rows(2), (4, 4), 7),  # dtype
                  (module, torch.zeros(2, 3), rows(3), (4, 4), 7),  # a dataclass's tensors
                  (module, torch.zeros(2, 3), None, (4, 4), 7),  # no text
                  (SimpleNamespace(), torch.zeros(2, 3), rows(2), (4, 4), 7),  # another object
                  (module, torch.zeros(2, 3), rows(2), (4, 4), 8)):  # a value
        assert call_signature(other, {"frame_idx": None}) != base
    assert call_signature((module, torch.zeros(2, 3), rows(2), (4, 4), 7), {"frame_idx": 1}) != base
    with torch.inference_mode():
        assert call_signature((module, torch.zeros(2, 3), rows(2), (4, 4), 7), {"frame_idx": None}) != base


def test_release_compile_workers_stops_inductor_worker_processes(monkeypatch, tmp_path):
    """On CUDA every torch.compile wakes Inductor's worker pool (compile_fx), even when every
    kernel then comes from the cache; the pool is started the same way here, and released."""
    from torch._inductor import async_compile
    from torch._inductor import config as inductor_config

    from fastsam2_ros.core.models import release_compile_workers

    monkeypatch.setattr(inductor_config, "compile_threads", 2)  # a pool even on a 1-core runner
    sidecar_log = tmp_path / "sidecar.log"  # (Inductor sends the sidecar's output to /dev/null)
    monkeypatch.setattr(inductor_config, "worker_suppress_logging", False)
    monkeypatch.setattr(inductor_config, "torchinductor_worker_logpath", str(sidecar_log))
    # a pool an earlier test left behind (cached, perhaps quiesced or dead) is not the one to test
    async_compile.shutdown_compile_workers()

    def start_pool(what):
        async_compile.AsyncCompile.warm_pool()
        async_compile.AsyncCompile.wakeup()
        assert wait_for(lambda: len(compile_worker_processes()) >= 2, 180, step=0.2), \
            f"{what}: {inductor_pool_state(sidecar_log)}"

    try:
        start_pool("no worker pool started")
        assert release_compile_workers()
        assert wait_for(lambda: not compile_worker_processes(), 30, step=0.2)
        # a later compile (a new shape under torch_compile: all) gets a new pool
        start_pool("no new pool after release")
    finally:
        async_compile.shutdown_compile_workers()


def test_a_failing_worker_release_is_logged_not_raised(monkeypatch, caplog):
    from torch._inductor import async_compile

    from fastsam2_ros.core.models import release_compile_workers

    monkeypatch.setattr(async_compile, "shutdown_compile_workers",
                        lambda: (_ for _ in ()).throw(OSError("pipe closed")))
    assert release_compile_workers() is False
    assert "pipe closed" in caplog.text


@pytest.mark.parametrize("static_buffers", [True, False], ids=["graph-buffers", "eager"])
def test_tracker_releases_compile_workers_after_each_new_compiled_step(video, monkeypatch, static_buffers):
    """Released once per new step signature, only when modules are compiled, never per frame."""
    from fastsam2_ros.core import models
    from fastsam2_ros.core import tracker as tracker_module

    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="eager"))
    releases = []
    monkeypatch.setattr(tracker_module, "release_compile_workers", lambda: releases.append(1) or True)
    cfg = TrackerConfig(model_cfg="tiny", allow_random_weights=True, image_size=64, device="cpu",
                        keep_ratio=0.3, mc_passes=0)
    frames = [video[0][t % len(video[0])] for t in range(26)]  # eager steps settle after 16 pointers
    plain = StreamingTracker(cfg, model=build_predictor(cfg), static_buffers=static_buffers)
    plain.add_prompt(1, points=[[40, 60]], labels=[1], image=frames[0])
    for frame in frames[1:4]:
        plain.track(frame)
    assert plain.runner.new_steps >= 1 and releases == []  # nothing compiled: nothing to release

    model = build_predictor(cfg)
    model.image_encoder.forward = models.CompiledOrEager("image_encoder", model.image_encoder.forward)
    tracker = StreamingTracker(cfg, model=model, static_buffers=static_buffers)
    tracker.add_prompt(1, points=[[40, 60]], labels=[1], image=frames[0])
    tracker.track(frames[1])
    assert len(releases) == 1
    for frame in frames[2:20]:  # the bank fills up: its last new signatures appear
        tracker.track(frame)
    settled = len(releases)
    assert settled == tracker.runner.new_steps
    for frame in frames[20:25]:
        tracker.track(frame)
    assert len(releases) == settled  # steady state: no new step, no release
    tracker.add_prompt(2, box=[100, 20, 140, 50])
    tracker.track(frames[25])
    assert len(releases) == settled + 1  # two objects: a new step


def test_frames_before_any_prompt_are_not_preprocessed(model128, video):
    """An idle tracker (a node before its first prompt) skips the host preprocessing of frames."""
    cfg, model = model128
    tracker = StreamingTracker(cfg, model=model)
    staged = []
    stage = tracker.stager.stage
    tracker.stager.stage = lambda image: staged.append(image) or stage(image)
    frames = video[0]
    for frame in frames[:3]:
        assert tracker.track(frame).masks == {}
    assert staged == []
    tracker.add_prompt(1, points=[[40, 60]], labels=[1])  # the current frame, staged once now
    for frame in frames[3:5]:
        tracker.track(frame)
    assert len(staged) == 3  # (the tracker's own copies of the frames)
    assert all(np.array_equal(s, f) for s, f in zip(staged, frames[2:5]))


@pytest.mark.parametrize("preprocess", ["device", "pil"])
def test_staging_buffers_first_filled_by_a_prompt_take_later_frames(model128, video, preprocess):
    """The CUDA path's staging buffers (here unpinned, on the CPU) are first made when a prompt
    encodes its frame, under inference mode; they must take the next frames outside it. As
    inference tensors they refused the in-place copy: on a GPU every prompt-then-track failed."""
    cfg, model = model128
    cfg = dataclasses.replace(cfg, preprocess=preprocess)
    frames = video[0][:5]
    results = {}
    for buffered in (False, True):
        tracker = StreamingTracker(cfg, model=model, return_logits=True)
        tracker.stager = FrameStager(tracker.preprocess_mode, model.image_size, tracker.device,
                                     buffered=buffered)
        results[buffered] = _stream(tracker, frames, {1: PROMPTS[1], 2: PROMPTS[2]})
        assert len(tracker.stager._buffers) == (1 if buffered else 0)
    for plain, staged in zip(results[False], results[True]):
        for obj_id in (1, 2):
            np.testing.assert_array_equal(staged.logits[obj_id], plain.logits[obj_id])


def test_staging_a_read_only_frame_does_not_warn():
    """A ROS message's data is a read-only array: the CUDA path copies it into its buffer without
    a tensor view of it, over which torch warns once per process of 'undefined behavior'. In a
    fresh interpreter, since torch warns only once."""
    code = ("import warnings, numpy as np, torch\n"
            "from fastsam2_ros.core.preprocess import FrameStager\n"
            "frame = np.arange(6 * 8 * 3, dtype=np.uint8).reshape(6, 8, 3)\n"
            "frame.setflags(write=False)\n"
            "stager = FrameStager('device', 16, torch.device('cpu'), buffered=True)\n"
            "with warnings.catch_warnings():\n"
            "    warnings.simplefilter('error')\n"
            "    staged = stager.stage(frame)\n"
            "assert np.array_equal(staged.numpy(), frame)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_steps_and_preprocessing_caches_are_bounded_over_changing_frame_sizes():
    """A step's signature holds the frame size: a camera whose size kept changing added a step
    (on CUDA a captured graph with its memory), resize taps and a pass order per size, forever."""
    from fastsam2_ros.core import preprocess
    from fastsam2_ros.core.step_runner import MAX_STEPS, StepRunner

    runner = StepRunner(torch.device("cpu"), use_graphs=False, static_buffers=True)
    step = lambda x: {"y": x + 1}  # noqa: E731
    for size in range(MAX_STEPS + 40):
        out = runner.run(("step", size), step, {"x": torch.zeros(2)})
        assert out["y"].tolist() == [1.0, 1.0]
    assert len(runner._entries) == MAX_STEPS and runner.new_steps == MAX_STEPS + 40
    assert ("step", MAX_STEPS + 39) in runner._entries and ("step", 0) not in runner._entries
    runner.run(("step", 40), step, {"x": torch.zeros(2)})  # used: it becomes the newest
    runner.run(("step", 0), step, {"x": torch.zeros(2)})  # a new one: the oldest unused goes
    assert ("step", 40) in runner._entries and ("step", 41) not in runner._entries
    eager = StepRunner(torch.device("cpu"), use_graphs=False)
    for size in range(MAX_STEPS + 10):
        eager.run(("eager", size), step, {"x": torch.zeros(2)})
    assert len(eager._eager_keys) == MAX_STEPS
    preprocess.pil_width_first.cache_clear()
    for w in range(20, 20 + 3 * preprocess.SIZES_KEPT):
        preprocess.resize_like_pil(torch.zeros((12, w, 3), dtype=torch.uint8), 16)
    assert preprocess.pil_width_first.cache_info().currsize == preprocess.SIZES_KEPT
    assert preprocess._device_coefficients.cache_info().currsize <= 2 * preprocess.SIZES_KEPT


class _FakeCudaGraphs:
    """torch.cuda's stream and graph calls that StepRunner makes, on the CPU: the "graph" runs
    nothing on replay and keeps its capture's outputs, as a CUDA graph keeps its buffers."""

    class Stream:
        def __init__(self, *a, **k):
            pass

        def wait_stream(self, other):
            pass

    class CUDAGraph:
        def replay(self):
            pass

    @staticmethod
    def install(monkeypatch):
        fake = _FakeCudaGraphs
        monkeypatch.setattr(torch.cuda, "Stream", fake.Stream)
        monkeypatch.setattr(torch.cuda, "stream", lambda s: contextlib.nullcontext())
        monkeypatch.setattr(torch.cuda, "current_stream", lambda *a: fake.Stream())
        monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: None)
        monkeypatch.setattr(torch.cuda, "CUDAGraph", fake.CUDAGraph)
        monkeypatch.setattr(torch.cuda, "graph", lambda g, **k: contextlib.nullcontext())


def test_a_captured_step_keeps_the_resize_taps_it_reads(monkeypatch):
    """A graph reads the taps by address, but the taps' cache keeps 8 frame sizes and the step
    cache 64 steps: after 9 sizes the first size's graph would have read freed memory."""
    import gc
    import weakref

    from fastsam2_ros.core import preprocess
    from fastsam2_ros.core.step_runner import StepRunner

    _FakeCudaGraphs.install(monkeypatch)
    runner = StepRunner(torch.device("cpu"), use_graphs=False, static_buffers=True)
    runner.use_graphs = True  # the capture path, with the fake graphs above
    step = lambda frame: {"x": preprocess.resize_like_pil(frame, 16)}  # noqa: E731
    sizes = [(100 + i, 20 + i) for i in range(preprocess.SIZES_KEPT + 2)]  # 20 taps
    first = sizes[0]
    runner.run(("step", first), step, {"frame": torch.zeros((*first, 3), dtype=torch.uint8)})
    assert len(runner) == 1 and not runner.failures
    taps = [weakref.ref(t) for n in (first[1], first[0])
            for t in preprocess._device_coefficients(n, 16, "cpu")]
    for size in sizes[1:]:
        runner.run(("step", size), step, {"frame": torch.zeros((*size, 3), dtype=torch.uint8)})
    gc.collect()
    assert ("step", first) in runner._entries  # its graph would be replayed by the next frame
    assert all(ref() is not None for ref in taps)
    runner.clear()  # the graphs go, and with them what they kept
    gc.collect()
    assert not any(ref() is not None for ref in taps)


def test_the_runner_says_whether_a_step_was_replayed_or_ran_eagerly(monkeypatch):
    """A signature whose capture failed runs eagerly though graphs are on: the frame's step_mode
    said "cuda_graph" for it (a replayed captured step, with no stage times)."""
    from fastsam2_ros.core.step_runner import StepRunner

    _FakeCudaGraphs.install(monkeypatch)
    runner = StepRunner(torch.device("cpu"), use_graphs=False, static_buffers=True)
    runner.use_graphs = True
    step = lambda x: {"y": x + 1}  # noqa: E731
    runner.run("ok", step, {"x": torch.zeros(2)})
    assert runner.last_mode == "cuda_graph"

    def fail(*a, **k):
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(runner, "_capture", fail)
    out = runner.run("fails", step, {"x": torch.ones(2)})
    assert runner.failures and runner.last_mode == "eager" and out["y"].tolist() == [2.0, 2.0]
    runner.run("ok", step, {"x": torch.zeros(2)})
    assert runner.last_mode == "cuda_graph"
    eager = StepRunner(torch.device("cpu"), use_graphs=False)
    assert eager.last_mode == "eager"
    eager.run("k", step, {"x": torch.zeros(2)})
    assert eager.last_mode == "eager"


def test_hole_filling_gives_way_to_captured_steps(monkeypatch, caplog):
    """With sam2's CUDA extension installed the model kept fill_hole_area 8, and the tracker then
    turned cuda_graphs off without a word: the whole captured fast path was gone."""
    from fastsam2_ros.core import models

    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    cfg = TrackerConfig(model_cfg="tiny", allow_random_weights=True)
    monkeypatch.setattr(models, "_fill_holes_available", lambda: True)  # the extension, on CUDA
    with caplog.at_level("INFO"):
        assert not models.keeps_hole_filling(cfg, models.PRUNED_PREDICTOR_TARGET, cuda)
    assert "cannot be captured" in caplog.text
    assert models.keeps_hole_filling(cfg.replace(cuda_graphs=False), models.PRUNED_PREDICTOR_TARGET, cuda)
    assert models.keeps_hole_filling(cfg, None, cuda)  # the official predictor fills holes as sam2 does
    monkeypatch.setattr(models, "_fill_holes_available", lambda: False)
    assert not models.keeps_hole_filling(cfg, None, cpu)


@pytest.mark.parametrize("static_buffers", [True, False], ids=["graph-buffers", "eager"])
def test_a_tracked_frame_says_whether_it_read_a_full_memory_bank(video, static_buffers):
    """The bench splits a clip at it: while the bank fills, the captured step's attention takes a
    key mask (on the H200 dense took 14.7 ms on frames 1-15 and 11.4 ms after). A frame reads a
    full bank once its pointer slots are full (16 pointers: frame 16 for a prompt on frame 0),
    whether or not its own (eager, compact) layout leaves the empty slots out; a second object
    prompted later fills its slots later, and until then the bank is not full for the batch; a
    keep ratio that grows pads the stored slots (their tokens are masked) until a new prompt."""
    cfg = TrackerConfig(model_cfg="tiny", allow_random_weights=True, image_size=64, device="cpu",
                        keep_ratio=0.3, mc_passes=0)
    model = build_predictor(cfg)
    frames = [video[0][t % len(video[0])] for t in range(40)]
    tracker = StreamingTracker(cfg, model=model, static_buffers=static_buffers)
    first = tracker.add_prompt(1, points=[[40, 60]], labels=[1], image=frames[0])
    assert first.stats.bank_full is False  # a prompt's result does not say
    full = [tracker.track(frame).stats.bank_full for frame in frames[1:20]]
    assert full == [False] * 15 + [True] * 4, full
    tracker.add_prompt(2, points=[[20, 20]], labels=[1])  # on frame 19
    later = [tracker.track(frame).stats.bank_full for frame in frames[20:36]]
    assert later == [False] * 15 + [True], later  # object 2's pointers: full on frame 35
    tracker.set_keep_ratio(0.6)
    grown = [tracker.track(frame).stats.bank_full for frame in frames[36:40]]
    assert grown == [False] * 4


def test_compile_errors_and_uses_compiled_modules_see_the_compiled_router(monkeypatch):
    """The compiled functions put on the predictor (not modules' forwards) count: a router whose
    compile failed is reported, and a model with only them compiled is a compiled one."""
    from fastsam2_ros.core import models

    monkeypatch.setattr(torch, "compile", lambda fn, **_: fn)
    model = build_predictor(TrackerConfig(model_cfg="tiny", allow_random_weights=True,
                                          image_size=64, device="cpu"))
    assert not models.uses_compiled_modules(model)
    model.compiled_router = models.CompiledOrEager("router", lambda x: x + 1)
    assert models.uses_compiled_modules(model) and models.compile_errors(model) == {}

    def broken(x):
        raise RuntimeError("inductor failed")

    model.compiled_router.compiled = broken
    assert model.compiled_router(1) == 2  # fell back to the eager function
    assert models.compile_errors(model) == {"router": "RuntimeError: inductor failed"}

"""Token pruning: gathered-RoPE memory attention, token counts, bounded memory bank, router."""

import logging

import numpy as np
import pytest
import torch

from fastsam2_ros.core import TrackerConfig
from fastsam2_ros.core import pruned_predictor
from fastsam2_ros.core.models import build_predictor
from fastsam2_ros.core import pruned_attention
from fastsam2_ros.core.pruned_attention import pruned_memory_attention
from fastsam2_ros.core.router import (ROUTER_FORMAT, RouterMLP, TokenRouter, load_router, num_kept,
                                      router_inputs, router_setting_mismatches, save_router)
from fastsam2_ros.core.errors import CheckpointError, InputError
from fastsam2_ros.core.tracker import StreamingTracker


@pytest.fixture(scope="module")
def model128():
    cfg = TrackerConfig(model_cfg="tiny", allow_random_weights=True, image_size=128, device="cpu")
    return cfg, build_predictor(cfg)


def _random_memory(model, hw, frames, ptr_tokens, seed=0):
    """Batch-first [1, N, C] current tokens and [1, M + P, C_mem] memory."""
    g = torch.Generator().manual_seed(seed)
    n = hw * hw
    curr = torch.randn(1, n, model.hidden_dim, generator=g)
    curr_pos = torch.randn(1, n, model.hidden_dim, generator=g)
    memory = torch.randn(1, frames * n + ptr_tokens, model.mem_dim, generator=g)
    memory_pos = torch.randn(1, frames * n + ptr_tokens, model.mem_dim, generator=g)
    return curr, curr_pos, memory, memory_pos


def _seq_first(x):
    return x.transpose(0, 1)


def test_gathered_rope_attention_equals_stock_module_at_full_retention(model128):
    _, model = model128
    hw, frames, ptrs = 8, 3, 8
    curr, curr_pos, memory, memory_pos = _random_memory(model, hw, frames, ptrs)
    with torch.inference_mode():
        stock = model.memory_attention(curr=[_seq_first(curr)], curr_pos=[_seq_first(curr_pos)],
                                       memory=_seq_first(memory), memory_pos=_seq_first(memory_pos),
                                       num_obj_ptr_tokens=ptrs)
        idx = torch.arange(hw * hw)[None]
        ours = pruned_memory_attention(model.memory_attention, curr, curr_pos, memory, memory_pos,
                                       idx, idx.repeat(1, frames), (hw, hw), num_obj_ptr_tokens=ptrs)
    torch.testing.assert_close(_seq_first(ours), stock, atol=1e-5, rtol=1e-5)


def test_key_mask_equals_leaving_the_padding_out(model128):
    """Padded memory slots with a False key mask give what attention over the real tokens gives;
    two objects in one batch give what each gives alone."""
    _, model = model128
    hw, ptrs = 8, 4
    n = hw * hw
    curr, curr_pos, memory, memory_pos = _random_memory(model, hw, 3, ptrs, seed=5)
    idx = torch.arange(n)[None]
    with torch.inference_mode():
        compact = pruned_memory_attention(model.memory_attention, curr, curr_pos,
                                          memory[:, 2 * n:], memory_pos[:, 2 * n:], idx, idx, (hw, hw), ptrs)
        mask = torch.ones(1, 3 * n + ptrs, dtype=torch.bool)
        mask[:, :2 * n] = False  # two padded memory frames
        padded = pruned_memory_attention(model.memory_attention, curr, curr_pos, memory, memory_pos,
                                         idx, idx.repeat(1, 3), (hw, hw), ptrs, key_mask=mask)
        other = pruned_memory_attention(model.memory_attention, curr.flip(1), curr_pos, memory,
                                        memory_pos, idx, idx.repeat(1, 3), (hw, hw), ptrs)
        both = pruned_memory_attention(
            model.memory_attention, torch.cat([curr, curr.flip(1)]), curr_pos.expand(2, -1, -1),
            memory.expand(2, -1, -1), memory_pos.expand(2, -1, -1), idx.expand(2, -1),
            idx.repeat(1, 3).expand(2, -1), (hw, hw), ptrs,
            key_mask=torch.cat([mask, torch.ones_like(mask)]))
    torch.testing.assert_close(padded, compact, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(both, torch.cat([compact, other]), atol=1e-5, rtol=1e-5)


def test_sdpa_preference_puts_the_chosen_kernel_first_and_restores_torchs_order():
    """attention_backend's names are ATTENTION_BACKENDS (one list, in config) and each puts its
    kernel first with every other kernel still enabled after it (flash under a key mask needs one);
    torch's order and flags come back afterwards; auto changes nothing."""
    from torch.nn.attention import SDPBackend
    from fastsam2_ros.core.config import ATTENTION_BACKENDS

    assert set(ATTENTION_BACKENDS) == set(pruned_attention.SDPA_KERNELS) | {"auto"}

    def state():
        return (tuple(torch._C._get_sdp_priority_order()), torch.backends.cuda.flash_sdp_enabled(),
                torch.backends.cuda.math_sdp_enabled(), torch.backends.cuda.mem_efficient_sdp_enabled(),
                torch.backends.cuda.cudnn_sdp_enabled())

    before = state()
    for name, kernel in pruned_attention.SDPA_KERNELS.items():
        with pruned_attention.sdpa_preference(name):
            order, *enabled = state()
            assert order[0] == int(kernel) and all(enabled), name
        assert state() == before, name
    with pruned_attention.sdpa_preference("auto"):
        assert state() == before
    assert before[0][0] != int(SDPBackend.MATH)  # (so putting math first is a change)


def test_memory_attention_is_the_same_under_every_backend_with_and_without_a_key_mask(model128):
    """The kernel changes how memory attention runs, not what it computes (float32 rounding);
    with a key mask a kernel that takes none falls back, no error."""
    _, model = model128
    hw, frames, ptrs = 8, 3, 8
    curr, curr_pos, memory, memory_pos = _random_memory(model, hw, frames, ptrs, seed=2)
    idx = torch.arange(hw * hw)[None]
    args = (model.memory_attention, curr, curr_pos, memory, memory_pos, idx, idx.repeat(1, frames),
            (hw, hw), ptrs)
    mask = torch.ones(1, frames * hw * hw + ptrs, dtype=torch.bool)
    mask[:, :hw * hw] = False
    with torch.inference_mode():
        want = pruned_memory_attention(*args)
        want_masked = pruned_memory_attention(*args, key_mask=mask)
        assert not torch.allclose(want, want_masked, atol=1e-4)  # (the mask matters)
        for name in pruned_attention.SDPA_KERNELS:
            with pruned_attention.sdpa_preference(name):
                torch.testing.assert_close(pruned_memory_attention(*args), want, atol=1e-5, rtol=1e-5)
                torch.testing.assert_close(pruned_memory_attention(*args, key_mask=mask), want_masked,
                                           atol=1e-5, rtol=1e-5)


def test_a_tracker_runs_memory_attention_with_its_backend_first(model128, video, monkeypatch):
    """Every sdpa call of the tracker's memory attention runs with attention_backend's kernel
    first in torch's order, and the masks are those of another kernel (to float rounding at the
    threshold) at keep 1.0 and 0.3; an unknown name is refused."""
    cfg, model = model128
    frames, _, _ = video
    firsts = []  # the first kernel of torch's order at each of memory attention's attentions
    real = pruned_attention.rope_attention

    def spy(*args, **kwargs):
        firsts.append(torch._C._get_sdp_priority_order()[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(pruned_attention, "rope_attention", spy)
    for keep in (1.0, 0.3):
        masks = {}
        for name in ("flash", "math"):
            tracker = StreamingTracker(cfg.replace(keep_ratio=keep, attention_backend=name),
                                       model=model)
            tracker.add_prompt(1, points=[[40, 60]], labels=[1], image=frames[0])
            firsts.clear()
            masks[name] = [tracker.track(f).masks[1] for f in frames[1:8]]
            assert firsts and set(firsts) == {int(pruned_attention.SDPA_KERNELS[name])}, (keep, name)
        for a, b in zip(masks["flash"], masks["math"]):
            assert np.mean(a != b) < 1e-3, keep
    with pytest.raises(InputError, match="attention_backend"):
        cfg.replace(attention_backend="flash2")


def test_gathered_rope_attention_is_permutation_equivariant(model128):
    _, model = model128
    hw, frames, ptrs = 8, 2, 4
    curr, curr_pos, memory, memory_pos = _random_memory(model, hw, frames, ptrs, seed=1)
    n = hw * hw
    curr, curr_pos, memory, memory_pos = curr[0], curr_pos[0], memory[0], memory_pos[0]
    g = torch.Generator().manual_seed(3)
    q_idx = torch.randperm(n, generator=g)[:20]
    m_idx = torch.cat([torch.randperm(n, generator=g)[:15], torch.randperm(n, generator=g)[:10]])
    mem_rows = torch.cat([m_idx[:15], n + m_idx[15:], torch.arange(2 * n, 2 * n + ptrs)])
    mem, mem_pos = memory[mem_rows], memory_pos[mem_rows]

    def attend(q, m, mp_, qi, mi):
        return pruned_memory_attention(model.memory_attention, curr[q][None], curr_pos[q][None],
                                       m[None], mp_[None], qi[None], mi[None], (hw, hw), ptrs)[0]

    with torch.inference_mode():
        base = attend(q_idx, mem, mem_pos, q_idx, m_idx)
        qp = torch.randperm(20, generator=g)
        mp = torch.cat([torch.randperm(25, generator=g), torch.arange(25, 25 + ptrs)])
        perm = attend(q_idx[qp], mem[mp], mem_pos[mp], q_idx[qp], m_idx[mp[:25]])
    # permuting queries permutes outputs; permuting memory tokens changes nothing
    torch.testing.assert_close(perm, base[qp], atol=1e-5, rtol=1e-5)
    # and the result really depends on the positions: wrong angles give another answer
    with torch.inference_mode():
        shifted = attend(q_idx, mem, mem_pos, (q_idx + 1) % n, m_idx)
    assert not torch.allclose(shifted, base, atol=1e-4)


def test_pruned_token_counts_at_030(model128, video, monkeypatch):
    cfg, model = model128
    frames, _, _ = video
    calls = []
    real = pruned_predictor.pruned_memory_attention

    def spy(module, curr, curr_pos, memory, memory_pos, query_idx, memory_idx, grid_hw,
            num_obj_ptr_tokens=0, key_mask=None):
        valid = key_mask[0] if key_mask is not None else torch.ones(memory.shape[1], dtype=torch.bool)
        spatial = int(valid[:memory_idx.shape[1]].sum())
        calls.append((curr.shape[1], spatial, int(valid[memory_idx.shape[1]:].sum()), grid_hw))
        return real(module, curr, curr_pos, memory, memory_pos, query_idx, memory_idx, grid_hw,
                    num_obj_ptr_tokens, key_mask)

    monkeypatch.setattr(pruned_predictor, "pruned_memory_attention", spy)
    tracker = StreamingTracker(cfg.replace(keep_ratio=0.3), model=model)
    n = (128 // 16) ** 2
    k = num_kept(n, 0.3)
    res = tracker.add_prompt(1, points=[[40, 60]], labels=[1], image=frames[0])
    assert res.stats.tokens_kept == {1: n}  # the first frame has no memory attention
    for t in range(1, 10):
        res = tracker.track(frames[t])
        assert res.stats.tokens_kept == {1: k}
        assert res.stats.tokens_total == n
        assert res.stats.router_mode == "training_free"
        assert res.kept_tokens[1].shape == (8, 8) and res.kept_tokens[1].sum() == k
    assert len(calls) == 9
    for t, (q, spatial, ptr, grid) in enumerate(calls, start=1):
        stored = min(t, 7)  # conditioning frame + up to 6 previous frames (the rest is padding)
        assert q == k and grid == (8, 8)
        assert spatial == stored * k  # every stored frame holds exactly its k retained tokens
        assert ptr == min(t, 16) * 4  # pointers: 256-d split into 4 tokens of 64, never pruned
    # the bank stores k tokens per frame, not n
    bank = tracker.memory_bank_size()
    assert bank["tokens"] == bank["frames"] * k


def test_a_prompt_result_reports_the_tokens_the_bank_holds_for_the_frame(model128, video):
    """A prompt's result had no kept-token grids (kept_tokens == {}), so an overlay of the
    republished frame lost the pruning view. It reports what the bank holds for the current
    frame: the tracked memory of the objects not prompted, the prompted object's new one."""
    cfg, model = model128
    frames, _, _ = video
    tracker = StreamingTracker(cfg.replace(keep_ratio=0.3), model=model)
    k = num_kept(64, 0.3)
    first = tracker.add_prompt(1, points=[[40, 60]], labels=[1], image=frames[0])
    assert sorted(first.kept_tokens) == [1] and first.kept_tokens[1].sum() == k  # its new memory
    tracker.add_prompt(2, points=[[10, 10]], labels=[1])
    tracked = tracker.track(frames[1])
    assert sorted(tracked.kept_tokens) == [1, 2]
    refined = tracker.add_prompt(1, points=[[45, 62]], labels=[1])
    assert sorted(refined.kept_tokens) == [1, 2]
    np.testing.assert_array_equal(refined.kept_tokens[2], tracked.kept_tokens[2])  # not prompted
    slot = 1 % tracker.bank.ring_len  # object 1's memory of this frame: the prompt's
    expected = np.zeros(64, bool)
    expected[tracker.bank.ring_idx[tracker.objects[1].row, slot].numpy()] = True
    np.testing.assert_array_equal(refined.kept_tokens[1], expected.reshape(8, 8))
    tracker.remove_object(1)
    now = tracker.current_result()
    assert now.object_ids == [2] and sorted(now.kept_tokens) == [2]
    np.testing.assert_array_equal(now.kept_tokens[2], tracked.kept_tokens[2])
    tracker.set_keep_ratio(1.0)  # the stored memories keep their k tokens: still pruned
    assert tracker.current_result().kept_tokens[2].sum() == k


def test_keep_ratio_one_is_dense_without_router(model128, video, monkeypatch):
    cfg, model = model128
    frames, _, _ = video
    tracker = StreamingTracker(cfg.replace(keep_ratio=1.0), model=model)
    for step in ("signals", "scores", "route"):  # (a tracking step calls signals and scores)
        monkeypatch.setattr(tracker.router, step, lambda *a, **k: pytest.fail("router used at 1.0"))
    tracker.add_prompt(1, points=[[40, 60]], labels=[1], image=frames[0])
    res = tracker.track(frames[1])
    assert res.stats.router_mode == "dense" and res.stats.tokens_kept == {1: 64}
    assert res.kept_tokens == {}
    assert tracker.bank.k == 64  # memory frames stored densely, in grid order
    assert torch.equal(tracker.bank.ring_idx[0, 1], torch.arange(64))


def test_memory_bank_is_bounded_over_long_streams_and_refine_clicks():
    cfg = TrackerConfig(model_cfg="tiny", allow_random_weights=True, image_size=64, device="cpu",
                        keep_ratio=0.5, mc_passes=2, max_cond_frames=3)
    tracker = StreamingTracker(cfg)
    rng = np.random.default_rng(0)
    frame = (rng.random((32, 40, 3)) * 255).astype(np.uint8)
    tracker.add_prompt(1, points=[[10, 10]], labels=[1], image=frame)
    tracker.add_prompt(2, box=[20, 5, 35, 25])
    sizes = []
    for t in range(1, 241):
        noisy = np.clip(frame.astype(int) + rng.integers(-20, 20, frame.shape), 0, 255).astype(np.uint8)
        res = tracker.track(noisy)
        if t % 3 == 0:  # many refinement clicks on both objects
            res = tracker.add_prompt(1 + t % 2, points=[[t % 40, (7 * t) % 32]], labels=[t % 2])
        sizes.append((res.stats.bank_frames, res.stats.bank_tokens, res.stats.bank_bytes))
        for obj in tracker.objects.values():
            cond = [f for f in tracker.bank.cond_frames[obj.row] if f >= 0]
            assert len(cond) <= 3 + 1  # read at most 3, and the spare slot
            assert 0 in cond  # the first prompt stays pinned
    # per object: <= 4 conditioning frames + the current frame and the 6 it reads next
    assert max(s[0] for s in sizes) <= 2 * (4 + 7)
    # preallocated: the bank's bytes never change, whatever the stream length and clicks
    assert len({s[2] for s in sizes}) == 1
    assert max(s[1] for s in sizes[200:]) == max(s[1] for s in sizes[100:140])


def test_router_file_with_bad_contents_is_a_checkpoint_error_naming_it(tmp_path):
    sd = RouterMLP(256).state_dict()
    cases = {
        "hidden_mismatch": {"token_dim": 256, "hidden": 128, "state_dict": sd},
        "no_token_dim": {"hidden": 256, "state_dict": sd},
        "empty_state": {"token_dim": 256, "hidden": 256, "state_dict": {}},
        "no_state": {"token_dim": 256, "hidden": 256},
        # a diverged training run: NaN scores kept arbitrary tokens without any error
        "nan_weights": {"token_dim": 256, "hidden": 256,
                        "state_dict": {k: torch.full_like(v, float("nan")) for k, v in sd.items()}},
        "meta_list": {"token_dim": 256, "hidden": 256, "state_dict": sd, "meta": [1, 2]},
        "meta_tensor": {"token_dim": 256, "hidden": 256, "state_dict": sd,
                        "meta": {"x": torch.ones(3)}},
    }
    for name, blob in cases.items():
        path = tmp_path / f"{name}.pt"
        torch.save({"format": ROUTER_FORMAT, **blob}, path)
        with pytest.raises(CheckpointError, match=f"{name}.pt"):
            load_router(path, 256)


def test_router_weights_load_and_errors(tmp_path, model128, video):
    cfg, model = model128
    frames, _, _ = video
    path = tmp_path / "router.pt"
    torch.manual_seed(0)
    save_router(RouterMLP(model.hidden_dim), path, meta={"note": "test"})
    tracker = StreamingTracker(cfg.replace(keep_ratio=0.3, router_weights=str(path)), model=model)
    tracker.add_prompt(1, points=[[40, 60]], labels=[1], image=frames[0])
    res = tracker.track(frames[1])
    assert res.stats.router_mode == "mlp"
    with pytest.raises(CheckpointError, match="not found"):
        load_router(tmp_path / "missing.pt", 256)
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match="junk.pt"):
        load_router(tmp_path / "junk.pt", 256)
    with pytest.raises(CheckpointError, match="256"):
        save_router(RouterMLP(32), tmp_path / "small.pt")
        load_router(tmp_path / "small.pt", 256)


def test_a_router_trained_with_other_inputs_loads_with_a_warning(tmp_path, model128, caplog):
    cfg, model = model128
    path = tmp_path / "router.pt"
    save_router(RouterMLP(model.hidden_dim), path,
                meta=router_inputs("tiny", mc_passes=5, mc_dropout=0.1, text_mode="clip_ridge",
                                  clip_model="ViT-B-16"))
    running = cfg.replace(keep_ratio=0.3, router_weights=str(path), text_mode="clip_ridge")
    with caplog.at_level(logging.WARNING, logger="fastsam2_ros.core.tracker"):  # 8 passes: on too
        StreamingTracker(running.replace(mc_passes=8, model_cfg="sam2.1_hiera_t"), model=model)
    assert not [r for r in caplog.records if "trained with other inputs" in r.getMessage()]
    for off in (dict(mc_passes=1), dict(mc_dropout=0.0)):  # the uncertainty signal is off
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="fastsam2_ros.core.tracker"):
            tracker = StreamingTracker(running.replace(text_mode="paper_lsq", **off), model=model)
        warned = " ".join(r.getMessage() for r in caplog.records)
        assert "uncertainty True in training, False here" in warned, off
        assert "text_mode 'clip_ridge'" in warned
    assert tracker.router.mode == "mlp"
    # a router trained without text fits any text mode (its text input was zero)
    assert router_setting_mismatches({"text_mode": "none"}, {"text_mode": "paper_lsq"}) == []
    # a file may name the model by an alias
    running = router_inputs("tiny", mc_passes=5, mc_dropout=0.1, text_mode="clip_ridge",
                            clip_model="ViT-B-16")
    assert router_setting_mismatches({"model_cfg": "sam2.1_hiera_t"}, running) == []
    assert router_setting_mismatches({"model_cfg": "large"}, running) == [
        "model_cfg 'sam2.1_hiera_l' in training, 'sam2.1_hiera_t' here"]


def test_a_router_trained_at_another_image_size_loads_with_a_warning(tmp_path, model128, caplog):
    """Its token features come from another grid (the file records image_size, which was never
    compared); a file without it (written by hand, or before) is not warned about."""
    cfg, model = model128
    inputs = dict(mc_passes=5, mc_dropout=0.1, text_mode="none", clip_model="ViT-B-16")
    for trained_at, warned in ((64, ["image_size 64 in training, 128 here"]), (128, []), (None, [])):
        path = tmp_path / f"router{trained_at}.pt"
        save_router(RouterMLP(model.hidden_dim), path,
                    meta=router_inputs("tiny", image_size=trained_at, **inputs))
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="fastsam2_ros.core.tracker"):
            StreamingTracker(cfg.replace(keep_ratio=0.3, router_weights=str(path)), model=model)
        said = [r.getMessage() for r in caplog.records if "trained with other inputs" in r.getMessage()]
        assert [m for m in warned if not any(m in s for s in said)] == [] and len(said) == len(warned)


def test_a_router_fitted_to_another_clip_models_texts_loads_with_a_warning(tmp_path, model128, caplog):
    """The text input is made of clip_model's embeddings: a router trained with ViT-B-16 texts
    loaded into a ViT-S-16 tracker without a word."""
    cfg, model = model128
    path = tmp_path / "router.pt"
    trained = router_inputs("tiny", mc_passes=0, mc_dropout=0.1, text_mode="clip_ridge",
                            clip_model="ViT-B-16")
    assert trained["clip_model"] == "ViT-B-16"
    save_router(RouterMLP(model.hidden_dim), path, meta=trained)
    running = cfg.replace(router_weights=str(path), text_mode="clip_ridge", clip_model="ViT-S-16")
    with caplog.at_level(logging.WARNING, logger="fastsam2_ros.core.tracker"):
        StreamingTracker(running, model=model)
    assert "clip_model 'ViT-B-16' in training, 'ViT-S-16' here" in caplog.text
    # without texts on either side the CLIP model shaped no input
    untexted = router_inputs("tiny", mc_passes=0, mc_dropout=0.1, text_mode="none",
                             clip_model="ViT-B-16")
    assert untexted["clip_model"] is None
    other = router_inputs("tiny", 0, 0.1, "paper_lsq", "ViT-L-14")
    assert router_setting_mismatches(untexted, other) == []
    assert router_setting_mismatches(trained, dict(untexted, text_mode="clip_ridge")) == []


def test_a_router_trained_on_random_sam2_weights_is_refused_with_a_checkpoint(tmp_path, model128,
                                                                             caplog):
    """fastsam2-train-router --random-weights (a smoke run) records it; such a router loaded
    into a tracker with real weights silently scored tokens with noise."""
    cfg, model = model128
    path = tmp_path / "router.pt"
    save_router(RouterMLP(model.hidden_dim), path, meta={"random_weights": True})
    checkpoint = tmp_path / "sam2.1_hiera_tiny.pt"
    checkpoint.write_bytes(b"")  # not read: the model is given
    real = cfg.replace(router_weights=str(path), checkpoint=str(checkpoint), allow_random_weights=False)
    with pytest.raises(CheckpointError, match="trained on a randomly initialised SAM 2") as info:
        StreamingTracker(real, model=model)
    assert str(path) in str(info.value)
    with caplog.at_level(logging.WARNING, logger="fastsam2_ros.core.tracker"):  # allowed: warned
        tracker = StreamingTracker(real.replace(allow_random_weights=True), model=model)
    assert tracker.router.mode == "mlp"
    assert "randomly initialised SAM 2" in caplog.text
    caplog.clear()
    StreamingTracker(real.replace(checkpoint="", allow_random_weights=True), model=model)  # a smoke run
    assert "randomly initialised" not in caplog.text


def test_uncertainty_is_off_without_two_passes_or_dropout(model128):
    cfg, model = model128
    tokens = torch.randn(64, model.hidden_dim)
    layer = model.memory_attention.layers[0]
    for passes, dropout, on in ((5, 0.1, True), (1, 0.1, False), (0, 0.1, False), (5, 0.0, False)):
        u = TokenRouter(model.hidden_dim, passes, dropout).mc_uncertainty(tokens, (8, 8), layer)
        assert (u is not None) == on, (passes, dropout)
        if on:
            assert u.shape == (64,) and float(u.max()) == 1.0


@pytest.mark.parametrize("grid", [(8, 8), (16, 24), (12, 20), (5, 7)])
def test_the_uncertainty_is_the_papers_formula_written_plainly(model128, grid):
    """The few-kernel mc_uncertainty (mask drawn in one op, 1/keep on q_proj's weight, the
    logits' scale on the keys, log-sum-exp by hand, pooled context as one reduction of the rows)
    equals eq. 6-8 written plainly, with the same dropout masks; grids that 8x8 does not divide
    included."""
    import math

    import torch.nn.functional as F

    from fastsam2_ros.core.router import minmax

    _, model = model128
    layer = model.memory_attention.layers[0]
    h, w = grid
    n, c, passes, dropout = h * w, model.hidden_dim, 5, 0.2
    tokens = torch.randn(n, c, generator=torch.Generator().manual_seed(1))
    router = TokenRouter(c, passes, dropout, seed=4)
    with torch.inference_mode():
        got = router.mc_uncertainty(tokens, grid, layer, frame_idx=9)
        keep = 1.0 - dropout
        mask = torch.empty(passes, n, c).bernoulli_(keep, generator=router._generator(tokens.device, 9))
        x = layer.norm1(tokens)
        ctx = F.adaptive_avg_pool2d(x.T.reshape(1, c, h, w), (min(8, h), min(8, w))).flatten(2)[0].T
        keys = layer.self_attn.k_proj(ctx)
        queries = layer.self_attn.q_proj(x[None] * mask / keep)
        logits = queries @ keys.T / math.sqrt(keys.shape[-1])
        expected = minmax(torch.logsumexp(logits, dim=-1).std(dim=0, unbiased=False))
    assert torch.allclose(got, expected, atol=1e-4), float((got - expected).abs().max())


def test_block_pooling_is_adaptive_pooling():
    """block_max (masks to the token grid) and block_mean_rows (the uncertainty's context) give
    adaptive pooling's values, by one plain pooling where the grid divides the size and by the
    adaptive kernel where it does not."""
    import torch.nn.functional as F

    from fastsam2_ros.core.router import block_max, block_mean_rows

    gen = torch.Generator().manual_seed(0)
    for size, grid in (((64, 64), (16, 16)), ((1024, 768), (64, 48)), ((50, 70), (16, 16)),
                       ((16, 16), (16, 16))):
        x = torch.randn(2, 1, *size, generator=gen)
        assert torch.equal(block_max(x, grid), F.adaptive_max_pool2d(x, grid)), size
    for grid, out in (((64, 64), (8, 8)), ((16, 24), (8, 8)), ((12, 20), (8, 8)), ((5, 7), (5, 7))):
        rows = torch.randn(grid[0] * grid[1], 32, generator=gen)
        plain = F.adaptive_avg_pool2d(rows.T.reshape(1, 32, *grid), out).flatten(2)[0].T
        torch.testing.assert_close(block_mean_rows(rows, grid, out), plain, atol=1e-6, rtol=1e-5)


def test_standardize_and_minmax_are_the_plain_formulas():
    from fastsam2_ros.core.router import minmax, standardize

    x = torch.randn(3, 500, generator=torch.Generator().manual_seed(0)) * 7 + 2
    plain = (x - x.mean(-1, keepdim=True)) / x.std(-1, unbiased=False, keepdim=True)
    assert torch.allclose(standardize(x), plain, atol=1e-5)
    assert torch.equal(standardize(torch.full((2, 9), 3.0)), torch.zeros(2, 9))  # a constant row
    lo, hi = x.amin(-1, keepdim=True), x.amax(-1, keepdim=True)
    assert torch.allclose(minmax(x), (x - lo) / (hi - lo), atol=1e-6)


@pytest.mark.parametrize("trained", [False, True])
def test_tokens_under_the_previous_mask_are_always_kept_first(trained):
    """A fixed bonus of 3 standard deviations let an outside token whose signals summed more than
    3 above an inside one's win (2 of 38 kept tokens outside a region of 40 in the review)."""
    from fastsam2_ros.core.router import RouterSignals

    torch.manual_seed(0)
    n, c, keep = 64, 8, 10
    tokens = torch.randn(n, c)
    uncertainty, prototype = torch.rand(n), torch.rand(1, n)
    uncertainty[:2] = prototype[0, :2] = 100.0  # two outside tokens stand out in every signal
    prior = torch.zeros(1, n)
    prior[0, 40:52] = 1.0  # 12 tokens under the previous mask, more than k
    sig = RouterSignals(tokens=tokens, uncertainty=uncertainty, prior=prior, prototype=prototype,
                        has_prototype=torch.ones(1, dtype=torch.bool))
    mlp = None
    if trained:
        mlp = RouterMLP(c)
        with torch.no_grad():
            mlp.net[0].weight.zero_()
            mlp.net[0].weight[0, 2 * c:] = 1.0  # the MLP follows the uncertainty part U_i
            mlp.net[2].weight.fill_(1.0)
    out = TokenRouter(c, mc_passes=0, mlp=mlp).route(sig, keep)
    kept = set(out.keep_idx[0].tolist())
    assert kept <= set(range(40, 52)), sorted(kept)


def test_the_prototype_is_the_mean_token_under_the_previous_mask_not_its_dilation():
    """The prototype was averaged over the mask dilated by one token: for a 3x3-token object that
    is 9 object and 16 surrounding tokens, so it pointed at the surface the object sits on and an
    object that moved past the dilated mask was ranked like background (review math7)."""
    g = torch.Generator().manual_seed(0)
    h = w = 16
    c = 32
    tokens = torch.randn(h, w, c, generator=g)
    prev_logits = torch.full((1, 1, 4 * h, 4 * w), -8.0)  # 4 mask pixels per token
    prev_logits[0, 0, 20:32, 20:32] = 8.0  # the object covered tokens rows/cols 5-7
    sig = TokenRouter(c, mc_passes=0).signals(tokens.reshape(-1, c), (h, w), None, None, prev_logits)
    under = tokens[5:8, 5:8].reshape(-1, c).mean(0)
    expected = torch.nn.functional.cosine_similarity(tokens.reshape(-1, c), under[None], dim=-1)
    assert torch.allclose(sig.prototype[0], expected, atol=1e-5)
    assert int(sig.prior.sum()) == 25  # the prior stays dilated: 5x5 tokens
    assert bool(sig.has_prototype[0])


def test_the_kept_tokens_are_the_top_k_of_the_scores_when_the_softmax_underflows():
    """The keep set was the top-k of the softmax: with the prior's bonus the scores spread over
    more than ~104, exp underflowed to 0 for every token outside the prior, and top-k chose among
    thousands of ties instead of by score (review math7: kept -3.47, dropped +3.50)."""
    from fastsam2_ros.core.router import RouterSignals

    torch.manual_seed(0)
    n, c, keep = 64 * 64, 8, 60
    uncertainty, prototype = torch.rand(n), torch.rand(1, n)
    uncertainty[105] = prototype[0, 105] = 1e4  # one token under the prior stands out in both:
    prior = torch.zeros(1, n)  # standardised ~sqrt(n) = 64 each, and the prior's bonus doubles
    prior[0, 100:110] = 1.0  # the spread: exp(-195) is 0 in float32. 10 prior tokens, k = 60
    sig = RouterSignals(tokens=torch.randn(n, c), uncertainty=uncertainty, prior=prior,
                        prototype=prototype, has_prototype=torch.ones(1, dtype=torch.bool))
    out = TokenRouter(c, mc_passes=0).route(sig, keep)
    assert int((torch.softmax(out.scores[0], -1) == 0).sum()) > keep  # the paper's softmax underflows
    kept = torch.zeros(n, dtype=torch.bool)
    kept[out.keep_idx[0]] = True
    assert float(out.scores[0][kept].min()) >= float(out.scores[0][~kept].max())


@pytest.mark.parametrize("text_mode, text_moves_scores", [("none", False), ("clip_ridge", True)])
def test_a_router_trained_without_texts_gets_no_text_input(text_mode, text_moves_scores):
    """Trained without texts, the MLP's text weights never left their random start; a text at
    tracking time went through them and moved the scores, with no warning (review math7)."""
    from fastsam2_ros.core.router import RouterSignals

    torch.manual_seed(2)
    n, c = 64, 8
    mlp = RouterMLP(c)
    mlp.meta = router_inputs("tiny", mc_passes=0, mc_dropout=0.1, text_mode=text_mode,
                             clip_model="ViT-B-16")
    base = RouterSignals(tokens=torch.randn(n, c))
    texted = RouterSignals(tokens=base.tokens, text=torch.rand(1, n), has_text=torch.ones(1),
                           text_scales=torch.rand(1, n), text_vector=torch.randn(1, c))
    router = TokenRouter(c, mc_passes=0, mlp=mlp)
    moved = not torch.allclose(router.route(base, 10).scores, router.route(texted, 10).scores)
    assert moved == text_moves_scores


@pytest.mark.parametrize("mc_passes, reads", [(0, False), (5, True)])
def test_a_router_trained_without_the_uncertainty_gets_none_and_no_passes_run(
        tmp_path, model128, caplog, mc_passes, reads):
    """Trained with --mc-passes 0, the MLP's U_i weights never left their random start; a
    tracker with mc_passes >= 2 fed U_i through them and paid the Monte-Carlo passes for it
    (review router10 F1)."""
    from fastsam2_ros.core.router import RouterSignals

    cfg, model = model128
    c = model.hidden_dim
    path = tmp_path / "router.pt"
    torch.manual_seed(3)
    save_router(RouterMLP(c), path, meta=router_inputs("tiny", mc_passes=mc_passes, mc_dropout=0.1,
                                                       text_mode="none", clip_model="ViT-B-16"))
    with caplog.at_level(logging.WARNING, logger="fastsam2_ros.core.tracker"):
        tracker = StreamingTracker(cfg.replace(router_weights=str(path), mc_passes=5), model=model)
    router = tracker.router
    assert router.mlp.reads_uncertainty == reads and router.uses_uncertainty == reads
    tokens = torch.randn(64, c)
    u = router.mc_uncertainty(tokens, (8, 8), model.memory_attention.layers[0], frame_idx=1)
    assert (u is not None) == reads  # no passes for a router that does not read them
    base = RouterSignals(tokens=tokens)
    uncertain = RouterSignals(tokens=tokens, uncertainty=torch.rand(64))
    moved = not torch.allclose(router.route(base, 10).scores, router.route(uncertain, 10).scores)
    assert moved == reads
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert ("uncertainty False in training, True here: that router does not read it, the "
            "uncertainty is not used" in warned) == (not reads)
    # a file without the key reads it; the training-free fusion always uses it
    assert RouterMLP(c).reads_uncertainty
    assert TokenRouter(c, 5, 0.1).uses_uncertainty


def _max_u_over_mean_x(tokens, uncertainty):
    from fastsam2_ros.core.router import RouterSignals

    f = TokenRouter(tokens.shape[1]).fused_factors(
        RouterSignals(tokens=tokens, uncertainty=uncertainty), 1)
    u_norm = (f.uncertainty[:, None] * f.uncertainty_vector[None]).norm(dim=1).max()
    return float(u_norm / tokens.norm(dim=1).mean())


def test_w_u_stays_bounded_on_a_uniform_frame_and_with_as_many_tokens_as_channels(model128):
    """Eq. 9's W_u was solved with a ridge of 1e-9 x mean diag(XᵀX): on a uniform frame or with
    N = C (image_size 256) |U_i| reached 6-240 against |x_i| ~ 12 (review router10 F3)."""
    from fastsam2_ros.core.router import minmax

    cfg, model = model128
    g = torch.Generator().manual_seed(0)
    tracker = StreamingTracker(cfg, model=model)
    blank, _ = tracker.frame_tokens(np.full((128, 128, 3), 128, np.uint8))  # N = 64 real tokens
    c = 256
    uniform = torch.randn(c, generator=g) + 1e-2 * torch.randn(1024, c, generator=g)
    square = torch.randn(c, c, generator=g)  # N = C
    for name, tokens in (("blank frame", blank.float()), ("uniform", uniform), ("N = C", square)):
        u = minmax(torch.rand(tokens.shape[0], generator=g))
        ratio = _max_u_over_mean_x(tokens, u)
        assert ratio < 0.25, (name, ratio)  # 2.2, 1.2 and 0.57 with the old ridge


def test_w_u_is_the_least_squares_solution_on_well_conditioned_tokens():
    from fastsam2_ros.core.router import RouterSignals

    g = torch.Generator().manual_seed(0)
    tokens, u = torch.randn(4096, 32, generator=g), torch.rand(4096, generator=g)
    w_u = TokenRouter(32).fused_factors(RouterSignals(tokens=tokens, uncertainty=u), 1).uncertainty_vector
    plain = torch.linalg.lstsq(tokens.double(), u.double()[:, None]).solution[:, 0]
    assert float((w_u - plain).norm() / plain.norm()) < 5e-3


def test_the_w_u_ridge_is_recorded_and_an_old_router_file_is_warned_about():
    """A router trained with the 1e-9 ridge saw other U_i inputs; its file does not record one."""
    from fastsam2_ros.core.router import W_U_RIDGE

    running = router_inputs("tiny", mc_passes=5, mc_dropout=0.1, text_mode="none",
                            clip_model="ViT-B-16")
    assert running["w_u_ridge"] == W_U_RIDGE
    assert router_inputs("tiny", 0, 0.1, "none", "ViT-B-16")["w_u_ridge"] is None
    assert router_setting_mismatches(dict(running), running) == []
    old = {k: v for k, v in running.items() if k != "w_u_ridge"}
    assert router_setting_mismatches(old, running) == [
        f"w_u_ridge 1e-09 in training, {W_U_RIDGE!r} here"]
    assert router_setting_mismatches(dict(old, uncertainty=False), running) == [
        "uncertainty False in training, True here: that router does not read it, the uncertainty "
        "is not used"]
    off = router_inputs("tiny", 0, 0.1, "none", "ViT-B-16")
    assert router_setting_mismatches(old, off) == ["uncertainty True in training, False here"]


def test_a_router_file_from_before_the_uncertainty_key_is_read_by_its_mc_passes():
    """Files written before ``uncertainty`` was recorded have the trainer's mc_passes: one trained
    with --mc-passes 0 was read as trained with U_i (random weights fed it, the passes ran for it,
    and no warning came)."""
    from fastsam2_ros.core.router import RouterMLP, TokenRouter

    running = router_inputs("tiny", mc_passes=5, mc_dropout=0.1, text_mode="none",
                            clip_model="ViT-B-16")
    for passes, reads in ((0, False), (1, False), (5, True)):
        mlp = RouterMLP(8)
        mlp.meta = {"model_cfg": "tiny", "mc_passes": passes, "mc_dropout": 0.1, "text_mode": "none"}
        assert mlp.reads_uncertainty is reads
        assert TokenRouter(8, 5, 0.1, mlp=mlp).uses_uncertainty is reads
        said = router_setting_mismatches(mlp.meta, running)
        assert said == (["w_u_ridge 1e-09 in training, 0.001 here"] if reads else [
            "uncertainty False in training, True here: that router does not read it, the "
            "uncertainty is not used"])
    assert RouterMLP(8).reads_uncertainty  # a file that says nothing of it


def test_the_router_input_composed_from_its_factors_is_the_papers_h():
    """Router training stores h_i factored; composing it must give [x; a·t; σ̃·W_u] exactly."""
    from fastsam2_ros.core.router import FusedFactors

    torch.manual_seed(1)
    n, c = 6, 4
    f = FusedFactors(torch.randn(n, c), torch.randn(2, n), torch.randn(2, c),
                     torch.rand(n, dtype=torch.float64), torch.randn(c, dtype=torch.float64))
    h = f.compose()
    assert h.shape == (2, n, 3 * c) and h.dtype == torch.float32
    for b in range(2):
        assert torch.equal(h[b, :, :c], f.tokens)
        assert torch.equal(h[b, :, c:2 * c], f.text_scales[b][:, None] * f.text_vector[b][None])
        assert torch.equal(h[b, :, 2 * c:],
                           (f.uncertainty[:, None] * f.uncertainty_vector[None]).float())

"""Token pruning: gathered-RoPE memory attention, token counts, bounded memory bank, router."""

import numpy as np
import pytest
import torch

from fastsam2_ros.core import TrackerConfig
from fastsam2_ros.core import pruned_predictor
from fastsam2_ros.core.models import build_predictor
from fastsam2_ros.core.pruned_attention import pruned_memory_attention
from fastsam2_ros.core.router import RouterMLP, load_router, num_kept, save_router
from fastsam2_ros.core.errors import CheckpointError
from fastsam2_ros.core.tracker import StreamingTracker


@pytest.fixture(scope="module")
def model128():
    cfg = TrackerConfig(model_cfg="tiny", allow_random_weights=True, image_size=128, device="cpu")
    return cfg, build_predictor(cfg)


def _random_memory(model, hw, frames, ptr_tokens, seed=0):
    g = torch.Generator().manual_seed(seed)
    n = hw * hw
    curr = torch.randn(n, 1, model.hidden_dim, generator=g)
    curr_pos = torch.randn(n, 1, model.hidden_dim, generator=g)
    memory = torch.randn(frames * n + ptr_tokens, 1, model.mem_dim, generator=g)
    memory_pos = torch.randn(frames * n + ptr_tokens, 1, model.mem_dim, generator=g)
    return curr, curr_pos, memory, memory_pos


def test_gathered_rope_attention_equals_stock_module_at_full_retention(model128):
    _, model = model128
    hw, frames, ptrs = 8, 3, 8
    curr, curr_pos, memory, memory_pos = _random_memory(model, hw, frames, ptrs)
    with torch.inference_mode():
        stock = model.memory_attention(curr=[curr], curr_pos=[curr_pos], memory=memory,
                                       memory_pos=memory_pos, num_obj_ptr_tokens=ptrs)
        idx = torch.arange(hw * hw)
        ours = pruned_memory_attention(model.memory_attention, curr, curr_pos, memory, memory_pos,
                                       idx, idx.repeat(frames), (hw, hw), num_obj_ptr_tokens=ptrs)
    torch.testing.assert_close(ours, stock, atol=1e-5, rtol=1e-5)


def test_gathered_rope_attention_is_permutation_equivariant(model128):
    _, model = model128
    hw, frames, ptrs = 8, 2, 4
    curr, curr_pos, memory, memory_pos = _random_memory(model, hw, frames, ptrs, seed=1)
    n = hw * hw
    g = torch.Generator().manual_seed(3)
    q_idx = torch.randperm(n, generator=g)[:20]
    m_idx = torch.cat([torch.randperm(n, generator=g)[:15], torch.randperm(n, generator=g)[:10]])
    mem_rows = torch.cat([m_idx[:15], n + m_idx[15:], torch.arange(2 * n, 2 * n + ptrs)])
    mem, mem_pos = memory[mem_rows], memory_pos[mem_rows]
    with torch.inference_mode():
        base = pruned_memory_attention(model.memory_attention, curr[q_idx], curr_pos[q_idx], mem,
                                       mem_pos, q_idx, m_idx, (hw, hw), ptrs)
        qp = torch.randperm(20, generator=g)
        mp = torch.cat([torch.randperm(25, generator=g), torch.arange(25, 25 + ptrs)])
        perm = pruned_memory_attention(model.memory_attention, curr[q_idx[qp]], curr_pos[q_idx[qp]],
                                       mem[mp], mem_pos[mp], q_idx[qp], m_idx[mp[:25]], (hw, hw), ptrs)
    # permuting queries permutes outputs; permuting memory tokens changes nothing
    torch.testing.assert_close(perm, base[qp], atol=1e-5, rtol=1e-5)
    # and the result really depends on the positions: wrong angles give another answer
    with torch.inference_mode():
        shifted = pruned_memory_attention(model.memory_attention, curr[q_idx], curr_pos[q_idx], mem,
                                          mem_pos, (q_idx + 1) % n, m_idx, (hw, hw), ptrs)
    assert not torch.allclose(shifted, base, atol=1e-4)


def test_pruned_token_counts_at_030(model128, video, monkeypatch):
    cfg, model = model128
    frames, _, _ = video
    calls = []
    real = pruned_predictor.pruned_memory_attention

    def spy(module, curr, curr_pos, memory, memory_pos, query_idx, memory_idx, grid_hw, num_obj_ptr_tokens=0):
        calls.append((curr.shape[0], memory.shape[0], memory_idx.numel(), num_obj_ptr_tokens, grid_hw))
        return real(module, curr, curr_pos, memory, memory_pos, query_idx, memory_idx, grid_hw,
                    num_obj_ptr_tokens)

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
    for t, (q, m, spatial, ptr, grid) in enumerate(calls, start=1):
        stored = min(t, 7)  # conditioning frame + up to 6 previous frames
        assert q == k and grid == (8, 8)
        assert spatial == stored * k  # every stored frame holds exactly its k retained tokens
        assert ptr == min(t, 16) * 4  # pointers: 256-d split into 4 tokens of 64, never pruned
        assert m == spatial + ptr
    # the bank stores k tokens per frame, not n
    bank = tracker.memory_bank_size()
    assert bank["tokens"] == bank["frames"] * k


def test_keep_ratio_one_takes_the_stock_path(model128, video, monkeypatch):
    cfg, model = model128
    frames, _, _ = video
    monkeypatch.setattr(pruned_predictor, "pruned_memory_attention",
                        lambda *a, **k: pytest.fail("pruned path used at keep ratio 1.0"))
    tracker = StreamingTracker(cfg.replace(keep_ratio=1.0), model=model)
    tracker.add_prompt(1, points=[[40, 60]], labels=[1], image=frames[0])
    res = tracker.track(frames[1])
    assert res.stats.router_mode == "dense" and res.stats.tokens_kept == {1: 64}
    assert res.kept_tokens == {}


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
            assert len(obj.output["cond_frame_outputs"]) <= 3
            assert 0 in obj.output["cond_frame_outputs"]  # the first prompt stays pinned
            assert len(obj.output["non_cond_frame_outputs"]) <= 15
    late = sizes[60:]
    # per object: <= 3 conditioning frames + the current frame and the 6 it reads next
    assert max(s[0] for s in late) <= 2 * (3 + 7)
    assert max(s[2] for s in late) <= min(s[2] for s in late) * 1.3
    # the refinement pattern repeats every 6 frames: the bank's peak is the same late and early
    assert max(s[2] for s in sizes[200:]) == max(s[2] for s in sizes[100:140])
    assert max(s[1] for s in sizes[200:]) == max(s[1] for s in sizes[100:140])


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

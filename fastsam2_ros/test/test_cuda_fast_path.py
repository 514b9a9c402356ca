"""The CUDA fast path on a real GPU: captured steps equal eager ones, bf16 stays close to the
official predictor, nothing falls back. Skipped without CUDA (CI has none); ``scripts/gpu_check.sh``
runs these on a GPU machine."""

import numpy as np
import pytest
import torch

from fastsam2_ros.core import TrackerConfig
from fastsam2_ros.core.models import build_official_predictor, build_predictor
from fastsam2_ros.core.official import OfficialVideoSession
from fastsam2_ros.core.preprocess import preprocess_on_device, preprocess_pil
from fastsam2_ros.core.text_relevance import fit_paper_lsq
from fastsam2_ros.core.tracker import StreamingTracker
from fastsam2_ros.eval.metrics import region_j

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

NUM_FRAMES = 16


@pytest.fixture(scope="module")
def cuda_model():
    cfg = TrackerConfig(model_cfg="tiny", allow_random_weights=True, image_size=512,
                        device="cuda", keep_ratio=0.3, mc_passes=0)
    return cfg, build_predictor(cfg)


def _run(tracker, frames, prompts, refine_at=None, pipelined=False):
    out = []
    for i, (obj_id, kwargs) in enumerate(prompts.items()):
        res = tracker.add_prompt(obj_id, image=frames[0] if i == 0 else None, **kwargs)
    out.append(res)
    pending = None
    for t in range(1, len(frames)):
        if pipelined and t != refine_at:
            nxt = tracker.submit(frames[t])
            if pending is not None:
                out.append(pending.result())
            pending = nxt
            continue
        if pending is not None:
            out.append(pending.result())
            pending = None
        res = tracker.track(frames[t])
        if t == refine_at:
            res = tracker.add_prompt(1, points=[[60, 75]], labels=[0])
        out.append(res)
    if pending is not None:
        out.append(pending.result())
    return out


PROMPTS = {1: dict(points=[[40, 60]], labels=[1]), 2: dict(box=[100, 20, 140, 50])}


@pytest.mark.parametrize("keep", [0.3, 1.0])
def test_captured_step_equals_eager_step_fp32(cuda_model, video, keep):
    cfg, model = cuda_model
    frames = video[0][:NUM_FRAMES]
    cfg = cfg.replace(bf16=False, keep_ratio=keep)
    graphed = StreamingTracker(cfg, model=model, return_logits=True)
    eager = StreamingTracker(cfg.replace(cuda_graphs=False), model=model, return_logits=True)
    a = _run(graphed, frames, PROMPTS, refine_at=6)
    b = _run(eager, frames, PROMPTS, refine_at=6)
    assert graphed.step_mode == "cuda_graph" and not graphed.runner.failures
    assert len(graphed.runner) >= 2  # padded (masked) early frames and the full bank
    for ra, rb in zip(a, b):
        for obj_id in (1, 2):
            np.testing.assert_allclose(ra.logits[obj_id], rb.logits[obj_id], atol=2e-3, rtol=0)
            assert region_j(ra.masks[obj_id], rb.masks[obj_id]) > 0.999


def test_pipelined_submit_equals_track(cuda_model, video):
    cfg, model = cuda_model
    frames = video[0][:NUM_FRAMES]
    sync = _run(StreamingTracker(cfg, model=model), frames, PROMPTS)
    pipe = _run(StreamingTracker(cfg, model=model), frames, PROMPTS, pipelined=True)
    assert [r.frame_index for r in pipe] == list(range(NUM_FRAMES))
    for ra, rb in zip(sync, pipe):
        for obj_id in (1, 2):
            assert np.array_equal(ra.masks[obj_id], rb.masks[obj_id])


def test_device_preprocessing_equals_pil_on_the_gpu(video):
    """The integer resize on CUDA gives sam2's loader's floats bit for bit (the bf16 masks depend
    on it: a float resize cost SAM 2 large 1.2% IoU against the official predictor)."""
    for image in video[0][:2]:
        for size in (1024, 512):
            want = preprocess_pil(image, size).cuda()
            got = preprocess_on_device(torch.from_numpy(image).cuda(), size)[0]
            assert torch.equal(want, got)


@pytest.mark.parametrize("preprocess", ["device", "pil"])
def test_bf16_keep_one_stays_close_to_official_predictor(cuda_model, video, preprocess):
    cfg, model = cuda_model
    frames = video[0][:NUM_FRAMES]
    cfg = cfg.replace(keep_ratio=1.0, preprocess=preprocess)
    official = build_official_predictor(cfg, state_dict=model.state_dict())
    session = OfficialVideoSession(official, frames, autocast_bf16=True)
    for obj_id, kwargs in PROMPTS.items():
        session.add_prompt(0, obj_id, **kwargs)
    ref = [m for _, m in session.propagate(0)]
    ours = _run(StreamingTracker(cfg, model=model, num_frames_hint=len(frames)), frames, PROMPTS)
    ious = [region_j(r.masks[o], m[o]) for r, m in zip(ours[1:], ref[1:]) for o in (1, 2)]
    assert min(ious) >= 0.99, ious


def test_text_only_start_and_tracking_under_bf16(cuda_model, video):
    cfg, model = cuda_model
    frames = video[0][:6]
    tracker = StreamingTracker(cfg.replace(text_mode="clip_ridge", allow_random_weights=True),
                               model=model)
    res = tracker.add_prompt(3, text="the red ball", image=frames[0])
    assert res.stats.auto_prompted == [3]
    for frame in frames[1:]:
        res = tracker.track(frame)
        assert res.masks[3].shape == frame.shape[:2]
    assert not tracker.runner.failures


@pytest.mark.parametrize("tokens", [64, 4096])
def test_paper_lsq_fits_on_the_gpu_for_small_and_large_grids(tokens):
    """CUDA's lstsq refuses fewer tokens than channels (image_size 128: 64 tokens, 256 channels)."""
    x, e = torch.randn(tokens, 256), torch.randn(512)
    cpu = fit_paper_lsq(x, e, "a cup").aligned
    gpu = fit_paper_lsq(x.cuda(), e.cuda(), "a cup").aligned.cpu()
    torch.testing.assert_close(gpu, cpu, rtol=1e-4, atol=1e-6)


def test_compile_workers_are_released_once_the_step_is_compiled(video, tmp_path, monkeypatch):
    """Every torch.compile on CUDA wakes Inductor's worker pool, even when the kernels come from
    the cache; the tracker shuts it down after its first compiled and captured step, so tracking
    does not compete with workers that are still starting (see models.release_compile_workers)."""
    from compile_workers import compile_worker_processes
    from polling import wait_for
    from torch._inductor import config as inductor_config

    from fastsam2_ros.core.models import compile_errors

    cfg = TrackerConfig(model_cfg="tiny", allow_random_weights=True, image_size=256, device="cuda",
                        keep_ratio=0.3, mc_passes=0, torch_compile="encoder",
                        compile_cache_dir=str(tmp_path))
    monkeypatch.setattr(inductor_config, "compile_threads", 2)  # a pool even on a 1-core runner
    tracker = StreamingTracker(cfg)
    frames = video[0]
    tracker.add_prompt(1, points=[[40, 60]], labels=[1], image=frames[0])  # compiles the encoder
    assert compile_worker_processes(), "compiling on CUDA started no worker pool"
    tracker.track(frames[1])  # a new step: captured, then the workers are released
    assert wait_for(lambda: not compile_worker_processes(), 30, step=0.2)
    for frame in frames[2:6]:
        assert tracker.track(frame).stats.step_mode == "cuda_graph"
    assert compile_errors(tracker.model) == {} and not compile_worker_processes()


def test_dropout_in_a_captured_step_draws_new_masks_at_every_replay():
    """The router's Monte-Carlo dropout runs inside the captured step (mc_passes 5 by default);
    the other CUDA tests turn it off to compare with eager steps bit for bit. A replay that reused
    its capture's random numbers would make the uncertainty signal a constant."""
    import torch.nn.functional as F

    from fastsam2_ros.core.step_runner import StepRunner

    runner = StepRunner(torch.device("cuda"), use_graphs=True)
    step = lambda x: {"y": F.dropout(x, 0.5, training=True)}  # noqa: E731
    x = torch.ones(4096, device="cuda")
    first = runner.run("dropout", step, {"x": x})["y"].clone()
    second = runner.run("dropout", step, {"x": x})["y"].clone()
    assert len(runner) == 1 and not runner.failures  # captured, replayed
    assert not torch.equal(first, second)
    assert 0.4 < float((second == 0).float().mean()) < 0.6


def test_tracking_with_mc_dropout_runs_captured():
    """The default router (mc_passes 5) in the captured step: every frame replays a graph."""
    cfg = TrackerConfig(model_cfg="tiny", allow_random_weights=True, image_size=256, device="cuda",
                        keep_ratio=0.3, mc_passes=5)
    tracker = StreamingTracker(cfg)
    frames = np.random.default_rng(0).integers(0, 256, (6, 120, 160, 3), dtype=np.uint8)
    tracker.add_prompt(1, points=[[40, 60]], labels=[1], image=frames[0])
    for frame in frames[1:]:
        result = tracker.track(frame)
        assert result.stats.step_mode == "cuda_graph"
    assert not tracker.runner.failures


def test_a_compiled_router_runs_captured_and_keeps_what_the_eager_one_keeps(video, tmp_path):
    """torch_compile: router (the router's kernels fused by Inductor) inside the captured step:
    no fallback, every frame replays a graph, and, dropout off, the kept tokens and masks of the
    eager router up to rounding; with dropout on it compiles and replays too."""
    from fastsam2_ros.core.models import compile_errors

    frames = video[0][:8]
    base = TrackerConfig(model_cfg="tiny", allow_random_weights=True, image_size=256, device="cuda",
                         keep_ratio=0.3, mc_passes=0, bf16=False, compile_cache_dir=str(tmp_path))
    model = build_predictor(base)
    compiled_model = build_predictor(base.replace(torch_compile="router"))
    compiled_model.load_state_dict(model.state_dict())
    eager = _run(StreamingTracker(base, model=model), frames, PROMPTS)
    fused_tracker = StreamingTracker(base.replace(torch_compile="router"), model=compiled_model)
    fused = _run(fused_tracker, frames, PROMPTS)
    assert compile_errors(compiled_model) == {} and fused_tracker.step_mode == "cuda_graph"
    assert not fused_tracker.runner.failures
    for ra, rb in zip(fused[1:], eager[1:]):  # (Triton's reductions may round a near tie the
        for obj_id in (1, 2):                   # other way; a wrong router would share ~30%)
            kept_a, kept_b = ra.kept_tokens[obj_id], rb.kept_tokens[obj_id]
            assert (kept_a & kept_b).sum() >= 0.9 * kept_b.sum()
            assert region_j(ra.masks[obj_id], rb.masks[obj_id]) > 0.95
    dropout = StreamingTracker(base.replace(torch_compile="router", mc_passes=5), model=compiled_model)
    results = _run(dropout, frames, PROMPTS)
    assert compile_errors(compiled_model) == {} and not dropout.runner.failures
    assert all(r.stats.step_mode == "cuda_graph" for r in results[1:])


def test_a_compiled_routers_dropout_draws_new_masks_at_every_replay(tmp_path, monkeypatch):
    """Inductor draws the compiled router's dropout masks with its own random-number code; in a
    captured step each replay must draw new ones (as eager dropout does), or the uncertainty
    signal would be a constant."""
    from fastsam2_ros.core.models import CompiledOrEager
    from fastsam2_ros.core.router import TokenRouter, router_scores
    from fastsam2_ros.core.step_runner import StepRunner

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))
    cfg = TrackerConfig(model_cfg="tiny", allow_random_weights=True, image_size=256, device="cuda")
    layer = build_predictor(cfg).memory_attention.layers[0]
    router, compiled = TokenRouter(256, mc_passes=5, mc_dropout=0.1), CompiledOrEager("router", router_scores)
    runner = StepRunner(torch.device("cuda"), use_graphs=True)
    inputs = {"tokens": torch.randn(256, 256, device="cuda"), "prev": torch.randn(1, 1, 64, 64, device="cuda")}

    def step(tokens, prev):
        return {"scores": compiled(router, tokens, (16, 16), layer, None, prev, 1)}

    with torch.inference_mode():
        first = runner.run("router", step, inputs)["scores"].clone()
        second = runner.run("router", step, inputs)["scores"].clone()
    assert compiled.error is None and len(runner) == 1 and not runner.failures
    assert not torch.equal(first, second)


def test_the_flash_preference_runs_the_flash_kernel_and_falls_back_under_a_key_mask():
    """attention_backend flash at memory attention's keep 0.3 cross shape in bf16, 1 and 4
    objects: the flash kernel's own result (bit for bit), torch's pick to bf16 rounding; under a
    key mask (which flash does not take) another kernel runs, no error."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from fastsam2_ros.core.pruned_attention import sdpa_preference

    sdpa = torch.nn.functional.scaled_dot_product_attention
    gen = torch.Generator().manual_seed(0)
    for batch in (1, 4):
        q, k, v = (torch.randn(batch, 1, n, 256, generator=gen).cuda().bfloat16()
                   for n in (1229, 8667, 8667))
        mask = torch.ones(batch, 1, 1, 8667, dtype=torch.bool, device="cuda")
        mask[..., :1229] = False
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            flash = sdpa(q, k, v)
        auto, auto_masked = sdpa(q, k, v).float(), sdpa(q, k, v, attn_mask=mask).float()
        with sdpa_preference("flash"):
            got, masked = sdpa(q, k, v), sdpa(q, k, v, attn_mask=mask).float()
        assert torch.equal(got, flash)
        assert float((got.float() - auto).abs().max()) < 0.02 * float(auto.abs().max())
        assert float((masked - auto_masked).abs().max()) < 0.02 * float(auto_masked.abs().max())


def test_a_captured_tracker_with_flash_first_stays_with_torchs_pick(cuda_model, video, monkeypatch):
    """The captured step with attention_backend flash against auto (the default: torch's pick,
    the official predictor's), bf16: masks with IoU >= 0.99 at keep 0.3 and 1.0, with flash first
    in torch's order while memory attention was captured."""
    from torch.nn.attention import SDPBackend
    from fastsam2_ros.core import pruned_attention

    cfg, model = cuda_model
    frames = video[0][:NUM_FRAMES]
    firsts = []
    real = pruned_attention.rope_attention
    monkeypatch.setattr(pruned_attention, "rope_attention", lambda *a, **kw: firsts.append(
        torch._C._get_sdp_priority_order()[0]) or real(*a, **kw))
    for keep in (0.3, 1.0):
        runs = {}
        for backend in ("auto", "flash"):
            firsts.clear()
            tracker = StreamingTracker(cfg.replace(keep_ratio=keep, attention_backend=backend),
                                       model=model)
            runs[backend] = _run(tracker, frames, {1: dict(points=[[40, 60]], labels=[1])})
            assert tracker.step_mode == "cuda_graph"
        assert firsts and set(firsts) == {int(SDPBackend.FLASH_ATTENTION)}, keep
        for a, b in zip(runs["auto"][1:], runs["flash"][1:]):
            assert region_j(a.masks[1], b.masks[1]) >= 0.99, keep


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")
def test_a_tracker_on_the_second_gpu_equals_one_on_the_first(cuda_model, video, tmp_path):
    """A tracker on cuda:1 driven from a thread whose current device is cuda:0 (as every new
    thread's is): its captured steps, pipelined results (the masks' copy to the host waited for
    by an event) and router MLP run on cuda:1 and give the masks of the same tracker on cuda:0."""
    from fastsam2_ros.core.router import RouterMLP, save_router

    cfg, model = cuda_model
    frames = video[0][:NUM_FRAMES]
    path = tmp_path / "router.pt"
    torch.manual_seed(0)
    save_router(RouterMLP(model.hidden_dim), path)
    cfg = cfg.replace(router_weights=str(path))
    on1 = cfg.replace(device="cuda:1")
    assert torch.cuda.current_device() == 0
    want = _run(StreamingTracker(cfg, model=model), frames, PROMPTS, pipelined=True)
    tracker = StreamingTracker(on1, model=build_predictor(on1))
    got = _run(tracker, frames, PROMPTS, pipelined=True)
    assert tracker.step_mode == "cuda_graph" and not tracker.runner.failures
    assert tracker.runner._capture_stream.device == torch.device("cuda:1")
    assert all(p.device == torch.device("cuda:1") and not p.is_inference()
               for p in tracker.router.mlp.parameters())
    assert torch.cuda.current_device() == 0
    assert [r.frame_index for r in got] == list(range(NUM_FRAMES))
    for ra, rb in zip(want, got):
        assert rb.stats.device == "cuda:1"
        for obj_id in (1, 2):
            assert region_j(ra.masks[obj_id], rb.masks[obj_id]) > 0.999


def test_the_kernel_profile_sums_each_stages_kernels(cuda_model, video, monkeypatch):
    """The bench's kernel profile on CUDA (on the CPU its arithmetic runs on CPU times): every
    stage launched kernels, and their sum is no more than the eager step's wall time."""
    from fastsam2_ros import bench

    cfg, model = cuda_model
    monkeypatch.setattr(bench, "KERNEL_PROFILE_FRAMES", 4)
    tracker = StreamingTracker(cfg.replace(cuda_graphs=False), model=model, profile_stages=True)
    results, kernels, ops = bench._profiled_pass(tracker, video[0][:8], [(40.0, 60.0)])
    for stage in ("encoder", "router", "memory_attention", "decoder", "memory_encoder", "other"):
        assert kernels[stage] > 0, (stage, kernels)
    for stage, listed in ops.items():  # the heaviest ops, on the device's kernel time
        assert listed and sum(ms for _, ms, _ in listed) <= kernels[stage] * 1.0001, (stage, listed)
    assert kernels["total"] == pytest.approx(sum(v for k, v in kernels.items() if k != "total"))
    assert kernels["total"] <= max(r.stats.stage_ms["total"] for r in results[-4:])

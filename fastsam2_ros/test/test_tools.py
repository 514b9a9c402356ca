"""The benchmark and router-training command lines, end to end at tiny sizes (random weights)."""

import json
import os
import pathlib
import random
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time

import numpy as np
import pytest
import torch

from PIL import Image
from domains import domain_id
from polling import wait_for

from fastsam2_ros import bench, router_training
from fastsam2_ros.core import TrackerConfig
from fastsam2_ros.core.config import COMPILE_MODES
from fastsam2_ros.core.models import build_predictor
from fastsam2_ros.core.router import load_router
from fastsam2_ros.core.tracker import StreamingTracker
from fastsam2_ros.eval.davis_io import DavisDataset, read_label_png, write_label_png
from fastsam2_ros.eval.synthetic import generate_dataset


def test_bench_runs_all_modes_on_the_same_frames(tmp_path, capsys):
    out = tmp_path / "bench.json"
    rc = bench.main(["--random-weights", "--image-size", "128", "--max-frames", "4",
                     "--device", "cpu", "--keep-ratios", "0.3,0.5", "--mc-passes", "2",
                     "--json", str(out)])
    assert rc == 0
    report = json.loads(out.read_text())
    assert report["schema_version"] == bench.SCHEMA_VERSION
    assert set(report["modes"]) == {"official", "dense", "pruned@0.3", "pruned@0.5"}
    n = (128 // 16) ** 2
    for name, mode in report["modes"].items():
        assert set(mode["stage_ms"]) == {"encoder", "router", "memory_attention", "decoder",
                                         "memory_encoder", "total"}
        assert mode["fps"] > 0 and mode["tokens_total"] == n
    assert report["modes"]["pruned@0.3"]["tokens_kept"] == round(0.3 * n)
    assert report["modes"]["dense"]["tokens_kept"] == n
    assert report["modes"]["pruned@0.3"]["state_bytes"] < report["modes"]["dense"]["state_bytes"]
    assert "memory_attention_vs_dense" in report["ratios"]["pruned@0.3"]
    assert "fps_vs_official" in report["ratios"]["dense"]
    # keep 1.0 reproduces the official predictor on the same frames
    assert report["dense_vs_official"]["max_mask_diff_pixels"] == 0
    assert report["dense_vs_official"]["min_iou"] == 1.0
    assert report["dense_vs_official"]["frames_compared"] == 3  # the tracked frames 1..3
    for mode in report["modes"].values():  # one frame time per tracked frame, and percentiles
        assert len(mode["frame_ms"]) == 3 and mode["latency_ms"]["p50"] > 0
    for name in ("dense", "pruned@0.3"):
        mode = report["modes"][name]
        assert mode["fps_pipelined"] > 0 and mode["startup_s"] > 0 and mode["step_mode"] == "eager"
    assert "FPS x official" in capsys.readouterr().out
    # the settings that shape the numbers are in the file
    assert report["mc_passes"] == 2 and report["repeats"] == 1
    # what ran on the CPU (no graphs, sam2's loader), next to what was asked
    assert (report["cuda_graphs"], report["cuda_graphs_requested"]) == (False, True)
    assert (report["preprocess"], report["preprocess_requested"]) == ("pil", "auto")
    assert report["versions"]["torch"] == torch.__version__ and "Pillow" in report["versions"]
    assert report["commit"] is None or len(report["commit"].removesuffix("-dirty")) == 40


def test_bench_repeats_interleaved_rounds_and_reports_medians_and_per_round_ratios(tmp_path, capsys):
    out = tmp_path / "bench.json"
    rc = bench.main(["--random-weights", "--image-size", "64", "--max-frames", "4", "--device", "cpu",
                     "--keep-ratios", "0.3", "--mc-passes", "0", "--repeats", "3", "--no-profile",
                     "--json", str(out)])
    assert rc == 0
    report = json.loads(out.read_text())
    for name, mode in report["modes"].items():
        rounds = mode["rounds"]
        assert len(rounds) == 3 and all(len(r["frame_ms"]) == 3 for r in rounds)
        assert mode["ms_per_frame"] == sorted(r["ms_per_frame"] for r in rounds)[1]
        assert mode["fps"] == pytest.approx(1e3 / mode["ms_per_frame"])
        assert len(mode["frame_ms"]) == 9
        lat = mode["latency_ms"]
        assert min(mode["frame_ms"]) <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
        assert lat["max"] == pytest.approx(max(mode["frame_ms"]))
    ratios = report["ratios"]["pruned@0.3"]
    official, pruned = report["modes"]["official"], report["modes"]["pruned@0.3"]
    assert ratios["fps_vs_official_by_round"] == pytest.approx(
        [o["ms_per_frame"] / p["ms_per_frame"] for o, p in zip(official["rounds"], pruned["rounds"])])
    assert len(ratios["fps_vs_dense_by_round"]) == 3
    assert "pruned@0.3 x official by round:" in capsys.readouterr().out
    assert bench.main(["--random-weights", "--repeats", "0", "--device", "cpu"]) == 2
    assert "--repeats" in capsys.readouterr().err


def test_bench_medians_a_rate_over_its_times_per_frame_as_fps():
    """With an even number of rounds the median of rates (fps_pipelined) was another average than
    1000 / median of times (fps): the same CPU pass gave "FPS" 5.0 and "FPS pipe" 6.7."""
    def round_at(ms):
        return {"dense": {"ms_per_frame": ms, "fps": 1e3 / ms, "fps_pipelined": 1e3 / ms,
                          "frame_ms": [ms] * 3, "stage_ms": {"total": ms}}}

    merged = bench.merge_rounds([round_at(100.0), round_at(300.0)])["dense"]
    assert merged["fps"] == pytest.approx(5.0)
    assert merged["fps_pipelined"] == pytest.approx(merged["fps"])


def test_bench_records_the_warm_up_that_ran_and_routes_only_the_whole_node_flag(tmp_path, capsys,
                                                                                monkeypatch):
    out = tmp_path / "bench.json"
    assert bench.main(["--random-weights", "--image-size", "64", "--max-frames", "3",
                       "--warmup-frames", "10", "--device", "cpu", "--modes", "dense",
                       "--mc-passes", "0", "--no-profile", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["warmup_frames"] == 3  # a 3-frame clip: 3 warm-up frames
    monkeypatch.setattr(bench, "_run", lambda args: pytest.fail("--nod ran the model benchmark"))
    with pytest.raises(SystemExit):  # argparse: unrecognised (no abbreviations)
        bench.main(["--nod", "--random-weights"])
    assert "unrecognized arguments: --nod" in capsys.readouterr().err


def test_a_soak_off_cuda_traces_no_gpu_memory_and_says_so(capsys):
    """It reported 0 bytes of peak and growth: "no growth", though nothing was traced."""
    model = build_predictor(TrackerConfig(model_cfg="tiny", allow_random_weights=True,
                                          image_size=64, device="cpu"))
    cfg = TrackerConfig(model_cfg="tiny", allow_random_weights=True, image_size=64, device="cpu",
                        mc_passes=0)
    soak = bench.run_soak(cfg, model, bench.load_frames(None, 3), [(300, 200)], 0.3, length=5,
                          every=2)
    assert soak["gpu_memory_traced"] is False
    assert soak["ours_window_peak_growth_after_first_sixth"] is None
    assert soak["peak_vs_official_at_end"] is None
    assert all(row["peak_bytes"] is None and row["state_bytes"] > 0 for row in soak["ours"])


def test_stage_kernel_times_of_a_profiled_pass_are_its_stage_times(monkeypatch):
    """The kernel profile's arithmetic, on the CPU (its ranges' CPU time): each stage counts once,
    a stage nested in the decoder not in the decoder too, so each agrees with the synchronised
    stage timer over the same (last, traced) frames."""
    cfg = TrackerConfig(model_cfg="tiny", allow_random_weights=True, image_size=128, device="cpu",
                        keep_ratio=0.3)
    model = build_predictor(cfg)
    tracker = StreamingTracker(cfg, model=model, profile_stages=True)
    monkeypatch.setattr(bench, "KERNEL_PROFILE_FRAMES", 2)
    results, kernels, ops = bench._profiled_pass(tracker, bench.load_frames(None, 5), [(300, 200)])
    timed = {s: np.mean([r.stats.stage_ms[s] for r in results[-2:]]) for s in bench.STAGES}
    for stage in ("encoder", "router", "memory_attention", "decoder", "memory_encoder"):
        assert timed[stage] > 0
        assert kernels[stage] == pytest.approx(timed[stage], rel=0.25, abs=0.5), stage
    assert kernels["other"] >= 0
    assert kernels["total"] == pytest.approx(sum(v for k, v in kernels.items() if k != "total"))
    # the heaviest ops of the router and memory attention, from the same trace: the router's
    # two projections of its Monte-Carlo passes (keys once, the T passes' queries in one batch)
    # per frame, each stage's listed ops within its time, heaviest first
    assert set(ops) == set(bench.OP_LIST_STAGES)
    router = {op: (ms, calls) for op, ms, calls in ops["router"]}
    assert router["aten::linear"][1] == 2.0
    for stage, listed in ops.items():
        assert 0 < len(listed) <= bench.OPS_LISTED
        times = [ms for _, ms, _ in listed]
        assert times == sorted(times, reverse=True) and sum(times) <= kernels[stage] * 1.0001


def test_stage_kernel_times_sum_device_time_and_skip_the_gpu_side_annotations():
    """On CUDA the device time of each range's kernels counts; the profiler's GPU-side copies of
    the annotations (device_type CUDA) would count every stage twice."""
    from types import SimpleNamespace as Event

    def event(name, device_time, children=(), device="CPU"):
        e = Event(name=name, device_type=Event(name=device), cpu_children=list(children),
                  cpu_parent=None, device_time_total=device_time, cpu_time_total=1e9)
        for c in children:
            c.cpu_parent = e
        return e

    router = event("fastsam2::router", 300.0, [event("aten::topk", 100.0)])
    attention = event("fastsam2::memory_attention", 1000.0)
    decoder = event("fastsam2::decoder", 2500.0, [event("aten::conv2d", 1200.0, [attention]), router])
    encoder = event("fastsam2::encoder", 5000.0)
    upload = event("aten::copy_", 200.0)
    mirror = event("fastsam2::encoder", 5000.0, device="CUDA")
    events = [encoder, decoder, router, attention, upload, mirror] + router.cpu_children
    ms = bench.stage_kernel_ms(events, 2, "cuda")
    assert ms["encoder"] == 2.5 and ms["decoder"] == 0.6 and ms["router"] == 0.15
    assert ms["memory_attention"] == 0.5 and ms["memory_encoder"] == 0.0
    assert ms["other"] == pytest.approx(0.1) and ms["total"] == pytest.approx(3.85)
    # the ops a stage called itself, per frame; a stage nested under one of them is its own
    ops = bench.stage_kernel_ops(events, 2, "cuda", stages=("router", "decoder", "encoder"))
    assert ops == {"router": [["aten::topk", 0.05, 0.5]], "decoder": [["aten::conv2d", 0.1, 0.5]],
                   "encoder": []}


def test_the_report_prints_each_modes_kernel_stage_times(capsys):
    """A recorded GPU report, with a kernel profile added to one mode as the bench now writes it."""
    path = pathlib.Path(__file__).parents[2] / "benchmarks" / "gpu_h100_1024_tiny_bedroom60_1obj.json"
    report = json.loads(path.read_text())
    report["modes"]["pruned@0.3"]["stage_kernel_ms"] = {
        "encoder": 4.5, "router": 0.25, "memory_attention": 1.25, "decoder": 0.75,
        "memory_encoder": 0.5, "other": 1.0, "total": 8.25}
    report["modes"]["pruned@0.3"]["stage_kernel_ops"] = {
        "router": [[f"aten::op{i}", 0.1 / (i + 1), 1.0] for i in range(bench.OPS_LISTED)],
        "memory_attention": []}
    bench.print_report(report)
    out = capsys.readouterr().out.splitlines()
    lines = [ln for ln in out if "kernel ms/frame" in ln]
    assert lines == [f"pruned@0.3 kernel ms/frame (last {bench.KERNEL_PROFILE_FRAMES} frames): "
                     "encoder 4.50 router 0.25 memory_attention 1.25 decoder 0.75 memory_encoder "
                     "0.50 other 1.00 total 8.25"]
    ops = [ln for ln in out if "heaviest ops" in ln]  # the first OPS_PRINTED; none for no ops
    assert ops == ["pruned@0.3 router heaviest ops (ms/frame x calls/frame): aten::op0 0.100 x1, "
                   "aten::op1 0.050 x1, aten::op2 0.033 x1, aten::op3 0.025 x1, aten::op4 0.020 x1, "
                   "aten::op5 0.017 x1"]


def test_a_kernel_trace_that_cannot_be_read_is_reported_not_fatal(monkeypatch, capsys):
    """The kernel profile is the bench's newest code and had never run on a GPU: an error reading
    its trace ended the whole step after the official mode, on a rare lease. Now the mode keeps its
    timings, its stage_kernel_ms holds the error, and the report and ratios say so."""
    cfg = TrackerConfig(model_cfg="tiny", allow_random_weights=True, image_size=64, device="cpu",
                        keep_ratio=0.3, mc_passes=0)
    tracker = StreamingTracker(cfg, model=build_predictor(cfg), profile_stages=True)

    def unreadable(*_):
        raise KeyError("device_time_total")

    monkeypatch.setattr(bench, "stage_kernel_ms", unreadable)
    results, kernels, ops = bench._profiled_pass(tracker, bench.load_frames(None, 4), [(300, 200)])
    assert len(results) == 3 and kernels == {"error": "KeyError: 'device_time_total'"}
    assert ops is None
    path = pathlib.Path(__file__).parents[2] / "benchmarks" / "gpu_h100_1024_tiny_bedroom60_1obj.json"
    report = json.loads(path.read_text())
    report["modes"]["pruned@0.3"]["stage_kernel_ms"] = kernels
    report["modes"]["dense"]["stage_kernel_ms"] = {"memory_attention": 2.0, "router": 0.0}
    assert "memory_attention_kernels_vs_dense" not in bench.ratios_of(report["modes"])["pruned@0.3"]
    bench.print_report(report)
    assert "pruned@0.3 kernel profile failed: KeyError: 'device_time_total'" in capsys.readouterr().out


def test_the_summary_has_a_line_per_mode_with_its_ratios_even_for_a_partial_report():
    path = pathlib.Path(__file__).parents[2] / "benchmarks" / "gpu_h100_1024_tiny_bedroom60_1obj.json"
    report = json.loads(path.read_text())
    report["modes"]["pruned@0.3"]["stage_kernel_ms"] = {"router": 0.25, "memory_attention": 1.25,
                                                        "total": 8.25}
    lines = bench.summary_lines(report, "gpu_tiny_1obj")
    assert [ln.split(":")[0] for ln in lines] == [f"gpu_tiny_1obj {m}" for m in report["modes"]]
    line = lines[list(report["modes"]).index("pruned@0.3")]
    assert line.startswith("gpu_tiny_1obj pruned@0.3: 9.79 ms/frame, 102.1 FPS, pipe 117.6 FPS, "
                           "GPU 8.60 ms, x official 2.544 (2.38, 2.70), x dense 1.259 (1.28, 1.24)")
    assert line.endswith("kernels router 0.25 memory_attention 1.25 total 8.25")
    partial = {"partial": "round 1 of 2: official measured", "modes": {
        "official": report["modes"]["official"], "official_vos": {"error": "did not compile"}}}
    assert bench.summary_lines(partial) == [
        "PARTIAL (round 1 of 2: official measured)",
        "official: 24.91 ms/frame, 40.1 FPS", "official_vos: did not compile"]


def test_keep_ratios_that_print_alike_get_modes_of_their_own():
    """``pruned@{r:g}`` named 0.3 and 0.3000001 alike: the second mode's result replaced the
    first's in the report."""
    assert bench.keep_ratios(" 0.3, 0.3000001,,0.1") == [0.3, 0.3000001, 0.1]
    assert bench.pruned_mode_name(0.3) == "pruned@0.3"
    assert bench.pruned_mode_name(0.3000001) == "pruned@0.3000001"
    assert bench.pruned_mode_name(0.125) == "pruned@0.125"


def test_a_ctrl_c_ends_the_bench_with_a_line_not_a_traceback(tmp_path, capsys, monkeypatch):
    """Ctrl-C printed a KeyboardInterrupt traceback and the process died of the signal."""
    out = tmp_path / "b.json"

    def measured_then_interrupted(args):
        out.write_text("{}")  # (as the bench saves after every measured mode)
        raise KeyboardInterrupt

    monkeypatch.setattr(bench, "_run", measured_then_interrupted)
    assert bench.main(["--random-weights", "--json", str(out)]) == 130
    assert capsys.readouterr().err.strip() == (f"fastsam2-bench: interrupted; {out} holds the "
                                               "modes measured so far")
    monkeypatch.setattr(bench, "_run", lambda args: (_ for _ in ()).throw(KeyboardInterrupt))
    assert bench.main(["--random-weights"]) == 130
    assert capsys.readouterr().err.strip() == "fastsam2-bench: interrupted"
    os.utime(out, (1e9, 1e9))  # an earlier run's file: this run measured nothing
    assert bench.main(["--random-weights", "--json", str(out)]) == 130
    assert capsys.readouterr().err.strip() == "fastsam2-bench: interrupted"


def test_bench_modes_in_any_case(tmp_path):
    """As fastsam2-eval takes them: "Pruned" is the pruned mode, not a mode silently skipped."""
    out = tmp_path / "bench.json"
    assert bench.main(["--random-weights", "--image-size", "64", "--max-frames", "3", "--device",
                       "cpu", "--keep-ratios", "0.3", "--mc-passes", "0", "--no-profile",
                       "--modes", "Dense, PRUNED", "--json", str(out)]) == 0
    assert set(json.loads(out.read_text())["modes"]) == {"dense", "pruned@0.3"}


def test_bench_checks_its_json_before_the_work(tmp_path, capsys, monkeypatch):
    args = ["--random-weights", "--image-size", "64", "--max-frames", "3", "--device", "cpu",
            "--modes", "dense", "--mc-passes", "0", "--no-profile"]
    real_round = bench.run_round
    monkeypatch.setattr(bench, "run_round", lambda *a, **k: pytest.fail("ran before checking --json"))
    (tmp_path / "afile").write_text("x")
    for out, why in ((tmp_path, "is a folder"), (tmp_path / "afile" / "b.json", "is a file")):
        assert bench.main(args + ["--json", str(out)]) == 2
        assert why in capsys.readouterr().err
    # a write that fails anyway (here: a file took the folder's place during the run): exit 2
    monkeypatch.setattr(bench, "run_round", real_round)
    real_report = bench.print_report

    def report_then_block_folder(report):
        real_report(report)
        shutil.rmtree(tmp_path / "gone", ignore_errors=True)  # (holding the partial reports)
        (tmp_path / "gone").write_text("x")

    monkeypatch.setattr(bench, "print_report", report_then_block_folder)
    out = tmp_path / "gone" / "b.json"
    assert bench.main(args + ["--json", str(out)]) == 2
    err = capsys.readouterr().err.splitlines()[-1]
    assert err.startswith("fastsam2-bench: error:") and "gone" in err


def test_bench_warms_every_mode_up_on_the_same_frames(monkeypatch, capsys):
    """An official predictor timed cold would flatter ours in the "x official" ratios."""
    from fastsam2_ros.core import official, tracker

    calls = {"official": 0, "ours": 0}
    propagate, track = official.OfficialVideoSession.propagate, tracker.StreamingTracker.track

    def counting_propagate(self, *a, **k):
        for item in propagate(self, *a, **k):
            calls["official"] += 1  # frame 0 included
            yield item

    def counting_track(self, *a, **k):
        calls["ours"] += 1  # frame 0 included (add_prompt tracks the image it is given)
        return track(self, *a, **k)

    monkeypatch.setattr(official.OfficialVideoSession, "propagate", counting_propagate)
    monkeypatch.setattr(tracker.StreamingTracker, "track", counting_track)
    args = ["--random-weights", "--image-size", "64", "--max-frames", "4", "--device", "cpu",
            "--modes", "official,dense", "--mc-passes", "0", "--no-profile"]
    for warmup in (2, 3):
        calls.update(official=0, ours=0)
        assert bench.main(args + ["--warmup-frames", str(warmup)]) == 0
        assert calls["official"] - 4 == calls["ours"] - 4 == warmup  # less the timed frames 0..3
    capsys.readouterr()
    for warmup in ("0", "1"):  # a mode that is not warmed up is not measured
        assert bench.main(args + ["--warmup-frames", warmup]) == 2
        assert "--warmup-frames must be >= 2" in capsys.readouterr().err


def test_bench_tracks_one_object_per_click(tmp_path, capsys):
    """A second click used to be dropped silently (--objects defaulted to 1)."""
    out = tmp_path / "bench.json"
    args = ["--random-weights", "--image-size", "64", "--max-frames", "3", "--device", "cpu",
            "--modes", "dense", "--mc-passes", "0", "--no-profile", "--click", "10,10;40,30"]
    assert bench.main(args + ["--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["objects"] == 2 and report["clicks"] == [[10, 10], [40, 30]]
    assert report["modes"]["dense"]["objects"] == 2
    assert bench.main(args + ["--objects", "3", "--json", str(out)]) == 0  # the third is spread
    assert json.loads(out.read_text())["clicks"][:2] == [[10, 10], [40, 30]]
    capsys.readouterr()
    assert bench.main(args + ["--objects", "1"]) == 2
    assert "--click gives 2 clicks but --objects is 1" in capsys.readouterr().err


def test_bench_needs_weights_choice_and_reports_missing_checkpoint(tmp_path, capsys):
    with pytest.raises(SystemExit):
        bench.main(["--max-frames", "2"])
    rc = bench.main(["--checkpoint", str(tmp_path / "missing.pt"), "--max-frames", "2",
                     "--image-size", "128", "--device", "cpu"])
    assert rc == 2
    assert "missing.pt" in capsys.readouterr().err


def test_router_training_writes_weights_the_tracker_loads(tmp_path):
    data = generate_dataset(tmp_path / "syn", sequences=2, frames=4, size=(96, 64), objects=2)
    out = tmp_path / "router.pt"
    rc = router_training.main(["--data", str(data), "--out", str(out), "--random-weights",
                               "--image-size", "64", "--epochs", "4", "--mc-passes", "2",
                               "--device", "cpu", "--lr", "3e-3"])
    assert rc == 0
    blob = torch.load(out, weights_only=True)
    assert blob["meta"]["sequences"] == ["synth000", "synth001"] and blob["meta"]["imageset"] is None
    history = blob["meta"]["train_loss_history"]
    assert len(history) == 5 and history[-1] < history[0]  # training reduced the loss
    load_router(out, 256)
    cfg = TrackerConfig(model_cfg="tiny", allow_random_weights=True, image_size=64,
                        device="cpu", keep_ratio=0.3, router_weights=str(out))
    tracker = StreamingTracker(cfg)
    frame = torch.randint(0, 255, (48, 64, 3), dtype=torch.uint8).numpy()
    tracker.add_prompt(1, points=[[20, 20]], labels=[1], image=frame)
    assert tracker.track(frame).stats.router_mode == "mlp"
    assert router_training.main(["--data", str(tmp_path / "nothing"), "--out", str(out),
                                 "--random-weights"]) == 2


def _examples_encoded_with(seen):
    """A stand-in for collect_examples that records the tracker's CLIP model and gives two random
    examples (encoding frames and texts with a random CLIP takes seconds)."""
    from fastsam2_ros.core.router import FusedFactors

    def collect(tracker, dataset, texts, max_frames):
        seen.append(tracker.cfg.clip_model)
        n, c = 16, tracker.model.hidden_dim
        factors = FusedFactors(torch.randn(n, c).half(), torch.ones(1, n), torch.randn(1, c),
                               torch.rand(n, dtype=torch.float64), torch.randn(c, dtype=torch.float64))
        return [router_training.Example(factors, (torch.arange(n) % 2).float(), "synth000")] * 2
    return collect


def test_router_training_takes_and_records_the_clip_model_of_its_texts(tmp_path, capsys,
                                                                       monkeypatch):
    """The text input is made of clip_model's embeddings: the tool always used ViT-B-16 and the
    file did not say so, so a router for a tracker running another CLIP could not be trained."""
    pytest.importorskip("open_clip")
    data = generate_dataset(tmp_path / "syn", sequences=1, frames=3, size=(64, 64), objects=1)
    prompts = tmp_path / "texts.json"
    prompts.write_text('{"synth000": {"1": "a red ball"}}')
    out = tmp_path / "router.pt"
    args = ["--data", str(data), "--out", str(out), "--random-weights", "--image-size", "64",
            "--device", "cpu", "--mc-passes", "0", "--epochs", "1", "--text-prompts", str(prompts)]
    seen = []
    monkeypatch.setattr(router_training, "collect_examples", _examples_encoded_with(seen))
    assert router_training.main(args + ["--clip-model", "ViT-X-99"]) == 2 and not seen
    assert "unknown open_clip model 'ViT-X-99'" in capsys.readouterr().err  # before any frame
    assert router_training.main(args + ["--clip-model", "ViT-S-16"]) == 0 and seen == ["ViT-S-16"]
    assert torch.load(out, weights_only=True)["meta"]["clip_model"] == "ViT-S-16"


def test_router_training_void_label_is_no_object(tmp_path):
    """DAVIS annotations mark void pixels 255: not an object to train on, nor a prior."""
    data = generate_dataset(tmp_path / "syn", sequences=1, frames=3, size=(96, 64), objects=1)
    for p in sorted((data / "Annotations" / "480p" / "synth000").glob("*.png")):
        lab = read_label_png(p).copy()
        lab[:4, :] = 255  # a void band
        write_label_png(p, lab)
    cfg = TrackerConfig(model_cfg="tiny", allow_random_weights=True, image_size=64, device="cpu",
                        mc_passes=2)
    examples = router_training.collect_examples(StreamingTracker(cfg), DavisDataset(data), {}, None,
                                                log=lambda *a: None)
    assert len(examples) == 3  # object 1 on each annotated frame, nothing for 255


def test_router_training_holds_out_whole_sequences():
    """Frames of one sequence look alike: held-out frames of training sequences flatter recall."""
    examples = [router_training.Example(None, None, f"seq{i % 7}") for i in range(70)]
    val, trn, held_out = router_training.split_by_sequence(examples, random.Random(0))
    assert held_out == "sequences" and len(val) == 10 and len(trn) == 60
    assert len({examples[i].sequence for i in val}) == 1
    assert not {examples[i].sequence for i in val} & {examples[i].sequence for i in trn}
    val, trn, held_out = router_training.split_by_sequence(examples[:1] * 10, random.Random(0))
    assert held_out.startswith("examples") and (len(val), len(trn)) == (2, 8)


def test_router_training_fits_an_objects_text_map_on_its_first_frame_only(tmp_path, monkeypatch):
    """As the tracker does (clip_refresh_interval 0): later frames reuse the prompt frame's map."""
    data = generate_dataset(tmp_path / "syn", sequences=2, frames=3, size=(96, 64), objects=2)
    cfg = TrackerConfig(model_cfg="tiny", allow_random_weights=True, image_size=64, device="cpu",
                        mc_passes=0, text_mode="paper_lsq")
    tracker = StreamingTracker(cfg)
    fitted = []
    real = tracker.text_state
    monkeypatch.setattr(tracker, "text_state", lambda text: fitted.append(text) or real(text))
    texts = {"synth000": {1: "a red ball"}, "synth001": {1: "a cup", 2: "a box"}}
    examples = router_training.collect_examples(tracker, DavisDataset(data), texts, None,
                                                log=lambda *a: None)
    assert sorted(fitted) == ["a box", "a cup", "a red ball"]
    assert len(examples) == 12 and {ex.sequence for ex in examples} == {"synth000", "synth001"}


def test_router_training_checks_its_output_before_the_work(tmp_path, capsys, monkeypatch):
    data = generate_dataset(tmp_path / "syn", sequences=1, frames=3, size=(96, 64), objects=1)
    real_collect = router_training.collect_examples
    monkeypatch.setattr(router_training, "collect_examples",
                        lambda *a, **k: pytest.fail("trained before checking --out"))
    args = ["--data", str(data), "--random-weights", "--image-size", "64", "--epochs", "1",
            "--mc-passes", "2", "--device", "cpu"]
    for out in (tmp_path / "no_such_dir" / "router.pt", tmp_path / "syn"):
        assert router_training.main(args + ["--out", str(out)]) == 2
        assert str(out) in capsys.readouterr().err
    # a save that fails anyway (here: the folder vanished during training) is reported, exit 2
    monkeypatch.setattr(router_training, "collect_examples", real_collect)
    real_train = router_training.train
    (tmp_path / "gone").mkdir()

    def train_then_remove_folder(*a, **k):
        result = real_train(*a, **k)
        (tmp_path / "gone").rmdir()
        return result

    monkeypatch.setattr(router_training, "train", train_then_remove_folder)
    out = tmp_path / "gone" / "router.pt"
    assert router_training.main(args + ["--out", str(out)]) == 2
    assert f"cannot write router weights {out}" in capsys.readouterr().err


@pytest.mark.parametrize("flags, match", [
    (["--max-frames", "0"], "--max-frames must be >= 1"),  # crashed (IndexError)
    (["--max-frames=-1"], "--max-frames must be >= 1"),  # dropped each sequence's last frame
    (["--epochs", "0"], "--epochs must be >= 1"),  # saved an untrained router, exit 0
    (["--epochs=-1"], "--epochs must be >= 1"),
    (["--lr", "0"], "--lr must be a finite number > 0"),
    (["--lr", "nan"], "--lr must be a finite number > 0"),
    (["--lr=-1e-3"], "--lr must be a finite number > 0"),
    (["--keep-ratio", "0"], "keep_ratio must be in (0, 1]"),
    (["--keep-ratio", "1.5"], "keep_ratio must be in (0, 1]"),
])
def test_router_training_refuses_bad_numbers_before_the_work(tmp_path, capsys, monkeypatch, flags,
                                                              match):
    monkeypatch.setattr(router_training, "collect_examples",
                        lambda *a, **k: pytest.fail("started before checking the arguments"))
    args = ["--data", str(tmp_path), "--out", str(tmp_path / "r.pt"), "--random-weights",
            "--image-size", "64", "--device", "cpu", *flags]
    assert router_training.main(args) == 2
    assert match in capsys.readouterr().err


@pytest.mark.parametrize("content, match", [
    ('["a cup"]', 'expected {"sequence": {"object id": "text"}}'),  # crashed (AttributeError)
    ('{"synth000": "a cup"}', "entry of sequence 'synth000' must map object ids to texts"),
    ('{"synth000": {"one": "a cup"}}', "object id 'one' of sequence 'synth000' is not an integer"),
    ('{"synth000": {"1": ""}}', "must be a non-empty string"),
    ('{"synth000": {"1": "%s"}}' % ("x" * 400), "text prompt has 400 characters; at most 300"),
    ("{", "cannot parse text prompt file"),
])
def test_router_training_reads_text_prompts_as_fastsam2_eval(tmp_path, capsys, monkeypatch, content,
                                                              match):
    """Checked before the work, with fastsam2-eval's loader (its layout, its messages)."""
    seen = []

    def stop(tracker, dataset, texts, max_frames):
        seen.append(texts)
        raise router_training.InputError("stop")

    monkeypatch.setattr(router_training, "collect_examples", stop)
    prompts = tmp_path / "texts.json"
    data = generate_dataset(tmp_path / "syn", sequences=1, frames=3, size=(32, 32), objects=1)
    args = ["--data", str(data), "--out", str(tmp_path / "r.pt"), "--random-weights",
            "--image-size", "64", "--device", "cpu", "--mc-passes", "0", "--text-prompts", str(prompts)]
    prompts.write_text(content)
    assert router_training.main(args) == 2
    err = capsys.readouterr().err
    assert match in err and str(prompts) in err and not seen
    prompts.write_text('{"synth000": {"1": "a cup"}}')
    assert router_training.main(args) == 2 and seen == [{"synth000": {1: "a cup"}}]



@pytest.mark.parametrize("content, match", [
    ('{"synth00": {"1": "a cup"}}', "sequence(s) ['synth00'] that dataset"),
    ('{"synth000": {"2": "a cup"}}', "object id(s) [2] that its annotations do not contain"),
])
def test_router_training_refuses_texts_it_would_not_use(tmp_path, capsys, monkeypatch, content,
                                                        match):
    """A mistyped sequence or an object the sequence lacks was ignored: the router trained without
    any text, and its file said text_mode clip_ridge (fastsam2-eval refuses both). Refused before
    any frame is encoded."""
    monkeypatch.setattr(router_training, "collect_examples",
                        lambda *a, **k: pytest.fail("encoded frames before checking the texts"))
    prompts = tmp_path / "texts.json"
    prompts.write_text(content)
    data = generate_dataset(tmp_path / "syn", sequences=1, frames=3, size=(32, 32), objects=1)
    out = tmp_path / "r.pt"
    args = ["--data", str(data), "--out", str(out), "--random-weights", "--image-size", "64",
            "--device", "cpu", "--mc-passes", "0", "--epochs", "1", "--text-prompts", str(prompts)]
    assert router_training.main(args) == 2
    assert match in capsys.readouterr().err and not out.exists()


def test_router_training_keeps_to_the_train_image_set(tmp_path, capsys, monkeypatch):
    """A DAVIS download keeps train and val side by side: every folder was trained on, the val
    sequences the router is then evaluated on included."""
    chosen = []

    def stop(tracker, dataset, texts, max_frames):
        chosen.append(list(dataset.sequence_names))
        raise router_training.InputError("stop")

    monkeypatch.setattr(router_training, "collect_examples", stop)
    data = generate_dataset(tmp_path / "syn", sequences=3, frames=3, size=(32, 32), objects=1)
    args = ["--data", str(data), "--out", str(tmp_path / "r.pt"), "--random-weights",
            "--image-size", "64", "--device", "cpu", "--mc-passes", "0"]
    router_training.main(args)  # no train set: every sequence, said so
    assert chosen[-1] == ["synth000", "synth001", "synth002"]
    assert "no 'train' image set: training on every sequence" in capsys.readouterr().err
    (data / "ImageSets" / "2017" / "train.txt").write_text("synth000\nsynth002\n")
    router_training.main(args)
    assert chosen[-1] == ["synth000", "synth002"] and "every sequence" not in capsys.readouterr().err
    router_training.main(args + ["--sequences", "synth001"])
    router_training.main(args + ["--imageset", "val"])
    assert chosen[-2:] == [["synth001"], ["synth000", "synth001", "synth002"]]


def test_router_training_checks_the_clip_weights_before_encoding(tmp_path, capsys, monkeypatch):
    """With a real checkpoint and texts but no CLIP weights, every frame before the first text was
    encoded before the command failed."""
    from fastsam2_ros.core.models import build_predictor

    monkeypatch.setattr(router_training, "collect_examples",
                        lambda *a, **k: pytest.fail("encoded frames before checking the CLIP weights"))
    model = build_predictor(TrackerConfig(model_cfg="tiny", allow_random_weights=True, image_size=64,
                                          device="cpu"))
    torch.save({"model": model.state_dict()}, tmp_path / "sam.pt")
    data = generate_dataset(tmp_path / "syn", sequences=1, frames=3, size=(32, 32), objects=1)
    assert router_training.main(["--data", str(data), "--out", str(tmp_path / "r.pt"),
                                 "--checkpoint", str(tmp_path / "sam.pt"), "--image-size", "64",
                                 "--device", "cpu", "--text-prompts",
                                 str(data / "text_prompts.json")]) == 2
    assert "no CLIP weights given" in capsys.readouterr().err


def test_router_training_checks_the_clip_architecture_before_the_data(tmp_path, capsys,
                                                                     monkeypatch):
    """CLIP weights of another architecture than --clip-model passed the checks up front: SAM 2
    was built, the annotations read and the frames before the first text encoded, and only then
    did the CLIP loader refuse the file."""
    pytest.importorskip("open_clip")
    from fastsam2_ros.core import tracker as tracker_module

    def too_late(*a, **k):
        pytest.fail("read the data or built SAM 2 before checking the CLIP weights")

    for name in ("check_text_objects", "collect_examples"):
        monkeypatch.setattr(router_training, name, too_late)
    monkeypatch.setattr(tracker_module, "StreamingTracker", too_late)
    clip = tmp_path / "open_clip_pytorch_model.bin"  # (a state dict of some tiny other CLIP)
    torch.save({"visual.proj": torch.zeros(64, 32), "logit_scale": torch.ones([])}, clip)
    data = generate_dataset(tmp_path / "syn", sequences=1, frames=3, size=(32, 32), objects=1)
    assert router_training.main(["--data", str(data), "--out", str(tmp_path / "r.pt"),
                                 "--random-weights", "--image-size", "64", "--device", "cpu",
                                 "--text-prompts", str(data / "text_prompts.json"),
                                 "--clip-weights", str(clip)]) == 2
    err = capsys.readouterr().err
    assert f"CLIP weights '{clip}' do not match open_clip architecture 'ViT-B-16'" in err
    assert "--clip-model" in err


def test_router_training_uses_the_texts_of_the_sequences_it_trains_on(tmp_path, capsys,
                                                                      monkeypatch):
    """A text file made for fastsam2-eval holds the val sequences' texts: none reached training,
    yet the file recorded text_mode clip_ridge (a router that never saw a text)."""
    seen = []

    def stop(tracker, dataset, texts, max_frames):
        seen.append(texts)
        raise router_training.InputError("stop")

    monkeypatch.setattr(router_training, "collect_examples", stop)
    data = generate_dataset(tmp_path / "syn", sequences=2, frames=3, size=(32, 32), objects=1)
    (data / "ImageSets" / "2017" / "train.txt").write_text("synth000\n")
    prompts = tmp_path / "texts.json"
    args = ["--data", str(data), "--out", str(tmp_path / "r.pt"), "--random-weights",
            "--image-size", "64", "--device", "cpu", "--mc-passes", "0", "--text-prompts", str(prompts)]
    prompts.write_text('{"synth001": {"1": "a cup"}}')
    assert router_training.main(args) == 2 and not seen
    assert "texts only for sequences that are not trained on (synth001)" in capsys.readouterr().err
    prompts.write_text('{"synth000": {"1": "a ball"}, "synth001": {"1": "a cup"}}')
    router_training.main(args)
    assert seen == [{"synth000": {1: "a ball"}}]
    assert "texts of 1 sequence(s) not trained on are not used: synth001" in capsys.readouterr().err


def test_node_bench_ends_a_point_the_node_never_answers():
    """A point shorter than the early give-up (3 frames) ended all LOST with exit 0."""
    from fastsam2_ros.ros import node_bench

    class SilentProbe:
        def publish(self, frame):
            return (0, 0), 0.0

        def wait_outputs(self, key, topics, timeout):
            return False

    with pytest.raises(RuntimeError, match="answered none of the 2 frames"):
        node_bench.measure_latency(SilentProbe(), [None], ("mask",), 2, 0, 0.0, 0.01)


GPU_CHECK = pathlib.Path(__file__).resolve().parents[2] / "scripts" / "gpu_check.sh"


def test_gpu_check_script_runs_every_step_as_a_cpu_dry_run(tmp_path):
    """The one-shot GPU script (a GPU lease is short and rare) runs every step it would run there,
    at a small size on the CPU, and packs every result: a renamed flag or a broken step shows up
    here, not on the GPU."""
    frames = tmp_path / "frames"
    frames.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):  # the script's clicks are placed on 960x540 frames
        Image.fromarray(rng.integers(0, 255, (540, 960, 3), dtype=np.uint8)).save(frames / f"{i:05d}.png")
    out, archive = tmp_path / "out", tmp_path / "results.tgz"
    env = {k: v for k, v in os.environ.items() if k not in ("N", "SIZE", "SOAK", "REPEATS")}
    env.update(DEVICE="cpu", PYTHON=sys.executable, OUT=str(out), FRAMES=str(frames),
               COMPILE="encoder", COMPILE_MODELS="tiny", FP32="1", ATTENTION="1", BACKEND="flash",
               ARCHIVE=str(archive), TAG="dry")
    run = subprocess.run(["bash", str(GPU_CHECK)], env=env, capture_output=True, text=True, timeout=1800)
    assert run.returncode == 0, run.stdout + run.stderr
    steps = ["tiny_1obj", "tiny_4obj", "large_1obj", "tiny_soak", "large_1obj_fp32", "cuda_tests",
             "attention_probe", "tiny_1obj_attention_flash", "tiny_compile_encoder_cold",
             "tiny_compile_encoder_restart"]
    status = [line.split()[:2] for line in run.stdout.splitlines() if " rc=" in line]
    assert status == [[name, "rc=0"] for name in steps], run.stdout
    reports = {name: json.loads((out / f"dry_{name}.json").read_text()) for name in steps
               if name not in ("cuda_tests", "attention_probe")}
    probe = json.loads((out / "dry_attention_probe.json").read_text())
    assert probe["device"] == "cpu" and {r["shape"] for r in probe["rows"]} >= {"cross@1.0", "self@0.3"}
    assert reports["tiny_1obj"]["modes"].keys() == {"official", "dense", "pruned@0.1", "pruned@0.3",
                                                    "pruned@0.5"}
    assert all(len(m["rounds"]) == 2 for m in reports["tiny_1obj"]["modes"].values())
    assert reports["tiny_4obj"]["objects"] == 4 and reports["large_1obj"]["model"] == "large"
    assert all(r["image_size"] == 64 and r["frames"] == 3 for r in reports.values())  # dry-run sizes
    assert reports["tiny_soak"]["soak"]["frames"] == 4 and reports["tiny_soak"]["soak"]["ours"]
    assert reports["large_1obj_fp32"]["bf16"] is False
    assert reports["tiny_1obj_attention_flash"]["attention_backend"] == "flash"
    assert reports["tiny_1obj"]["attention_backend"] == "auto"
    # on the CPU torch.compile does not run: the JSON says what ran, and what was asked
    assert reports["tiny_compile_encoder_restart"]["torch_compile_requested"] == "encoder"
    assert reports["tiny_compile_encoder_restart"]["torch_compile"] == "none"
    # the summary, a line per mode of every step, comes last (a lease's output keeps the tail)
    summary = (out / "dry_summary.txt").read_text().splitlines()
    assert [ln for ln in summary if ln.startswith("dry_tiny_1obj pruned@0.3: ")][0].count(" x dense ") == 1
    assert len(summary) == sum(len(r["modes"]) for r in reports.values())
    assert "\n".join(summary) in run.stdout
    with tarfile.open(archive) as packed:
        names = {pathlib.PurePath(n).name for n in packed.getnames()}
    assert {f"dry_{name}.log" for name in steps} <= names
    assert {f"dry_{name}.json" for name in reports} | {"dry_summary.txt", "dry_attention_probe.json"} <= names


STUB_PYTHON = """#!/usr/bin/env bash
# gpu_check.sh's Python, stood in: the environment check passes, a bench step sleeps (compile
# steps STUB_COMPILE_SLEEP s, a cold one exits STUB_COLD_RC; tiny_4obj STUB_SLOW_SLEEP s), logs
# STUB_LOG_BYTES of output and writes its --json
if [ "${1:-}" = "-" ]; then  # the environment check passes; the summary runs for real if asked
  script="$(cat)"
  case "$script" in
    *summary_lines*) [ -n "${STUB_REAL_PYTHON:-}" ] && exec "$STUB_REAL_PYTHON" -c "$script" "${@:2}" ;;
  esac
  echo "torch stub"; exit 0
fi
json=""; prev=""
for a in "$@"; do [ "$prev" = "--json" ] && json="$a"; prev="$a"; done
echo "ran $(basename "${json:-cuda_tests}" .json)" >>"$STUB_LOG"
[ -n "${STUB_ENV_LOG:-}" ] && echo "$(basename "${json:-cuda_tests}" .json)" \
    "casts=${TORCHINDUCTOR_EMULATE_PRECISION_CASTS:-unset}" >>"$STUB_ENV_LOG"
head -c "${STUB_LOG_BYTES:-0}" /dev/urandom | base64
case "$json" in
  *tiny_4obj*) sleep "${STUB_SLOW_SLEEP:-0}" ;;
  *compile*cold*) sleep "${STUB_COMPILE_SLEEP:-0}"; [ -n "$json" ] && echo "{}" >"$json"
                  exit "${STUB_COLD_RC:-0}" ;;
  *compile*) sleep "${STUB_COMPILE_SLEEP:-0}" ;;
esac
[ -n "$json" ] && [ -z "${STUB_NO_JSON:-}" ] && echo "{}" >"$json"
exit 0
"""


def _gpu_check_with_a_stub_python(tmp_path, **env_vars):
    stub = tmp_path / "python"
    stub.write_text(STUB_PYTHON)
    stub.chmod(0o755)
    env = dict(os.environ, PYTHON=str(stub), STUB_LOG=str(tmp_path / "ran.log"), DEVICE="cuda",
               OUT=str(tmp_path / "out"), FRAMES=str(tmp_path), SOAK="0", COMPILE="encoder",
               COMPILE_MODELS="tiny large", ARCHIVE=str(tmp_path / "out" / "all.tgz"))
    env.update(env_vars)
    run = subprocess.run(["bash", str(GPU_CHECK)], env=env, capture_output=True, text=True, timeout=300)
    ran = (tmp_path / "ran.log").read_text().split() if (tmp_path / "ran.log").exists() else []
    return run, [r for r in ran if r != "ran"]


def test_gpu_check_refuses_budgets_that_are_not_whole_seconds(tmp_path):
    """`[ $SECONDS -lt 330.5 ]` is an error that reads as false: every optional step was skipped
    without a word, and VOS=90.5 broke the VOS step's arithmetic."""
    for var in ("BUDGET", "VOS", "STEP_LIMIT"):
        run, ran = _gpu_check_with_a_stub_python(tmp_path, **{var: "90.5"})
        assert run.returncode == 2 and f"{var} must be a whole number" in run.stderr
        assert ran == []


def test_gpu_check_optional_steps_keep_within_the_budget_and_say_when_skipped(tmp_path):
    """An optional step never starts with under 30 s of BUDGET left nor runs past it (its limit
    is cut), a restart runs only after its cold start succeeded, and every skip has a status
    line. Before, a cold start began just inside BUDGET ran its whole STEP_LIMIT, its restart
    followed, and skipped steps left no trace."""
    import time

    t0 = time.monotonic()
    budget = 45  # the 4 required stub steps take well under 15 s: the cold start begins
    run, ran = _gpu_check_with_a_stub_python(tmp_path, BUDGET=str(budget), STEP_LIMIT="200",
                                             STUB_COMPILE_SLEEP="90")
    took = time.monotonic() - t0
    assert run.returncode == 1, run.stderr  # the cold start timed out
    assert ran == ["gpu_tiny_1obj", "gpu_tiny_4obj", "gpu_large_1obj", "cuda_tests",
                   "gpu_tiny_compile_encoder_cold"]
    assert took < budget + 15, f"the cold start ran past BUDGET ({took:.0f} s)"
    assert "tiny_compile_encoder_cold rc=124" in run.stdout
    assert "tiny_compile_encoder_restart skipped (no cold start)" in run.stdout
    assert "large_compile_encoder_cold skipped (budget" in run.stdout
    # the archive is whole and no temporary file is left
    with tarfile.open(tmp_path / "out" / "all.tgz") as packed:
        assert "./gpu_tiny_compile_encoder_cold.log" in packed.getnames()
    assert not list((tmp_path / "out").glob("*.tmp"))


def test_gpu_check_a_failed_cold_start_is_not_timed_again_as_a_restart(tmp_path):
    run, ran = _gpu_check_with_a_stub_python(tmp_path, COMPILE_MODELS="tiny", STUB_COLD_RC="1")
    assert run.returncode == 1, run.stderr  # a failed step fails the check
    assert ran[-1] == "gpu_tiny_compile_encoder_cold"
    assert "tiny_compile_encoder_cold rc=1" in run.stdout
    assert "tiny_compile_encoder_restart skipped (no cold start)" in run.stdout


def test_gpu_check_times_each_of_several_compile_modes(tmp_path):
    """COMPILE may name several torch_compile modes (the router's compile next to the
    encoder's): each gets its cold start and restart, with its own cache, in the order given."""
    run, ran = _gpu_check_with_a_stub_python(tmp_path, COMPILE="router encoder", COMPILE_MODELS="tiny")
    assert run.returncode == 0, run.stderr
    assert ran[4:] == ["gpu_tiny_compile_router_cold", "gpu_tiny_compile_router_restart",
                       "gpu_tiny_compile_encoder_cold", "gpu_tiny_compile_encoder_restart"]
    for name in ran[4:]:
        assert f"{name[len('gpu_'):]} rc=0" in run.stdout


def test_gpu_check_compiles_a_casts_mode_with_inductors_eager_rounding_and_skips_named_steps(
        tmp_path):
    """``encoder+casts`` is the encoder's compile with TORCHINDUCTOR_EMULATE_PRECISION_CASTS=1
    (its own files and cache), every other step runs without it; SKIP leaves required steps out
    (a short lease's choice), said in the status, and is no failure."""
    env_log = tmp_path / "env.log"
    run, ran = _gpu_check_with_a_stub_python(
        tmp_path, COMPILE="encoder encoder+casts", COMPILE_MODELS="tiny",
        SKIP="tiny_4obj large_1obj", STUB_ENV_LOG=str(env_log))
    assert run.returncode == 0, run.stderr
    assert ran == ["gpu_tiny_1obj", "cuda_tests", "gpu_tiny_compile_encoder_cold",
                   "gpu_tiny_compile_encoder_restart", "gpu_tiny_compile_encoder_casts_cold",
                   "gpu_tiny_compile_encoder_casts_restart"]
    casts = dict(line.split() for line in env_log.read_text().splitlines())
    assert casts == {"gpu_tiny_1obj": "casts=unset", "cuda_tests": "casts=unset",
                     "gpu_tiny_compile_encoder_cold": "casts=0",
                     "gpu_tiny_compile_encoder_restart": "casts=0",
                     "gpu_tiny_compile_encoder_casts_cold": "casts=1",
                     "gpu_tiny_compile_encoder_casts_restart": "casts=1"}
    assert "tiny_4obj skipped (SKIP)" in run.stdout and "large_1obj skipped (SKIP)" in run.stdout
    # commas too; a skipped cold start skips its restart (it would time a cold start); a name of
    # no step is reported (a typo ran a step the lease had no time for, without a word)
    second = tmp_path / "second"
    second.mkdir()
    run, ran = _gpu_check_with_a_stub_python(
        second, COMPILE="encoder", COMPILE_MODELS="tiny",
        SKIP="tiny_4obj,large_1obj tiny_compile_encoder_cold tiny_40bj")
    assert run.returncode == 0, run.stderr
    assert ran == ["gpu_tiny_1obj", "cuda_tests"]
    assert "tiny_compile_encoder_restart skipped (no cold start)" in run.stdout
    assert "SKIP names no step: tiny_40bj" in run.stdout
    assert "SKIP names no step: tiny_4obj" not in run.stdout
    # a step that is off in this run (SOAK=0, no FP32, no VOS) is no typo
    third = tmp_path / "third"
    third.mkdir()
    run, ran = _gpu_check_with_a_stub_python(
        third, COMPILE="0", SKIP="tiny_soak large_1obj_fp32 tiny_official_vos large_compile_all_cold")
    assert run.returncode == 0 and "SKIP names no step" not in run.stdout, run.stdout


@pytest.mark.parametrize("var,value,said", [
    ("N", "6O", "N must be a whole number"), ("SIZE", "1024px", "SIZE must be a whole number"),
    ("SOAK", "-1", "SOAK must be a whole number"), ("REPEATS", "2.5", "REPEATS must be a whole number"),
    ("DEVICE", "gpu", "DEVICE must be cpu, cuda or cuda:N"),
    ("COMPILE", "router encodr", "COMPILE takes router, encoder, all (each with +casts), got 'encodr'")])
def test_gpu_check_refuses_bad_settings_before_any_step(tmp_path, var, value, said):
    """Bad N/SIZE/SOAK/REPEATS started every step, each failing (exit 1, the reason only in the
    steps' logs); DEVICE=gpu was a traceback; a misspelt COMPILE mode compiled nothing."""
    run, ran = _gpu_check_with_a_stub_python(tmp_path, **{var: value})
    assert run.returncode == 2 and said in run.stderr, run.stderr
    assert ran == []


def test_gpu_check_takes_the_compile_modes_that_the_config_defines(tmp_path):
    """gpu_check.sh reads its COMPILE modes from COMPILE_MODES in core/config.py, their one
    definition (it kept a list of its own, which a new mode would have left behind): each, with
    and without +casts, gets its cold start and restart; "none" is no mode to time."""
    modes = [m for m in COMPILE_MODES if m != "none"]
    specs = modes + [f"{m}+casts" for m in modes]
    run, ran = _gpu_check_with_a_stub_python(
        tmp_path, COMPILE=" ".join(specs), COMPILE_MODELS="tiny",
        SKIP="tiny_1obj tiny_4obj large_1obj cuda_tests")
    assert run.returncode == 0, run.stderr
    assert ran == [f"gpu_tiny_compile_{spec.replace('+', '_')}_{phase}"
                   for spec in specs for phase in ("cold", "restart")]
    (tmp_path / "none").mkdir()
    run, ran = _gpu_check_with_a_stub_python(tmp_path / "none", COMPILE="none")
    assert run.returncode == 2 and f"COMPILE takes {', '.join(modes)} (each with +casts), got 'none'" \
        in run.stderr and ran == []


def test_gpu_check_times_the_attention_kernels_when_asked(tmp_path):
    """ATTENTION=1 adds the attention probe and BACKEND=name the tracker with attention_backend
    name after the CUDA tests (both off by default: a lease's command names them); SKIP leaves
    them out like any step; BACKEND takes the names of ATTENTION_BACKENDS only."""
    from fastsam2_ros.core.config import ATTENTION_BACKENDS

    run, ran = _gpu_check_with_a_stub_python(tmp_path, COMPILE="0", ATTENTION="1", BACKEND="flash",
                                             SKIP="tiny_4obj large_1obj")
    assert run.returncode == 0, run.stderr
    assert ran == ["gpu_tiny_1obj", "cuda_tests", "gpu_attention_probe",
                   "gpu_tiny_1obj_attention_flash"]
    (tmp_path / "off").mkdir()
    run, ran = _gpu_check_with_a_stub_python(
        tmp_path / "off", COMPILE="0",
        SKIP="tiny_4obj large_1obj attention_probe tiny_1obj_attention_math")
    assert run.returncode == 0 and ran == ["gpu_tiny_1obj", "cuda_tests"], run.stderr
    assert "SKIP names no step" not in run.stdout
    (tmp_path / "bad").mkdir()
    run, ran = _gpu_check_with_a_stub_python(tmp_path / "bad", BACKEND="flash2")
    assert run.returncode == 2 and ran == []
    assert f"BACKEND takes {', '.join(ATTENTION_BACKENDS)}, got 'flash2'" in run.stderr


def test_the_attention_probe_reports_every_shape_and_kernel(tmp_path):
    """The probe's dry run: memory attention's shapes per keep ratio (7 frames of k tokens plus 64
    pointer tokens for the cross-attention), sdpa as torch picks and each kernel that runs on the
    device (on the CPU: flash and math), their difference at float32 rounding; no CUDA is exit 2,
    not a traceback."""
    from fastsam2_ros import attention_probe as ap

    shapes = {name: (q, k) for name, q, k in ap.attention_shapes()}
    assert shapes["cross@1.0"] == (4096, 7 * 4096 + 64) and shapes["cross@0.3"] == (1229, 7 * 1229 + 64)
    out = tmp_path / "probe.json"
    assert ap.main(["--device", "cpu", "--small", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert len(rows) == 2 * len(ap.attention_shapes(16 * 16))
    for row in rows:
        diffs = [v for key, v in row.items() if key.endswith("_rel_diff")]
        assert row["sdpa_ms"] > 0 and row["flash_ms"] > 0 and row["math_ms"] > 0, row
        assert row["cudnn_ms"] is None and len(diffs) >= 2 and all(d < 1e-5 for d in diffs), row
    assert "fastest " in ap.report(rows)
    if not torch.cuda.is_available():
        assert ap.main(["--device", "cuda"]) == 2
    assert ap.main(["--device", "bogus"]) == 2
    assert ap.main(["--device", "cpu", "--json", str(tmp_path)]) == 2  # a folder, not a file
    with pytest.raises(SystemExit):
        ap.main(["--device", "cpu", "--repeats", "0"])


def test_gpu_check_refuses_a_size_sam2_cannot_run_before_any_step(tmp_path):
    env = dict(os.environ, DEVICE="cpu", SIZE="100", OUT=str(tmp_path), SOAK="0",
               SKIP="tiny_1obj tiny_4obj large_1obj cuda_tests")
    run = subprocess.run(["bash", str(GPU_CHECK)], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 2 and "SIZE: image_size must be in [64, 4096], a multiple of 32, got 100" \
        in run.stderr, run.stderr
    assert not list(tmp_path.glob("*.log"))


def test_bench_records_inductors_rounding_only_for_a_run_that_compiled(monkeypatch):
    import torch._inductor.config as inductor_config
    from fastsam2_ros.core import models

    model = build_predictor(TrackerConfig(model_cfg="tiny", allow_random_weights=True,
                                          image_size=64, device="cpu"))
    monkeypatch.setattr(inductor_config, "emulate_precision_casts", True)
    assert bench.inductor_emulate_precision_casts(model) is None  # nothing compiled
    monkeypatch.setattr(torch, "compile", lambda fn, **_: fn)
    model.image_encoder.forward = models.CompiledOrEager("image_encoder", model.image_encoder.forward)
    assert bench.inductor_emulate_precision_casts(model) is True
    monkeypatch.setattr(inductor_config, "emulate_precision_casts", False)
    assert bench.inductor_emulate_precision_casts(model) is False


def test_gpu_check_no_step_runs_past_the_deadline_and_the_exit_status_says_a_step_failed(tmp_path):
    """BUDGET held only the optional steps: the required ones could run STEP_LIMIT each, past a
    lent machine's 600 s command limit, whose kill lost the step in flight (packed only after a
    step ends) and the status lines. And the script exited 0 whatever its steps did."""
    import time

    t0 = time.monotonic()
    run, ran = _gpu_check_with_a_stub_python(tmp_path, DEADLINE="30", STEP_LIMIT="200",
                                             STUB_SLOW_SLEEP="120")
    took = time.monotonic() - t0
    assert took < 45, f"a step ran past DEADLINE ({took:.0f} s)"
    assert run.returncode == 1, run.stdout + run.stderr
    assert ran == ["gpu_tiny_1obj", "gpu_tiny_4obj"]
    assert "tiny_4obj rc=124" in run.stdout
    for skipped in ("large_1obj", "cuda_tests", "tiny_compile_encoder_cold"):
        assert f"{skipped} skipped (deadline" in run.stdout
    with tarfile.open(tmp_path / "out" / "all.tgz") as packed:  # packed before the end
        assert "./gpu_tiny_4obj.log" in packed.getnames()


def test_gpu_check_packs_every_steps_files_however_large_its_log(tmp_path):
    """The archive was packed from OUT's "." while it grew inside OUT: GNU tar then exits 1 with
    ".: file changed as we read it" (now and then: it failed CI once), the rename never came, and
    the archive a lent machine returns held the steps before only. Here tar itself touches OUT at
    every record it writes, so OUT surely changes while tar reads it."""
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "tar").write_text(f'#!/usr/bin/env bash\nexec {shutil.which("tar")} "$@" --checkpoint=1 '
                              f'--checkpoint-action=exec="touch {tmp_path / "out"}"\n')
    (shim / "tar").chmod(0o755)
    run, ran = _gpu_check_with_a_stub_python(tmp_path, COMPILE="0", STUB_LOG_BYTES="300000",
                                             PATH=f"{shim}{os.pathsep}{os.environ['PATH']}")
    assert run.returncode == 0, run.stdout + run.stderr
    assert ran == ["gpu_tiny_1obj", "gpu_tiny_4obj", "gpu_large_1obj", "cuda_tests"]
    assert "packing" not in run.stderr
    with tarfile.open(tmp_path / "out" / "all.tgz") as packed:
        names = set(packed.getnames()) - {"."}
    steps = ("tiny_1obj", "tiny_4obj", "large_1obj")
    assert {f"./gpu_{s}.{ext}" for s in steps for ext in ("log", "json")} | {
        "./gpu_cuda_tests.log", "./gpu_summary.txt"} == names
    assert not list((tmp_path / "out").glob("*.tmp"))


@pytest.mark.parametrize("steps_write_json", [True, False])
def test_gpu_check_summarises_this_runs_json_only(tmp_path, steps_write_json):
    """The summary read every <TAG>_*.json in OUT: with OUT=benchmarks, a run whose steps wrote
    nothing ended with the numbers of earlier leases as if it had measured them."""
    out = tmp_path / "out"
    out.mkdir()
    stale = json.loads((pathlib.Path(__file__).parents[2] / "benchmarks" /
                        "gpu_h100_1024_tiny_bedroom60_1obj.json").read_text())
    (out / "gpu_h100_stale.json").write_text(json.dumps(stale))
    (out / "gpu_tiny_1obj.json").write_text(json.dumps(stale))  # this name's file of a run before
    env = dict(COMPILE="0", STUB_REAL_PYTHON=sys.executable)
    if not steps_write_json:
        env["STUB_NO_JSON"] = "1"
    run, ran = _gpu_check_with_a_stub_python(tmp_path, **env)
    assert run.returncode == 0, run.stdout + run.stderr
    summary = (out / "gpu_summary.txt").read_text()
    assert "ms/frame" not in summary and "stale" not in summary, summary
    assert ("no step wrote a JSON file" in summary) != steps_write_json
    assert summary in run.stdout and run.stdout.index("cuda_tests rc=0") < run.stdout.index(summary)


def test_gpu_check_names_a_module_missing_inside_sam2s_build_before_any_step(tmp_path):
    """A module imported deep inside sam2's model build (portalocker, by iopath) passed the
    script's import check; then every step failed with hydra's "Error locating target
    'sam2.modeling.backbones.hieradet.Hiera'", which never names the missing module."""
    shadow = tmp_path / "shadow" / "portalocker"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text(
        "raise ModuleNotFoundError('No module named portalocker', name='portalocker')\n")
    env = dict(os.environ, DEVICE="cpu", PYTHON=sys.executable, OUT=str(tmp_path / "out"),
               FRAMES=str(tmp_path), PYTHONPATH=f"{shadow.parent}{os.pathsep}"
               f"{os.environ.get('PYTHONPATH', '')}")
    run = subprocess.run(["bash", str(GPU_CHECK)], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 1
    assert "No module named portalocker" in run.stderr, run.stderr[-2000:]
    assert not list((tmp_path / "out").glob("*.log"))  # no step ran


def test_bench_rewrites_its_json_after_every_mode_so_a_killed_run_keeps_what_it_measured(
        tmp_path, monkeypatch):
    """gpu_check.sh cuts a step at its time limit; the JSON used to be written only at the very
    end, so a run killed in its last mode lost every mode it had measured."""
    out = tmp_path / "bench.json"
    run_ours = bench.run_ours

    def killed_in_the_pruned_mode(cfg, model, frames, clicks, keep, *a, **k):
        if keep < 1.0:
            raise SystemExit(143)  # as a SIGTERM handler would
        return run_ours(cfg, model, frames, clicks, keep, *a, **k)

    monkeypatch.setattr(bench, "run_ours", killed_in_the_pruned_mode)
    with pytest.raises(SystemExit):
        bench.main(["--random-weights", "--image-size", "64", "--max-frames", "3", "--device", "cpu",
                    "--keep-ratios", "0.3", "--mc-passes", "0", "--no-profile", "--json", str(out)])
    report = json.loads(out.read_text())
    assert set(report["modes"]) == {"official", "dense"}
    assert report["partial"] == "round 1 of 1: official, dense measured"
    assert report["ratios"]["dense"]["fps_vs_official"] > 0
    assert 0 <= report["modes"]["dense"]["vs_official"]["min_iou"] <= 1
    assert not list(tmp_path.glob("*.tmp"))


def test_bench_killed_in_a_later_round_keeps_the_modes_that_round_measured(tmp_path, monkeypatch):
    """With --repeats 2 only round 1 was saved mode by mode: a step cut by its time limit in round
    2 lost every mode round 2 had measured."""
    out = tmp_path / "bench.json"
    run_ours, pruned_runs = bench.run_ours, []

    def killed_in_round_2s_pruned_mode(cfg, model, frames, clicks, keep, *a, **k):
        if keep < 1.0:
            pruned_runs.append(keep)
            if len(pruned_runs) == 2:
                raise SystemExit(143)  # as a SIGTERM handler would
        return run_ours(cfg, model, frames, clicks, keep, *a, **k)

    monkeypatch.setattr(bench, "run_ours", killed_in_round_2s_pruned_mode)
    with pytest.raises(SystemExit):
        bench.main(["--random-weights", "--image-size", "64", "--max-frames", "3", "--device", "cpu",
                    "--keep-ratios", "0.3", "--mc-passes", "0", "--no-profile", "--repeats", "2",
                    "--json", str(out)])
    report = json.loads(out.read_text())
    assert report["partial"] == "round 2 of 2: official, dense measured"
    modes = report["modes"]
    assert [len(modes[m]["rounds"]) for m in ("official", "dense", "pruned@0.3")] == [2, 2, 1]
    assert len(report["ratios"]["dense"]["fps_vs_official_by_round"]) == 2
    assert len(report["ratios"]["pruned@0.3"]["fps_vs_official_by_round"]) == 1


def test_bench_json_says_what_ran_on_the_cpu(tmp_path):
    """--torch-compile and --official-vos do nothing off CUDA: the JSON said torch_compile
    "encoder" and had no trace of the VOS run."""
    out = tmp_path / "bench.json"
    assert bench.main(["--random-weights", "--image-size", "64", "--max-frames", "3", "--device",
                       "cpu", "--modes", "official", "--mc-passes", "0", "--no-profile",
                       "--torch-compile", "encoder", "--official-vos", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert (report["torch_compile"], report["torch_compile_requested"]) == ("none", "encoder")
    assert report["modes"]["official_vos"]["error"].startswith("skipped")
    assert "partial" not in report


def test_bench_reads_the_image_topic_given_with_topic(tmp_path, capsys):
    """A camera bag holds raw and compressed topics; the bench had no --topic to choose one."""
    from test_frame_sources import colour_frame, write_bag

    bag = write_bag(tmp_path / "bag", "mcap", n=3, extra_image_topic=True)
    frames = bench.load_frames(str(bag), 3, topic="/cam/compressed")
    assert len(frames) == 3 and np.array_equal(frames[2], colour_frame(2))
    assert bench.parse_args(["--random-weights", "--topic", "/cam/image_raw"]).topic == "/cam/image_raw"
    assert bench.main(["--random-weights", "--device", "cpu", "--topic", "/cam/image_raw"]) == 2
    assert "--topic selects the image topic of a rosbag" in capsys.readouterr().err


def test_bench_counts_only_the_official_predictors_own_memory(tmp_path, monkeypatch):
    """Our model stays resident while the official predictor runs: its peak counted both sets of
    weights (0.5x reported for equal memory). Simulated allocator: 300 bytes resident, peak 1000."""
    monkeypatch.setattr(bench, "_allocated_bytes", lambda device: 300)
    monkeypatch.setattr(bench, "peak_gpu_memory", lambda device: 1000)
    out = tmp_path / "bench.json"
    assert bench.main(["--random-weights", "--image-size", "64", "--max-frames", "3", "--device",
                       "cpu", "--modes", "official,dense", "--json", str(out)]) == 0
    modes = json.loads(out.read_text())["modes"]
    assert modes["official"]["peak_gpu_memory_bytes"] == 700
    assert modes["official"]["resident_other_bytes"] == 300
    assert modes["dense"]["peak_gpu_memory_bytes"] == 1000


def test_soak_sees_growth_below_the_start_up_peak(monkeypatch):
    """The running peak stays at the start-up peak (prompt, graph capture), so a steady leak
    below it read "growth 0.0 MB". Simulated: 900 at start-up, then 3 more per window."""
    model = build_predictor(TrackerConfig(model_cfg="tiny", allow_random_weights=True,
                                          image_size=64, device="cpu"))
    calls = {"n": 0}

    def peak(device):
        calls["n"] += 1
        return 900 if calls["n"] == 1 else 100 + 3 * calls["n"]

    monkeypatch.setattr(bench, "peak_gpu_memory", peak)
    monkeypatch.setattr(bench, "_allocated_bytes", lambda device: 50 + 3 * calls["n"])
    monkeypatch.setattr(bench, "_traces_gpu_memory", lambda device: True)
    frames = bench.load_frames(None, 4)
    cfg = TrackerConfig(model_cfg="tiny", allow_random_weights=True, image_size=64, device="cpu",
                        mc_passes=0)
    soak = bench.run_soak(cfg, model, frames, [(300, 200)], 0.3, length=13, every=2)
    ours = soak["ours"]
    assert ours[0]["peak_bytes"] == ours[-1]["peak_bytes"] == 900  # the old measure: flat
    assert soak["ours_window_peak_growth_after_first_sixth"] > 0
    assert soak["ours_allocated_growth_after_first_sixth"] > 0


def _child_that_dies(queue, *args):
    os._exit(3)


def test_official_vos_child_that_dies_is_reported_at_once():
    """A child that crashed hard was reported only after the whole time limit."""
    model = build_predictor(TrackerConfig(model_cfg="tiny", allow_random_weights=True,
                                          image_size=64, device="cpu"))
    cfg = TrackerConfig(model_cfg="tiny", allow_random_weights=True, image_size=64, device="cpu")
    result = bench.run_official_vos(cfg, model, [], [], time_limit=300.0, child_main=_child_that_dies)
    assert "exit code 3" in result["error"] and result["wall_s"] < 120.0


def test_bench_json_that_cannot_be_written_is_refused_before_the_work(monkeypatch, capsys):
    monkeypatch.setattr(bench, "run_round", lambda *a, **k: pytest.fail("ran before checking --json"))
    assert bench.main(["--random-weights", "--device", "cpu", "--json", "/proc/fastsam2/x.json"]) == 2
    assert "cannot write in /proc" in capsys.readouterr().err


def test_node_bench_checks_its_numbers_first(capsys):
    from fastsam2_ros.ros import node_bench

    for bad, flag in ((["--objects", "0"], "--objects"), (["--object-area", "-1"], "--object-area"),
                      (["--gap-ms", "-5"], "--gap-ms"), (["--rate", "nan"], "--rate"),
                      # the core's rules: the node refused 100 at configure while the probe waited
                      (["--image-size", "100"], "--image-size"), (["--keep-ratio", "1.5"], "--keep-ratio")):
        assert node_bench.main(bad) == 2, bad
        assert f"{flag} must be in" in capsys.readouterr().err
    node_bench.check_numeric_options(node_bench.parse_args([]))  # the defaults pass


def test_node_bench_json_says_what_shaped_its_numbers(tmp_path, capsys):
    """A --tracker real run at keep 1.0 and one at 0.3 wrote the same settings (no keep ratio,
    device, warm-up, gap or rate in the JSON)."""
    from fastsam2_ros.ros import node_bench

    out = tmp_path / "n.json"
    args = node_bench.parse_args(["--tracker", "real", "--keep-ratio", "1.0", "--device", "cpu",
                                  "--warmup", "2", "--gap-ms", "10", "--rate", "15",
                                  "--rate-seconds", "2", "--json", str(out)])
    node_bench.write_report(args, [], interrupted=False)
    report = json.loads(out.read_text())
    assert {k: report[k] for k in ("keep_ratio", "device", "warmup_frames", "gap_ms", "rate_hz",
                                   "rate_seconds")} == dict(keep_ratio=1.0, device="cpu",
                                                            warmup_frames=2, gap_ms=10.0,
                                                            rate_hz=15.0, rate_seconds=2.0)
    capsys.readouterr()


def test_node_bench_refuses_empty_lists_and_a_bad_domain_and_expands_a_profile(
        capsys, monkeypatch, tmp_path):
    """`--sizes ,` measured nothing and exited 0; ROS_DOMAIN_ID=abc was a traceback even for
    --help; `--fastdds-profile=~/p.xml` passed the check and was exported unexpanded (Fast DDS
    could not find it, and the JSON said the profile was used)."""
    from fastsam2_ros.ros import node_bench

    for bad, said in ((["--sizes", ","], "--sizes names none"), (["--sets", ","], "--sets names none")):
        assert node_bench.main(bad) == 2, bad
        assert said in capsys.readouterr().err
    monkeypatch.setenv("ROS_DOMAIN_ID", "abc")
    with pytest.raises(SystemExit) as exit_:
        node_bench.parse_args([])
    assert exit_.value.code == 2 and "ROS_DOMAIN_ID must be a whole number, got 'abc'" in \
        capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        node_bench.parse_args(["--help"])
    assert exit_.value.code == 0
    monkeypatch.setenv("ROS_DOMAIN_ID", "17")
    assert node_bench.parse_args([]).domain_id == 17
    monkeypatch.setenv("HOME", str(tmp_path))
    # (main exports both to its own environment too: restored after this test)
    monkeypatch.setenv("FASTRTPS_DEFAULT_PROFILES_FILE", "")  # (recorded, so undone: delenv
    monkeypatch.delenv("FASTRTPS_DEFAULT_PROFILES_FILE")  # of an unset one records nothing)
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", os.environ.get("ROS_AUTOMATIC_DISCOVERY_RANGE",
                                                                       "LOCALHOST"))
    (tmp_path / "p.xml").write_text("<profiles/>")
    started = []
    monkeypatch.setattr(node_bench, "measure_all", lambda args, env, *rest: started.append(env))
    assert node_bench.main(["--fastdds-profile", "~/p.xml", "--sizes", "64x48"]) == 0
    assert started[0]["FASTRTPS_DEFAULT_PROFILES_FILE"] == str(tmp_path / "p.xml")
    capsys.readouterr()


def test_an_eager_step_on_cuda_is_not_synchronised_per_stage_unless_profiling():
    """14 torch.cuda.synchronize() per frame when the step ran eagerly on CUDA (--no-graphs, a
    failed capture): the timed pass and the node paid for stage times nobody asked for."""
    cfg = TrackerConfig(model_cfg="tiny", allow_random_weights=True, image_size=64, device="cpu")
    model = build_predictor(cfg)
    tracker = StreamingTracker(cfg, model=model)
    assert tracker._step_timer(eager=True) is not None and tracker._step_timer(eager=False) is None
    tracker.device = torch.device("cuda")  # the rule only reads the device type
    assert tracker._step_timer(eager=True) is None
    profiler = StreamingTracker(cfg, model=model, profile_stages=True)
    profiler.device = torch.device("cuda")
    assert profiler._step_timer(eager=True).cuda


def test_bench_records_no_commit_of_another_repository(tmp_path, monkeypatch):
    """Installed inside another git repository (a workspace under git), the JSON recorded that
    repository's commit as ours."""
    other = tmp_path / "workspace"
    (other / "install").mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(other)], check=True)
    subprocess.run(["git", "-C", str(other), "-c", "user.email=a@b.c", "-c", "user.name=x",
                    "commit", "-q", "--allow-empty", "-m", "x"], check=True)
    monkeypatch.delenv("FASTSAM2_COMMIT", raising=False)
    monkeypatch.setattr(bench, "__file__", str(other / "install" / "bench.py"))
    assert bench.source_commit() is None
    monkeypatch.setenv("FASTSAM2_COMMIT", "abc123")
    assert bench.source_commit() == "abc123"


def test_router_training_keeps_a_frames_tokens_once_in_half_precision(tmp_path):
    """Every (frame, object) example held its own float32 [N, 3C] input: 12 MiB each at 1024 px,
    about 100 GB for DAVIS 2017 train."""
    data = generate_dataset(tmp_path / "syn", sequences=1, frames=3, size=(96, 64), objects=2)
    cfg = TrackerConfig(model_cfg="tiny", allow_random_weights=True, image_size=64, device="cpu",
                        mc_passes=2)
    examples = router_training.collect_examples(StreamingTracker(cfg), DavisDataset(data), {}, None,
                                                log=lambda *a: None)
    assert len(examples) == 6
    frames = {id(ex.factors.tokens) for ex in examples}
    assert len(frames) == 3 and all(ex.factors.tokens.dtype == torch.float16 for ex in examples)
    n, c = examples[0].factors.tokens.shape
    counted = set()
    total = sum(ex.nbytes(counted) for ex in examples)
    assert total < 0.3 * len(examples) * n * 3 * c * 4  # the old float32 [N, 3C] per example
    h = examples[0].features()
    assert h.shape == (n, 3 * c) and h.dtype == torch.float32


def _renumbered(data):
    """``data`` with object ids 1 and 2 swapped in every annotation."""
    for p in sorted((data / "Annotations" / "480p" / "synth000").glob("*.png")):
        lab = read_label_png(p).copy()
        one, two = lab == 1, lab == 2
        lab[one], lab[two] = 2, 1
        write_label_png(p, lab)
    return data


def test_router_training_examples_do_not_depend_on_object_ids(tmp_path):
    """Every object drew new dropout masks from one advancing generator: the same object on the
    same frame got another uncertainty (and W_u, U_i) when the ids were renumbered, and the objects
    of a frame saw different ones, where tracking computes one per frame (review router10 F2)."""
    cfg = TrackerConfig(model_cfg="tiny", allow_random_weights=True, image_size=64, device="cpu",
                        mc_passes=5)

    def collect(name, renumber):
        data = generate_dataset(tmp_path / name, sequences=1, frames=3, size=(96, 64), objects=2)
        data = _renumbered(data) if renumber else data
        return router_training.collect_examples(StreamingTracker(cfg), DavisDataset(data), {},
                                                None, log=lambda *a: None)

    examples, renumbered = collect("a", False), collect("b", True)
    assert len(examples) == len(renumbered) == 6
    for frame in range(3):
        first, second = examples[2 * frame: 2 * frame + 2]
        # ids 1, 2 are listed in order: the renumbered frame lists the same objects swapped
        for ex, same in ((first, renumbered[2 * frame + 1]), (second, renumbered[2 * frame])):
            assert torch.equal(ex.target, same.target)
            assert torch.equal(ex.features(), same.features())
        assert first.factors.uncertainty is second.factors.uncertainty  # one per frame, shared
        assert first.factors.uncertainty_vector is second.factors.uncertainty_vector
    counted = set()
    total = sum(ex.nbytes(counted) for ex in examples)
    f = examples[0].factors
    per_frame = sum(t.numel() * t.element_size() for t in (
        f.tokens, f.text_scales, f.text_vector, f.uncertainty, f.uncertainty_vector))
    assert total == 3 * per_frame + sum(ex.target.numel() * ex.target.element_size() for ex in examples)


def test_router_training_draws_other_dropout_masks_on_every_frame(tmp_path):
    """Sharing a frame's uncertainty must not share its masks across frames: the same image on
    every frame still gets another uncertainty on each."""
    data = generate_dataset(tmp_path / "syn", sequences=1, frames=3, size=(96, 64), objects=1)
    jpgs = sorted((data / "JPEGImages" / "480p" / "synth000").glob("*.jpg"))
    for p in jpgs[1:]:
        shutil.copy(jpgs[0], p)
    cfg = TrackerConfig(model_cfg="tiny", allow_random_weights=True, image_size=64, device="cpu",
                        mc_passes=5)
    examples = router_training.collect_examples(StreamingTracker(cfg), DavisDataset(data), {}, None,
                                                log=lambda *a: None)
    assert torch.equal(examples[0].factors.tokens, examples[1].factors.tokens)
    assert not torch.equal(examples[0].factors.uncertainty, examples[1].factors.uncertainty)

ROS_CMAKE_PATHS = GPU_CHECK.parent / "ros_cmake_include_paths.sh"


@pytest.mark.parametrize("venv_name", ["venv", "a venv"])
def test_the_ros_wheels_cmake_files_are_pointed_at_this_python_without_root(tmp_path, venv_name):
    """setup_env.sh made links under /opt/python for the include folders the ROS wheels' CMake
    files name: as a user other than root that failed and fastsam2_msgs did not build (review
    flaky7). The venv's copies are rewritten instead, on any path, idempotently."""
    import sysconfig

    cmake = tmp_path / venv_name / "share" / "std_msgs" / "cmake" / "std_msgsExport.cmake"
    cmake.parent.mkdir(parents=True)
    cmake.write_text('INTERFACE_INCLUDE_DIRECTORIES "/opt/python/cp311-cp311/include/python3.11;'
                     '/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include"\n')
    for _ in range(2):  # the second run finds nothing to rewrite, and must not fail on that
        run = subprocess.run(["bash", str(ROS_CMAKE_PATHS), str(tmp_path / venv_name)],
                             capture_output=True, text=True, timeout=60)
        assert run.returncode == 0 and not run.stderr, run.stderr
        assert cmake.read_text() == (f'INTERFACE_INCLUDE_DIRECTORIES "{sysconfig.get_paths()["include"]};'
                                     f'{np.get_include()}"\n')


# ------------------------------------------------------------------------------------------------
# review demo7: fastsam2-bench --node
# ------------------------------------------------------------------------------------------------
NODE_BENCH_DOMAIN_ID = domain_id(12)
#: points of two latency frames 1 s apart: a run still going when the test stops it
SLOW_POINTS = ("--sizes", ",".join(["64x48"] * 30), "--sets", "mask", "--frames", "2",
               "--warmup", "0", "--gap-ms", "1000", "--rate", "0")


def children_of(pid):
    """The processes whose parent is ``pid``."""
    kids = []
    for stat in pathlib.Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid:
            kids.append(int(stat.parent.name))
    return kids


def running(pid):
    """Whether process ``pid`` runs (a zombie nobody reaped has ended)."""
    try:
        return pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def start_node_bench(tmp_path, *flags):
    """`fastsam2-bench --node` in a process of its own, once it has printed its first point:
    (the process, the pid of its node process, that first line)."""
    env = dict(os.environ, OMP_NUM_THREADS="2")
    with open(tmp_path / "stderr.log", "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "fastsam2_ros.bench", "--node", *SLOW_POINTS,
                                 "--domain-id", str(NODE_BENCH_DOMAIN_ID),
                                 "--json", str(tmp_path / "node.json"), *flags],
                                env=env, stdout=subprocess.PIPE, stderr=err, text=True)
    first = proc.stdout.readline()
    return proc, children_of(proc.pid), first


def stop_all(proc, nodes):
    """What a failed test leaves: the bench and its node process (an orphan on failure)."""
    for pid in nodes:
        if running(pid):
            os.kill(pid, signal.SIGKILL)
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    proc.stdout.close()


def test_node_bench_on_sigterm_stops_its_node_and_writes_what_it_measured(tmp_path):
    """kill, systemd, a CI runner's cancel: the bench died at once (rc -15) and its node process
    ran on under ppid 1 with the /fastsam2_bench topics; Ctrl-C ended in a traceback and the
    points measured were not written."""
    proc, nodes, first = start_node_bench(tmp_path)
    try:
        assert first.startswith("64x48") and len(nodes) == 1, (first, nodes,
                                                               (tmp_path / "stderr.log").read_text())
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 130
        assert not running(nodes[0])
    finally:
        stop_all(proc, nodes)
    err = (tmp_path / "stderr.log").read_text()
    assert "Traceback" not in err and "interrupted after" in err, err[-3000:]
    report = json.loads((tmp_path / "node.json").read_text())
    assert report["interrupted"] is True and 1 <= len(report["results"]) < 30
    assert report["results"][0]["latency"]["mask_latency_ms"]["n"] == 2


@pytest.mark.parametrize("tracker", ["standin", "floor"])
def test_node_bench_node_process_ends_when_the_bench_is_killed(tmp_path, tracker):
    """SIGKILL, the OOM killer: nothing in the bench runs, and its node process ran on as an
    orphan (with --tracker real, SAM 2 in memory)."""
    proc, nodes, first = start_node_bench(tmp_path, "--tracker", tracker)
    try:
        assert first.startswith("64x48") and len(nodes) == 1, (first, nodes,
                                                               (tmp_path / "stderr.log").read_text())
        proc.kill()
        proc.wait()
        assert wait_for(lambda: not running(nodes[0]), 30.0, step=0.1), "the node process outlived the bench"
    finally:
        stop_all(proc, nodes)


def test_the_floor_node_ends_on_its_own_sigterm(tmp_path):
    """rclpy's own SIGTERM handler shut the floor node's context down under its spinner, and its
    main thread waited for a stop that never came: the process hung (review final7)."""
    proc, nodes, first = start_node_bench(tmp_path, "--tracker", "floor")
    try:
        assert first.startswith("64x48") and len(nodes) == 1, (first, nodes,
                                                               (tmp_path / "stderr.log").read_text())
        os.kill(nodes[0], signal.SIGTERM)  # kill, a supervisor: not through the bench
        assert wait_for(lambda: not running(nodes[0]), 15.0, step=0.1), "the floor node hung on SIGTERM"
    finally:
        stop_all(proc, nodes)


CHILD_OF_A_PARENT = """
import signal, sys
from fastsam2_ros.ros import cli_process
if sys.argv[2] == "poll":  # where there is no prctl (not Linux)
    cli_process._set_parent_death_signal = lambda sig: False
    cli_process.PARENT_POLL_S = 0.05
cli_process.exit_with_parent(int(sys.argv[1]))
print("ready", flush=True)
signal.pause()
"""
PARENT = """
import os, signal, subprocess, sys
child = subprocess.Popen([sys.executable, "-c", sys.argv[1], str(os.getpid()), sys.argv[2]],
                         stdout=subprocess.PIPE, text=True)
print(child.pid, child.stdout.readline().strip(), flush=True)
signal.pause()
"""


@pytest.mark.parametrize("how", ["prctl", "poll"])
def test_a_process_that_exits_with_its_parent_gets_its_ctrl_c_when_the_parent_dies(how):
    """The helper of the benchmark's node process, both ways: prctl's parent-death signal and,
    where there is none, a poll of os.getppid()."""
    parent = subprocess.Popen([sys.executable, "-c", PARENT, CHILD_OF_A_PARENT, how],
                              stdout=subprocess.PIPE, text=True)
    child = None
    try:
        pid, ready = parent.stdout.readline().split()
        child = int(pid)
        assert ready == "ready" and running(child)
        parent.kill()
        parent.wait()
        assert wait_for(lambda: not running(child), 30.0, step=0.02)
    finally:
        stop_all(parent, [child] if child else [])


def test_a_signal_that_comes_while_the_handler_holds_a_lock_changes_nothing():
    """Signals come in bursts (the parent-death signal once for each thread of the node, again for
    each exiting thread of the killed bench): one that came while the node's handler held the lock
    of Event.set() ran the handler again inside it, which waited for its own lock forever (about
    one node in 20 outlived a killed bench; its main thread stuck in on_signal -> set -> on_signal
    -> set)."""
    from fastsam2_ros.ros.cli_process import first_signal_only

    stop = threading.Event()
    calls = []

    def set_stop_and_take_a_second_signal(signum, frame):
        calls.append(signum)
        with stop._cond:  # the lock Event.set() holds when the next signal of the burst comes
            handler(signal.SIGTERM, None)
        stop.set()

    handler = first_signal_only(set_stop_and_take_a_second_signal)
    first = threading.Thread(target=handler, args=(signal.SIGINT, None), daemon=True)
    first.start()
    first.join(10.0)
    assert not first.is_alive() and stop.is_set() and calls == [signal.SIGINT]


class DroppingNode:
    """A probe whose node answers every third frame of the rate run and counts the others as
    dropped as they come; 5 frames were dropped before the run."""

    def __init__(self):
        self.lock = threading.Lock()
        self.arrivals = {"mask": {}, "stats": {}}
        self.stats = {(0, 1000): {"dropped_frames": 5}}  # the one-at-a-time run's last frame
        self.dropped = 5
        self.sec = 0

    def publish(self, frame):
        self.sec += 1
        key, t0 = (self.sec, 1000), time.perf_counter()
        if self.sec % 3:
            self.dropped += 1
        else:
            self.arrivals["mask"][key] = self.arrivals["stats"][key] = t0 + 1e-3
            self.stats[key] = {"dropped_frames": self.dropped}
        return key, t0

    def arrived(self, key, topics):
        from fastsam2_ros.ros import node_bench

        return node_bench.Probe.arrived(self, key, topics)  # the probe's own rule


def test_node_bench_counts_the_drops_of_the_whole_rate_run():
    """node_dropped was max - min of the counter over the run's stats, and the first of those
    came after frames of the run had been dropped: 6 reported where the node dropped 8."""
    from fastsam2_ros.ros import node_bench

    node = DroppingNode()
    out = node_bench.measure_rate(node, [None], ("mask", "stats"), rate_hz=300.0, seconds=0.04,
                                  one_at_a_time_p95=None)
    assert (out["sent"], out["with_mask"]) == (12, 4)
    assert out["node_dropped"] == 8 == node.dropped - 5


def test_node_bench_probe_takes_a_command_line_that_is_not_utf8(monkeypatch):
    """A --json path or --label that is not UTF-8 (Latin-1): rclpy.init took the whole sys.argv
    and ended in a UnicodeEncodeError."""
    pytest.importorskip("rclpy")
    from fastsam2_ros.ros import node_bench

    monkeypatch.setattr(sys, "argv", ["fastsam2-bench", "--node", "--label", os.fsdecode(b"caf\xe9")])
    probe = node_bench.Probe(NODE_BENCH_DOMAIN_ID)
    probe.close()


def test_bench_reports_the_full_bank_steady_state_beside_the_whole_clip():
    """Over a whole clip the ratios counted the frames where the bank fills, whose masked
    attention costs dense more than pruned modes: on the H200, keep 0.3 vs dense was 1.27x over
    the clip but 1.21x on frames 16-59. The bench gives both; the official predictor is timed over
    the same frames as ours."""
    flags = [False, False, True, True, True]

    def mode(rounds, ours=True):
        r = {"ms_per_frame": float(np.mean(rounds[0])), "fps": 1e3 / float(np.mean(rounds[0])),
             "frame_ms": [x for fm in rounds for x in fm], "stage_ms": {"memory_attention": 0.0},
             "rounds": [{"ms_per_frame": float(np.mean(fm)), "frame_ms": fm} for fm in rounds],
             "state_bytes": 0, "peak_gpu_memory_bytes": 0}
        if ours:
            r["bank_full"] = flags
        return r

    results = {"official": mode([[30, 30, 20, 20, 20], [30, 30, 22, 22, 22]], ours=False),
               "dense": mode([[15, 15, 12, 12, 12], [15, 15, 11, 11, 11]]),
               "pruned@0.3": mode([[10, 10, 10, 10, 10], [10, 10, 10, 10, 10]])}
    bench.add_bank_full_times(results)
    assert results["dense"]["bank_full_ms_by_round"] == [12.0, 11.0]
    assert results["dense"]["ms_per_frame_bank_full"] == pytest.approx(11.5)
    assert results["official"]["ms_per_frame_bank_full"] == pytest.approx(21.0)
    assert results["pruned@0.3"]["frames_bank_full"] == 3
    ratios = bench.ratios_of(results)["pruned@0.3"]
    assert ratios["fps_vs_dense_bank_full"] == pytest.approx(1.15)
    assert ratios["fps_vs_dense_bank_full_by_round"] == pytest.approx([1.2, 1.1])
    assert ratios["fps_vs_official_bank_full"] == pytest.approx(2.1)
    report = {"modes": results, "ratios": bench.ratios_of(results)}
    line = [ln for ln in bench.summary_lines(report) if ln.startswith("pruned@0.3")][0]
    assert "x dense, full bank 1.150 (1.20, 1.10)" in line and "full bank 10.00 ms/frame (3 frames)" in line
    # one round (no "rounds": the 4-object run, REPEATS=1) and a mode that failed (no frame_ms)
    single = {"official": mode([[30, 30, 20, 20, 20]], ours=False),
              "dense": mode([[15, 15, 12, 12, 12]]), "official_vos": {"error": "timed out"}}
    for r in single.values():
        r.pop("rounds", None)
    bench.add_bank_full_times(single)
    assert single["dense"]["ms_per_frame_bank_full"] == pytest.approx(12.0)
    assert single["official"]["ms_per_frame_bank_full"] == pytest.approx(20.0)
    assert single["official_vos"] == {"error": "timed out"}
    assert bench.ratios_of(single)["dense"]["fps_vs_official_bank_full"] == pytest.approx(20 / 12)
    assert "fps_vs_official_bank_full_by_round" not in bench.ratios_of(single)["dense"]
    # a clip whose bank never fills (or a mode without flags) gets no steady-state numbers
    never = {"dense": mode([[15, 15, 15, 15, 15]]), "official": mode([[30] * 5], ours=False)}
    never["dense"]["bank_full"] = [False] * 5
    bench.add_bank_full_times(never)
    assert "ms_per_frame_bank_full" not in never["dense"]
    assert not any("bank_full" in key for key in bench.ratios_of(never)["dense"])

"""The benchmark and router-training command lines, end to end at tiny sizes (random weights)."""

import json

import pytest
import torch

from fastsam2_ros import bench, router_training
from fastsam2_ros.core import TrackerConfig
from fastsam2_ros.core.router import load_router
from fastsam2_ros.core.tracker import StreamingTracker
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

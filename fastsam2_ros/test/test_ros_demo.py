"""fastsam2-demo end to end on a few synthetic frames (random weights, 128 px, CPU), plus its
argument and start-up errors; ``--auto`` (no prompt at all) with a random RPN, a tiny random BLIP
and the real MiniLM refinement (``tiny_models``)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
DOMAIN_ID = int(os.environ.get("FASTSAM2_TEST_DOMAIN_BASE", "60")) + 3

pytest.importorskip("rclpy")
pytest.importorskip("fastsam2_msgs.msg", reason="fastsam2_msgs not built (scripts/setup_env.sh)")
cv2 = pytest.importorskip("cv2")

import yaml  # noqa: E402
from tiny_models import make_tiny_blip, minilm_installed, save_random_rpn  # noqa: E402

from fastsam2_ros.core.config import params_file_key  # noqa: E402
from fastsam2_ros.ros import demo  # noqa: E402


@pytest.fixture(scope="module")
def frames_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("frames")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:72, :96]
    for i in range(3):
        img = (rng.random((72, 96, 3)) * 60 + 60).astype(np.uint8)
        img[(xx - 30 - 3 * i) ** 2 + (yy - 36) ** 2 < 14 ** 2] = (40, 40, 220)  # BGR on disk
        cv2.imwrite(str(d / f"{i:05d}.png"), img)
    return d


def test_demo_writes_overlays_video_and_stats(frames_dir, tmp_path):
    """Into a folder an earlier, longer run wrote (its frames are gone, not claimed), named with ~,
    with a robot's params file that publishes no stats and thins the overlays (the demo waits for
    both: it timed out)."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "overlay_00007.png").write_bytes(b"an earlier run's frame")
    (out / "notes.txt").write_text("the user's own file")
    params = tmp_path / "robot.yaml"
    params.write_text("/**/fastsam2_tracker:\n  ros__parameters:\n    publish_stats: false\n"
                      "    publish_on_prompt: false\n    overlay_rate_hz: 0.5\n")
    env = dict(os.environ, ROS_DOMAIN_ID=str(DOMAIN_ID), OMP_NUM_THREADS="2", HOME=str(tmp_path))
    cmd = [sys.executable, "-m", "fastsam2_ros.ros.demo", "--input", str(frames_dir),
           "--click", "30,36", "--random-weights", "--image-size", "128", "--keep-ratio", "0.5",
           "--device", "cpu", "--output", "~/out", "--max-frames", "3", "--model-cfg", "tiny",
           "--params-file", str(params), "--frame-timeout", "60"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "prompt: object 1 started" in proc.stdout
    assert proc.stdout.count("frame ") >= 3 and "summary:" in proc.stdout
    assert "overlay.mp4 (3 frames)" in proc.stdout and not (tmp_path / "~").exists()
    assert (out / "notes.txt").exists()
    pngs = sorted(out.glob("overlay_*.png"))
    assert [p.name for p in pngs] == ["overlay_00000.png", "overlay_00001.png", "overlay_00002.png"]
    assert cv2.imread(str(pngs[0])).shape == (72, 96, 3)  # input resolution
    assert (out / "overlay.mp4").stat().st_size > 0
    cap = cv2.VideoCapture(str(out / "overlay.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 3
    cap.release()
    rows = [json.loads(line) for line in (out / "stats.jsonl").read_text().splitlines()]
    assert [r["frame_index"] for r in rows] == [0, 1, 2]
    assert all(r["object_ids"] == [1] and r["tokens_total"] == 64 for r in rows)
    assert rows[-1]["bank_frames"] >= 2 and rows[-1]["tokens_kept"][0] <= 64
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames_processed"] == 3 and summary["frames_dropped"] == 0
    assert summary["latency_ms_mean"] > 0


def test_a_second_ctrl_c_is_ignored_while_the_demo_shuts_ros_down():
    """It interrupted the teardown and the process aborted with the spin thread still running."""
    import signal

    before = signal.getsignal(signal.SIGINT)
    with demo._no_interrupts():
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    assert signal.getsignal(signal.SIGINT) is before


def test_demo_summary_leaves_the_prompted_frame_out():
    """Of tokens kept as of latency (tokens used to include frame 0's dense count: 8.7 of 16
    for a keep ratio of 0.3, whose frames keep 5)."""
    def row(frame, total_ms, kept):
        return {"frame": frame, "total_ms": total_ms, "tokens_kept": [kept], "tokens_total": 16,
                "keep_ratio": 0.3, "bank_frames": 1, "bank_bytes": 1, "object_ids": [1],
                "auto_prompted_ids": [], "auto_started_ids": [], "auto_phrases": [""],
                "auto_proposals_ms": 0.0, "auto_caption_ms": 0.0, "auto_refinement_ms": 0.0,
                "device": "cpu"}

    summary = demo._summary([row(0, 500.0, 16), row(1, 100.0, 5), row(2, 100.0, 5)], 3, 1.0, {})
    assert summary["tokens_kept_mean"] == 5 and summary["latency_ms_mean"] == 100
    summary = demo._summary([row(0, 500.0, 16)], 1, 1.0, {})  # only frame 0: it is all there is
    assert summary["tokens_kept_mean"] == 16 and summary["latency_ms_mean"] == 500


def test_demo_argument_errors(frames_dir, tmp_path, capsys):
    assert demo.main(["--input", str(frames_dir), "--click", "1,1"]) == 2
    assert "--checkpoint" in capsys.readouterr().err
    assert demo.main(["--input", str(frames_dir), "--random-weights"]) == 2
    assert "prompt" in capsys.readouterr().err
    assert demo.main(["--input", str(frames_dir), "--random-weights", "--auto", "--click",
                      "1,1"]) == 2
    assert "--auto starts without a prompt" in capsys.readouterr().err
    assert demo.main(["--input", str(frames_dir), "--random-weights", "--click", "1,1",
                      "--caption-model", str(tmp_path)]) == 2
    assert "--caption-model is for --auto" in capsys.readouterr().err
    assert demo.main(["--input", str(tmp_path / "missing"), "--random-weights", "--click", "1,1"]) == 2
    assert "not found" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        demo.main(["--input", str(frames_dir), "--random-weights", "--click", "1"])


def test_demo_missing_checkpoint_is_a_clear_error(frames_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ROS_DOMAIN_ID", str(DOMAIN_ID))
    rc = demo.main(["--input", str(frames_dir), "--click", "1,1", "--checkpoint",
                    str(tmp_path / "sam2.1_hiera_tiny.pt"), "--device", "cpu",
                    "--output", str(tmp_path / "o")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "checkpoint not found" in err and "sam2.1_hiera_tiny.pt" in err


@pytest.fixture(scope="module")
def auto_params(tmp_path_factory):
    """A params file for --auto at a tiny size: proposals from a random torchvision RPN (a random
    SAM 2's own mask generator proposes nothing)."""
    d = tmp_path_factory.mktemp("auto_demo")
    rpn = save_random_rpn(d / "frcnn.pth")

    def write(**extra):
        params = {**dict(auto_proposal_source="rpn", auto_rpn_weights=str(rpn),
                         auto_min_objectness=0.0, mc_passes=0, text_mode="none",
                         auto_caption_max_tokens=1), **extra}
        path = d / f"params{len(list(d.glob('params*.yaml')))}.yaml"
        path.write_text(yaml.safe_dump({params_file_key(): {"ros__parameters": params}}))
        return path

    return d, write


def test_demo_auto_starts_by_itself_and_names_the_object_on_every_frame(frames_dir, auto_params,
                                                                        tmp_path):
    """No click, no text: frame 0 is auto-prompted by the node. With MiniLM installed (CI) the
    tiny BLIP's "dog" becomes the phrase; without it the start is phrase-free (no caption model)."""
    d, write = auto_params
    phrase = "dog" if minilm_installed() else ""
    caption = ["--caption-model", str(make_tiny_blip(d / "blip"))] if phrase else []
    out = tmp_path / "out"
    env = dict(os.environ, ROS_DOMAIN_ID=str(DOMAIN_ID), OMP_NUM_THREADS="2")
    cmd = [sys.executable, "-m", "fastsam2_ros.ros.demo", "--input", str(frames_dir), "--auto",
           *caption, "--random-weights", "--image-size", "64", "--device", "cpu", "--model-cfg",
           "tiny", "--params-file", str(write(image_transport="compressed")), "--output", str(out),
           "--max-frames", "3", "--no-video"]  # (a robot's params file: the feeder sends raw images)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    said = f'"{phrase}"' if phrase else "without a phrase"
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("automatic prompt: object 1 ")]
    assert line and said in line[0], proc.stdout
    stages = ("proposals", "caption", "refinement")
    assert all(f"{s} " in line[0] for s in stages) and line[0].endswith(" ms"), line[0]
    rows = [json.loads(ln) for ln in (out / "stats.jsonl").read_text().splitlines()]
    assert [r["frame_index"] for r in rows] == [0, 1, 2]
    for r in rows:  # every frame names the automatically started object and its phrase
        assert r["object_ids"] == [1] and r["auto_started_ids"] == [1]
        assert r["auto_phrases"] == [phrase] and r["auto_prompted_ids"] == [1]
    assert rows[0]["auto_proposals_ms"] > 0 and (rows[0]["auto_caption_ms"] > 0) == bool(phrase)
    assert all(r[f"auto_{s}_ms"] == 0 for r in rows[1:] for s in stages)  # once, not per frame
    summary = json.loads((out / "summary.json").read_text())
    assert summary["auto_prompt"]["phrases"] == {"1": phrase}
    (run,) = summary["auto_prompt"]["runs"]
    assert run["frame"] == 0
    assert run["stage_ms"]["proposals"] == pytest.approx(rows[0]["auto_proposals_ms"], abs=0.1)


def test_demo_auto_that_starts_nothing_is_a_clear_error(frames_dir, auto_params, tmp_path, capsys,
                                                        monkeypatch):
    _, write = auto_params
    monkeypatch.setenv("ROS_DOMAIN_ID", str(DOMAIN_ID))
    rc = demo.main(["--input", str(frames_dir), "--auto", "--random-weights", "--image-size", "64",
                    "--device", "cpu", "--model-cfg", "tiny", "--max-frames", "1", "--no-video",
                    "--params-file", str(write(auto_min_objectness=1.0)),
                    "--output", str(tmp_path / "o")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "the automatic prompt started no object on frame 0" in err
    assert "no object-like region" in err

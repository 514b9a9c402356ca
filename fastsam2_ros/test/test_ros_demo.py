"""fastsam2-demo end to end on a few synthetic frames (random weights, 128 px, CPU), plus its
argument and start-up errors."""

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
    out = tmp_path / "out"
    env = dict(os.environ, ROS_DOMAIN_ID=str(DOMAIN_ID), OMP_NUM_THREADS="2")
    cmd = [sys.executable, "-m", "fastsam2_ros.ros.demo", "--input", str(frames_dir),
           "--click", "30,36", "--random-weights", "--image-size", "128", "--keep-ratio", "0.5",
           "--device", "cpu", "--output", str(out), "--max-frames", "3", "--model-cfg", "tiny"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "prompt: object 1 started" in proc.stdout
    assert proc.stdout.count("frame ") >= 3 and "summary:" in proc.stdout
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


def test_demo_argument_errors(frames_dir, tmp_path, capsys):
    assert demo.main(["--input", str(frames_dir), "--click", "1,1"]) == 2
    assert "--checkpoint" in capsys.readouterr().err
    assert demo.main(["--input", str(frames_dir), "--random-weights"]) == 2
    assert "prompt" in capsys.readouterr().err
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

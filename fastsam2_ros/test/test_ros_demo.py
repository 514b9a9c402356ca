"""fastsam2-demo end to end on a few synthetic frames (random weights, 128 px, CPU), plus its
argument and start-up errors; ``--auto`` (no prompt at all) with a random RPN, a tiny random BLIP
and the real MiniLM refinement (``tiny_models``)."""

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
from domains import domain_id  # noqa: E402
DOMAIN_ID = domain_id(3)

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
    (out / "overlay_final.png").write_text("the user's own file: not a name the demo writes")
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
    assert (out / "notes.txt").exists() and (out / "overlay_final.png").exists()
    pngs = sorted(out.glob("overlay_[0-9]*.png"))
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

    from fastsam2_ros.ros.cli_process import no_interrupts

    before = [signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)]
    with no_interrupts():
        assert signal.getsignal(signal.SIGINT) is signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
    assert [signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)] == before


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
    # a refused prompt: frame 0 tracked nothing (0.3 ms, "3744 FPS" in the summary)
    refused = dict(row(0, 0.3, 16), object_ids=[], tokens_kept=[], auto_phrases=[])
    summary = demo._summary([refused], 1, 1.0, {})
    assert summary["latency_ms_mean"] == 0.0 and summary["fps_tracker"] == 0.0


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


# ------------------------------------------------------------------------------------------------
# review demo4: outputs as they come, interrupted runs, one namespace per run, refused frames,
# forced parameters, --fps, --output
# ------------------------------------------------------------------------------------------------
SMALL = ("--random-weights", "--image-size", "128", "--device", "cpu", "--model-cfg", "tiny")


@pytest.fixture(scope="module")
def long_frames(frames_dir, tmp_path_factory):
    """40 frames (frames_dir's three over and over): a run still going when the test stops it."""
    d = tmp_path_factory.mktemp("long")
    first = sorted(frames_dir.iterdir())
    for i in range(40):
        (d / f"{i:05d}.png").write_bytes(first[i % len(first)].read_bytes())
    return d


def demo_process(*args, cwd=None):
    env = dict(os.environ, ROS_DOMAIN_ID=str(DOMAIN_ID), OMP_NUM_THREADS="2")
    return subprocess.Popen([sys.executable, "-m", "fastsam2_ros.ros.demo", *map(str, args)],
                            env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def read_until(proc, prefix):
    """stdout lines up to the first that starts with ``prefix`` (None: it never came)."""
    for line in proc.stdout:
        if line.startswith(prefix):
            return line
    return None


def test_demo_writes_each_overlay_as_its_frame_is_done(long_frames, tmp_path):
    """They were all held in memory until the last frame (+6 MB a frame at 1080p)."""
    out = tmp_path / "out"
    proc = demo_process("--input", long_frames, "--click", "30,36", *SMALL, "--max-frames", "5",
                        "--frame-timeout", "60", "--output", out)
    try:
        assert read_until(proc, "frame     2:"), proc.stderr.read()[-3000:]
        assert (out / "overlay_00002.png").is_file()  # before frames 3 and 4 are done
        so, se = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0, se[-3000:]
    assert len(list(out.glob("overlay_[0-9]*.png"))) == 5 and "overlay.mp4 (5 frames)" in so
    cap = cv2.VideoCapture(str(out / "overlay.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 5
    cap.release()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_demo_keeps_the_outputs_so_far(long_frames, tmp_path, sig):
    """Ctrl-C (and SIGTERM: kill, systemd, a CI timeout) left --output empty, exit 130 in silence."""
    out = tmp_path / "out"
    proc = demo_process("--input", long_frames, "--click", "30,36", *SMALL, "--frame-timeout", "60",
                        "--output", out)
    try:
        assert read_until(proc, "frame     2:"), proc.stderr.read()[-3000:]
        proc.send_signal(sig)
        so, se = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, se[-3000:]
    assert "Traceback" not in se and "interrupted after" in se, se[-3000:]
    pngs = sorted(p.name for p in out.glob("overlay_[0-9]*.png"))
    assert 3 <= len(pngs) < 40 and pngs[0] == "overlay_00000.png"
    rows = [json.loads(line) for line in (out / "stats.jsonl").read_text().splitlines()]
    assert len(rows) >= 3 and [r["frame"] for r in rows] == list(range(len(rows)))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] is True and summary["error"] is None
    cap = cv2.VideoCapture(str(out / "overlay.mp4"))  # closed properly: it plays
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == len(pngs)
    cap.release()


def test_ctrl_c_while_the_model_loads_says_so_and_writes_the_summary(frames_dir, tmp_path, capsys,
                                                                     monkeypatch, in_domain):
    """Ctrl-C before tracking (rclpy.init, the model load) ended in silence, with the earlier run's
    summary.json already removed and none written."""
    from fastsam2_ros.ros import tracker_node

    def interrupted_load(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(tracker_node.TrackerNode, "autostart", interrupted_load)
    out = tmp_path / "out"
    out.mkdir()
    (out / "summary.json").write_text('{"an earlier run": true}')
    rc, so, se = run_demo(capsys, "--input", frames_dir, "--click", "30,36", *SMALL, "--output", out)
    assert rc == 130 and "model ready" not in so, se[-3000:]
    assert "interrupted after 0 frame(s) sent" in se and "Traceback" not in se, se[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] is True and summary["error"] is None
    assert summary["frames_sent"] == 0 and (out / "stats.jsonl").read_text() == ""


def camera_bag(path, frames_dir, stamps_ns):
    """A rosbag2 of frames_dir's frames (cycled) with these header stamps, received 5 ms later."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS2_HUMBLE)
    Img, Header, Time = (ts.types[t] for t in ("sensor_msgs/msg/Image", "std_msgs/msg/Header",
                                               "builtin_interfaces/msg/Time"))
    files = sorted(frames_dir.iterdir())
    with Writer(path, version=8, storage_plugin=StoragePlugin.MCAP) as w:
        conn = w.add_connection("/camera/color/image_raw", Img.__msgtype__, typestore=ts)
        for k, ns in enumerate(stamps_ns):
            bgr = cv2.imread(str(files[k % len(files)]))
            h, wd = bgr.shape[:2]
            m = Img(header=Header(stamp=Time(sec=ns // 10**9, nanosec=ns % 10**9),
                                  frame_id="camera_color_optical_frame"),
                    height=h, width=wd, encoding="bgr8", is_bigendian=0, step=wd * 3,
                    data=bgr.reshape(-1))
            w.write(conn, ns + 5_000_000, ts.serialize_cdr(m, Img.__msgtype__))
    return path


def test_a_bag_is_tracked_with_its_recorded_headers_and_rate(frames_dir, tmp_path, capsys,
                                                            in_domain):
    """The mp4 of a 30 Hz bag played at 10 fps and the outputs carried the demo's own stamps and
    frame_id 'camera', so stats.jsonl could not be matched with the bag's other topics. A stamp
    the driver repeats is moved on 1 ns (the demo tells the frames' outputs apart by stamp)."""
    t0 = 1_700_000_000 * 10**9
    stamps = [t0, t0 + 33_333_333, t0 + 66_666_666, t0 + 66_666_666]
    bag = camera_bag(tmp_path / "bag", frames_dir, stamps)
    out = tmp_path / "out"
    rc, so, se = run_demo(capsys, "--input", bag, "--click", "30,36", *SMALL, "--output", out)
    assert rc == 0, se[-3000:]
    rows = [json.loads(line) for line in (out / "stats.jsonl").read_text().splitlines()]
    assert [r["frame"] for r in rows] == [0, 1, 2, 3]
    got = [r["header"]["stamp"]["sec"] * 10**9 + r["header"]["stamp"]["nanosec"] for r in rows]
    assert got == stamps[:3] + [stamps[3] + 1]
    assert {r["header"]["frame_id"] for r in rows} == {"camera_color_optical_frame"}
    cap = cv2.VideoCapture(str(out / "overlay.mp4"))
    assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(30, abs=0.01)
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 4
    cap.release()


def run_demo(capsys, *args):
    """demo.main in this process: (exit status, stdout, stderr)."""
    rc = demo.main([str(a) for a in args])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


@pytest.fixture()
def in_domain(monkeypatch):
    monkeypatch.setenv("ROS_DOMAIN_ID", str(DOMAIN_ID))


def test_a_bad_frame_mid_run_keeps_the_outputs_so_far(frames_dir, tmp_path, capsys, in_domain):
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(4):
        (frames / f"{i:05d}.png").write_bytes((frames_dir / f"{i % 3:05d}.png").read_bytes())
    (frames / "00002.png").write_bytes(b"\x89PNG truncated")
    out = tmp_path / "out"
    rc, so, se = run_demo(capsys, "--input", frames, "--click", "30,36", *SMALL, "--output", out)
    assert rc == 2 and "cannot read image" in se and "00002.png" in se, se
    assert sorted(p.name for p in out.glob("overlay_*.png")) == ["overlay_00000.png",
                                                                  "overlay_00001.png"]
    assert len((out / "stats.jsonl").read_text().splitlines()) == 2
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] is False and "00002.png" in summary["error"]


INTRUDER = """
import sys, time, numpy as np, rclpy
from sensor_msgs.msg import Image
rclpy.init()
node = rclpy.create_node("intruder")
pub = node.create_publisher(Image, "/image", 10)
msg = Image(height=72, width=96, encoding="rgb8", step=96 * 3, data=bytes(72 * 96 * 3))
print("ready", flush=True)
i = 0
while True:  # black frames with the stamps of the demo's frames at 10 fps
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(i % 3 * 100_000_000, 1_000_000_000)
    pub.publish(msg)
    i += 1
    time.sleep(0.05)
"""


def test_the_demo_sees_only_its_own_node(frames_dir, tmp_path, capsys, in_domain):
    """Another demo (or a robot's tracker) in the domain: the node and the feeder used the root
    namespace, so the node tracked the other's frames and the demo wrote them as its own."""
    script = tmp_path / "intruder.py"
    script.write_text(INTRUDER)
    env = dict(os.environ, ROS_DOMAIN_ID=str(DOMAIN_ID))
    intruder = subprocess.Popen([sys.executable, str(script)], env=env, stdout=subprocess.PIPE,
                                text=True)
    try:
        assert intruder.stdout.readline().strip() == "ready"
        out = tmp_path / "out"
        rc, so, se = run_demo(capsys, "--input", frames_dir, "--click", "30,36", *SMALL,
                              "--output", out, "--frame-timeout", "60", "--no-video")
    finally:
        intruder.kill()
        intruder.wait()
    assert rc == 0, se[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames_processed"] == summary["frames_sent"] == 3, summary
    for png in out.glob("overlay_*.png"):  # the demo's frames, not the intruder's black ones
        assert cv2.imread(str(png)).mean() > 40, png.name
    assert f"node /fastsam2_demo_{os.getpid()}/fastsam2_tracker" in so


def test_a_params_file_that_auto_starts_does_not_break_a_click(frames_dir, auto_params, tmp_path,
                                                               capsys, in_domain):
    """auto_prompt_on_start: true (a robot that starts an object by itself) started object 1 on
    frame 0, and the demo's add_object was refused: "object 1 is already tracked"."""
    _, write = auto_params
    params = write(auto_prompt_on_start=True)
    rc, so, se = run_demo(capsys, "--input", frames_dir, "--click", "30,36", *SMALL, "--image-size",
                          "64", "--max-frames", "2", "--no-video", "--params-file", params,
                          "--output", tmp_path / "o")
    assert rc == 0, se[-3000:]
    assert "prompt: object 1 started" in so and "automatic prompt" not in so


def test_a_frame_the_node_refuses_ends_the_run_at_once_with_its_reason(tmp_path, capsys, in_domain):
    """It waited the whole --frame-timeout, then "no output for frame 0", exit 1."""
    frames = tmp_path / "frames"
    frames.mkdir()
    cv2.imwrite(str(frames / "00000.png"), np.full((6, 6, 3), 100, np.uint8))  # < MIN_IMAGE_SIDE
    t0 = time.monotonic()
    rc, so, se = run_demo(capsys, "--input", frames, "--click", "2,2", *SMALL, "--frame-timeout",
                          "30", "--output", tmp_path / "o")
    assert rc == 2 and "could not process frame 0" in se and "too small" in se, se[-3000:]
    assert time.monotonic() - t0 < 25
    assert json.loads((tmp_path / "o" / "summary.json").read_text())["error"]


@pytest.mark.parametrize("fps,match", [
    ("0.001", "--fps must be in [0.01, 65535]"),  # ran, then "cannot write mp4 here"
    ("100000", "--fps must be in [0.01, 65535]"),
    ("12345.678", "OpenCV's mp4 writer does not take 12345.678 fps"),  # in range, no mp4 either
])
def test_an_fps_the_mp4_writer_cannot_take_is_refused_before_the_model_loads(frames_dir, tmp_path,
                                                                            capsys, in_domain, fps,
                                                                            match):
    rc, so, se = run_demo(capsys, "--input", frames_dir, "--click", "1,1", *SMALL, "--fps", fps,
                          "--output", tmp_path / "o")
    assert rc == 2 and match in se and "model ready" not in so, se[-3000:]


def test_a_video_whose_own_fps_the_mp4_writer_cannot_take_is_refused(frames_dir, tmp_path, capsys,
                                                                    monkeypatch, in_domain):
    from fastsam2_ros import frame_sources

    real_open = frame_sources.open_frames

    def fast_video(*args, **kwargs):
        src = real_open(*args, **kwargs)
        src.fps = 100000.0  # a container's rate the writer refuses
        return src

    monkeypatch.setattr(frame_sources, "open_frames", fast_video)
    rc, so, se = run_demo(capsys, "--input", frames_dir, "--click", "1,1", *SMALL,
                          "--output", tmp_path / "o")
    assert rc == 2 and "100000 fps; give --fps" in se and "model ready" not in so, se[-3000:]


def test_random_weights_win_over_a_params_file_checkpoint(frames_dir, tmp_path, capsys, in_domain):
    """A robot's params file named a checkpoint: it was loaded (or missing: "checkpoint not found")
    in a --random-weights smoke test."""
    params = tmp_path / "robot.yaml"
    params.write_text(yaml.safe_dump({params_file_key(): {"ros__parameters": {
        "checkpoint": str(tmp_path / "robot" / "sam2.1_hiera_tiny.pt")}}}))
    rc, so, se = run_demo(capsys, "--input", frames_dir, "--click", "30,36", *SMALL, "--max-frames",
                          "1", "--no-video", "--params-file", params, "--output", tmp_path / "o")
    assert rc == 0, se[-3000:]


def test_an_empty_output_is_refused(frames_dir, tmp_path, capsys, monkeypatch, in_domain):
    """--output "" (an unset $OUT) was the current folder: the demo wrote there and first removed
    every overlay_*.png and summary.json in it."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "overlay_final.png").write_text("mine")
    (tmp_path / "summary.json").write_text("{}")
    rc, so, se = run_demo(capsys, "--input", frames_dir, "--click", "30,36", *SMALL, "--max-frames",
                          "1", "--no-video", "--output", "")
    assert rc == 2 and "--output must not be empty" in se, se[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["overlay_final.png", "summary.json"]


@pytest.mark.parametrize("where", ["earlier mp4", "same folder"])
def test_an_input_the_run_would_delete_or_write_into_is_refused(frames_dir, tmp_path, capsys,
                                                                where, in_domain):
    """Re-running on the previous run's overlay.mp4 with the same --output deleted the input
    before reading it ("cannot open video file"); an image folder given as --output too lost
    its earlier overlays and got new ones among its frames."""
    out = tmp_path / "out"
    if where == "earlier mp4":
        out.mkdir()
        source = out / demo.VIDEO_FILE
        cap_frames = sorted(pathlib.Path(frames_dir).iterdir())[:2]
        writer = demo._OverlayWriter(out, fps=10.0, video=True)
        writer.write([((i, 0), overlay_msg(40 * i)) for i in range(len(cap_frames))],
                     {(i, 0): i for i in range(len(cap_frames))})
        writer.close()
        message = "is an earlier run's output in --output"
    else:
        source = out
        shutil.copytree(frames_dir, out)
        message = "--input and --output are the same folder"
    before = sorted(p.name for p in out.iterdir())
    rc, so, se = run_demo(capsys, "--input", source, "--click", "30,36", *SMALL, "--max-frames",
                          "1", "--output", out)
    assert rc == 2 and message in se, se[-3000:]
    assert sorted(p.name for p in out.iterdir()) == before


def test_an_overlay_png_that_cannot_be_written_is_an_error_not_a_count(tmp_path):
    """cv2.imwrite says False (a full disk, a folder in the way) and raises nothing: the demo
    counted the PNG, said it wrote it and exited 0."""
    (tmp_path / demo.overlay_png(1)).mkdir()
    writer = demo._OverlayWriter(tmp_path, fps=10.0, video=False)
    with pytest.raises(OSError, match=r"cannot write .*overlay_00001\.png"):
        writer.write([((0, 0), overlay_msg(20)), ((1, 0), overlay_msg(60))], {(0, 0): 0, (1, 0): 1})
    assert writer.pngs == 1


def test_a_ctrl_c_while_overlays_are_written_comes_after_them(tmp_path):
    """The overlays taken from the collector were lost when a Ctrl-C cut their writing short:
    the PNGs and the mp4 ended a frame short of the stats."""
    col, writer = demo._Collector(), demo._OverlayWriter(tmp_path, fps=10.0, video=False)
    for i in range(3):
        msg = overlay_msg(40 * i)
        msg.header.stamp.sec = i
        col.on_overlay(msg)
    write_one, interrupt_at = writer._write_one, {0}

    def interrupted_once(index, msg):
        if index in interrupt_at:
            signal.raise_signal(signal.SIGINT)  # a Ctrl-C as this overlay is written
            time.sleep(0.01)  # (Python runs the handler between two bytecodes of this thread)
        write_one(index, msg)

    writer._write_one = interrupted_once
    with pytest.raises(KeyboardInterrupt):
        demo._write_overlays(col, writer, {(i, 0): i for i in range(3)})
    assert writer.pngs == 3 and not col.overlay
    # a write that fails meanwhile ends the run with its error, which says more than the Ctrl-C
    interrupt_at.clear()
    interrupt_at.add(3)
    (tmp_path / demo.overlay_png(4)).mkdir()
    for i in (3, 4):
        msg = overlay_msg(40)
        msg.header.stamp.sec = i
        col.on_overlay(msg)
    with pytest.raises(OSError, match="overlay_00004"):
        demo._write_overlays(col, writer, {(i, 0): i for i in range(5)})
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_the_mp4_probe_prints_nothing_itself(capfd):
    """FFmpeg logs a refused time base on file descriptor 2 past OpenCV's log level: the demo's
    one-line refusal came after an FFmpeg line."""
    from fastsam2_ros.ros.demo import _mp4_takes

    assert _mp4_takes(12345.678) is False and _mp4_takes(25.0) is True
    assert capfd.readouterr().err == ""


# ------------------------------------------------------------------------------------------------
# review demo7
# ------------------------------------------------------------------------------------------------
class FakeClock:
    """time.perf_counter and time.sleep of a clock that only sleeping (and ``work``) moves."""

    def __init__(self):
        self.now = 100.0

    def perf_counter(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds

    def work(self, seconds):
        self.now += seconds


def test_fixed_rate_ticks_at_deadlines_whatever_the_work_between(monkeypatch):
    """The rule --rate and the node benchmark share: tick k at t0 + k / rate. Work shorter than a
    period does not lengthen it; a sender that fell behind sends at once and is counted late."""
    from fastsam2_ros.ros import pacing

    clock = FakeClock()
    monkeypatch.setattr(pacing, "time", clock)
    pace = pacing.FixedRate(5.0)
    ticks = []
    for work in (0.1, 0.1, 0.1, 0.45, 0.1, 0.1, 0.1, 0.1):
        pace.wait()
        ticks.append(round(clock.now - 100.0, 6))
        clock.work(work)
    # 0.45 s of work makes tick 4 late by 0.25 s (more than a period); 5 and 6 go at once, 7 is
    # on time again
    assert ticks == [0.0, 0.2, 0.4, 0.6, 1.05, 1.15, 1.25, 1.4]
    assert pace.late == 1 and pace.ticks == 8


def test_demo_rate_sends_at_its_rate_however_long_the_feeders_own_work(long_frames, tmp_path,
                                                                       capsys, in_domain,
                                                                       monkeypatch):
    """The feeder slept a whole period after each frame's own work (reading, converting, writing
    the overlays that came): --rate 30 went out at 18.7 Hz. Here reading a frame takes 100 ms
    and --rate is 5 Hz: frames 1.. go out every 200 ms, not every 300 ms."""
    from rclpy.publisher import Publisher

    from fastsam2_ros import frame_sources

    sent = []
    publish = Publisher.publish

    def timed_publish(self, msg):
        if self.topic_name.endswith("/image"):  # the feeder's frames
            sent.append(time.perf_counter())
        return publish(self, msg)

    read_image = frame_sources.read_image

    def slow_read(path):
        time.sleep(0.1)  # the cost of decoding a large frame
        return read_image(path)

    monkeypatch.setattr(Publisher, "publish", timed_publish)
    monkeypatch.setattr(frame_sources, "read_image", slow_read)
    rc, so, se = run_demo(capsys, "--input", long_frames, "--click", "30,36", *SMALL, "--max-frames",
                          "12", "--rate", "5", "--quiet", "--no-video", "--output", tmp_path / "o")
    assert rc == 0, se[-3000:]
    assert len(sent) == 12
    period = (sent[-1] - sent[1]) / 10  # frame 0 waits for the prompt
    assert 0.199 <= period < 0.25, np.diff(sent[1:])


def overlay_msg(value):
    from fastsam2_ros.image_messages import numpy_to_image

    return numpy_to_image(np.full((72, 96, 3), value, np.uint8), "rgb8")


def test_the_mp4_repeats_the_previous_overlay_for_each_dropped_frame(tmp_path):
    """--rate: frames the node dropped have no overlay, and the mp4 got only the processed ones
    back to back (12 frames sent at 10 fps, 6 processed: a 0.6 s mp4 playing 2x too fast)."""
    writer = demo._OverlayWriter(tmp_path, fps=10.0, video=True)
    index_of = {(i, 0): i for i in range(7)}
    writer.write([((0, 0), overlay_msg(20)), ((1, 0), overlay_msg(60))], index_of)
    writer.write([((4, 0), overlay_msg(140)), ((6, 0), overlay_msg(220))], index_of)  # 2, 3, 5 dropped
    writer.close()
    cap = cv2.VideoCapture(str(tmp_path / demo.VIDEO_FILE))
    means = []
    ok, frame = cap.read()
    while ok:
        means.append(round(float(frame.mean())))
        ok, frame = cap.read()
    cap.release()
    assert len(means) == 7 and np.allclose(means, [20, 60, 60, 60, 140, 140, 220], atol=6), means
    assert sorted(p.name for p in tmp_path.glob("overlay_*.png")) == [
        "overlay_00000.png", "overlay_00001.png", "overlay_00004.png", "overlay_00006.png"]
    assert (writer.pngs, writer.video_frames, writer.repeated) == (4, 7, 3)


@pytest.fixture()
def latin1_frames(frames_dir, tmp_path):
    """frames_dir's frames in a folder whose name is Latin-1, not UTF-8 (an old archive, a
    Windows zip, an SMB share): Python decodes it to surrogates."""
    folder = tmp_path / os.fsdecode(b"caf\xe9")
    shutil.copytree(frames_dir, folder)
    return folder


def test_an_input_folder_whose_name_is_not_utf8_is_tracked(latin1_frames, tmp_path, capsys,
                                                           in_domain, monkeypatch):
    """rclpy got the whole command line (the demo's own options too) and ended in a
    UnicodeEncodeError before any frame."""
    args = ["--input", latin1_frames, "--click", "30,36", *SMALL, "--max-frames", "2", "--no-video",
            "--output", tmp_path / "o"]
    monkeypatch.setattr(sys, "argv", ["fastsam2-demo", *map(str, args)])
    rc, so, se = run_demo(capsys, *args)
    assert rc == 0, se[-3000:]
    assert "caf\\udce9" in so  # printed ("model ready ... from"), escaped as stderr escapes
    assert json.loads((tmp_path / "o" / "summary.json").read_text())["frames_processed"] == 2


@pytest.mark.parametrize("flag", ["--output", "--text", "--params-file"])
def test_an_option_ros_or_opencv_must_take_as_utf8_is_refused_before_the_model_loads(
        frames_dir, tmp_path, capsys, in_domain, monkeypatch, flag):
    """--text is a ROS string, --params-file goes to rcl, --output to OpenCV's writers (which
    crash on such a name, SIGSEGV): one error line, exit 2."""
    value = {"--output": str(tmp_path / os.fsdecode(b"o\xe9")), "--text": os.fsdecode(b"caf\xe9"),
             "--params-file": str(tmp_path / os.fsdecode(b"robot\xe9.yaml"))}[flag]
    if flag == "--params-file":
        pathlib.Path(value).write_text(yaml.safe_dump({params_file_key(): {"ros__parameters": {}}}))
    args = ["--input", frames_dir, "--click", "30,36", *SMALL, "--no-video", "--output",
            tmp_path / "o", flag, value]
    monkeypatch.setattr(sys, "argv", ["fastsam2-demo", *map(str, args)])
    rc, so, se = run_demo(capsys, *args)
    assert rc == 2 and f"error: {flag} " in se and "is not UTF-8" in se, se[-3000:]
    assert "model ready" not in so and "Traceback" not in se

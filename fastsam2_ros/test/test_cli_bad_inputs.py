"""Bad input to the command-line tools (issue 8, item 7): one clear ``error:`` line, a non-zero
exit status, no traceback and no abort. Each case runs the real console entry point in a fresh
process, since an abort at interpreter exit (rclpy threads) is only visible there."""

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from domains import domain_id

os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
DOMAIN_ID = domain_id(7)


def run(module, *args, timeout=240):
    env = dict(os.environ, ROS_DOMAIN_ID=str(DOMAIN_ID), OMP_NUM_THREADS="2")
    proc = subprocess.run([sys.executable, "-m", module, *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=timeout)
    out = proc.stdout + proc.stderr
    assert "Traceback" not in out, out[-3000:]
    assert "terminate called" not in out and proc.returncode not in (-6, 134), out[-3000:]
    return proc.returncode, [line for line in proc.stderr.splitlines() if "error:" in line]


@pytest.fixture()
def frames(tmp_path):
    d = tmp_path / "frames"
    d.mkdir()
    for i in range(3):
        rgb = (np.random.default_rng(i).random((48, 64, 3)) * 255).astype(np.uint8)
        Image.fromarray(rgb).save(d / f"{i:05d}.jpg")
    return d


DEMO = "fastsam2_ros.ros.demo"
SMOKE = ("--click", "20,20", "--random-weights", "--device", "cpu", "--model-cfg", "tiny")


@pytest.mark.parametrize("flags,match", [
    (("--image-size", "100"), "image_size must be in [64, 4096], a multiple of 32"),
    (("--image-size", "80"), "multiple of 32"),
    (("--model-cfg", "foo"), "unknown model_cfg 'foo'"),
    (("--keep-ratio", "1.5"), "keep_ratio must be in (0, 1]"),
    (("--fps", "nan"), "--fps must be a positive number, got nan"),  # crashed making stamps
    (("--fps", "inf"), "--fps must be a positive number, got inf"),  # hung in cv2.VideoWriter
    (("--fps", "-5"), "--fps must be a positive number, got -5"),  # negative stamps, no mp4
    (("--rate", "0"), "--rate must be a positive number, got 0"),
    (("--frame-timeout", "0"), "--frame-timeout must be a positive number"),  # blamed the node
    (("--frame-timeout", "nan"), "--frame-timeout must be a positive number"),
    (("--fps", "1e10"), "--fps must be in [0.01, 65535]"),  # every frame got stamp 0
    (("--fps", "1e-9"), "--fps must be in [0.01, 65535]"),  # a stamp overflowed: waited
])
def test_demo_bad_settings(frames, tmp_path, flags, match):
    args = ["--input", frames, "--output", tmp_path / "o", *SMOKE, *flags]  # the last flag wins
    rc, errors = run(DEMO, *args)
    assert rc == 2 and len(errors) == 1 and match in errors[0], errors


@pytest.mark.parametrize("content,match", [
    (None, "parameter file not found"),
    ("FOLDER", "is a folder, not a file"),  # it said "not found" of a path that is there
    ("not: [valid", "cannot parse parameter file"),  # on one line: where and why
    ("other_node:\n  ros__parameters: {a: 1}\n", "has no '/**/fastsam2_tracker: ros__parameters:' section"),
    # a file rcl refuses as a whole is refused before the node starts, naming rcl's rule
    ("/**/fastsam2_tracker:\n  ros__parameters:\n    keep_ratio: [1, 'a']\n",
     "a list of values of different types, which the node's parser (rcl) refuses"),
    # root namespace only: rcl would skip it for the demo's node in /fastsam2_demo_<pid>
    ("fastsam2_tracker:\n  ros__parameters: {keep_ratio: 0.5}\n", "key its section '/**/fastsam2_tracker:'"),
    # beside a global section rcl applies the global one alone: keep_ratio would be dropped
    ("/**:\n  ros__parameters: {use_sim_time: false}\nfastsam2_tracker:\n  ros__parameters: "
     "{keep_ratio: 0.5}\n", "key its section '/**/fastsam2_tracker:'"),
])
def test_demo_bad_params_file(frames, tmp_path, content, match):
    """Checked before rclpy.init, which used to fail with a traceback (RCLError, exit 1)."""
    params = tmp_path / "params.yaml"
    if content == "FOLDER":
        params.mkdir()
    elif content is not None:
        params.write_text(content)
    rc, errors = run(DEMO, "--input", frames, "--output", tmp_path / "o", *SMOKE, "--params-file", params)
    assert rc == 2 and len(errors) == 1 and match in errors[0] and str(params) in errors[0], errors
    if content == "not: [valid":
        assert "expected ',' or ']'" in errors[0], errors


def test_demo_missing_caption_model_is_named_before_the_work(frames, tmp_path):
    """It surfaced only after the proposals, if they found a region at all."""
    missing = tmp_path / "no_blip"
    rc, errors = run(DEMO, "--input", frames, "--output", tmp_path / "o", "--auto", "--random-weights",
                     "--device", "cpu", "--caption-model", missing)
    assert rc == 2 and len(errors) == 1 and str(missing) in errors[0] and "not a folder" in errors[0]


def test_demo_output_that_is_a_file(frames, tmp_path):
    (tmp_path / "taken").write_text("x")
    rc, errors = run(DEMO, "--input", frames, "--output", tmp_path / "taken", *SMOKE)
    assert rc == 2 and len(errors) == 1 and "is a file, not a folder" in errors[0], errors


def test_demo_output_where_nothing_can_be_written_names_the_flag(frames, tmp_path):
    """It ended with a bare "[Errno 2] No such file or directory: '/proc/x'"."""
    rc, errors = run(DEMO, "--input", frames, "--output", "/proc/fastsam2_demo_out", *SMOKE)
    assert rc == 2 and len(errors) == 1, errors
    assert errors[0].startswith("error: --output /proc/fastsam2_demo_out: cannot write in /proc"), errors


@pytest.mark.parametrize("damage,match", [
    ("truncated", r"cannot read image .*00001\.jpg"),
    ("size", r"00001\.jpg is 32x24 but the first frame"),
])
def test_demo_bad_frame_in_the_middle(frames, tmp_path, damage, match):
    import re

    bad = frames / "00001.jpg"
    if damage == "truncated":
        bad.write_bytes(bad.read_bytes()[:200])
    else:
        Image.fromarray(np.zeros((24, 32, 3), np.uint8)).save(bad)
    rc, errors = run(DEMO, "--input", frames, "--output", tmp_path / "o", *SMOKE,
                     "--image-size", "64")
    assert rc == 2 and len(errors) == 1 and re.search(match, errors[0]), errors


def test_eval_score_json_that_is_a_folder(tmp_path):
    from fastsam2_ros.eval.synthetic import generate_dataset

    data = generate_dataset(tmp_path / "d", sequences=1, frames=3, size=(32, 32), objects=1)
    rc, errors = run("fastsam2_ros.eval.cli", "score", "--gt", data, "--pred", data,
                     "--json", tmp_path, "--no-progress")
    assert rc == 2 and len(errors) == 1 and "is a folder" in errors[0], errors


@pytest.mark.parametrize("command", ["run", "score"])
def test_eval_dataset_that_is_a_file_is_not_called_missing(tmp_path, command):
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"x")
    flags = (["run", "--dataset", video, "--random-weights", "--out", tmp_path / "o"]
             if command == "run" else ["score", "--gt", video, "--pred", tmp_path])
    rc, errors = run("fastsam2_ros.eval.cli", *flags, "--no-progress")
    assert rc == 2 and len(errors) == 1 and f"{video} is a file, not a folder" in errors[0], errors


@pytest.mark.parametrize("blocker", [None, "file"])
def test_an_output_file_given_as_a_folder_path_is_refused_before_the_work(tmp_path, blocker):
    """`--out weights/` (fastsam2-train-router) passed the check (Path drops the "/") and failed
    only when the weights were written, after all the encoding and training."""
    from fastsam2_ros.core.errors import InputError
    from fastsam2_ros.eval.cli import check_output_file

    target = tmp_path / "router"
    if blocker:
        target.write_text("x")
    with pytest.raises(InputError, match=r"--out .*router/ is a folder; give a file name"):
        check_output_file(f"{target}/", "--out")


def test_eval_run_bad_image_size(tmp_path):
    from fastsam2_ros.eval.synthetic import generate_dataset

    data = generate_dataset(tmp_path / "d", sequences=1, frames=3, size=(32, 32), objects=1)
    rc, errors = run("fastsam2_ros.eval.cli", "run", "--dataset", data, "--random-weights",
                     "--image-size", "112", "--out", tmp_path / "o", "--no-progress")
    assert rc == 2 and len(errors) == 1 and "multiple of 32" in errors[0], errors


@pytest.mark.parametrize("flags, match", [
    (["--sizes", "foo"], "sizes must be WxH"),
    # the node refused every frame (37 s of waiting), or making the frames ran out of memory
    (["--sizes", "4x4"], "has a side outside the 8..8192 pixels"),
    (["--sizes", "100000x100000"], "has a side outside the 8..8192 pixels"),
    (["--sizes", "0x480"], "sizes must be WxH"),
    (["--sizes", "640x"], "sizes must be WxH"),
    (["--sets", "bogus"], "unknown output set"),
    # these started the node: it refused its configuration while the probe waited 600 s, or DDS
    # failed on a port, or Fast DDS ran with its defaults and the JSON named the profile
    (["--tracker", "real", "--model", "hiera_bogus"], "hiera_bogus"),
    (["--tracker", "real", "--device", "tpu"], "tpu"),
    (["--domain-id", "300"], "--domain-id must be in [0, 232]"),
    (["--fastdds-profile", "/nonexistent/profile.xml"], "no such file"),
])
def test_node_bench_bad_arguments(flags, match):
    """Rejected before any process is started."""
    code, errors = run("fastsam2_ros.bench", "--node", *flags)
    assert code == 2 and any(match in e for e in errors), errors


@pytest.mark.parametrize("flags, match", [
    (["--soak", "-3"], "--soak must be 0"),
    (["--soak", "1"], "--soak must be 0"),
    (["--warmup-frames", "-2"], "--warmup-frames must be >= 2"),
    (["--warmup-frames", "1"], "--warmup-frames must be >= 2"),
    (["--vos-time-limit", "0"], "--vos-time-limit must be a finite number of seconds > 0"),
    (["--vos-time-limit", "nan"], "--vos-time-limit must be a finite number of seconds > 0"),
    (["--keep-ratios", "0.3,abc"], "--keep-ratios: 'abc' is not a number"),
    (["--modes", "official,dense", "--keep-ratios", "0.3"],
     "--keep-ratios only apply with the pruned mode in --modes or --soak"),
    (["--repeats", "0"], "--repeats must be >= 1"),
    (["--modes", "foo"], "unknown mode 'foo'; choose from official, dense, pruned"),
    (["--modes", ","], "no modes to run"),
    (["--objects", "0"], "--objects must be >= 1"),
    (["--click", "1,2;3,4", "--objects", "1"], "--click gives 2 clicks but --objects is 1"),
])
def test_bench_bad_arguments(flags, match):
    """Rejected before a model is built."""
    code, errors = run("fastsam2_ros.bench", "--random-weights", "--device", "cpu", *flags)
    assert code == 2 and any(match in e for e in errors), errors


def test_node_bench_with_its_stand_in_tracker_measures_every_frame(tmp_path):
    """The default tracker of `fastsam2-bench --node`: its worker died on the first frame (the
    stand-in had no keep_ratio), every frame was LOST, and the command said nothing and exited 0."""
    import json

    out = tmp_path / "node.json"
    code, errors = run("fastsam2_ros.bench", "--node", "--sizes", "64x48", "--sets", "mask",
                       "--frames", "3", "--warmup", "1", "--cost-ms", "5",
                       "--domain-id", DOMAIN_ID, "--json", out, timeout=300)
    assert code == 0 and not errors, errors
    (row,) = json.loads(out.read_text())["results"]
    assert row["latency"]["lost"] == 0 and row["latency"]["mask_latency_ms"]["n"] == 3, row

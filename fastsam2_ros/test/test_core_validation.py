"""Bad input to the core (issue 8, item 7): every case is an InputError or CheckpointError with a
reason, never a raw numpy/Python error; the ranges table; per-object mask geometry."""

import math

import numpy as np
import pytest

from fastsam2_ros.core import CheckpointError, InputError, TrackerConfig
from fastsam2_ros.core.config import PARAMETER_RANGES, Range
from fastsam2_ros.core.geometry import mask_geometry
from fastsam2_ros.core.models import build_predictor
from fastsam2_ros.core.prompts import (MAX_OBJECT_ID, next_free_id, validate_box,
                                       validate_object_id, validate_points, validate_text)


@pytest.fixture(scope="module")
def tracker():
    from fastsam2_ros.core.tracker import StreamingTracker

    cfg = TrackerConfig(model_cfg="tiny", allow_random_weights=True, image_size=96,
                        device="cpu", keep_ratio=0.5, mc_passes=0)
    return StreamingTracker(cfg)


@pytest.fixture(scope="module")
def frame():
    return (np.random.default_rng(0).random((48, 64, 3)) * 255).astype(np.uint8)


# ------------------------------------------------------------------------------ prompts
@pytest.mark.parametrize("points,labels,match", [
    ([[1, 2], [3]], [1, 1], "rectangular"),
    ("abc", [1], "must be numbers"),
    ([[1, "x"]], [1], "rectangular"),
    ([[1, 2]], ["fg"], "rectangular"),
    ([[1, 2]], [[1], [0, 1]], "rectangular"),
    ({"x": 1}, [1], "points"),
])
def test_ragged_and_mistyped_points_are_input_errors(points, labels, match):
    with pytest.raises(InputError, match=match):
        validate_points(points, labels, (10, 10))


def test_ragged_box_and_the_tracker_stays_usable(tracker, frame):
    with pytest.raises(InputError, match="rectangular"):
        validate_box([1, 2, [3, 4]], (10, 10))
    tracker.reset()
    with pytest.raises(InputError, match="rectangular"):
        tracker.add_prompt(1, points=[[1, 2], [3]], labels=[1, 1], image=frame)
    res = tracker.add_prompt(1, points=[[20, 20]], labels=[1], image=frame)
    assert list(res.masks) == [1]


W, H = 13, 9  # an odd-sized, non-square frame


@pytest.mark.parametrize("x,y,clipped", [((W - 0.6), 4.0, (W - 1, 4.0)), (5.0, H - 0.5, (5.0, H - 1)),
                                         (-0.5, -0.2, (0.0, 0.0)), (W - 1, H - 1, (W - 1, H - 1))])
def test_a_click_anywhere_on_a_border_pixel_is_on_the_image(x, y, clipped):
    """Pixel i is centred at i (image_geometry, RViz): a click projected onto the last column at
    u = W - 0.6 is on that pixel; it was refused as outside the image (u > W - 1)."""
    pts, _ = validate_points([[x, y]], [1], (H, W))
    np.testing.assert_array_equal(pts, np.float32([clipped]))


@pytest.mark.parametrize("x,y", [(W - 0.4, 4.0), (4.0, -0.6), (-3.0, 2.0), (2.0, H + 10)])
def test_a_click_past_the_border_pixels_is_refused(x, y):
    with pytest.raises(InputError, match="outside the 13x9 image"):
        validate_points([[x, y]], [1], (H, W))


def test_a_box_on_the_last_column_is_taken_and_one_beyond_it_refused():
    assert validate_box([W - 1, 0, W + 5, 5], (H, W)) == (W - 1, 0.0, W - 1, 5.0)
    assert validate_box([-5, -5, W + 5, H + 5], (H, W)) == (0.0, 0.0, W - 1, H - 1)
    for outside in ([W - 0.4, 0, W + 5, 5], [0, -9, 5, -0.6]):
        with pytest.raises(InputError, match="lies outside the 13x9 image"):
            validate_box(outside, (H, W))


class _CountedRepr(list):
    reprs = 0

    def __repr__(self):
        type(self).reprs += 1
        return super().__repr__()


def test_huge_prompt_arguments_get_short_errors_and_valid_ones_no_repr():
    """The box error printed every number (5 MB for a million); the points check made the repr of
    every valid argument (a million points: 0.9 s) in case it had to complain."""
    with pytest.raises(InputError, match="got 1000000 numbers") as err:
        validate_box(np.zeros(1_000_000), (H, W))
    assert len(str(err.value)) < 300
    validate_points(_CountedRepr([[1.0, 2.0]]), _CountedRepr([1]), (H, W))
    assert _CountedRepr.reprs == 0
    with pytest.raises(InputError, match="rectangular") as err:
        validate_points(_CountedRepr([[1.0, 2.0], [3.0]] * 100_000), [1] * 200_000, (H, W))
    assert len(str(err.value)) < 300


def test_object_ids_and_texts():
    assert validate_object_id(np.int64(7)) == 7
    assert validate_object_id(0, allow_zero=True) == 0
    for bad in (True, 1.5, "3", None, 0, MAX_OBJECT_ID + 1, -1):
        with pytest.raises(InputError, match="object id"):
            validate_object_id(bad)
    assert next_free_id([1, 2, 4]) == 3
    assert validate_text("  mug ", 10) == "mug"
    for bad, match in (("x" * 11, "at most 10"), ("  ", "empty"), ("a\x07b", "control"),
                       (5, "string"), ("a\x7fb", "control"), ("a\x85b", "control"),
                       ("a\x9fb", "control"), ("\ufeff", "empty"), (" \u200b\u2060 ", "empty")):
        with pytest.raises(InputError, match=match):
            validate_text(bad, 10)
    # a tab, format characters inside a text (an emoji's zero-width joiner) and non-Latin text pass
    assert validate_text("red\tmug", 10) == "red\tmug"
    assert validate_text("\U0001f468\u200d\U0001f373", 10) == "\U0001f468\u200d\U0001f373"
    assert validate_text("红色杯子", 10) == "红色杯子"


# ------------------------------------------------------------------------------ configuration
@pytest.mark.parametrize("kw,match", [
    (dict(mc_passes="abc"), "mc_passes must be an integer"),
    (dict(model_cfg=None), "model_cfg must be a string"),
    (dict(keep_ratio=float("nan")), "finite"),
    (dict(keep_ratio=0.0), r"keep_ratio must be in \(0, 1\]"),
    (dict(keep_ratio=1.5), r"keep_ratio must be in \(0, 1\]"),
    (dict(bf16="yes"), "bf16 must be true or false"),
    (dict(mc_dropout=0.99), "mc_dropout"),
    (dict(max_objects=0), "max_objects"),
    (dict(text_mode="bogus"), "text_mode must be one of"),
])
def test_bad_config_values_are_input_errors(kw, match):
    with pytest.raises(InputError, match=match):
        TrackerConfig(**kw)


@pytest.mark.parametrize("size", [80, 112, 144, 176, 100, 32, 4128])
def test_image_sizes_sam2_cannot_run_are_rejected(size):
    with pytest.raises(InputError, match="multiple of 32"):
        TrackerConfig(image_size=size)


def test_numpy_numbers_are_accepted(tracker):
    cfg = TrackerConfig(keep_ratio=np.float32(0.5), mc_passes=np.int64(3), bf16=np.bool_(False))
    assert (cfg.keep_ratio, cfg.mc_passes, cfg.bf16) == (0.5, 3, False)
    assert type(cfg.keep_ratio) is float and type(cfg.mc_passes) is int
    tracker.set_keep_ratio(np.float32(0.25))
    assert tracker.keep_ratio == 0.25
    with pytest.raises(InputError, match="keep_ratio"):
        tracker.set_keep_ratio(np.float32(1.5))
    tracker.set_keep_ratio(0.5)


def test_ranges_table_is_what_validate_enforces():
    defaults = TrackerConfig().to_dict()
    for name, rng in PARAMETER_RANGES.items():
        assert rng.contains(defaults[name]), name
        kind = type(defaults[name])
        above = kind(rng.high + (1 if kind is int else 1e-6 * max(1.0, abs(rng.high))))
        with pytest.raises(InputError, match=name):
            TrackerConfig(**{name: above})
        below = kind(rng.low) if rng.low_open else kind(rng.low - 1)
        with pytest.raises(InputError, match=name):
            TrackerConfig(**{name: below})
    assert Range(0, 1, low_open=True).describe() == "(0, 1]"
    assert PARAMETER_RANGES["seed"].describe() == "[0, 2147483647]"  # was printed 2.14748e+09
    assert not Range(64, 4096, step=32).contains(80) and Range(64, 4096, step=32).contains(4096)


def test_a_multiple_of_32_that_is_not_a_power_of_two_runs(tracker, frame):
    tracker.reset()
    tracker.add_prompt(1, points=[[20, 20]], labels=[1], image=frame)
    res = tracker.track(frame)  # image_size 96 = 3 * 32
    assert res.masks[1].shape == frame.shape[:2]


# ------------------------------------------------------------------------------ checkpoints
@pytest.mark.parametrize("content,match", [
    (b"", "empty file"),
    (b"<html><body>404 Not Found</body></html>\n", "is a text file"),
    (b"\x00\x01garbage", "not a PyTorch file"),
    (b"PK\x03\x04truncated zip", "is the file complete"),
])
def test_broken_checkpoint_files_say_why(tmp_path, content, match):
    path = tmp_path / "sam2.1_hiera_tiny.pt"
    path.write_bytes(content)
    cfg = TrackerConfig(model_cfg="tiny", image_size=64, device="cpu", checkpoint=str(path))
    with pytest.raises(CheckpointError, match=match) as info:
        build_predictor(cfg)
    assert str(path) in str(info.value)


def _corrupt_a_tensor(path):
    """Change bytes inside the largest tensor record of a torch.save zip (bit rot, a bad copy),
    keeping the values finite: only the entry's CRC-32 tells."""
    import struct
    import zipfile

    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as z:
        info = max((i for i in z.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    local = info.header_offset  # local header: 30 bytes, the name and the extra field, then the data
    name_len, extra_len = struct.unpack("<HH", bytes(data[local + 26:local + 30]))
    start = local + 30 + name_len + extra_len
    for i in range(start, start + info.file_size, 4):
        data[i] ^= 0x5A  # the low mantissa byte of a little-endian float32
    path.write_bytes(bytes(data))


def _weight_loaders():
    """Every loader of a torch.save file by path: name -> (write a valid file, load it)."""
    import torch

    from fastsam2_ros.core import auto_prompt, clip_text, models, router

    def tensors(path):
        torch.save({"model": {"w": torch.randn(32, 32)}}, path)

    return {
        "sam2": (tensors,
                 lambda p: models.load_sam2_state_dict(models.check_checkpoint(str(p), "tiny"))),
        "router": (lambda p: router.save_router(router.RouterMLP(16), p),
                   lambda p: router.load_router(p, 16)),
        "clip_configure": (tensors, lambda p: clip_text.check_clip_settings("ViT-B-16", str(p))),
        "clip_load": (tensors, lambda p: clip_text._read_state_dict(p)),
        "rpn": (tensors, lambda p: auto_prompt.RpnProposer(str(p))),
    }


def _break_file(how, path, monkeypatch):
    """Make ``path`` a directory, a corrupt file, an unreadable one, one whose read fails, or a
    text file (this machine's tests run as root, which reads any file: permissions are faked)."""
    import builtins
    import os
    import shutil

    if how == "directory":
        path.unlink()
        path.mkdir()
    elif how == "corrupt":
        _corrupt_a_tensor(path)
    elif how == "unreadable":
        real_access = os.access
        monkeypatch.setattr(os, "access", lambda p, mode, **kw: (os.fspath(p) != str(path)
                                                                 and real_access(p, mode, **kw)))
    elif how == "read_fails":
        real_open = builtins.open

        def failing_open(file, *args, **kwargs):
            if isinstance(file, (str, os.PathLike)) and os.fspath(file) == str(path):
                raise PermissionError(13, "Permission denied", str(path))
            return real_open(file, *args, **kwargs)

        monkeypatch.setattr(builtins, "open", failing_open)
    elif how == "text":
        shutil.copyfile(__file__, path)


@pytest.mark.parametrize("how,match", [
    ("directory", "is a directory, not"),
    ("corrupt", r"is corrupt: CRC mismatch in \S+/data/"),
    ("unreadable", "is not readable"),
    ("read_fails", "cannot read .*Permission denied"),
    ("text", "is a text file"),
])
@pytest.mark.parametrize("loader", ["sam2", "router", "clip_configure", "clip_load", "rpn"])
def test_every_weight_file_loader_says_what_is_wrong_with_the_file(tmp_path, monkeypatch, loader,
                                                                   how, match):
    """One check (weight_files.check_torch_file) for each loader: a folder was "not found", a
    file changed since it was saved loaded as other weights (torch.load ignores the zip CRCs),
    an unreadable CLIP or RPN file passed configure and raised a bare PermissionError, and a
    text file as router weights got torch's advice to unpickle unsafely."""
    if loader.startswith("clip"):
        pytest.importorskip("open_clip")
    write, load = _weight_loaders()[loader]
    path = tmp_path / "weights.pt"
    write(path)
    _break_file(how, path, monkeypatch)
    if loader == "clip_configure" and how == "corrupt":
        load(path)  # the check at configure reads 4 bytes: the CRCs are checked when loaded
        return
    with pytest.raises(CheckpointError, match=match) as info:
        load(path)
    assert str(path) in str(info.value) and "not found" not in str(info.value)
    assert "weights_only" not in str(info.value)


class _NotATensor:  # e.g. a training run's settings object saved next to the weights
    pass


@pytest.mark.parametrize("how,match", [
    ("zipped", r"is a zip archive \(of weights.pt\), not a torch.save file: unpack it"),
    ("objects", r"holds Python objects besides tensors \(e.g. \S+_NotATensor\).*re-save it as "
                r"\{'model': state_dict\}"),
])
@pytest.mark.parametrize("loader", ["sam2", "router", "rpn"])
def test_a_file_torch_load_refuses_says_why(tmp_path, loader, how, match):
    """Every torch.load failure was "is the file complete?" (and for Python objects torch's
    advice to load with weights_only=False): a zipped download and a checkpoint with objects
    besides its tensors each have their own fix (weight_files.load_failure)."""
    import zipfile

    import torch

    write, load = _weight_loaders()[loader]
    inner = tmp_path / "weights.pt"
    write(inner)
    path = tmp_path / "given.pt"
    if how == "zipped":
        with zipfile.ZipFile(path, "w") as zf:
            zf.write(inner, "weights.pt")
    else:
        blob = torch.load(inner, weights_only=True)
        torch.save({**blob, "settings": _NotATensor()}, path)
    with pytest.raises(CheckpointError, match=match) as info:
        load(path)
    assert str(path) in str(info.value)
    assert "is the file complete" not in str(info.value) and "weights_only" not in str(info.value)


# ------------------------------------------------------------------------------ geometry
def test_mask_geometry():
    m = np.zeros((10, 12), bool)
    m[2:5, 3:9] = True  # 3 rows x 6 columns
    g = mask_geometry(m)
    assert g.area == 18 and g.bbox == (3, 2, 6, 3)
    assert g.centroid == pytest.approx((5.5, 3.0))
    one = np.zeros((4, 4), bool)
    one[1, 2] = True
    assert mask_geometry(one).bbox == (2, 1, 1, 1)
    empty = mask_geometry(np.zeros((4, 4), bool))
    assert empty.empty and empty.bbox == (0, 0, 0, 0) and all(math.isnan(c) for c in empty.centroid)


def test_model_cfg_names_only_configs_of_the_installed_sam2():
    """hydra instantiates the _target_ entries of whatever YAML it loads, and model_cfg can be
    set over DDS: configs/../../x.yaml loaded any file on disk."""
    from fastsam2_ros.core.config import resolve_model_cfg

    assert resolve_model_cfg("configs/sam2.1/sam2.1_hiera_t.yaml") == "configs/sam2.1/sam2.1_hiera_t.yaml"
    with pytest.raises(InputError, match="may not leave"):
        TrackerConfig(model_cfg="configs/../../../../tmp/x.yaml")
    with pytest.raises(InputError, match="not a config of the installed sam2"):
        TrackerConfig(model_cfg="configs/sam2.1/nope.yaml")
    # a name longer than the file system's NAME_MAX (OSError from the file system)
    with pytest.raises(InputError, match="not a config of the installed sam2"):
        TrackerConfig(model_cfg="configs/sam2.1/" + "a" * 300 + ".yaml")


def test_model_cfg_takes_only_model_configs_each_under_one_name(tmp_path):
    """A training config of the sam2 package passed validate() and failed at configure inside
    omegaconf ("Unsupported interpolation type times"); configs/sam2.1/./x.yaml was built as x
    but not known as it (another checkpoint hint, router model_cfg mismatch warnings)."""
    from fastsam2_ros.core.config import resolve_model_cfg, short_model_name
    from fastsam2_ros.core.models import check_checkpoint

    with pytest.raises(InputError, match="not a model config; use one of .*configs/sam2.1/<name>.yaml"):
        TrackerConfig(model_cfg="configs/sam2.1_training/sam2.1_hiera_b+_MOSE_finetune.yaml")
    for name in ("configs/sam2.1/./sam2.1_hiera_t.yaml", "configs/sam2.1//sam2.1_hiera_t.yaml",
                 "configs//sam2.1/sam2.1_hiera_t.yaml"):
        assert resolve_model_cfg(name) == "configs/sam2.1/sam2.1_hiera_t.yaml"
        assert short_model_name(name) == "sam2.1_hiera_t"
        with pytest.raises(CheckpointError, match=r"expected sam2\.1_hiera_tiny\.pt"):
            check_checkpoint(str(tmp_path / "x.pt"), name)


@pytest.mark.parametrize("device,match", [("meta", "runs on auto | cpu | cuda"),
                                          ("mps", "runs on auto | cpu | cuda"),
                                          ("banana", "runs on auto | cpu | cuda"),
                                          ("cuda:x", "runs on auto | cpu | cuda"),
                                          ("cuda:01", "runs on auto | cpu | cuda"),
                                          ("cuda:99999999999999999999", "invalid device")])
def test_devices_sam2_does_not_run_on_are_refused(device, match):
    """By the configuration too (a node parameter set to "gpu" was taken and failed only at the
    next configure)."""
    from fastsam2_ros.core.models import resolve_device

    with pytest.raises(InputError, match=match):
        resolve_device(device)
    if match != "invalid device":  # (a name of the right form that torch cannot hold)
        with pytest.raises(InputError, match=match):
            TrackerConfig(device=device)


def test_cuda_index_beyond_the_gpus_is_refused(monkeypatch):
    import torch

    from fastsam2_ros.core.models import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("cuda:0").index == 0
    with pytest.raises(InputError, match="has 1 CUDA device"):
        resolve_device("cuda:3")


def test_a_checkpoint_with_nan_weights_is_refused(tmp_path):
    import torch

    cfg = TrackerConfig(model_cfg="tiny", image_size=64, device="cpu", allow_random_weights=True)
    state = build_predictor(cfg).state_dict()
    name = next(k for k, v in state.items() if v.is_floating_point())
    state[name] = torch.full_like(state[name], float("nan"))
    path = tmp_path / "nan.pt"
    torch.save({"model": state}, path)
    with pytest.raises(CheckpointError, match=r"NaN or infinite values in 1 tensor"):
        build_predictor(cfg.replace(checkpoint=str(path), allow_random_weights=False))


def test_a_sam2_checkpoint_of_the_other_version_is_named(tmp_path):
    """2.1 adds three parameters: the error names the version and the model_cfg that fits."""
    import torch

    cfg = TrackerConfig(model_cfg="tiny", image_size=64, device="cpu", allow_random_weights=True)
    state = build_predictor(cfg).state_dict()
    for key in ("no_obj_embed_spatial", "obj_ptr_tpos_proj.weight", "obj_ptr_tpos_proj.bias"):
        state.pop(key)
    path = tmp_path / "sam2_hiera_tiny.pt"
    torch.save({"model": state}, path)
    with pytest.raises(CheckpointError, match="SAM 2.0 checkpoint in a SAM 2.1 config"):
        build_predictor(cfg.replace(checkpoint=str(path), allow_random_weights=False))


def test_a_wrong_clip_setting_fails_when_the_tracker_is_built(tmp_path):
    """It passed configure and failed at every text prompt instead."""
    pytest.importorskip("open_clip")
    from fastsam2_ros.core.tracker import StreamingTracker

    base = dict(model_cfg="tiny", image_size=64, device="cpu", allow_random_weights=True)
    page = tmp_path / "clip.bin"
    page.write_text("<html>moved</html>")
    with pytest.raises(InputError, match="unknown open_clip model 'ViT-X-99'"):
        StreamingTracker(TrackerConfig(**base, clip_model="ViT-X-99", clip_weights=str(page)))
    with pytest.raises(CheckpointError, match="CLIP weights file not found"):
        StreamingTracker(TrackerConfig(**base, clip_weights=str(tmp_path / "none.bin")))
    from fastsam2_ros.core.clip_text import ClipTextEncoder

    with pytest.raises(CheckpointError, match="is a text file"):
        ClipTextEncoder("ViT-B-16", str(page))


@pytest.mark.parametrize("settings,match", [
    (dict(auto_proposal_source="rpn"), "needs auto_rpn_weights"),
    (dict(auto_proposal_source="rpn", auto_rpn_weights="{tmp}/rpn_typo.pth"), "RPN weights not found"),
    (dict(auto_proposal_source="rpn", auto_rpn_weights="{tmp}/page.html"), "is a text file"),
    (dict(auto_caption_model="{tmp}/blip_typo"), "caption model directory not found"),
    (dict(auto_caption_model="{tmp}", auto_refiner_model="{tmp}/minilm_typo"),
     "refinement model directory not found"),
    # a file where the folder should be was "not found"
    (dict(auto_caption_model="{tmp}/page.html"), "caption model directory .*page.html is a file, not a folder"),
    (dict(auto_caption_model="{tmp}", auto_refiner_model="{tmp}/page.html"),
     "refinement model directory .*page.html is a file, not a folder"),
])
def test_automatic_prompt_weights_fail_when_the_tracker_is_built(tmp_path, settings, match):
    """Like the CLIP and router files: a typo was found only at the first automatic prompt. Only
    what the settings use is checked (sam2 proposals need no RPN file, the refiner runs only on
    a caption)."""
    from fastsam2_ros.core.tracker import check_tracker_files

    (tmp_path / "page.html").write_text("<html>404</html>")
    kw = {k: v.format(tmp=tmp_path) for k, v in settings.items()}
    with pytest.raises(CheckpointError, match=match):
        check_tracker_files(TrackerConfig(model_cfg="tiny", image_size=64, device="cpu", **kw))
    unused = dict(auto_rpn_weights=str(tmp_path / "rpn_typo.pth"),
                  auto_refiner_model=str(tmp_path / "minilm_typo"))
    check_tracker_files(TrackerConfig(model_cfg="tiny", image_size=64, device="cpu", **unused))


def test_clip_weights_of_another_architecture_fail_when_the_tracker_is_built(tmp_path):
    """They passed configure (the file looked like weights) and failed at the first text prompt:
    a node configured for text prompts must say so at configure. Empty clip_weights stay
    allowed (a text prompt is then refused, saying why)."""
    pytest.importorskip("open_clip")
    import torch

    from fastsam2_ros.core.tracker import StreamingTracker

    base = dict(model_cfg="tiny", image_size=64, device="cpu", allow_random_weights=True)
    clip = tmp_path / "open_clip_pytorch_model.bin"
    torch.save({"visual.proj": torch.zeros(64, 32), "logit_scale": torch.ones([])}, clip)
    with pytest.raises(CheckpointError, match=f"CLIP weights '{clip}' do not match open_clip "
                       "architecture 'ViT-B-16'"):
        StreamingTracker(TrackerConfig(**base, clip_weights=str(clip)))
    StreamingTracker(TrackerConfig(**base, clip_weights=str(clip), text_mode="none")).release()


# ------------------------------------------------------------------------------ params files
#: how rcl's params-file parser (the node) types each written value, checked against rcl itself
#: in test_ros_parameters.py::test_params_files_are_typed_as_rcl_types_them
RCL_TYPED = [("5e-1", 0.5), ("0.5e0", 0.5), ("1.e-1", 0.1), ("+5", 5), ("0x200", 512), ("010", 8),
             ("08", 8.0), ("1e3", 1000.0), ("9223372036854775808", 9223372036854775808.0),
             ("n", False), ("Y", True), ("Off", False), ("tRue", "tRue"), ("~", "~"),
             ("null", "null"), ("1_000", "1_000"), ("1e400", "1e400"), ("1e-310", "1e-310"),
             ("0o10", "0o10"), ("2001-12-14", "2001-12-14"), ("'5e-1'", "5e-1"), ('"y"', "y"),
             ("!!str 5", "5"), ("!!float 1", 1), ("|-\n      0.5", 0.5), ("|\n      0.5", "0.5\n")]


@pytest.mark.parametrize("text,value", RCL_TYPED)
def test_a_params_file_value_is_typed_as_the_node_types_it(text, value, tmp_path):
    """load_ros_params used yaml.safe_load (YAML 1.1): 5e-1 was text, n text, ~ None, 1_000
    the number 1000; the node's parser (rcl) reads them otherwise."""
    from fastsam2_ros.core.config import load_ros_params

    f = tmp_path / "p.yaml"
    f.write_text(f"/**/fastsam2_tracker:\n  ros__parameters:\n    x: {text}\n")
    got = load_ros_params(f)["x"]
    assert type(got) is type(value) and got == value, (text, got)


def test_a_params_file_value_rcl_types_otherwise_is_refused_saying_what_it_is(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("/**/fastsam2_tracker:\n  ros__parameters:\n    seed: 1_000\n    keep_ratio: 5e-1\n")
    with pytest.raises(InputError, match=r"seed must be an integer, got '1_000' \(a string\); "
                                         r"the node refuses it too"):
        TrackerConfig.from_yaml(f)
    f.write_text("/**/fastsam2_tracker:\n  ros__parameters:\n    keep_ratio: 5e-1\n    bf16: n\n")
    cfg = TrackerConfig.from_yaml(f)
    assert (cfg.keep_ratio, cfg.bf16) == (0.5, False)

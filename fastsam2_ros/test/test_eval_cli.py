"""End to end: ``fastsam2-eval run`` with the real SAM 2 (random weights, 64 px) on a synthetic
DAVIS-layout set, all three modes, refinement and text prompts on. Random weights make the
accuracy meaningless, so the checks are about structure and internal consistency."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from fastsam2_ros.core.stats import STAGES
from fastsam2_ros.eval import cli
from fastsam2_ros.eval.davis_io import DatasetError, read_label_png, write_label_png
from fastsam2_ros.eval.report import RUN_KEYS
from fastsam2_ros.eval.synthetic import generate_dataset

FRAMES = 4


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("eval_cli")
    data = generate_dataset(tmp / "data", sequences=1, frames=FRAMES, size=(64, 48), objects=2, seed=5)
    out = tmp / "out"
    rc = cli.main(["run", "--dataset", str(data), "--random-weights", "--model", "tiny",
                   "--image-size", "64", "--device", "cpu", "--modes", "official,dense,pruned",
                   "--keep-ratios", "0.5", "--refine", "--max-rounds", "2",
                   "--text-prompts", str(data / "text_prompts.json"), "--out", str(out),
                   "--warmup", "1", "--no-progress"])
    report = json.loads((out / "report.json").read_text()) if rc == 0 else None
    return rc, data, out, report


def test_run_succeeds_and_writes_every_output(evaluated):
    rc, data, out, report = evaluated
    assert rc == 0
    assert (out / "report.md").is_file()
    assert (out / "report.png").read_bytes()[:4] == b"\x89PNG"
    assert report["schema_version"] == 2 and report["tool"] == "fastsam2-eval run"
    assert report["accuracy_valid"] is False  # random weights
    assert [r["label"] for r in report["runs"]] == ["official", "dense", "pruned_0.50"]
    assert all(tuple(r) == RUN_KEYS for r in report["runs"])
    md = (out / "report.md").read_text()
    for name in ("SAM 2 (official video predictor)", "Streaming SAM 2, dense (keep 1.00)",
                 "Streaming SAM 2, pruned (keep 0.50)"):
        assert f"| {name} |" in md


def test_every_mode_used_the_same_prompts_and_counted_its_clicks(evaluated):
    _, data, _, report = evaluated
    seq = report["input"]["sequences"][0]
    gt0 = read_label_png(data / "Annotations" / "480p" / seq / "00000.png")
    prompts = report["prompts"][seq]
    assert sorted(prompts) == ["1", "2"]
    texts = json.loads((data / "text_prompts.json").read_text())[seq]
    for k, p in prompts.items():
        assert p["frame"] == 0 and gt0[p["click"][1], p["click"][0]] == int(k)
        assert p["text"] == texts[k]
    for r in report["runs"]:
        c = r["clicks"]
        # random weights: every frame is far below J&F 0.8, so the 2 allowed rounds go to
        # frames 0 and 1, each with 1..3 clicks
        assert c["initial"] == 2 and c["rounds"] == 2 and 2 <= c["refinement"] <= 6
        assert c["total"] == c["initial"] + c["refinement"]
        ps = r["per_sequence"][seq]
        assert ps["clicks"] == c["total"] and ps["rounds"] == c["rounds"]
        assert ps["refined_frames"] == [0, 1]
        assert r["text_used"] is (r["mode"] != "official")


def test_numbers_are_consistent(evaluated):
    _, _, _, report = evaluated
    for r in report["runs"]:
        assert r["frames"] == FRAMES
        assert r["fps"] == pytest.approx(r["frames"] / r["seconds"]) and r["fps"] > 0
        assert r["J&F"] == pytest.approx((r["J"]["mean"] + r["F"]["mean"]) / 2)
        for v in (r["J"]["mean"], r["F"]["mean"], r["J"]["recall"], r["F"]["recall"]):
            assert 0.0 <= v <= 1.0
        assert set(r["per_object"]) == {f"{report['input']['sequences'][0]}_{k}" for k in (1, 2)}
        assert r["peak_gpu_memory_bytes"] is None  # CPU
    off, dense, pruned = report["runs"]
    assert off["latency_ms"] is None and off["tokens_kept_mean"] is None
    assert off["memory_bank_bytes"]["max"] > 0  # sam2's inference state
    for r in (dense, pruned):
        assert set(r["latency_ms"]) == set(STAGES)
        assert r["latency_ms"]["total"]["mean"] > 0
        assert r["tokens_total"] == (64 // 16) ** 2
        assert r["memory_bank_bytes"]["max"] > 0
    assert dense["tokens_kept_mean"] == 16 and pruned["tokens_kept_mean"] == 8


def test_written_masks_rescore_to_the_reported_numbers(evaluated, capsys):
    _, data, out, report = evaluated
    seq = report["input"]["sequences"][0]
    for r in report["runs"]:
        pngs = sorted((out / r["label"] / seq).glob("*.png"))
        assert [p.stem for p in pngs] == [f"{t:05d}" for t in range(FRAMES)]
        for p in pngs:
            lab = read_label_png(p)
            assert lab.shape == (48, 64) and set(np.unique(lab)) <= {0, 1, 2}
        js = out / f"{r['label']}.json"
        assert cli.main(["score", "--gt", str(data), "--pred", str(out / r["label"]), "--json",
                         str(js), "--no-progress"]) == 0
        s = json.loads(js.read_text())
        assert s["overall"]["J&F"] == pytest.approx(r["J&F"], abs=1e-12)
        assert s["overall"]["J"] == pytest.approx(r["J"], abs=1e-12)
    capsys.readouterr()


def test_masks_of_run_max_frames_rescore_with_score_max_frames(tmp_path, capsys):
    """run --max-frames N scored frames 1..N-2 and said "score them with fastsam2-eval score";
    score had no --max-frames and wanted a prediction of every GT frame ("missing prediction")."""
    data = generate_dataset(tmp_path / "d", sequences=1, frames=5, size=(64, 48), objects=2, seed=5)
    out = tmp_path / "o"
    assert cli.main(["run", "--dataset", str(data), "--random-weights", "--model", "tiny",
                     "--image-size", "64", "--device", "cpu", "--modes", "dense", "--max-frames", "3",
                     "--out", str(out), "--warmup", "0", "--no-progress"]) == 0
    assert "(score them with fastsam2-eval score --max-frames 3)" in capsys.readouterr().out
    run = json.loads((out / "report.json").read_text())["runs"][0]
    js = tmp_path / "s.json"
    assert cli.main(["score", "--gt", str(data), "--pred", str(out / "dense"), "--max-frames", "3",
                     "--json", str(js), "--no-progress"]) == 0
    scores = json.loads(js.read_text())
    assert scores["overall"]["J&F"] == pytest.approx(run["J&F"], abs=1e-12)
    assert scores["overall"]["J"] == pytest.approx(run["J"], abs=1e-12)
    assert scores["per_sequence"]["synth000"]["frames_scored"] == 1
    assert "the first 3 frames of each sequence (--max-frames)" in scores["notes"]
    capsys.readouterr()


def masks_of(out, label, seq):
    return [read_label_png(p) for p in sorted((out / label / seq).glob("*.png"))]


def test_official_and_dense_give_the_same_masks_with_refinement(evaluated):
    # same clicks, including a correction on the prompt frame 0 (added before propagating, as
    # the streaming modes do): keep 1.0 reproduces sam2 exactly
    _, _, out, report = evaluated
    seq = report["input"]["sequences"][0]
    off, dense = report["runs"][:2]
    assert off["per_sequence"][seq]["refined_frames"] == [0, 1]
    assert off["clicks"] == dense["clicks"]
    for a, b in zip(masks_of(out, "official", seq), masks_of(out, "dense", seq), strict=True):
        assert np.array_equal(a, b)


def test_official_mode_does_not_see_a_later_object_before_its_first_frame(tmp_path):
    data = generate_dataset(tmp_path / "data", sequences=1, frames=5, size=(64, 48), objects=2,
                            seed=5)
    ann = sorted((data / "Annotations" / "480p").glob("*/*.png"))
    for p in ann[:2]:  # object 2 appears on frame 2
        lab = read_label_png(p)
        write_label_png(p, np.where(lab == 2, 0, lab).astype(np.uint8))
    out = tmp_path / "out"
    assert cli.main(["run", "--dataset", str(data), "--random-weights", "--model", "tiny",
                     "--image-size", "64", "--device", "cpu", "--modes", "official,dense",
                     "--out", str(out), "--warmup", "0", "--no-progress"]) == 0
    seq = ann[0].parent.name
    assert json.loads((out / "report.json").read_text())["prompts"][seq]["2"]["frame"] == 2
    off, dense = masks_of(out, "official", seq), masks_of(out, "dense", seq)
    assert len(off) == 5 and not (off[0] == 2).any() and not (off[1] == 2).any()
    for a, b in zip(off, dense, strict=True):
        assert np.array_equal(a, b)


# ---------------------------------------------------------------------- errors (no model)
def test_missing_checkpoint_is_a_clear_error(tmp_path, capsys):
    data = generate_dataset(tmp_path / "d", sequences=1, frames=3, size=(32, 32), objects=1)
    rc = cli.main(["run", "--dataset", str(data), "--checkpoint", str(tmp_path / "sam2.1_hiera_tiny.pt"),
                   "--out", str(tmp_path / "o"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "checkpoint not found" in err and "sam2.1_hiera_tiny.pt" in err
    rc = cli.main(["run", "--dataset", str(data), "--out", str(tmp_path / "o"), "--no-progress"])
    assert rc == 2 and "no SAM 2 checkpoint given" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_bad_inputs_name_the_file(tmp_path, capsys):
    data = generate_dataset(tmp_path / "d", sequences=1, frames=3, size=(32, 32), objects=1)
    base = ["run", "--random-weights", "--out", str(tmp_path / "o"), "--no-progress"]
    bad_json = tmp_path / "texts.json"
    bad_json.write_text("{not json")
    assert cli.main(base + ["--dataset", str(data), "--text-prompts", str(bad_json)]) == 2
    assert "texts.json" in capsys.readouterr().err
    ann = data / "Annotations" / "480p" / "synth000"
    (ann / "00000.png").rename(tmp_path / "moved.png")
    assert cli.main(base + ["--dataset", str(data)]) == 2
    assert "synth000/00000.png" in capsys.readouterr().err
    (tmp_path / "moved.png").rename(ann / "00000.png")
    write_label_png(ann / "00001.png", np.zeros((30, 32), np.uint8))  # wrong size
    assert cli.main(base + ["--dataset", str(data)]) == 2
    assert "00001.png is 32x30" in capsys.readouterr().err
    assert cli.main(base + ["--frames", str(data / "JPEGImages" / "480p" / "synth000")]) == 2
    assert "--first-mask" in capsys.readouterr().err
    Image.new("RGB", (32, 32)).save(tmp_path / "rgb.png")
    assert cli.main(base + ["--frames", str(data / "JPEGImages" / "480p" / "synth000"),
                            "--first-mask", str(tmp_path / "rgb.png")]) == 2
    assert "rgb.png is a RGB image" in capsys.readouterr().err
    assert cli.main(base + ["--dataset", str(data), "--modes", "dense,turbo"]) == 2
    assert "unknown mode 'turbo'" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


BAD_RUN_FLAGS = {  # case -> (files to make, flags, what the one error line says)
    "plot_type": ({}, ["--plot", "{tmp}/plot.txt"],
                  "--plot {tmp}/plot.txt: give a file name ending in .png"),
    "out_is_a_file": ({"afile": "x"}, ["--out", "{tmp}/afile"],
                      "--out {tmp}/afile is a file, not a folder"),
    "image_size_0": ({}, ["--image-size", "0"], "image_size must be in [64, 4096]"),
    "warmup": ({}, ["--warmup", "-3"], "--warmup must be >= 0"),
    "config_list": ({"list.yaml": "- 1\n- 2\n"}, ["--config", "{tmp}/list.yaml"],
                    "list.yaml: expected a mapping with a '/**/fastsam2_tracker: ros__parameters:' "
                    "section, got a list"),
    "config_malformed": ({"bad.yaml": "not: [valid\n"}, ["--config", "{tmp}/bad.yaml"],
                         "cannot parse parameter file {tmp}/bad.yaml: expected ',' or ']'"),
    "resolution": ({}, ["--resolution", "1080p"],
                   "JPEGImages has no 1080p folder (--resolution); it has 480p"),
    "duplicate_sequences": ({}, ["--sequences", "synth000,synth000"],
                            "names sequence 'synth000' twice"),
    "text_unknown_sequence": ({"t.json": '{"nosuchseq": {"1": "red thing"}}'},
                              ["--text-prompts", "{tmp}/t.json"],
                              "text prompts for sequence(s) ['nosuchseq'] that dataset"),
    "sequences_and_imageset": ({}, ["--sequences", "synth000", "--imageset", "no_such_set"],
                               "--sequences and --imageset both choose the sequences; give one"),
    # flags that tune what does not run were accepted and changed nothing
    "keep_ratios_without_pruned": ({}, ["--keep-ratios", "0.1"],
                                   "--keep-ratios only apply with the pruned mode in --modes, "
                                   "which is not given"),
    "refine_flags_without_refine": ({}, ["--refine-threshold", "0.2", "--max-rounds", "7",
                                         "--clicks-per-round", "9"],
                                    "--refine-threshold and --max-rounds and --clicks-per-round "
                                    "only apply with --refine, which is not given"),
    "clicks_per_round_without_refine": ({}, ["--no-refine", "--clicks-per-round", "3"],
                                        "--clicks-per-round only apply with --refine"),
    "auto_objects_without_prompt_auto": ({}, ["--auto-objects", "3"],
                                         "--auto-objects only apply with --prompt auto"),
    "auto_objects_0_without_prompt_auto": ({}, ["--auto-objects", "0"],
                                           "--auto-objects only apply with --prompt auto"),
    "text_variants_without_a_streaming_mode": ({}, ["--modes", "Official", "--text-variants", "user",
                                                    "--text-prompts", "{tmp}/d/text_prompts.json"],
                                               "--text-variants only apply with a streaming mode "
                                               "(dense or pruned) in --modes, which is not given"),
    "refine_threshold_out_of_range": ({}, ["--refine", "--refine-threshold", "1.5"],
                                      "--refine-threshold must be in [0, 1]"),
}


@pytest.mark.parametrize("case", list(BAD_RUN_FLAGS))
def test_bad_run_flags_are_refused_up_front(case, tmp_path, capsys):
    data = generate_dataset(tmp_path / "d", sequences=1, frames=3, size=(32, 32), objects=1)
    files, flags, match = BAD_RUN_FLAGS[case]
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    rc = cli.main(["run", "--dataset", str(data), "--random-weights", "--model", "tiny",
                   "--image-size", "64", "--device", "cpu", "--modes", "dense", "--warmup", "0",
                   "--out", str(tmp_path / "o"), "--no-progress",
                   *[f.format(tmp=tmp_path) for f in flags]])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("fastsam2-eval: error: "), err
    assert match.format(tmp=tmp_path) in err[0], err
    assert not (tmp_path / "o").exists()  # nothing ran
    assert all((tmp_path / name).read_text() == text for name, text in files.items())


@pytest.mark.parametrize("argv, match", [
    (["score", "--gt", "{d}", "--pred", "{d}", "--no-progress", "--resolution", "1080p"],
     "Annotations has no 1080p folder (--resolution); it has 480p"),
    (["score", "--gt", "{d}/Annotations", "--pred", "{d}", "--no-progress", "--resolution", "1080p"],
     "Annotations has no 1080p folder (--resolution); it has 480p"),  # the folder itself given
    (["score", "--gt", "{d}", "--pred", "{d}", "--no-progress", "--sequences", "synth000,synth000"],
     "names sequence 'synth000' twice"),
    (["synth", "--out", "{tmp}/s", "--seed", "-1"], "seed must be >= 0, got -1"),
    (["score", "--gt", "{d}", "--pred", "{d}", "--no-progress", "--sequences", "synth000",
      "--imageset", "no_such_set"], "--sequences and --imageset both choose the sequences; give one"),
    (["score", "--gt", "{d}", "--pred", "{d}", "--no-progress", "--per-frame"],  # was ignored
     "--per-frame adds per-frame J/F to the --json file; give --json too"),
    (["score", "--gt", "{d}", "--pred", "{d}", "--no-progress", "--max-frames", "0"],
     "--max-frames must be >= 1"),  # as run's
])
def test_bad_score_and_synth_flags_are_refused(argv, match, tmp_path, capsys):
    data = generate_dataset(tmp_path / "d", sequences=1, frames=3, size=(32, 32), objects=1)
    rc = cli.main([a.format(d=data, tmp=tmp_path) for a in argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and match in err[0], err
    assert not (tmp_path / "s").exists()


def flat_dataset(tmp_path, sequences=1):
    """A dataset in the layout without resolution folders: JPEGImages/<seq>, Annotations/<seq>."""
    data = generate_dataset(tmp_path / "d", sequences=sequences, frames=3, size=(32, 32), objects=1)
    for sub in ("JPEGImages", "Annotations"):
        (data / sub / "480p").rename(data / f"{sub}_flat")
        (data / sub).rmdir()
        (data / f"{sub}_flat").rename(data / sub)
    return data


def test_datasets_without_a_resolution_folder_still_read(tmp_path):
    from fastsam2_ros.eval.davis_io import DavisDataset

    ds = DavisDataset(flat_dataset(tmp_path, sequences=2))
    assert ds.sequence_names == ["synth000", "synth001"] and len(ds.sequence("synth001")) == 3
    assert ds.resolution is None  # what the run's report records: no resolution folder was read


@pytest.mark.parametrize("command", ["run", "score"])
def test_resolution_is_refused_on_a_layout_without_resolution_folders(command, tmp_path, capsys):
    """On JPEGImages/<seq> any name was accepted (--resolution NoSuchRes) and the run's report
    recorded it as input.resolution. Predictions of that layout still take the GT's resolution."""
    data = flat_dataset(tmp_path)
    argv = {"run": ["run", "--dataset", str(data), "--random-weights", "--model", "tiny",
                    "--image-size", "64", "--device", "cpu", "--modes", "dense", "--warmup", "0",
                    "--out", str(tmp_path / "o"), "--no-progress"],
            "score": ["score", "--gt", str(data), "--pred", str(data / "Annotations"),
                      "--no-progress"]}[command]
    rc = cli.main(argv + ["--resolution", "480p"])
    err = capsys.readouterr().err.strip().splitlines()
    folder = data / ("JPEGImages" if command == "run" else "Annotations")
    assert rc == 2 and err == [f"fastsam2-eval: error: --resolution 480p: {folder} has no resolution "
                               "folders (its sub-folders are the sequences); leave --resolution out"]
    assert not (tmp_path / "o").exists()
    nested = generate_dataset(tmp_path / "nested", sequences=1, frames=3, size=(32, 32), objects=1)
    assert cli.main(["score", "--gt", str(nested), "--pred", str(data / "Annotations"),
                     "--resolution", "480p", "--no-progress"]) == 0
    capsys.readouterr()


def test_tracker_config_from_yaml_with_flag_overrides(tmp_path):
    from pathlib import Path

    yaml_path = Path(cli.__file__).resolve().parents[2] / "config" / "tracker.yaml"
    args = cli.build_parser().parse_args(
        ["run", "--dataset", "x", "--config", str(yaml_path), "--random-weights", "--model", "small",
         "--image-size", "256", "--device", "cpu"])
    cfg = cli._tracker_config(args)
    assert (cfg.model_cfg, cfg.image_size, cfg.device, cfg.allow_random_weights) == (
        "small", 256, "cpu", True)
    assert cfg.mc_passes == 5 and cfg.text_mode == "clip_ridge"  # the rest comes from the YAML
    args = cli.build_parser().parse_args(["run", "--dataset", "x", "--config", str(yaml_path)])
    with pytest.raises(FileNotFoundError, match="no SAM 2 checkpoint given"):
        cli._tracker_config(args)  # the YAML has checkpoint: "" and random weights off


def test_refinement_flags_keep_their_defaults_when_not_given():
    """They default to None (to tell a given flag from the default); Protocol's defaults apply."""
    from fastsam2_ros.eval.runner import Protocol

    parse = cli.build_parser().parse_args
    assert cli._protocol(parse(["run", "--refine"])) == Protocol(refine=True)
    assert Protocol(refine=True) == Protocol(True, 0.8, 10, 3)  # the documented defaults
    given = cli._protocol(parse(["run", "--refine", "--max-rounds", "0", "--refine-threshold", "0"]))
    assert (given.max_rounds, given.refine_threshold, given.clicks_per_round) == (0, 0.0, 3)


@pytest.mark.parametrize("objects, why", [
    ({"1": "a dog", "01": "a cat"}, "object id '01' of sequence 's' is object 1, which '1' names already"),
    ('{"1": "a dog", "1": "a cat"}', "object id '1' of sequence 's' is object 1, which '1' names already"),
    ({" 1": "a dog"}, "object id ' 1' of sequence 's' is not an integer in plain digits (0-9 only: no "),
    ({"1_0": "a dog"}, "object id '1_0' of sequence 's' is not an integer in plain digits"),
    ({"+1": "a dog"}, "object id '+1' of sequence 's' is not an integer in plain digits"),
    ({"\u0661": "a dog"}, "object id '\u0661' of sequence 's' is not an integer in plain digits"),
], ids=["leading_zero", "same_key_twice", "space", "underscore", "sign", "non_ascii_digit"])
def test_text_prompt_object_ids_are_plain_numbers_given_once(objects, why, tmp_path):
    """int() read all of these, and two spellings of one id kept the last text without a word."""
    p = tmp_path / "t.json"
    body = objects if isinstance(objects, str) else json.dumps(objects)
    p.write_text('{"s": %s}' % body)
    with pytest.raises(ValueError) as exc:
        cli.load_text_prompts(str(p), 300)
    assert str(exc.value).startswith(f"{p}: {why}")


def test_a_sequence_given_twice_in_a_text_prompts_file_is_refused(tmp_path):
    p = tmp_path / "t.json"
    p.write_text('{"s": {"1": "a dog"}, "s": {"2": "a cat"}}')
    with pytest.raises(ValueError, match=r"t\.json: sequence 's' is given twice"):
        cli.load_text_prompts(str(p), 300)


def test_text_prompt_file_validation(tmp_path):
    p = tmp_path / "t.json"
    p.write_text(json.dumps({"s": {"1": "red ball", "2": "blue box"}, "other": {"3": "x"}}))
    assert cli.load_text_prompts(str(p), 300) == {"s": {1: "red ball", 2: "blue box"}, "other": {3: "x"}}
    p.write_text(json.dumps({"s": {"one": "red ball"}}))
    with pytest.raises(ValueError, match=r"t\.json: object id 'one'"):
        cli.load_text_prompts(str(p), 300)
    p.write_text(json.dumps({"s": {"1": ""}}))
    with pytest.raises(ValueError, match=r"t\.json: text of object 1"):
        cli.load_text_prompts(str(p), 300)


TEXT_TOO_LONG = "red " * 300  # 1200 characters, max_text_length is 300


@pytest.mark.parametrize("text, config, why", [
    (TEXT_TOO_LONG, None, "text prompt has 1200 characters; at most 300"),
    ("red\x07ball", None, "text prompt contains control characters"),
    ("a red striped ball", "max_text_length: 10", "text prompt has 18 characters; at most 10"),
], ids=["too_long", "control_character", "config_max_text_length"])
def test_bad_text_prompt_is_refused_before_any_mode_runs(text, config, why, tmp_path, capsys):
    """Checked with the tracker's own rule and the config's max_text_length when the file is read
    (it failed only when the dense mode added it, after the official mode ran over everything,
    with a message that named no file, sequence or object)."""
    data = generate_dataset(tmp_path / "d", sequences=1, frames=3, size=(64, 48), objects=2)
    texts = tmp_path / "texts.json"
    texts.write_text(json.dumps({"synth000": {"1": "x", "2": text}}))
    extra = []
    if config:
        (tmp_path / "c.yaml").write_text(f"/**/fastsam2_tracker:\n  ros__parameters:\n    {config}\n")
        extra = ["--config", str(tmp_path / "c.yaml")]
    rc = cli.main(["run", "--dataset", str(data), "--random-weights", "--model", "tiny",
                   "--image-size", "64", "--device", "cpu", "--modes", "official,dense",
                   "--warmup", "0", "--out", str(tmp_path / "o"), "--no-progress",
                   "--text-prompts", str(texts), *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert err[0] == (f"fastsam2-eval: error: {texts}: text of object 2 in sequence 'synth000': {why}")
    assert not (tmp_path / "o").exists()  # no mode ran


def test_more_gt_objects_than_max_objects_are_refused_before_any_mode_runs(tmp_path, capsys,
                                                                          monkeypatch):
    """The official mode ran over every sequence first; the first streaming mode then stopped with
    "already tracking 16 objects (max_objects)", naming no sequence, and wrote no report. sam2's
    predictor has no such limit: the official mode alone may take them."""
    from fastsam2_ros.eval import runner

    monkeypatch.setattr(runner, "official_factory",
                        lambda *a, **k: pytest.fail("the official mode ran before the check"))
    data = generate_dataset(tmp_path / "d", sequences=2, frames=3, size=(64, 48), objects=3)
    config = tmp_path / "c.yaml"
    config.write_text("/**/fastsam2_tracker:\n  ros__parameters:\n    max_objects: 2\n")
    argv = ["run", "--dataset", str(data), "--random-weights", "--model", "tiny", "--image-size",
            "64", "--device", "cpu", "--warmup", "0", "--out", str(tmp_path / "o"), "--no-progress",
            "--config", str(config)]
    rc = cli.main(argv + ["--modes", "official,dense"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert err[0] == ("fastsam2-eval: error: sequence 'synth000' has more objects (3) than the "
                      "tracker's max_objects (2), the most the streaming modes track; raise "
                      "max_objects in --config, or run --modes official alone")
    assert not (tmp_path / "o").exists()
    args = cli.build_parser().parse_args(argv + ["--modes", "official"])
    prompts = {"synth000": [object()] * 3}
    cli._refuse_more_objects_than_tracked(args, runner.mode_specs(args.modes),
                                          cli._tracker_config(args), prompts)


@pytest.mark.parametrize("flags", [["--sequences", "foo"], ["--imageset", "bar"],
                                   ["--resolution", "1080p"]])
def test_dataset_only_flags_are_refused_with_frames(flags, tmp_path, capsys):
    data = generate_dataset(tmp_path / "d", sequences=1, frames=3, size=(32, 32), objects=1)
    rc = cli.main(["run", "--frames", str(data / "JPEGImages" / "480p" / "synth000"),
                   "--first-mask", str(data / "Annotations" / "480p" / "synth000" / "00000.png"),
                   "--random-weights", "--model", "tiny", "--image-size", "64", "--device", "cpu",
                   "--modes", "dense", "--warmup", "0", "--out", str(tmp_path / "o"),
                   "--no-progress", *flags])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert f"fastsam2-eval: error: {flags[0]} only apply to --dataset, not to --frames" in err[0]
    assert not (tmp_path / "o").exists()


def test_no_progress_also_silences_sam2s_own_progress_bars(tmp_path, capfd, monkeypatch):
    import functools

    import sam2.sam2_video_predictor as svp

    # sam2's bars on whatever TQDM_DISABLE says (tqdm reads it once, at import)
    monkeypatch.setattr(svp, "tqdm", functools.partial(svp.tqdm, disable=False))
    data = generate_dataset(tmp_path / "d", sequences=1, frames=3, size=(64, 48), objects=1)
    base = ["run", "--dataset", str(data), "--random-weights", "--model", "tiny", "--image-size",
            "64", "--device", "cpu", "--modes", "official", "--warmup", "1"]
    assert cli.main(base + ["--out", str(tmp_path / "o1")]) == 0
    assert "propagate in video" in capfd.readouterr().err  # sam2's bar, shown by default
    assert cli.main(base + ["--out", str(tmp_path / "o2"), "--no-progress"]) == 0
    err = capfd.readouterr().err
    assert "propagate in video" not in err and "frame/s" not in err, err


def test_official_memory_bank_is_documented_as_what_state_bytes_counts():
    """docs/evaluation.md said "every tensor sam2's inference state keeps"; state_bytes counts the
    per-object frame outputs only (not the preprocessed frames, which are far larger)."""
    import torch

    from fastsam2_ros.core.config import TrackerConfig
    from fastsam2_ros.core.models import build_official_predictor
    from fastsam2_ros.core.official import OfficialVideoSession
    from pathlib import Path

    cfg = TrackerConfig.from_mapping({"model_cfg": "tiny", "image_size": 64, "device": "cpu",
                                      "allow_random_weights": True, "checkpoint": ""})
    frames = [np.full((48, 64, 3), 40 * i, np.uint8) for i in range(3)]
    session = OfficialVideoSession(build_official_predictor(cfg), frames)
    session.add_prompt(0, 1, points=[[20, 20]], labels=[1])
    for _ in session.propagate(0):
        pass
    outputs = [v for per_obj in session.state["output_dict_per_obj"].values()
               for outs in per_obj.values() for out in outs.values() for v in out.values()
               if isinstance(v, torch.Tensor)]
    assert session.state_bytes() == sum(t.numel() * t.element_size() for t in outputs) > 0
    images = session.state["images"]
    assert images.numel() * images.element_size() > session.state_bytes()  # not counted
    docs = Path(cli.__file__).resolve().parents[3] / "docs" / "evaluation.md"
    row = next(line for line in docs.read_text().splitlines() if line.startswith("| memory bank |"))
    assert "every tensor" not in row and "`output_dict_per_obj`" in row
    assert "preprocessed frames" in row and "not counted" in row


def test_a_text_prompt_over_the_clip_context_is_refused_when_the_file_is_read(tmp_path):
    """The tracker refuses a text of more than 75 CLIP tokens when it encodes it; the file check
    refuses it first, before any mode runs, naming the sequence and object."""
    p = tmp_path / "texts.json"
    p.write_text(json.dumps({"s": {"1": "red ball", "2": "a red mug " * 26}}))
    assert cli.load_text_prompts(str(p), 300)["s"][1] == "red ball"  # no CLIP model: characters only
    # text_mode none never encodes a text: the eval takes what the tracker takes
    from fastsam2_ros.core.config import TrackerConfig

    assert TrackerConfig(text_mode="none").text_encoder is None
    assert TrackerConfig().text_encoder == TrackerConfig().clip_model
    with pytest.raises(ValueError, match=r"object 2 in sequence .s.: text is 78 CLIP tokens"):
        cli.load_text_prompts(str(p), 300, "ViT-B-16")


def test_warm_up_builds_the_clip_text_encoder_when_only_a_later_sequence_has_a_text(
        tmp_path, monkeypatch):
    """The warm-up prompted the first sequence, which had no text, so the CLIP text encoder
    (seconds) was built inside the timed calls of the later sequence that had one."""
    from fastsam2_ros.core import clip_text
    from fastsam2_ros.eval import runner

    data = generate_dataset(tmp_path / "d", sequences=2, frames=3, size=(64, 48), objects=1, seed=3)
    texts = tmp_path / "texts.json"
    texts.write_text(json.dumps({"synth001": {"1": "a red dog"}}))
    timing, built_while_timing = [False], []
    enter, leave, build = runner._Clock.__enter__, runner._Clock.__exit__, clip_text.ClipTextEncoder.__init__

    def timed_enter(self):
        timing[0] = True
        return enter(self)

    def timed_exit(self, *exc):
        timing[0] = False
        return leave(self, *exc)

    def recorded_build(self, *a, **k):
        built_while_timing.append(timing[0])
        return build(self, *a, **k)

    monkeypatch.setattr(runner._Clock, "__enter__", timed_enter)
    monkeypatch.setattr(runner._Clock, "__exit__", timed_exit)
    monkeypatch.setattr(clip_text.ClipTextEncoder, "__init__", recorded_build)
    assert cli.main(["run", "--dataset", str(data), "--random-weights", "--model", "tiny",
                     "--image-size", "64", "--device", "cpu", "--modes", "dense", "--warmup", "1",
                     "--text-prompts", str(texts), "--out", str(tmp_path / "o"), "--no-progress",
                     "--no-save-masks"]) == 0
    assert built_while_timing == [False]


def test_text_prompt_files_need_no_open_clip_without_texts(tmp_path, monkeypatch):
    """open_clip is optional (text prompts only): a run without --text-prompts imported it."""
    import sys

    monkeypatch.setitem(sys.modules, "open_clip", None)
    assert cli.load_text_prompts(None, 300, "ViT-B-16") == {}
    p = tmp_path / "texts.json"
    p.write_text(json.dumps({"s": {"1": "a red mug " * 26}}))
    assert cli.load_text_prompts(str(p), 300, "ViT-B-16")["s"][1]  # the tracker will say it


@pytest.mark.parametrize("config, match", [
    ("router_weights: /nonexistent/router.pt", "router weights not found"),
    ("clip_weights: /nonexistent/clip.bin", "CLIP weights file not found"),
    ("", "no CLIP weights given"),  # a real checkpoint, texts, and no clip_weights
], ids=["router_file", "clip_file", "clip_weights_missing"])
def test_tracker_settings_are_checked_before_the_official_mode_runs(config, match, tmp_path, capsys,
                                                                    monkeypatch):
    """Our tracker was built only for its own modes: the official mode ran over every sequence
    (hours on DAVIS) before a mistyped router or CLIP file ended the command without a report."""
    import torch

    from fastsam2_ros.core.config import TrackerConfig
    from fastsam2_ros.core.models import build_predictor
    from fastsam2_ros.eval import runner

    monkeypatch.setattr(runner, "official_factory",
                        lambda *a, **k: pytest.fail("the official mode ran before the check"))
    data = generate_dataset(tmp_path / "d", sequences=1, frames=3, size=(64, 48), objects=2)
    (tmp_path / "c.yaml").write_text(
        "/**/fastsam2_tracker:\n  ros__parameters:\n    " + (config or "mc_passes: 0") + "\n")
    weights = ["--random-weights"]
    if not config:
        model = build_predictor(TrackerConfig(model_cfg="tiny", allow_random_weights=True,
                                              image_size=64, device="cpu"))
        torch.save({"model": model.state_dict()}, tmp_path / "sam.pt")
        weights = ["--checkpoint", str(tmp_path / "sam.pt")]
    rc = cli.main(["run", "--dataset", str(data), *weights, "--model", "tiny", "--image-size", "64",
                   "--device", "cpu", "--modes", "official,dense", "--warmup", "0",
                   "--out", str(tmp_path / "o"), "--no-progress", "--config", str(tmp_path / "c.yaml"),
                   "--text-prompts", str(data / "text_prompts.json")])
    err = capsys.readouterr().err
    assert rc == 2 and match in err, err


def test_frames_given_as_dot_dot_are_named_after_their_folder(tmp_path, monkeypatch, capsys):
    """``--frames ..`` named the sequence "..": every mode's masks went to OUT itself, and a rerun
    deleted every PNG there, the user's included."""
    data = generate_dataset(tmp_path / "d", sequences=1, frames=3, size=(64, 48), objects=1)
    clip = tmp_path / "clip"
    (data / "JPEGImages" / "480p" / "synth000").rename(clip)
    first = data / "Annotations" / "480p" / "synth000" / "00000.png"
    (clip / "work" / "out").mkdir(parents=True)
    mine = clip / "work" / "out" / "my_figure.png"
    write_label_png(mine, read_label_png(first))
    monkeypatch.chdir(clip / "work")
    argv = ["run", "--frames", "..", "--first-mask", str(first), "--random-weights", "--model",
            "tiny", "--image-size", "64", "--device", "cpu", "--modes", "dense,pruned",
            "--keep-ratios", "0.5", "--warmup", "0", "--out", "out", "--no-progress"]
    for _ in range(2):
        assert cli.main(argv) == 0
    out = clip / "work" / "out"
    assert sorted(p.name for p in out.glob("*.png")) == ["my_figure.png", "report.png"]
    for mode in ("dense", "pruned_0.50"):
        assert sorted(p.name for p in (out / mode / "clip").iterdir()) == [
            "00000.png", "00001.png", "00002.png"]
    assert json.loads((out / "report.json").read_text())["input"]["sequences"] == ["clip"]
    capsys.readouterr()


def test_frames_through_a_symlink_keep_the_links_name(tmp_path, monkeypatch):
    """A clip linked from a data store (git-annex, DataLad, DVC) was named after the store's blob,
    so its masks and its text prompts missed the ground truth's name (review diff9)."""
    blob = tmp_path / "store" / "SHA256E-s1234--0af3"
    (blob / "work").mkdir(parents=True)
    (tmp_path / "bear").symlink_to(blob)
    assert cli.frames_sequence_name(str(tmp_path / "bear")) == "bear"
    assert cli.frames_sequence_name(str(tmp_path / "bear" / ".")) == "bear"
    assert cli.frames_sequence_name(str(tmp_path / "bear" / "work" / "..")) == "bear"
    assert cli.frames_sequence_name(str(tmp_path / "clip.mp4")) == "clip"
    monkeypatch.chdir(tmp_path / "store")
    assert cli.frames_sequence_name(".") == "store"


@pytest.mark.parametrize("flags,clash", [
    (["--json", "{o}/r.txt", "--markdown", "{o}/r.txt"], "--json and --markdown both write"),
    (["--json", "{o}/report.md"], "--json and --markdown both write"),
    (["--plot", "{o}/report.png", "--markdown", "{o}/./report.png"], "--markdown and --plot both write")])
def test_two_report_flags_naming_one_file_are_refused_before_anything_runs(flags, clash, tmp_path,
                                                                           capsys):
    """--json naming report.md (or --markdown's own file) was accepted: the markdown then
    replaced the JSON report, and the run said it wrote both."""
    data = generate_dataset(tmp_path / "d", sequences=1, frames=3, size=(32, 32), objects=1)
    o = tmp_path / "o"
    rc = cli.main(["run", "--dataset", str(data), "--random-weights", "--model", "tiny",
                   "--image-size", "64", "--device", "cpu", "--modes", "dense", "--warmup", "0",
                   "--out", str(o), "--no-progress"] + [f.format(o=o) for f in flags])
    err = capsys.readouterr().err
    assert rc == 2 and clash in err, err
    assert not o.exists()


def test_the_rescore_command_run_prints_scores_objects_that_appear_later(tmp_path, capsys):
    """run scores a sequence whose objects appear after its first annotated frame over every GT
    id; the score command it printed did not say --objects all, and refused those masks."""
    data = generate_dataset(tmp_path / "d", sequences=1, frames=4, size=(64, 48), objects=2, seed=5)
    first = data / "Annotations" / "480p" / "synth000" / "00000.png"
    lab = read_label_png(first).copy()
    lab[lab == 2] = 0  # object 2 appears on frame 1
    write_label_png(first, lab)
    out = tmp_path / "o"
    assert cli.main(["run", "--dataset", str(data), "--random-weights", "--model", "tiny",
                     "--image-size", "64", "--device", "cpu", "--modes", "dense", "--out", str(out),
                     "--warmup", "0", "--no-progress"]) == 0
    hint = capsys.readouterr().out.strip().splitlines()[-1]
    assert hint.endswith("(score them with fastsam2-eval score --objects all)"), hint
    run = json.loads((out / "report.json").read_text())["runs"][0]
    js = tmp_path / "s.json"
    assert cli.main(["score", "--gt", str(data), "--pred", str(out / "dense"), "--objects", "all",
                     "--json", str(js), "--no-progress"]) == 0
    assert json.loads(js.read_text())["overall"]["J&F"] == pytest.approx(run["J&F"], abs=1e-12)
    capsys.readouterr()


@pytest.mark.parametrize("name", ["../synth000", ".", ".."])
def test_a_sequence_name_that_is_no_folder_name_is_refused_before_anything_runs(name, tmp_path, capsys):
    """The masks of ``--sequences ../x`` (or such an image-set line) went to OUT/<mode>/../x."""
    from fastsam2_ros.eval.runner import mask_folder

    data = generate_dataset(tmp_path / "d", sequences=1, frames=3, size=(32, 32), objects=1)
    for sub in ("JPEGImages", "Annotations"):  # so that ``../synth000`` is found
        shutil.copytree(data / sub / "480p" / "synth000", data / sub / "synth000")
    (tmp_path / "set.txt").write_text(name + "\n")
    rc = cli.main(["run", "--dataset", str(data), "--imageset", str(tmp_path / "set.txt"),
                   "--random-weights", "--model", "tiny", "--image-size", "64", "--device", "cpu",
                   "--modes", "dense", "--warmup", "0", "--out", str(tmp_path / "o"), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert not (tmp_path / "o").exists()
    if "/" in name:  # found, so only the output folder refuses it
        assert err[0] == (f"fastsam2-eval: error: sequence name {name!r} is not a folder name, so "
                          f"its masks would not go to {tmp_path / 'o' / 'dense'}/<sequence>/; name "
                          "the sequence (its folder) without '/' and other than '.' or '..'"), err
    for bad in (name, "", "a/b"):
        with pytest.raises(DatasetError, match="is not a folder name"):
            mask_folder(tmp_path / "o", "dense", bad)
    assert mask_folder(tmp_path / "o", "dense", "a.b") == tmp_path / "o" / "dense" / "a.b"

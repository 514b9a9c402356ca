"""Folder scoring with the DAVIS protocol on hand-made multi-object label PNGs, and bad inputs."""

import json

import numpy as np
import pytest
from PIL import Image

from fastsam2_ros.eval import cli
from fastsam2_ros.eval.davis_io import (DatasetError, davis_palette, read_label_png,
                                        write_label_png)
from fastsam2_ros.eval.scoring import format_scores, score_folders, score_sequence

H, W = 30, 40


def square(y, x, s=8):
    m = np.zeros((H, W), np.uint8)
    m[y:y + s, x:x + s] = 1
    return m


def gt_frames():
    """4 frames, objects 1 (left) and 2 (right), both visible everywhere."""
    out = []
    for t in range(4):
        lab = np.zeros((H, W), np.uint8)
        lab[square(5, 2 + t) > 0] = 1
        lab[square(15, 25 - t) > 0] = 2
        out.append(lab)
    return out


def write_seq(root, seq, labels, layout="davis", palette=None):
    d = root / "Annotations" / "480p" / seq if layout == "davis" else root / seq
    for t, lab in enumerate(labels):
        if lab is not None:
            write_label_png(d / f"{t:05d}.png", lab, palette=palette)
    return d


@pytest.fixture
def gt_root(tmp_path):
    root = tmp_path / "gt"
    write_seq(root, "seqA", gt_frames())
    return root


def test_perfect_predictions_score_one_and_first_last_frames_are_not_scored(gt_root, tmp_path):
    pred = [f.copy() for f in gt_frames()]
    pred[0][:] = 0  # first and last frame wrong: the DAVIS protocol does not look at them
    pred[3][:] = 2
    write_seq(tmp_path / "pred", "seqA", pred, layout="flat")
    res = score_folders(gt_root, tmp_path / "pred")
    o = res.overall()
    assert o["J&F"] == 1.0 and o["objects"] == 2 and o["sequences"] == 1
    assert res.sequences[0].frames_scored == ["00001", "00002"]
    # scoring every frame (not the protocol) sees them
    assert score_folders(gt_root, tmp_path / "pred", drop_first_last=False).overall()["J&F"] < 1.0


def test_first_and_last_predictions_may_be_missing(gt_root, tmp_path):
    pred = gt_frames()
    pred[0] = pred[3] = None
    write_seq(tmp_path / "pred", "seqA", pred, layout="flat")
    assert score_folders(gt_root, tmp_path / "pred").overall()["J&F"] == 1.0


def test_multi_object_values_derived_by_hand(gt_root, tmp_path):
    # object 2 is missing on frame 1 (J = F = 0) and perfect on frame 2 (J = F = 1):
    # per frame [0, 1] -> mean 0.5, recall 0.5, decay (first bin [0], last bin [1]) = -1.
    # object 1 perfect. Global = mean over the two objects: J = F = 0.75.
    pred = gt_frames()
    pred[1] = np.where(pred[1] == 2, 0, pred[1]).astype(np.uint8)
    write_seq(tmp_path / "pred", "seqA", pred)  # DAVIS layout for the predictions too
    res = score_folders(gt_root, tmp_path / "pred")
    d = res.to_dict(per_frame=True)
    o2 = d["per_object"]["seqA_2"]
    assert o2["J"] == {"mean": 0.5, "recall": 0.5, "decay": -1.0}
    assert o2["F"] == {"mean": 0.5, "recall": 0.5, "decay": -1.0}
    assert o2["J_per_frame"] == [0.0, 1.0]
    assert d["per_object"]["seqA_1"]["J&F"] == 1.0
    assert d["overall"]["J"]["mean"] == 0.75 and d["overall"]["J&F"] == 0.75
    assert d["per_sequence"]["seqA"]["J&F"] == 0.75
    assert d["conventions"]["drop_first_last_frame"] is True


def test_global_mean_is_over_objects_not_sequences(tmp_path):
    # seqA: two perfect objects; seqB: one object, always missed. Mean over objects = 2/3,
    # mean over sequences would be 1/2.
    gt = tmp_path / "gt"
    pr = tmp_path / "pred"
    write_seq(gt, "seqA", gt_frames())
    write_seq(pr, "seqA", gt_frames(), layout="flat")
    one = [square(5, 5) for _ in range(4)]
    write_seq(gt, "seqB", one)
    write_seq(pr, "seqB", [np.zeros((H, W), np.uint8)] * 4, layout="flat")
    o = score_folders(gt, pr).overall()
    assert o["objects"] == 3
    assert o["J"]["mean"] == pytest.approx(2 / 3)


def test_object_empty_in_both_gt_and_prediction_counts_as_perfect(tmp_path):
    gt = gt_frames()
    gt[1] = np.where(gt[1] == 2, 0, gt[1]).astype(np.uint8)  # object 2 hidden on frame 1
    write_seq(tmp_path / "gt", "s", gt)
    write_seq(tmp_path / "pred", "s", gt, layout="flat")
    assert score_folders(tmp_path / "gt", tmp_path / "pred").overall()["J&F"] == 1.0


def test_void_label_255_counts_as_background_like_the_reference(tmp_path):
    # davis2017-evaluation, semi-supervised: get_all_masks sets 255 to 0 and
    # _evaluate_semisupervised passes no void mask, so a prediction inside void is a false positive.
    gt = gt_frames()
    for g in gt:
        g[:, 35:] = 255  # void strip of 30 x 5 px, away from both objects
    write_seq(tmp_path / "gt", "s", gt)
    as_background = [np.where(g == 255, 0, g).astype(np.uint8) for g in gt]
    write_seq(tmp_path / "pred", "s", as_background, layout="flat")
    assert score_folders(tmp_path / "gt", tmp_path / "pred").overall()["J&F"] == 1.0
    spill = [np.where(g == 255, 1, g).astype(np.uint8) for g in gt]  # object 1 spills into void
    write_seq(tmp_path / "spill", "s", spill, layout="flat")
    d = score_folders(tmp_path / "gt", tmp_path / "spill").to_dict(per_frame=True)
    assert d["per_object"]["s_1"]["J_per_frame"] == [64 / (64 + 150)] * 2
    assert d["per_object"]["s_1"]["F"]["mean"] < 1.0 and d["per_object"]["s_2"]["J&F"] == 1.0


def test_a_sequence_without_objects_is_scored_with_a_note_saying_why(tmp_path, capsys):
    """A binary 0/255 ground truth has 0 objects (255 is void): score printed "0 objects" and
    J&F n/a without a word of why."""
    binary = [np.where(g > 0, 255, 0).astype(np.uint8) for g in gt_frames()]
    write_seq(tmp_path / "gt", "s", binary)
    write_seq(tmp_path / "pred", "s", [np.zeros((H, W), np.uint8)] * 4, layout="flat")
    assert cli.main(["score", "--gt", str(tmp_path / "gt"), "--pred", str(tmp_path / "pred"),
                     "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert ("note: s: 0 objects, its first annotated frame has no object (all its non-zero pixels "
            "are 255, the void label; objects are ids 1..254: write a binary mask's object as 1)") in out
    write_seq(tmp_path / "empty", "s", [np.zeros((H, W), np.uint8)] * 4)
    res = score_folders(tmp_path / "empty", tmp_path / "pred", objects="all")
    assert res.notes == ["s: 0 objects, its annotations have no object (all background)"]


def test_sequence_with_two_annotated_frames_is_skipped_with_a_note(gt_root, tmp_path):
    # nothing is left to score once the first and last are dropped: skipped, and the overall
    # mean stays a number instead of NaN
    write_seq(gt_root, "seqB", gt_frames()[:2])
    write_seq(tmp_path / "pred", "seqA", gt_frames(), layout="flat")
    write_seq(tmp_path / "pred", "seqB", gt_frames()[:2], layout="flat")
    res = score_folders(gt_root, tmp_path / "pred")
    d = res.to_dict()
    assert d["overall"]["J&F"] == 1.0 and d["overall"]["sequences"] == 1
    assert list(d["per_sequence"]) == ["seqA"]
    assert d["notes"] == ["seqB: not scored, 2 annotated frame(s) leave no frame to score "
                          "(the first and the last are not scored)"]
    assert "note: seqB: not scored" in format_scores(res)
    assert score_folders(gt_root, tmp_path / "pred", drop_first_last=False).overall()["sequences"] == 2
    with pytest.raises(DatasetError, match="'seqB': not scored, 2 annotated"):
        score_sequence("seqB", ["0", "1"], gt_frames()[:2], gt_frames()[:2])


def test_objects_are_the_ids_of_the_first_annotated_frame(tmp_path):
    # id 3 only appears from frame 1 on: above max(first frame) = 2 -> not an object of the
    # sequence (reference behaviour); predicting it is then an error.
    gt = gt_frames()
    for g in gt[1:]:
        g[0:3, 0:3] = 3
    write_seq(tmp_path / "gt", "s", gt)
    write_seq(tmp_path / "pred", "s", [np.where(g == 3, 0, g).astype(np.uint8) for g in gt], layout="flat")
    res = score_folders(tmp_path / "gt", tmp_path / "pred")
    assert [o.obj_id for o in res.objects] == [1, 2]
    write_seq(tmp_path / "pred2", "s", gt, layout="flat")
    with pytest.raises(DatasetError, match=r"00001\.png contains object id 3 .* only 2 object"):
        score_folders(tmp_path / "gt", tmp_path / "pred2")
    # opt-in (not DAVIS): objects that appear later are scored as well
    res = score_folders(tmp_path / "gt", tmp_path / "pred2", objects="all")
    assert [o.obj_id for o in res.objects] == [1, 2, 3] and res.overall()["J&F"] == 1.0
    assert "not DAVIS" in res.to_dict()["conventions"]["objects"]


def test_palette_colours_do_not_matter_and_grey_pngs_work(gt_root, tmp_path):
    grey_pal = [v for i in range(256) for v in (i, i, i)]
    write_seq(tmp_path / "p1", "seqA", gt_frames(), layout="flat", palette=grey_pal)
    assert score_folders(gt_root, tmp_path / "p1").overall()["J&F"] == 1.0
    d = tmp_path / "p2" / "seqA"
    d.mkdir(parents=True)
    for t, lab in enumerate(gt_frames()):
        Image.fromarray(lab, mode="L").save(d / f"{t:05d}.png")
    assert score_folders(gt_root, tmp_path / "p2").overall()["J&F"] == 1.0


def test_a_label_png_over_pils_pixel_limit_is_a_dataset_error(tmp_path, monkeypatch):
    """PIL's DecompressionBombError is no OSError: it ended fastsam2-eval with a traceback."""
    write_label_png(tmp_path / "x.png", np.zeros((H, W), np.uint8))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10)
    with pytest.raises(DatasetError, match=r"cannot read label PNG .*x\.png: Image size"):
        read_label_png(tmp_path / "x.png")


def test_label_png_round_trip_keeps_indices_and_davis_palette(tmp_path):
    lab = np.arange(H * W, dtype=np.uint32).reshape(H, W) % 7
    write_label_png(tmp_path / "x.png", lab.astype(np.uint8))
    assert np.array_equal(read_label_png(tmp_path / "x.png"), lab)
    im = Image.open(tmp_path / "x.png")
    assert im.mode == "P" and im.getpalette()[:9] == [0, 0, 0, 128, 0, 0, 0, 128, 0]
    assert davis_palette()[3 * 255: 3 * 256] == [224, 224, 192]


# ------------------------------------------------------------------------------- bad inputs
def test_missing_prediction_frame_names_the_file(gt_root, tmp_path):
    pred = gt_frames()
    pred[2] = None
    write_seq(tmp_path / "pred", "seqA", pred, layout="flat")
    with pytest.raises(DatasetError, match=r"missing prediction .*seqA/00002\.png"):
        score_folders(gt_root, tmp_path / "pred")


def test_missing_prediction_sequence_names_the_folder(gt_root, tmp_path):
    (tmp_path / "pred").mkdir()
    with pytest.raises(DatasetError, match=r"prediction folder of sequence 'seqA' not found: .*pred/seqA"):
        score_folders(gt_root, tmp_path / "pred")
    (tmp_path / "pred" / "seqA").write_text("x")  # a file of the sequence's name: not "not found"
    with pytest.raises(DatasetError, match=r"prediction folder of sequence 'seqA' .*pred/seqA is a "
                                           r"file, not a folder"):
        score_folders(gt_root, tmp_path / "pred")


def test_size_mismatch_names_both_files(gt_root, tmp_path):
    pred = gt_frames()
    pred[1] = np.zeros((H, W + 2), np.uint8)
    write_seq(tmp_path / "pred", "seqA", pred, layout="flat")
    with pytest.raises(DatasetError, match=r"seqA/00001\.png is 42x30 but .*Annotations/480p/seqA/00001\.png is 40x30"):
        score_folders(gt_root, tmp_path / "pred")


def test_rgb_prediction_is_refused_with_the_file_name(gt_root, tmp_path):
    write_seq(tmp_path / "pred", "seqA", gt_frames(), layout="flat")
    bad = tmp_path / "pred" / "seqA" / "00001.png"
    Image.open(bad).convert("RGB").save(bad)
    with pytest.raises(DatasetError, match=r"00001\.png is a RGB image, not an indexed-palette"):
        score_folders(gt_root, tmp_path / "pred")


def test_unreadable_png_names_the_file(gt_root, tmp_path):
    write_seq(tmp_path / "pred", "seqA", gt_frames(), layout="flat")
    (tmp_path / "pred" / "seqA" / "00002.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError, match=r"cannot read label PNG .*00002\.png"):
        score_folders(gt_root, tmp_path / "pred")


def test_score_sequence_in_memory_matches_folder_scoring(gt_root, tmp_path):
    rng = np.random.default_rng(0)
    pred = [np.where(rng.random((H, W)) < 0.1, 0, g).astype(np.uint8) for g in gt_frames()]
    write_seq(tmp_path / "pred", "seqA", pred, layout="flat")
    a = score_folders(gt_root, tmp_path / "pred").to_dict()
    b = score_sequence("seqA", [f"{t:05d}" for t in range(4)], gt_frames(), pred)
    assert a["overall"]["J&F"] == pytest.approx(b.summary()["J&F"])
    assert 0 < a["overall"]["J&F"] < 1


def apple_double(folder):
    """What a copy through macOS or an exFAT drive leaves: a hidden ``._name`` next to each entry."""
    for f in list(folder.iterdir()):
        (folder / f"._{f.name}").write_bytes(b"\x00\x05\x16\x07AppleDouble")


def test_hidden_apple_double_files_are_neither_labels_nor_predictions(gt_root, tmp_path, capsys):
    """The DAVIS reference (``glob('*.png')``) skips them, as the frame listing does; ``score``
    read ``._00000.png`` as a label map ("cannot read label PNG")."""
    write_seq(tmp_path / "pred", "seqA", gt_frames(), layout="flat")
    for folder in (gt_root / "Annotations" / "480p", gt_root / "Annotations" / "480p" / "seqA",
                   tmp_path / "pred", tmp_path / "pred" / "seqA"):
        apple_double(folder)
    rc = cli.main(["score", "--gt", str(gt_root), "--pred", str(tmp_path / "pred"), "--no-progress"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert "J&F 100.0" in out.out and "2 objects in 1 sequences" in out.out


def test_max_frames_counts_the_sequences_images_as_run_does(tmp_path):
    """``run --max-frames 6`` tracks the first 6 images; with every other frame annotated, the
    first 6 annotations would reach frame 10. Without images, the annotated frames are counted."""
    import shutil

    from fastsam2_ros.eval.synthetic import generate_dataset

    root = generate_dataset(tmp_path / "d", sequences=1, frames=8, size=(32, 32), objects=1)
    ann = root / "Annotations" / "480p" / "synth000"
    for t in (1, 3, 5, 7):
        (ann / f"{t:05d}.png").unlink()
    pred = tmp_path / "pred" / "synth000"
    pred.mkdir(parents=True)
    for t in (0, 2, 4):
        shutil.copy(ann / f"{t:05d}.png", pred)
    res = score_folders(root, tmp_path / "pred", max_frames=6)
    assert res.sequences[0].frames_scored == ["00002"] and res.overall()["J&F"] == 1.0
    no_images = score_folders(root / "Annotations", tmp_path / "pred", max_frames=6)
    assert no_images.sequences[0].frames_scored == ["00002", "00004"]


# ------------------------------------------------------------------------------------ CLI
def test_cli_score_writes_json_and_prints_tables(gt_root, tmp_path, capsys):
    write_seq(tmp_path / "pred", "seqA", gt_frames(), layout="flat")
    out = tmp_path / "s.json"
    rc = cli.main(["score", "--gt", str(gt_root), "--pred", str(tmp_path / "pred"), "--json",
                   str(out), "--no-progress"])
    assert rc == 0
    d = json.loads(out.read_text())
    assert d["schema_version"] == 2 and d["tool"] == "fastsam2-eval score"
    assert set(d) >= {"overall", "per_sequence", "per_object", "conventions", "gt", "pred", "notes"}
    assert set(d["per_object"]) == {"seqA_1", "seqA_2"}
    assert d["overall"]["J"] == {"mean": 1.0, "recall": 1.0, "decay": 0.0}
    text = capsys.readouterr().out
    assert "seqA_2" in text and "overall" in text


def test_cli_score_error_exit_status_and_message(gt_root, tmp_path, capsys):
    rc = cli.main(["score", "--gt", str(gt_root), "--pred", str(tmp_path / "nope"), "--no-progress"])
    assert rc == 2
    assert "nope" in capsys.readouterr().err


def test_imageset_name_reads_the_newest_year_that_has_it(tmp_path, capsys):
    """A DAVIS 2017 download ships ImageSets/2016 and ImageSets/2017, each with a val.txt;
    ``--imageset val`` read the 2016 list (the first year folder)."""
    from fastsam2_ros.eval.davis_io import DavisDataset, read_imageset
    from fastsam2_ros.eval.synthetic import generate_dataset

    root = generate_dataset(tmp_path / "davis", sequences=3, frames=3, size=(32, 32), objects=1)
    sets = root / "ImageSets"
    (sets / "2017" / "val.txt").write_text("synth000\nsynth001\nsynth002\n")
    (sets / "2016").mkdir()
    (sets / "2016" / "val.txt").write_text("synth000\n")
    (sets / "2016" / "train.txt").write_text("synth001\n")  # only in 2016: read from there
    assert read_imageset(root, "val") == ["synth000", "synth001", "synth002"]
    assert read_imageset(root, "2016/val") == ["synth000"]
    assert read_imageset(root, "train") == ["synth001"]
    assert read_imageset(root, str(sets / "2016" / "val.txt")) == ["synth000"]
    assert DavisDataset(root, imageset="val").imageset_path == sets / "2017" / "val.txt"
    # saved by Windows Notepad (a byte-order mark, CRLF): the first name lost to the mark
    (sets / "2016" / "bom.txt").write_bytes("\ufeffsynth000\r\nsynth002\r\n".encode("utf-8"))
    assert read_imageset(root, "bom") == ["synth000", "synth002"]
    (sets / "2016" / "latin1.txt").write_bytes("synth\xe9\n".encode("latin-1"))
    with pytest.raises(DatasetError, match="latin1.txt is not UTF-8 text"):
        read_imageset(root, "latin1")
    with pytest.raises(DatasetError, match=r"image set '2015/val' not found: no file .*2015/val\.txt"):
        read_imageset(root, "2015/val")
    out = tmp_path / "s.json"
    rc = cli.main(["score", "--gt", str(root), "--pred", str(root), "--imageset", "val",
                   "--json", str(out), "--no-progress"])
    assert rc == 0
    d = json.loads(out.read_text())
    assert d["overall"]["sequences"] == 3
    assert f"sequences of image set {sets / '2017' / 'val.txt'}" in d["notes"]
    import argparse

    args = argparse.Namespace(dataset=str(root), frames=None, first_mask=None, topic=None,
                              max_frames=None, sequences=None, imageset="val", resolution=None)
    _, _, _, info = cli._sequence_sources(args, {})
    assert info["sequences"] == ["synth000", "synth001", "synth002"]
    assert info["imageset"] == str(sets / "2017" / "val.txt")  # named in the run's report


def test_a_results_folder_is_read_whatever_folders_are_next_to_its_sequences(gt_root, tmp_path):
    """``results/seqA`` next to ``results/vis/seqA``: ``vis`` (a folder of folders) was taken for a
    resolution folder and the folder refused: "results has no 480p folder; it has vis"."""
    pred = tmp_path / "results"
    write_seq(pred, "seqA", gt_frames(), layout="flat")
    write_seq(pred / "vis", "seqA", gt_frames(), layout="flat")
    assert score_folders(gt_root, pred).overall()["J&F"] == 1.0


def test_a_runs_out_as_pred_names_the_mode_folder_to_give(gt_root, tmp_path, capsys):
    """The mode folders of a run's OUT were taken for resolution folders, and the message pointed
    at --resolution, which then failed on the ground truth."""
    out = tmp_path / "out"
    for mode in ("dense", "pruned_0.30"):
        write_seq(out / mode, "seqA", gt_frames(), layout="flat")
    rc = cli.main(["score", "--gt", str(gt_root), "--pred", str(out), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err == [f"fastsam2-eval: error: {out} holds the mode folders of a run "
                               f"(dense, pruned_0.30), not sequences; pass --pred {out / 'dense'} "
                               "(--pred OUT/<mode>)"], err
    assert score_folders(gt_root, out / "dense").overall()["J&F"] == 1.0


@pytest.mark.parametrize("command", ["run", "score"])
@pytest.mark.parametrize("selection, match", [
    (["--imageset", "val"], "image set {sets}/2017/val.txt lists no sequences"),
    (["--sequences", ","], "--sequences names no sequence; give comma-separated sequence names, "
                           "or leave --sequences out for every sequence"),
])
def test_an_empty_selection_is_refused_as_such(command, selection, match, tmp_path, capsys):
    """An empty image set file (or ``--sequences ,``) blamed the dataset, which has sequences: "no
    sequence folders with PNG annotations in …" (score), "no sequences in …" (run); and
    ``--sequences ,`` ran every sequence."""
    from fastsam2_ros.eval.synthetic import generate_dataset

    root = generate_dataset(tmp_path / "davis", sequences=2, frames=3, size=(32, 32), objects=1)
    (root / "ImageSets" / "2017").mkdir(parents=True, exist_ok=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text("\n  \n")
    argv = {"run": ["run", "--dataset", str(root), "--random-weights", "--model", "tiny",
                    "--image-size", "64", "--device", "cpu", "--modes", "dense", "--warmup", "0",
                    "--out", str(tmp_path / "o")],
            "score": ["score", "--gt", str(root), "--pred", str(root)]}[command]
    rc = cli.main(argv + selection + ["--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err == ["fastsam2-eval: error: " + match.format(sets=root / "ImageSets")], err
    assert not (tmp_path / "o").exists()

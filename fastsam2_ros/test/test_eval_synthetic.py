"""The synthetic DAVIS-layout generator: layout, determinism, motion, occlusion, CLI."""

import json

import numpy as np
import pytest

from fastsam2_ros.core.errors import InputError
from fastsam2_ros.eval import cli
from fastsam2_ros.eval.davis_io import DavisDataset, read_label_png
from fastsam2_ros.eval.synthetic import generate_dataset, generate_sequence, parse_size


def test_layout_and_contents(tmp_path):
    root = generate_dataset(tmp_path / "s", sequences=2, frames=5, size=(80, 60), objects=3, seed=1)
    ds = DavisDataset(root, imageset="val")
    assert ds.sequence_names == ["synth000", "synth001"]
    texts = json.loads((root / "text_prompts.json").read_text())
    for name in ds.sequence_names:
        seq = ds.sequence(name)
        assert len(seq) == 5 and sorted(seq.label_files) == [f"{t:05d}" for t in range(5)]
        frames = seq.read_frames()
        assert frames[0].shape == (60, 80, 3)
        labels = seq.read_labels(frames[0].shape)
        first = labels["00000"]
        assert sorted(np.unique(first).tolist()) == [0, 1, 2, 3]  # every object visible at t=0
        assert sorted(texts[name]) == ["1", "2", "3"]
        assert all(len(t.split()) == 3 for t in texts[name].values())
        # objects move: no object keeps the same mask over the sequence
        for k in (1, 2, 3):
            assert not all(np.array_equal(labels["00000"] == k, labels[n] == k) for n in labels)


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    a = generate_dataset(tmp_path / "a", sequences=1, frames=3, size=(48, 40), seed=7)
    b = generate_dataset(tmp_path / "b", sequences=1, frames=3, size=(48, 40), seed=7)
    c = generate_dataset(tmp_path / "c", sequences=1, frames=3, size=(48, 40), seed=8)
    rel = "Annotations/480p/synth000/00002.png"
    assert (a / rel).read_bytes() == (b / rel).read_bytes()
    assert (a / "JPEGImages/480p/synth000/00002.jpg").read_bytes() == \
        (b / "JPEGImages/480p/synth000/00002.jpg").read_bytes()
    assert not np.array_equal(read_label_png(a / rel), read_label_png(c / rel))


def test_labels_are_the_front_most_shape_and_objects_occlude():
    rng = np.random.default_rng(0)
    full = []
    frames, labels, _ = generate_sequence(rng, (96, 96), 30, 5, full_masks=full)
    occluded = 0
    for lab, masks in zip(labels, full):
        order = masks[0].tolist()  # back to front
        expect = np.zeros_like(lab)
        for k in order:
            expect[masks[k]] = k
        assert np.array_equal(lab, expect)  # exact: painter's order of the drawn shapes
        occluded += sum(int(np.count_nonzero(masks[k] & (lab != k)) > 0) for k in order)
    assert occluded > 0  # some shape is partly hidden behind another on some frame
    assert all(np.count_nonzero(labels[0] == k) > 0 for k in range(1, 6))  # all visible at t=0


def test_rgb_frames_carry_the_object_texture_exactly_inside_the_mask():
    # frames before JPEG: an object's boundary pixels and the pixels just outside it differ
    # strongly (texture vs background), i.e. the label edge is the painted edge.
    from scipy import ndimage

    rng = np.random.default_rng(2)
    frames, labels, _ = generate_sequence(rng, (64, 64), 2, 1)
    f, obj = frames[0].astype(int), labels[0] == 1
    ring = ndimage.binary_dilation(obj) & ~obj
    inner = obj & ~ndimage.binary_erosion(obj)
    assert obj.sum() > 50
    assert np.abs(f[inner].mean(0) - f[ring].mean(0)).max() > 20


def test_bad_arguments(tmp_path):
    with pytest.raises(InputError, match="WIDTHxHEIGHT"):
        parse_size("320-240")
    with pytest.raises(InputError, match=">= 3"):
        generate_dataset(tmp_path / "x", frames=2)
    assert parse_size("320x240") == (320, 240)


def test_synth_cli(tmp_path, capsys):
    assert cli.main(["synth", "--out", str(tmp_path / "d"), "--sequences", "1", "--frames", "3",
                     "--size", "40x32", "--objects", "1", "--seed", "4"]) == 0
    assert (tmp_path / "d" / "Annotations" / "480p" / "synth000" / "00002.png").is_file()
    assert "wrote synthetic" in capsys.readouterr().out
    assert cli.main(["synth", "--out", str(tmp_path / "e"), "--size", "big"]) == 2


def test_synth_over_an_earlier_synth_replaces_it(tmp_path, capsys):
    """A rerun kept the earlier set's extra sequences and later frames (another seed and object
    count) among the new ones; its files go first, the user's own stay."""
    out = tmp_path / "s"
    assert cli.main(["synth", "--out", str(out), "--sequences", "3", "--frames", "8", "--size",
                     "64x48", "--objects", "1", "--seed", "1"]) == 0
    (out / "mine.txt").write_text("notes")
    assert cli.main(["synth", "--out", str(out), "--sequences", "2", "--frames", "4", "--size",
                     "64x48", "--objects", "2", "--seed", "2"]) == 0
    ds = DavisDataset(out)
    assert {n: len(ds.sequence(n)) for n in ds.sequence_names} == {"synth000": 4, "synth001": 4}
    assert (out / "mine.txt").read_text() == "notes"
    fresh = generate_dataset(tmp_path / "fresh", sequences=2, frames=4, size=(64, 48), objects=2, seed=2)
    files = sorted(p.relative_to(fresh) for p in fresh.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file() and p.name != "mine.txt")
    assert all((out / f).read_bytes() == (fresh / f).read_bytes() for f in files)
    capsys.readouterr()


def test_synth_refuses_a_non_empty_folder_it_did_not_write(tmp_path, capsys):
    out = tmp_path / "s"
    out.mkdir()
    (out / "photo.jpg").write_bytes(b"mine")
    rc = cli.main(["synth", "--out", str(out), "--sequences", "1", "--frames", "3", "--size", "40x32"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert f"{out} is not empty and holds no earlier synthetic dataset" in err[0]
    assert [p.name for p in out.iterdir()] == ["photo.jpg"]
    (out / "photo.jpg").unlink()  # an empty folder is fine
    assert cli.main(["synth", "--out", str(out), "--sequences", "1", "--frames", "3", "--size",
                     "40x32"]) == 0

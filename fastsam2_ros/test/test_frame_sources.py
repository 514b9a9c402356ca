"""Frame readers: image folders (natural order), videos, rosbag2 (Image / CompressedImage), errors."""

import os
import subprocess
import sys
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from PIL import Image

from fastsam2_ros.core.errors import InputError
from fastsam2_ros.frame_sources import (FrameSourceError, count_frames, image_topics, natural_key,
                                        open_frames, ros_msg_to_rgb)


def colour_frame(i, h=24, w=32):
    """Distinct, exactly checkable frame i: a gradient plus a per-frame offset."""
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([(xx * 7 + i * 20) % 256, (yy * 9 + i * 3) % 256,
                    np.full((h, w), (i * 40) % 256)], axis=2)
    return img.astype(np.uint8)


# ------------------------------------------------------------------------------- image folders
def test_natural_order_and_names(tmp_path):
    for i in (10, 2, 1):
        Image.fromarray(colour_frame(i)).save(tmp_path / f"f{i}.png")
    (tmp_path / "notes.txt").write_text("ignored")
    src = open_frames(tmp_path)
    assert src.kind == "images" and src.count == len(src) == 3
    assert src.names == ["f1", "f2", "f10"]
    frames = list(src)
    for i, f in zip((1, 2, 10), frames):
        assert f.dtype == np.uint8 and np.array_equal(f, colour_frame(i))
    assert open_frames(tmp_path, max_frames=2).names == ["f1", "f2"]
    assert count_frames(tmp_path) == 3
    assert sorted(["a10", "a9", "A1"], key=natural_key) == ["A1", "a9", "a10"]


def test_grey_and_rgba_images_become_rgb(tmp_path):
    Image.fromarray(np.full((8, 9), 77, np.uint8), mode="L").save(tmp_path / "0.png")
    Image.fromarray(np.full((8, 9, 4), 200, np.uint8), mode="RGBA").save(tmp_path / "1.png")
    a, b = open_frames(tmp_path)
    assert a.shape == b.shape == (8, 9, 3)
    assert (a == 77).all() and (b == 200).all()


def test_frame_size_change_names_the_file(tmp_path):
    Image.fromarray(colour_frame(0)).save(tmp_path / "0.png")
    Image.fromarray(colour_frame(1, h=20)).save(tmp_path / "1.png")
    with pytest.raises(FrameSourceError, match=r"1\.png is 32x20 but the first frame .* is 32x24"):
        list(open_frames(tmp_path))


def test_unreadable_image_names_the_file(tmp_path):
    Image.fromarray(colour_frame(0)).save(tmp_path / "0.jpg")
    (tmp_path / "1.jpg").write_bytes(b"\xff\xd8 truncated garbage")
    src = open_frames(tmp_path)
    with pytest.raises(FrameSourceError, match=r"cannot read image .*1\.jpg"):
        list(src)


def test_an_image_over_pils_pixel_limit_is_refused_by_name(tmp_path, monkeypatch):
    """PIL's DecompressionBombError is no OSError: it ended the tools with a traceback."""
    Image.fromarray(colour_frame(0)).save(tmp_path / "0.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # (24x32 is over twice that: an error)
    with pytest.raises(FrameSourceError, match=r"cannot read image .*0\.png: Image size"):
        list(open_frames(tmp_path))


def test_missing_and_empty_inputs(tmp_path):
    with pytest.raises(FrameSourceError, match="not found: .*nothing"):
        open_frames(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FrameSourceError, match="no image files .* in folder .*empty"):
        open_frames(tmp_path / "empty")
    assert issubclass(FrameSourceError, InputError) and issubclass(FrameSourceError, ValueError)
    with pytest.raises(FrameSourceError, match="topic .* is not a rosbag"):
        open_frames(tmp_path, topic="/x")


def test_single_image_file(tmp_path):
    Image.fromarray(colour_frame(3)).save(tmp_path / "one.png")
    src = open_frames(tmp_path / "one.png")
    assert src.kind == "image" and src.names == ["one"]
    assert np.array_equal(next(iter(src)), colour_frame(3))


# -------------------------------------------------------------------------------------- video
def test_video_frames_count_and_colours(tmp_path):
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (32, 24))
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255), (0, 0, 0)]
    for c in colours:
        rgb = np.zeros((24, 32, 3), np.uint8)
        rgb[:] = c
        writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    writer.release()
    src = open_frames(path)
    assert src.kind == "video" and src.count == 5 and src.fps == pytest.approx(10)
    frames = src.read_all()
    assert len(frames) == 5 and frames[0].shape == (24, 32, 3)
    for f, c in zip(frames, colours):  # MJPG is lossy: compare the mean colour
        assert np.abs(f.reshape(-1, 3).mean(0) - np.array(c)).max() < 12
    assert open_frames(path, max_frames=2).count == 2 and len(list(open_frames(path, max_frames=2))) == 2


def test_hidden_files_are_not_frames(tmp_path):
    """macOS writes an AppleDouble ._name next to every file copied to a non-HFS disk: they were
    counted as frames and the run died on "cannot read image ._00000.jpg"."""
    for i in range(2):
        Image.fromarray(colour_frame(i)).save(tmp_path / f"{i:05d}.jpg")
        (tmp_path / f"._{i:05d}.jpg").write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X")
    (tmp_path / ".hidden.png").write_bytes(b"not a frame")
    src = open_frames(tmp_path)
    assert src.names == ["00000", "00001"] and len(list(src)) == 2


def test_a_frame_that_is_a_dangling_symlink_is_named_not_skipped(tmp_path):
    """git-annex / DataLad / DVC folders are symlinks into a store; a frame not fetched is a
    dangling link. It was left out without a word, and every later frame moved down one index."""
    store, frames = tmp_path / "annex", tmp_path / "frames"
    store.mkdir()
    frames.mkdir()
    for i in range(4):
        Image.fromarray(colour_frame(i)).save(store / f"{i:05d}.png")
        (frames / f"{i:05d}.png").symlink_to(store / f"{i:05d}.png")
    (store / "00002.png").unlink()
    (frames / ".00009.png").symlink_to(store / "gone.png")  # hidden: still not a frame
    src = open_frames(frames)
    assert src.names == ["00000", "00001", "00002", "00003"]
    with pytest.raises(FrameSourceError, match=r"image not found: .*frames/00002\.png"):
        list(src)


def test_a_video_whose_name_is_not_utf8_is_refused_not_crashed_on(tmp_path):
    """A Latin-1 name (an old archive): OpenCV crashed the interpreter (SIGSEGV). In a process of
    its own, so that the crash, where it comes back, fails this test only."""
    video = os.fsencode(tmp_path) + b"/caf\xe9.avi"
    writer = cv2.VideoWriter(str(tmp_path / "cafe.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10, (32, 24))
    writer.write(colour_frame(0))
    writer.release()
    os.rename(tmp_path / "cafe.avi", video)
    code = ("import sys\n"
            "from fastsam2_ros.frame_sources import FrameSourceError, open_frames\n"
            "try:\n"
            "    open_frames(sys.argv[1])\n"
            "except FrameSourceError as exc:\n"
            "    print(str(exc).encode('utf-8', 'backslashreplace').decode())\n")
    proc = subprocess.run([sys.executable, "-c", code, video], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])
    assert "caf\\udce9.avi: OpenCV opens video files by UTF-8 names only" in proc.stdout, proc.stdout


def mjpeg_avi_with_a_damaged_frame(path, n=10, damaged=5):
    """An MJPEG AVI whose frame ``damaged`` does not decode (its JPEG start overwritten); the
    frames after it decode."""
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (32, 24))
    for i in range(n):
        w.write(colour_frame(i))
    w.release()
    data = bytearray(path.read_bytes())
    starts = [i for i in range(len(data) - 1) if data[i] == 0xFF and data[i + 1] == 0xD8]
    assert len(starts) == n
    data[starts[damaged]:starts[damaged] + 200] = bytes(200)
    path.write_bytes(bytes(data))
    return path


def test_a_video_damaged_in_the_middle_names_the_frame(tmp_path):
    """Counting stopped at the first frame that failed: a 10-frame video was 5 frames, silently."""
    bad = mjpeg_avi_with_a_damaged_frame(tmp_path / "bad.avi")
    with pytest.raises(FrameSourceError, match=r"bad\.avi: cannot decode frame 5 of 10"):
        open_frames(bad)
    assert open_frames(bad, max_frames=5).count == 5  # the frames asked for all decode


def test_broken_video_names_the_file(tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00" * 1000)
    with pytest.raises(FrameSourceError, match=r"broken\.mp4"):
        open_frames(bad)



@pytest.mark.parametrize("name", ["val.txt", "readme.nfo", "notes.asc"])
def test_a_text_file_is_refused_not_rendered_into_frames(tmp_path, name):
    """FFmpeg's tty demuxer opened a text file (a DAVIS image-set list given by mistake) as a
    video of its rendered characters: the demo and the bench tracked that without a word."""
    text = tmp_path / name
    text.write_text("bear\nblackswan\n" * 50)
    with pytest.raises(FrameSourceError, match=r"is a text file, not a video|cannot open video"):
        open_frames(text)

# ----------------------------------------------------------------------------- ROS messages
# (every encoding is checked in test_image_messages.py; here: errors name the source)
def msg(encoding, h, w, step, data, big=0):
    return SimpleNamespace(encoding=encoding, height=h, width=w, step=step, data=data, is_bigendian=big)


def test_image_msg_rgb8_with_row_padding():
    rgb = colour_frame(1, 5, 6)
    step = 6 * 3 + 5  # 5 padding bytes per row
    raw = np.zeros((5, step), np.uint8)
    raw[:, :18] = rgb.reshape(5, 18)
    out = ros_msg_to_rgb(msg("rgb8", 5, 6, step, raw.tobytes()), "sensor_msgs/msg/Image")
    assert np.array_equal(out, rgb)


def test_image_msg_errors_name_the_source():
    img = "sensor_msgs/msg/Image"
    with pytest.raises(FrameSourceError, match="bag msg 4: image encoding '32FC1' has no colour"):
        ros_msg_to_rgb(msg("32FC1", 2, 2, 8, bytes(16)), img, "bag msg 4")
    with pytest.raises(FrameSourceError, match="data has 10 bytes"):
        ros_msg_to_rgb(msg("rgb8", 2, 2, 6, bytes(10)), img)
    with pytest.raises(FrameSourceError, match="step 4 is smaller"):
        ros_msg_to_rgb(msg("rgb8", 2, 2, 4, bytes(12)), img)
    with pytest.raises(FrameSourceError, match="not an image message type"):
        ros_msg_to_rgb(msg("rgb8", 2, 2, 6, bytes(12)), "std_msgs/msg/String")


def test_compressed_msgs():
    rgb = colour_frame(5)
    ok, png = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    comp = "sensor_msgs/msg/CompressedImage"
    out = ros_msg_to_rgb(SimpleNamespace(format="rgb8; png compressed bgr8", data=png.tobytes()), comp)
    assert np.array_equal(out, rgb)
    with pytest.raises(FrameSourceError, match="compressedDepth"):
        ros_msg_to_rgb(SimpleNamespace(format="16UC1; compressedDepth png", data=png.tobytes()), comp)
    with pytest.raises(FrameSourceError, match="cannot decode"):
        ros_msg_to_rgb(SimpleNamespace(format="jpeg", data=b"garbage"), comp)


# ---------------------------------------------------------------------------------- rosbag2
def write_bag(path, storage="sqlite3", n=3, extra_image_topic=False, resized_from=None,
              unstamped=False):
    """A bag of n bgr8 frames (24x32, padded rows; from frame ``resized_from`` on 12x16)."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS2_HUMBLE)
    T = ts.types
    Img, Comp = T["sensor_msgs/msg/Image"], T["sensor_msgs/msg/CompressedImage"]
    Header, Time, Str = T["std_msgs/msg/Header"], T["builtin_interfaces/msg/Time"], T["std_msgs/msg/String"]
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    with Writer(path, version=9, storage_plugin=plugin) as w:
        raw = w.add_connection("/cam/image_raw", Img.__msgtype__, typestore=ts)
        note = w.add_connection("/note", Str.__msgtype__, typestore=ts)
        comp = w.add_connection("/cam/compressed", Comp.__msgtype__, typestore=ts) if extra_image_topic else None
        for i in range(n):
            hdr = Header(stamp=Time(sec=0 if unstamped else i, nanosec=0), frame_id="cam")
            h, wd = (12, 16) if resized_from is not None and i >= resized_from else (24, 32)
            rgb = colour_frame(i, h, wd)
            step = wd * 3 + 4  # padded rows
            data = np.zeros((h, step), np.uint8)
            data[:, :wd * 3] = rgb[:, :, ::-1].reshape(h, wd * 3)  # bgr8
            m = Img(header=hdr, height=h, width=wd, encoding="bgr8", is_bigendian=0, step=step,
                    data=data.reshape(-1))
            t_ns = 1_000_000_000 + i * 100_000_000
            w.write(raw, t_ns, ts.serialize_cdr(m, Img.__msgtype__))
            w.write(note, t_ns + 1, ts.serialize_cdr(Str(data=f"frame {i}"), Str.__msgtype__))
            if comp is not None:
                ok, png = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
                c = Comp(header=hdr, format="png", data=np.frombuffer(png.tobytes(), np.uint8))
                w.write(comp, t_ns + 2, ts.serialize_cdr(c, Comp.__msgtype__))
    return path


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_rosbag_image_topic_is_picked_and_decoded(tmp_path, storage):
    bag = write_bag(tmp_path / "bag", storage)
    src = open_frames(bag)
    assert src.kind == "rosbag" and src.topic == "/cam/image_raw" and src.count == 3
    frames = list(src)
    for i, f in enumerate(frames):
        assert np.array_equal(f, colour_frame(i))
    assert [ts for ts, _ in src.iter_stamped()] == [1_000_000_000, 1_100_000_000, 1_200_000_000]
    assert open_frames(bag, max_frames=2).count == 2 and len(list(open_frames(bag, max_frames=2))) == 2
    # the storage file itself opens the bag too
    store = next(p for p in bag.iterdir() if p.suffix in (".db3", ".mcap"))
    assert open_frames(store).count == 3


def test_a_bag_gives_its_rate_and_each_frames_recorded_header(tmp_path):
    """fps stayed None (the demo wrote a 30 Hz bag's mp4 at 10 fps) and the headers were lost."""
    src = open_frames(write_bag(tmp_path / "a", "mcap", n=4))  # stamps 1 s apart, received 0.1 s
    assert src.fps == pytest.approx(1.0)
    headers = [h for h, _ in src.iter_headers()]
    assert [(h.stamp_ns, h.frame_id) for h in headers] == [(i * 10**9, "cam") for i in range(4)]
    assert [f for _, f in src.iter_headers()][3].shape == (24, 32, 3)
    # stamps left 0 by the driver: the receive times; one message: no rate
    assert open_frames(write_bag(tmp_path / "b", "mcap", n=4, unstamped=True)).fps == pytest.approx(10)
    assert open_frames(write_bag(tmp_path / "c", "mcap", n=1)).fps is None
    Image.fromarray(colour_frame(0)).save(tmp_path / "0.png")
    assert [h for h, _ in open_frames(tmp_path / "0.png").iter_headers()] == [None]


def test_rosbag_compressed_topic_and_topic_choice_errors(tmp_path):
    bag = write_bag(tmp_path / "bag", "mcap", extra_image_topic=True)
    assert image_topics(bag) == {"/cam/image_raw": "sensor_msgs/msg/Image",
                                 "/cam/compressed": "sensor_msgs/msg/CompressedImage"}
    with pytest.raises(FrameSourceError, match=r"has 2 image topics .*/cam/compressed.*--topic"):
        open_frames(bag)
    frames = list(open_frames(bag, topic="/cam/compressed"))
    assert len(frames) == 3 and np.array_equal(frames[2], colour_frame(2))
    with pytest.raises(FrameSourceError, match=r"no topic '/missing'"):
        open_frames(bag, topic="/missing")
    with pytest.raises(FrameSourceError, match=r"'/note' .* carries std_msgs/msg/String, not an image"):
        open_frames(bag, topic="/note")


def test_broken_rosbag_names_the_path(tmp_path):
    bag = tmp_path / "bad_bag"
    bag.mkdir()
    (bag / "metadata.yaml").write_text("this: is not rosbag2 metadata\n")
    with pytest.raises(FrameSourceError, match=r"cannot open rosbag .*bad_bag"):
        open_frames(bag)
    db = tmp_path / "x.db3"
    db.write_bytes(b"not sqlite")
    with pytest.raises(FrameSourceError, match=r"x\.db3"):
        open_frames(db)


# ------------------------------------------------------------------ one size, one name, odd files
def test_a_bag_whose_camera_changes_resolution_is_refused_at_the_first_other_frame(tmp_path):
    """A video writer drops frames of another size without an error: the demo wrote a short mp4."""
    bag = write_bag(tmp_path / "bag", "mcap", n=4, resized_from=2)
    frames = iter(open_frames(bag))
    assert next(frames).shape == next(frames).shape == (24, 32, 3)
    with pytest.raises(FrameSourceError, match=r"message 2 .* is 16x12 but the first frame .* is 32x24"):
        next(frames)


def test_a_video_whose_frames_change_size_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (32, 24))
    for i in range(3):
        writer.write(colour_frame(i))
    writer.release()
    src = open_frames(path)
    reads = iter([colour_frame(0), colour_frame(1, 12, 16)])
    monkeypatch.setattr(cv2.VideoCapture, "read", lambda self: (True, next(reads)), raising=False)
    frames = iter(src)
    next(frames)
    with pytest.raises(FrameSourceError, match=r"clip\.avi frame 1 is 16x12"):
        next(frames)


def test_one_frame_name_twice_is_refused(tmp_path):
    """00000.jpg and 00000.png: the frame was tracked twice and its saved mask overwritten."""
    for ext in ("png", "jpg"):
        Image.fromarray(colour_frame(0)).save(tmp_path / f"00000.{ext}")
    Image.fromarray(colour_frame(1)).save(tmp_path / "00001.png")
    with pytest.raises(FrameSourceError, match=r"00000\.jpg and 00000\.png are one frame name twice"):
        open_frames(tmp_path)


def test_natural_order_of_names_with_non_ascii_digits(tmp_path):
    """'²' is a digit to str.isdigit but not to int()."""
    assert sorted(["scan1²2", "scan10", "scan2"], key=natural_key) == ["scan1²2", "scan2", "scan10"]
    for name in ("scan1²2", "scan2"):
        Image.fromarray(colour_frame(0)).save(tmp_path / f"{name}.png")
    assert open_frames(tmp_path).names == ["scan1²2", "scan2"]


def test_frames_named_by_float_stamps_are_read_in_time_order(tmp_path):
    """str(float) stamps have no fixed width: .05 is before .4, though 5 > 4."""
    stamps = [round(1700000000.0 + k * 0.05, 3) for k in range(24)]  # 20 Hz: .0 .05 .1 ... .15
    for t in stamps:
        Image.fromarray(colour_frame(0, 4, 4)).save(tmp_path / f"{t}.png")
    assert [float(n) for n in open_frames(tmp_path).names] == stamps
    # number runs keep their natural order around the decimals
    assert sorted(["frame10.png", "frame2.png", "img_001_010.png", "img_001_002.png"],
                  key=natural_key) == ["frame2.png", "frame10.png", "img_001_002.png", "img_001_010.png"]


@pytest.mark.parametrize("names", [
    ["cam0.1", "cam0.2", "cam0.10", "cam0.12"],  # <camera>.<frame>: a dot in a name is text
    ["v1.2.png", "v1.10.png", "v1.11.png"],
    ["1700000000.000000050.png", "1700000000.400000000.png"],  # sec.nanosec, zero-padded
    ["1.5.png", "00002.jpg", "00010.jpg", "1700000000.05.png", "bear"],  # stamps among others
])
def test_only_a_name_that_is_one_decimal_number_is_read_as_one(names):
    assert sorted(reversed(names), key=natural_key) == names


def test_names_that_read_alike_keep_one_order_whatever_the_file_system_lists(tmp_path):
    names = ["f1.0.png", "f1.1.png", "f1.10.png", "f01.png", "f1.png", "1.50.png", "1.5.png"]
    assert natural_key("f1.png") != natural_key("f01.png")
    assert sorted(names, key=natural_key) == sorted(reversed(names), key=natural_key)


def test_exif_orientation_turns_frames_upright(tmp_path):
    """A phone photo stored sideways (Orientation 6) is read as viewers and cv2.imread show it."""
    raw = np.zeros((24, 32, 3), np.uint8)
    raw[:, :4] = (255, 0, 0)  # red band on the stored left edge: the top once turned
    im = Image.fromarray(raw)
    exif = im.getexif()
    exif[0x0112] = 6
    im.save(tmp_path / "IMG_0001.png", exif=exif.tobytes())
    for frame in (next(iter(open_frames(tmp_path))), next(iter(open_frames(tmp_path / "IMG_0001.png")))):
        assert frame.shape == (32, 24, 3)
        assert (frame[:4, :, 0] == 255).all() and (frame[4:, :, 0] == 0).all()


def test_a_killed_recording_is_named_a_rosbag_without_metadata(tmp_path):
    bag = write_bag(tmp_path / "bag", "mcap")
    (bag / "metadata.yaml").unlink()
    with pytest.raises(FrameSourceError, match=r"rosbag2 folder without metadata\.yaml .*ros2 bag reindex"):
        open_frames(bag)
    store = next(bag.glob("*.mcap"))
    assert open_frames(store).count == 3


def test_16_bit_frames_follow_one_rule_whatever_their_values(tmp_path):
    """PIL opens 16-bit grey PNGs as mode I; the scale used to be chosen per frame from its maximum
    (value 200 was level 200 in one frame and 1 in the next), and it truncated where the node rounds."""
    from fastsam2_ros.image_messages import to_rgb8

    dark = np.full((4, 5), 200, np.uint16)
    bright = dark.copy()
    bright[0, 0] = 60000
    for i, arr in enumerate((dark, bright)):
        cv2.imwrite(str(tmp_path / f"{i}.png"), arr)
    frames = list(open_frames(tmp_path))
    assert frames[0][1, 1, 0] == frames[1][1, 1, 0] == 1
    np.testing.assert_array_equal(frames[1], to_rgb8(bright, "mono16"))

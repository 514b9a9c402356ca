"""Frame readers shared by the evaluation tool, the benchmark and the ROS demo.

One entry point::

    from fastsam2_ros.frame_sources import open_frames

    src = open_frames("clip.mp4")                  # or a folder of images, one image, a rosbag2
    print(src.kind, src.count, src.names[:3])      # names: file stems or 5-digit frame numbers
    for rgb in src:                                # np.uint8 [H, W, 3], RGB
        ...

* A **folder of images** (``.jpg .jpeg .png .bmp .tif .tiff .webp``) is read in natural order
  (``2.jpg`` before ``10.jpg``; a name that is one ``digits.digits`` number is that number, so
  stamp-named ``1700000000.05.png`` comes before ``1700000000.4.png``) and turned upright by its EXIF
  orientation; every frame must have the size of the first one. Hidden files
  (a name starting with ``.``, e.g. the ``._00000.jpg`` that macOS writes next to copied files)
  are not frames; a symlink is one even when it leads nowhere (a dataset's frame not fetched),
  and reading it is an error naming it.
* A **video file** is decoded with OpenCV (``count`` is the exact number of decodable frames; a
  frame that does not decode with decodable frames after it is an error naming it). A video
  whose frame size changes mid-stream is not refused: OpenCV's FFmpeg backend scales every frame
  to the first one's size itself.
* A **rosbag2** (directory with ``metadata.yaml``, or a ``.db3`` / ``.mcap`` file) or a ROS 1
  ``.bag`` is read with the ``rosbags`` package, without ROS. ``sensor_msgs/msg/Image`` and
  ``sensor_msgs/msg/CompressedImage`` are decoded exactly as the node decodes them
  (:mod:`fastsam2_ros.image_messages`, cv_bridge's encodings); ``topic=None`` picks the only image
  topic of the bag. ``fps`` is the median rate of its header stamps (receive times where those do
  not advance), and ``iter_headers`` gives each frame's recorded stamp and frame_id.
* A **single image file** is a one-frame source.

Every problem raises :class:`FrameSourceError` (an ``InputError``, so a ``ValueError``) whose
message names the offending file.
"""

from __future__ import annotations

import re
import statistics
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Dict, Iterator, List, NamedTuple, Optional, Tuple, Union

import numpy as np

from .core.errors import InputError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")
ROSBAG2_STORAGE_EXTENSIONS = (".db3", ".mcap")
BAG_EXTENSIONS = ROSBAG2_STORAGE_EXTENSIONS + (".bag",)
IMAGE_MSGTYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")

PathLike = Union[str, Path]


class FrameSourceError(InputError):
    """A frame source cannot be opened or one of its frames cannot be decoded."""


class FrameHeader(NamedTuple):
    """A frame's recorded header (a bag's): its stamp in ns and its frame_id."""

    stamp_ns: int
    frame_id: str


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------
#: A name that is a stamp written by ``str(float)`` (``1700000000.05``), with an extension or not.
_FLOAT_STAMP_NAME = re.compile(r"([0-9]+\.[0-9]+)(\.[^.]*)?")


def natural_key(name: str) -> tuple:
    """Sort key that orders embedded numbers numerically: ``f2`` < ``f10``. The split alternates
    text and ASCII digit runs (``str.isdigit`` also accepts ``²``, which ``int`` refuses). A name
    that is one ``digits.digits`` number (a stamp written by ``str(float)``: ``1700000000.05.png``
    before ``1700000000.4.png``) is that decimal number; elsewhere a dot is text (``cam0.2`` before
    ``cam0.10``; a ``sec.nanosec`` name needs its nanoseconds zero-padded to 9 digits). Names that
    read alike (``f1.png``, ``f01.png``) are ordered by the name itself, so no order is left to the
    file system."""
    text = str(name)
    stamp = _FLOAT_STAMP_NAME.fullmatch(text)
    if stamp:
        parts = ["", Decimal(stamp.group(1)), (stamp.group(2) or "").lower()]
    else:
        parts = [int(tok) if i % 2 else tok.lower()
                 for i, tok in enumerate(re.split(r"([0-9]+)", text))]
    return parts, text


def is_utf8(text: str) -> bool:
    """Whether ``text`` encodes as UTF-8: a file name that is not (Latin-1, from an old archive)
    decodes to surrogates, which OpenCV cannot take."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def is_listed(path: Path) -> bool:
    """Whether a folder listing (frames, label maps, sequence folders) takes ``path``: hidden
    entries are skipped, as ``ls`` and the DAVIS reference's ``glob`` skip them; macOS's
    AppleDouble ``._00000.jpg`` / ``._00000.png`` files are metadata, not frames or labels."""
    return not path.name.startswith(".")


def list_images(folder: PathLike) -> List[Path]:
    """Image files of a folder (not recursive), in natural order. Two files of one name (a frame
    as .jpg and .png) are refused: the frame would be tracked twice and its saved mask overwritten.
    Hidden files are skipped (``is_listed``). A symlink is listed even where it leads nowhere: a
    frame of a git-annex / DataLad / DVC dataset that was not fetched is a dangling link, and
    skipping it shifted every later frame down one index without a word; reading it names it."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FrameSourceError(f"not a folder: {folder}")
    files = [p for p in folder.iterdir() if (p.is_file() or p.is_symlink()) and is_listed(p)
             and p.suffix.lower() in IMAGE_EXTENSIONS]
    by_stem: Dict[str, Path] = {}
    for f in sorted(files):
        if f.stem in by_stem:
            raise FrameSourceError(f"{by_stem[f.stem]} and {f.name} are one frame name twice in "
                                   f"{folder}; keep one of them")
        by_stem[f.stem] = f
    return sorted(files, key=lambda p: natural_key(p.name))


def read_image(path: PathLike) -> np.ndarray:
    """One image file as RGB uint8 [H, W, 3] (grey, palette, alpha and 16-bit images converted),
    turned upright by its EXIF orientation as viewers, ``cv2.imread`` and OpenCV's video decoding
    show it (a phone photo stored sideways: a click read off a viewer lands where it was meant)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    try:
        with Image.open(path) as im:
            im.load()
            im = ImageOps.exif_transpose(im)
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                # one rule for every frame (PIL opens 16-bit PNGs as "I"): 16-bit grey, scaled
                # to 8 bits as the node's decoder (cv_bridge) scales mono16
                from .image_messages import to_rgb8

                arr = np.asarray(im)
                if arr.min() < 0 or arr.max() > 65535:
                    raise FrameSourceError(f"{path} holds values outside 16 bits "
                                           f"({arr.min()}..{arr.max()}); not a camera frame")
                return to_rgb8(np.ascontiguousarray(arr.astype(np.uint16)), "mono16")
            if im.mode == "F":
                raise FrameSourceError(f"cannot use floating-point image {path} as a video frame")
            rgb = np.asarray(im.convert("RGB"), dtype=np.uint8)
    except FileNotFoundError as exc:
        raise FrameSourceError(f"image not found: {path}") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError,
            Image.DecompressionBombError) as exc:  # (over PIL's pixel limit: not an OSError)
        if isinstance(exc, FrameSourceError):
            raise
        raise FrameSourceError(f"cannot read image {path}: {exc}") from exc
    return np.ascontiguousarray(rgb)


def ros_msg_to_rgb(msg, msgtype: str, where: str = "message") -> np.ndarray:
    """Decode an Image or CompressedImage message (rclpy or ``rosbags``) by its type name, with
    the node's decoder (:mod:`fastsam2_ros.image_messages`, cv_bridge semantics)."""
    from .image_messages import compressed_to_rgb, image_to_rgb

    if msgtype.endswith("CompressedImage"):
        decode = compressed_to_rgb
    elif msgtype.endswith("Image"):
        decode = image_to_rgb
    else:
        raise FrameSourceError(f"{where}: {msgtype} is not an image message type")
    try:
        return decode(msg)
    except InputError as exc:
        raise FrameSourceError(f"{where}: {exc}") from exc


class _OneSize:
    """The rule of every source: all frames have the first frame's size (the tracker, the saved
    masks and a video writer all assume one size; a writer silently drops other frames)."""

    def __init__(self, source: PathLike) -> None:
        self.source = source
        self.shape: Optional[tuple] = None

    def check(self, img: np.ndarray, what: str) -> np.ndarray:
        if self.shape is None:
            self.shape = img.shape[:2]
        elif img.shape[:2] != self.shape:
            raise FrameSourceError(
                f"{what} is {img.shape[1]}x{img.shape[0]} but the first frame of {self.source} is "
                f"{self.shape[1]}x{self.shape[0]}; all frames of a sequence must have one size")
        return img


# --------------------------------------------------------------------------------------------------
# sources
# --------------------------------------------------------------------------------------------------
class FrameSource:
    """A re-iterable sequence of RGB uint8 frames with a known length.

    Attributes: ``path``, ``kind`` (``images`` | ``image`` | ``video`` | ``rosbag``), ``count``
    (frames that iteration yields, ``max_frames`` applied), ``names`` (one id per frame: the file
    stem for images, a 5-digit frame number for videos and bags), ``fps`` (None when unknown).
    """

    kind = "frames"

    def __init__(self, path: Path, max_frames: Optional[int]) -> None:
        self.path = Path(path)
        if max_frames is not None and int(max_frames) < 1:
            raise FrameSourceError(f"max_frames must be >= 1, got {max_frames!r}")
        self.max_frames = None if max_frames is None else int(max_frames)
        self.fps: Optional[float] = None
        self.names: List[str] = []

    @property
    def count(self) -> int:
        return len(self.names)

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[np.ndarray]:  # pragma: no cover - abstract
        raise NotImplementedError

    def iter_headers(self) -> Iterator[Tuple[Optional[FrameHeader], np.ndarray]]:
        """``(recorded header, rgb)`` pairs; the header is None where the source records none."""
        for rgb in self:
            yield None, rgb

    def read_all(self) -> List[np.ndarray]:
        """Every frame in memory (what the evaluation tool does, so I/O is outside the timing)."""
        return list(self)

    def _limit(self, n: int) -> int:
        return n if self.max_frames is None else min(n, self.max_frames)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r}, count={self.count})"


class ImageFolderSource(FrameSource):
    kind = "images"

    def __init__(self, path: PathLike, max_frames: Optional[int] = None) -> None:
        super().__init__(Path(path), max_frames)
        files = list_images(self.path)
        if not files:
            hint = _missing_metadata_hint(self.path)
            if hint:  # a killed recording, not an image folder
                raise FrameSourceError(f"{self.path} is a rosbag2 folder without metadata.yaml{hint}")
            raise FrameSourceError(
                f"no image files ({', '.join(IMAGE_EXTENSIONS)}) in folder {self.path}")
        self.files = files[: self._limit(len(files))]
        self.names = [p.stem for p in self.files]

    def __iter__(self) -> Iterator[np.ndarray]:
        size = _OneSize(self.path)
        for f in self.files:
            yield size.check(read_image(f), f"frame {f}")


class SingleImageSource(FrameSource):
    kind = "image"

    def __init__(self, path: PathLike, max_frames: Optional[int] = None) -> None:
        super().__init__(Path(path), max_frames)
        if not self.path.is_file():
            raise FrameSourceError(f"image not found: {self.path}")
        self.names = [self.path.stem]

    def __iter__(self) -> Iterator[np.ndarray]:
        yield read_image(self.path)


#: The FourCC OpenCV reports for FFmpeg's tty demuxer, which opens a text file (.txt, .asc, .nfo,
#: .diz, .ans) as a video of its rendered characters. (Its text-art siblings, BinText, XBIN and
#: iCEDraw, report none; they open only files made as such art.)
TEXT_RENDERING_CODEC = b"ansi"


class VideoSource(FrameSource):
    kind = "video"

    def __init__(self, path: PathLike, max_frames: Optional[int] = None) -> None:
        import cv2

        super().__init__(Path(path), max_frames)
        if not self.path.is_file():
            raise FrameSourceError(f"video file not found: {self.path}")
        if not is_utf8(str(self.path)):  # OpenCV crashes on it (SIGSEGV)
            raise FrameSourceError(f"{self.path}: OpenCV opens video files by UTF-8 names only; "
                                   "rename it, or give a link to it with a UTF-8 name")
        cap = cv2.VideoCapture(str(self.path))
        try:
            if not cap.isOpened():
                raise FrameSourceError(f"cannot open video file {self.path} (unknown format or codec)")
            codec = int(cap.get(cv2.CAP_PROP_FOURCC) or 0).to_bytes(4, "little")
            if codec == TEXT_RENDERING_CODEC:  # FFmpeg draws a .txt/.nfo/.ans file as "video"
                raise FrameSourceError(f"{self.path} is a text file, not a video (FFmpeg would "
                                       "render its characters as frames)")
            fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
            self.fps = fps if fps > 0 else None
            n = self._count_decodable(cap)
        finally:
            cap.release()
        if n == 0:
            raise FrameSourceError(f"video file {self.path} has no decodable frames")
        self.names = [f"{i:05d}" for i in range(n)]

    def _count_decodable(self, cap) -> int:
        """Frames up to ``max_frames`` that decode (``grab`` is cheap; the container's count can be
        wrong). The first failure ends the video only if no frame the container lists after it
        decodes: otherwise the file is damaged there, and stopping would cut it silently."""
        import cv2

        listed = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        n = 0
        while self.max_frames is None or n < self.max_frames:
            if cap.grab():
                n += 1
            elif any(cap.grab() for _ in range(n + 1, listed)):
                raise FrameSourceError(f"video file {self.path}: cannot decode frame {n} of {listed} "
                                       "(later frames decode: the file is damaged)")
            else:
                break
        return n

    def __iter__(self) -> Iterator[np.ndarray]:
        import cv2

        cap = cv2.VideoCapture(str(self.path))
        if not cap.isOpened():
            raise FrameSourceError(f"cannot open video file {self.path}")
        size = _OneSize(self.path)
        try:
            for i in range(self.count):
                ok, bgr = cap.read()
                if not ok or bgr is None:
                    raise FrameSourceError(f"video file {self.path}: cannot decode frame {i}")
                if bgr.ndim == 2:
                    bgr = np.repeat(bgr[:, :, None], 3, axis=2)
                rgb = np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
                yield size.check(rgb, f"video file {self.path} frame {i}")
        finally:
            cap.release()


def _bag_root(path: Path) -> Path:
    """What ``rosbags`` should open: a rosbag2 folder, a .db3/.mcap storage file or a .bag file."""
    if path.is_dir():
        if not (path / "metadata.yaml").is_file():
            raise FrameSourceError(f"{path} is a folder without metadata.yaml, not a rosbag2"
                                   f"{_missing_metadata_hint(path)}")
        return path
    if path.suffix.lower() in ROSBAG2_STORAGE_EXTENSIONS and (path.parent / "metadata.yaml").is_file():
        return path.parent  # storage file of a rosbag2 folder: open the folder (metadata, splits)
    return path


class RosbagSource(FrameSource):
    kind = "rosbag"

    def __init__(self, path: PathLike, topic: Optional[str] = None,
                 max_frames: Optional[int] = None) -> None:
        super().__init__(Path(path), max_frames)
        if not self.path.exists():
            raise FrameSourceError(f"rosbag not found: {self.path}")
        self.bag_path = _bag_root(self.path)
        with self._reader() as reader:
            topics = {c.topic: c.msgtype for c in reader.connections}
            images = {t: m for t, m in topics.items() if m in IMAGE_MSGTYPES}
            if topic is None:
                if len(images) != 1:
                    listed = ", ".join(sorted(images)) if images else \
                        "topics: " + (", ".join(f"{t} ({m})" for t, m in sorted(topics.items())) or "none")
                    what = "no image topic" if not images else f"{len(images)} image topics"
                    raise FrameSourceError(
                        f"rosbag {self.path} has {what} ({listed}); choose one with topic=/--topic")
                topic = next(iter(images))
            if topic not in topics:
                raise FrameSourceError(
                    f"rosbag {self.path} has no topic {topic!r}; image topics: {', '.join(sorted(images)) or 'none'}")
            if topic not in images:
                raise FrameSourceError(
                    f"topic {topic!r} of rosbag {self.path} carries {topics[topic]}, not an image type "
                    f"({', '.join(IMAGE_MSGTYPES)})")
            self.topic = topic
            self.msgtype = images[topic]
            conns = [c for c in reader.connections if c.topic == topic]
            total = sum(int(getattr(c, "msgcount", 0) or 0) for c in conns)
            if total == 0:  # some storages do not record counts: count the messages
                total = sum(1 for _ in reader.messages(connections=conns))
        if total == 0:
            raise FrameSourceError(f"topic {topic!r} of rosbag {self.path} has no messages")
        self.names = [f"{i:05d}" for i in range(self._limit(total))]
        self.fps = self._rate()

    #: Messages whose stamps give ``fps``: a rate, not a pass over a long bag
    RATE_SAMPLE = 101

    def _rate(self) -> Optional[float]:
        """The camera's rate: 1 / the median gap between the header stamps of the first messages
        (a jittery or dropped frame does not move it), else between their receive times (a driver
        that leaves stamps 0); None for one message or when neither advances."""
        received, stamped = [], []
        for ts, header, _ in self._read(self.RATE_SAMPLE, decode=False):
            received.append(ts)
            stamped.append(header.stamp_ns)
        for stamps in (stamped, received):
            gaps = [b - a for a, b in zip(stamps, stamps[1:])]
            if gaps and statistics.median(gaps) > 0:
                return 1e9 / statistics.median(gaps)
        return None

    @contextmanager
    def _reader(self):
        """An open ``rosbags`` AnyReader (errors of opening become FrameSourceError)."""
        try:
            from rosbags.highlevel import AnyReader
            from rosbags.typesys import Stores, get_typestore
        except ImportError as exc:  # pragma: no cover - rosbags is a declared dependency
            raise FrameSourceError(f"reading {self.path} needs the 'rosbags' package: pip install rosbags") from exc
        try:
            reader = AnyReader([self.bag_path], default_typestore=get_typestore(Stores.ROS2_HUMBLE))
            reader.open()
        except Exception as exc:  # rosbags raises several unrelated types for broken bags
            raise FrameSourceError(f"cannot open rosbag {self.path}: {exc}") from exc
        try:
            yield reader
        finally:
            reader.close()

    def _read(self, count: int, decode: bool = True) -> Iterator[tuple]:
        """``(receive stamp in ns, FrameHeader, rgb or None)`` of the first ``count`` messages."""
        size = _OneSize(self.path)
        with self._reader() as reader:
            conns = [c for c in reader.connections if c.topic == self.topic]
            n = 0
            for conn, ts, raw in reader.messages(connections=conns):
                if n >= count:
                    break
                where = f"rosbag {self.path} topic {self.topic} message {n} (t={ts} ns)"
                try:
                    msg = reader.deserialize(raw, conn.msgtype)
                except Exception as exc:
                    raise FrameSourceError(f"{where}: cannot deserialize: {exc}") from exc
                stamp = msg.header.stamp
                header = FrameHeader(int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec),
                                     str(msg.header.frame_id))
                rgb = size.check(ros_msg_to_rgb(msg, conn.msgtype, where), where) if decode else None
                yield ts, header, rgb
                n += 1

    def iter_stamped(self) -> Iterator[tuple]:
        """``(receive stamp in ns, rgb)`` pairs, for replaying a bag at its recorded rate."""
        for ts, _, rgb in self._read(self.count):
            yield ts, rgb

    def iter_headers(self) -> Iterator[Tuple[Optional[FrameHeader], np.ndarray]]:
        for _, header, rgb in self._read(self.count):
            yield header, rgb

    def __iter__(self) -> Iterator[np.ndarray]:
        for _, rgb in self.iter_stamped():
            yield rgb


def _storage_files(folder: Path) -> List[Path]:
    """The rosbag2 storage files (.db3, .mcap) of a folder."""
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and p.suffix.lower() in ROSBAG2_STORAGE_EXTENSIONS)


def _missing_metadata_hint(folder: Path) -> str:
    """What to do with a rosbag2 folder whose recording was killed before it wrote metadata.yaml."""
    storage = _storage_files(folder)
    if not storage:
        return ""
    return (f" (it holds {storage[0].name}: a recording that ended before writing metadata.yaml; "
            f"run `ros2 bag reindex {folder}` or pass the storage file itself)")


def _is_bag(path: Path) -> bool:
    if path.is_dir():
        return (path / "metadata.yaml").is_file()
    return path.suffix.lower() in BAG_EXTENSIONS


def open_frames(path: PathLike, topic: Optional[str] = None,
                max_frames: Optional[int] = None) -> FrameSource:
    """Open a folder of images, a video file, a rosbag (2, or 1 .bag) or one image as frames.

    ``topic`` selects the image topic of a bag (only bags accept it); ``max_frames`` keeps the
    first N frames. Raises :class:`FrameSourceError` naming the path when it cannot be used.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise FrameSourceError(f"frame source not found: {p}")
    if _is_bag(p):
        return RosbagSource(p, topic=topic, max_frames=max_frames)
    if topic is not None:
        raise FrameSourceError(f"topic {topic!r} given but {p} is not a rosbag")
    if p.is_dir():
        return ImageFolderSource(p, max_frames=max_frames)
    suffix = p.suffix.lower()
    if suffix in IMAGE_EXTENSIONS:
        return SingleImageSource(p, max_frames=max_frames)
    if suffix in VIDEO_EXTENSIONS:
        return VideoSource(p, max_frames=max_frames)
    # unknown extension: let OpenCV try it as a video
    try:
        return VideoSource(p, max_frames=max_frames)
    except FrameSourceError as exc:
        raise FrameSourceError(
            f"{p}: not a folder of images, an image, a video OpenCV can open or a rosbag ({exc})") from exc


def count_frames(path: PathLike, topic: Optional[str] = None, max_frames: Optional[int] = None) -> int:
    """Number of frames :func:`open_frames` would yield."""
    return open_frames(path, topic=topic, max_frames=max_frames).count


def image_topics(bag: PathLike) -> Dict[str, str]:
    """``{topic: msgtype}`` of the image topics of a bag."""
    p = Path(bag)
    if not p.exists():
        raise FrameSourceError(f"rosbag not found: {p}")
    src = RosbagSource.__new__(RosbagSource)
    FrameSource.__init__(src, p, None)
    src.bag_path = _bag_root(p)
    with src._reader() as reader:
        return {c.topic: c.msgtype for c in reader.connections if c.msgtype in IMAGE_MSGTYPES}


__all__ = [
    "open_frames", "count_frames", "image_topics", "FrameSource", "FrameHeader", "ImageFolderSource",
    "SingleImageSource", "VideoSource", "RosbagSource", "FrameSourceError", "read_image",
    "list_images", "is_listed", "is_utf8", "natural_key", "ros_msg_to_rgb", "IMAGE_EXTENSIONS", "VIDEO_EXTENSIONS",
]

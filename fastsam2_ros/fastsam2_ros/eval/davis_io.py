"""Reading and writing DAVIS-layout datasets and indexed-palette label PNGs.

DAVIS layout::

    ROOT/JPEGImages/480p/<seq>/00000.jpg ...
    ROOT/Annotations/480p/<seq>/00000.png ...   # mode "P" PNG: pixel = palette index = object id
    ROOT/ImageSets/2017/val.txt                 # optional list of sequences

Label PNGs: 0 = background, k = object k, 255 = void (ground truth only: never an object; the
DAVIS scoring counts it as background, see scoring.py).
Only the indices matter, the palette colours are ignored. Grey-scale ("L") PNGs are accepted as
label maps too (same values); RGB PNGs are refused with a message, because colours cannot be mapped
to object ids without guessing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from ..core.errors import InputError, path_not_found
from ..frame_sources import is_listed, natural_key

PathLike = Union[str, Path]
VOID_LABEL = 255
#: The resolution folder read when none is named (DAVIS: JPEGImages/480p, Annotations/480p).
DEFAULT_RESOLUTION = "480p"


class DatasetError(InputError):
    """A dataset or prediction folder is missing, incomplete or inconsistent (names the file)."""


def davis_palette() -> List[int]:
    """The 256-entry PASCAL-VOC colour map that DAVIS annotations use (flat [r, g, b, ...])."""
    pal = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal += [r, g, b]
    return pal


def read_label_png(path: PathLike) -> np.ndarray:
    """A label PNG as uint8 [H, W] of palette indices (mode P) or grey values (mode L/1)."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            if mode == "P":
                arr = np.asarray(im, dtype=np.uint8)
            elif mode in ("L", "1"):
                arr = np.asarray(im.convert("L"), dtype=np.uint8)
                if mode == "1":
                    arr = (arr > 0).astype(np.uint8)
            else:
                raise DatasetError(
                    f"{path} is a {mode} image, not an indexed-palette (mode P) or grey label PNG; "
                    "DAVIS labels store the object id as the pixel's palette index")
    except FileNotFoundError as exc:
        raise DatasetError(f"label file not found: {path}") from exc
    except DatasetError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError,
            Image.DecompressionBombError) as exc:  # (over PIL's pixel limit: not an OSError)
        raise DatasetError(f"cannot read label PNG {path}: {exc}") from exc
    return np.ascontiguousarray(arr)


def write_label_png(path: PathLike, labels: np.ndarray, palette: Optional[Sequence[int]] = None) -> None:
    """Write uint8 labels as an indexed-palette PNG (DAVIS palette unless given)."""
    from PIL import Image

    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise InputError(f"label image must be 2-D, got shape {labels.shape} for {path}")
    if labels.size and (labels.min() < 0 or labels.max() > 255):
        raise InputError(f"labels must be in [0, 255] for an indexed PNG ({path})")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(labels.astype(np.uint8), mode="P")
    im.putpalette(list(palette) if palette is not None else davis_palette())
    im.save(path)


def resolution_folder(folder: Path, resolution: Optional[str] = None) -> Path:
    """``folder/<resolution>``, or ``folder`` itself when it holds sequences directly.
    ``resolution`` None (not named): ``DEFAULT_RESOLUTION``. A folder whose sub-folders hold only
    folders holds resolutions: the asked one is missing (without this its other resolutions would
    be taken for sequences). A resolution named for a folder of sequences is refused too: it names
    no folder, and the run's report would record it as the one read."""
    name = resolution or DEFAULT_RESOLUTION
    if (folder / name).is_dir():
        return folder / name
    present = _resolution_names(folder)
    if present:
        raise DatasetError(f"{folder} has no {name} folder (--resolution); it has {', '.join(present)}")
    if resolution is not None:
        raise DatasetError(f"--resolution {resolution}: {folder} has no resolution folders (its "
                           "sub-folders are the sequences); leave --resolution out")
    return folder


def _resolution_names(folder: Path) -> List[str]:
    """Sub-folders of ``folder`` that hold only folders: resolutions, whose folders are sequences.
    Hidden entries do not count (is_listed)."""
    return sorted((d.name for d in _listed(folder) if d.is_dir() and _listed(d)
                   and all(c.is_dir() for c in _listed(d))), key=natural_key)


def _annotations_folder(path: PathLike) -> Path:
    """``path/Annotations`` of a DAVIS root, else ``path`` (an Annotations folder, or a folder of
    result sequences)."""
    p = Path(path)
    if not p.is_dir():
        raise DatasetError(path_not_found("folder", p, folder=True))
    return p / "Annotations" if (p / "Annotations").is_dir() else p


def annotation_root(path: PathLike, resolution: Optional[str] = None) -> Path:
    """Folder holding the per-sequence label folders.

    Accepts a DAVIS root (``ROOT/Annotations/<resolution>``), an ``Annotations`` folder
    (``…/<resolution>`` or sequences directly), or the folder of sequences itself (the layout the
    DAVIS evaluation expects for results). ``resolution``: see :func:`resolution_folder`.
    """
    return resolution_folder(_annotations_folder(path), resolution)


def prediction_root(path: PathLike, resolution: Optional[str] = None,
                    sequences: Sequence[str] = ()) -> Path:
    """Folder holding the per-sequence prediction folders: ``path`` (or its ``Annotations``) itself
    where it holds a folder of one of ``sequences``, as results usually do (``OUT/<mode>/<seq>``),
    whatever else is next to them (a ``vis/<seq>/`` is no resolution folder); else its resolution
    folder as :func:`annotation_root`, a named ``resolution`` applying only where the predictions
    have resolution folders. A run's OUT (folders named as its modes) is refused, naming
    ``OUT/<mode>``: no --resolution would find its sequences."""
    folder = _annotations_folder(path)
    if any((folder / s).is_dir() for s in sequences):
        return folder
    present = _resolution_names(folder)
    from .runner import is_mode_label

    modes = [n for n in present if is_mode_label(n)]
    if modes:
        raise DatasetError(f"{folder} holds the mode folders of a run ({', '.join(modes)}), not "
                           f"sequences; pass --pred {folder / modes[0]} (--pred OUT/<mode>)")
    return resolution_folder(folder, resolution if present else None)


def image_root(path: PathLike, resolution: Optional[str] = None) -> Path:
    p = Path(path)
    if (p / "JPEGImages").is_dir():
        return resolution_folder(p / "JPEGImages", resolution)
    raise DatasetError(f"{p} has no JPEGImages/{resolution or DEFAULT_RESOLUTION} folder "
                       "(DAVIS layout expected)")


def _listed(folder: Path) -> List[Path]:
    """The entries of ``folder`` that a listing takes (``is_listed``: hidden ones are skipped)."""
    return [p for p in folder.iterdir() if is_listed(p)]


def image_frame_names(root: PathLike, sequence: str, resolution: Optional[str] = None
                      ) -> Optional[List[str]]:
    """The frame names of ``sequence`` from the dataset's images, or None where ``root`` has no
    images of it (an Annotations folder, a folder of results)."""
    from ..frame_sources import list_images

    if not (Path(root) / "JPEGImages").is_dir():
        return None
    folder = image_root(root, resolution) / sequence
    return [p.stem for p in list_images(folder)] if folder.is_dir() else None


def list_sequences(root: PathLike) -> List[str]:
    """Sub-folders of ``root`` that contain at least one label PNG, sorted."""
    seqs = [d.name for d in _listed(Path(root)) if d.is_dir() and label_files(d)]
    return sorted(seqs, key=natural_key)


def imageset_file(root: PathLike, name: str) -> Path:
    """The file ``--imageset NAME`` names: a ``.txt`` path as given, ``YEAR/NAME`` as
    ``ROOT/ImageSets/YEAR/NAME.txt``, a bare ``NAME`` in the newest year folder that has it (a
    DAVIS 2017 download ships ImageSets/2016 and ImageSets/2017, both with a val.txt)."""
    sets = Path(root) / "ImageSets"
    if name.endswith(".txt"):
        path = Path(name)
    elif "/" in name:
        path = sets / f"{name}.txt"
    else:
        years = sorted((d for d in _listed(sets) if d.is_dir()), key=lambda d: natural_key(d.name)) \
            if sets.is_dir() else []
        found = [d / f"{name}.txt" for d in years if (d / f"{name}.txt").is_file()]
        if not found:
            raise DatasetError(f"image set {name!r} not found: no {sets}/<year>/{name}.txt")
        path = found[-1]
    if not path.is_file():
        raise DatasetError(f"image set {name!r} not found: no file {path}")
    return path


def read_imageset(root: PathLike, name: str) -> List[str]:
    """Sequences of the image set ``name`` (see :func:`imageset_file`)."""
    return _imageset_sequences(imageset_file(root, name))


def _imageset_sequences(path: Path) -> List[str]:
    """The sequences ``path`` lists; none is refused here, as an empty selection, not as a dataset
    without sequences."""
    try:  # utf-8-sig: a list saved with a byte-order mark (Windows Notepad) names its first one right
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DatasetError(f"image set {path} is not UTF-8 text: {exc}") from exc
    names = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not names:
        raise DatasetError(f"image set {path} lists no sequences")
    return unique_sequences(names, f"image set {path}")


def select_sequences(root: PathLike, sequences: Optional[Sequence[str]] = None,
                     imageset: Optional[str] = None) -> Tuple[Optional[List[str]], Optional[Path]]:
    """(sequences chosen by ``--sequences`` or ``--imageset``, the image set file read); (None,
    None) when neither is given (every sequence). Both at once are refused: one would be ignored;
    so is an empty selection (``--sequences ,``), which is not "every sequence"."""
    if sequences is not None and imageset:
        raise DatasetError("--sequences and --imageset both choose the sequences; give one of them")
    if sequences is not None:
        if not sequences:
            raise DatasetError("--sequences names no sequence; give comma-separated sequence names, "
                               "or leave --sequences out for every sequence")
        return unique_sequences(sequences), None
    if imageset:
        path = imageset_file(root, imageset)
        return _imageset_sequences(path), path
    return None, None


def unique_sequences(names: Sequence[str], where: str = "the sequence list") -> List[str]:
    """``names``, refused when one repeats: the overall score would count it twice."""
    seen: set = set()
    for n in names:
        if n in seen:
            raise DatasetError(f"{where} names sequence {n!r} twice (it would count twice in the "
                               "overall score); give each sequence once")
        seen.add(n)
    return list(names)


def label_files(seq_dir: PathLike) -> List[Path]:
    """The label PNGs of a sequence folder, in natural order. Hidden files are not labels
    (``is_listed``): a DAVIS copy that passed through macOS has a ``._00000.png`` next to each."""
    return sorted((p for p in _listed(Path(seq_dir)) if p.suffix == ".png" and p.is_file()),
                  key=lambda p: natural_key(p.name))


@dataclass
class SequenceData:
    """One sequence of a DAVIS-layout dataset (paths only; nothing is read until asked)."""

    name: str
    image_files: List[Path]
    label_files: Dict[str, Path]  # frame name -> label PNG (may be a subset of the frames)
    frame_names: List[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.frame_names:
            self.frame_names = [p.stem for p in self.image_files]

    def __len__(self) -> int:
        return len(self.image_files)

    def truncated(self, max_frames: Optional[int]) -> "SequenceData":
        if max_frames is None or max_frames >= len(self.image_files):
            return self
        files = self.image_files[:max_frames]
        names = [p.stem for p in files]
        labels = {k: v for k, v in self.label_files.items() if k in set(names)}
        return SequenceData(self.name, files, labels, names)

    def read_frames(self) -> List[np.ndarray]:
        from ..frame_sources import FrameSourceError, read_image

        frames = []
        for f in self.image_files:
            img = read_image(f)
            if frames and img.shape != frames[0].shape:
                raise FrameSourceError(
                    f"frame {f} is {img.shape[1]}x{img.shape[0]} but frame {self.image_files[0]} is "
                    f"{frames[0].shape[1]}x{frames[0].shape[0]}")
            frames.append(img)
        return frames

    def read_labels(self, frame_shape: Optional[tuple] = None) -> Dict[str, np.ndarray]:
        """Ground-truth labels by frame name; checks every label map has the frames' size."""
        out: Dict[str, np.ndarray] = {}
        for name, path in self.label_files.items():
            lab = read_label_png(path)
            if frame_shape is not None and lab.shape != tuple(frame_shape[:2]):
                raise DatasetError(
                    f"annotation {path} is {lab.shape[1]}x{lab.shape[0]} but the frames of sequence "
                    f"{self.name} are {frame_shape[1]}x{frame_shape[0]}")
            out[name] = lab
        return out


class DavisDataset:
    """A DAVIS-layout dataset: JPEGImages/<res>/<seq>/*.jpg + Annotations/<res>/<seq>/*.png, or
    JPEGImages/<seq> + Annotations/<seq>. ``resolution``: see :func:`resolution_folder`; the
    attribute is the resolution folder read (None for the layout without them)."""

    def __init__(self, root: PathLike, resolution: Optional[str] = None,
                 sequences: Optional[Sequence[str]] = None, imageset: Optional[str] = None) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise DatasetError(path_not_found("dataset folder", self.root, folder=True))
        self.image_dir = image_root(self.root, resolution)
        self.resolution = None if self.image_dir == self.root / "JPEGImages" else self.image_dir.name
        if not (self.root / "Annotations").is_dir():
            raise DatasetError(f"{self.root} has no Annotations/{resolution or DEFAULT_RESOLUTION} "
                               "folder (DAVIS layout expected)")
        self.annotation_dir = resolution_folder(self.root / "Annotations", resolution)
        names, self.imageset_path = select_sequences(self.root, sequences, imageset)
        if names is None:
            names = self.available_sequences()
        if not names:
            raise DatasetError(f"no sequences in {self.image_dir}")
        self.sequence_names = names

    def available_sequences(self) -> List[str]:
        """Every sequence folder of the dataset's images, whatever ``sequences`` selects."""
        return sorted((d.name for d in _listed(self.image_dir) if d.is_dir()), key=natural_key)

    def sequence(self, name: str) -> SequenceData:
        from ..frame_sources import list_images

        img_dir = self.image_dir / name
        if not img_dir.is_dir():
            raise DatasetError(f"sequence {name!r}: image folder {img_dir} not found")
        images = list_images(img_dir)
        if not images:
            raise DatasetError(f"sequence {name!r}: no frames in {img_dir}")
        ann_dir = self.annotation_dir / name
        if not ann_dir.is_dir():
            raise DatasetError(f"sequence {name!r}: annotation folder {ann_dir} not found")
        labels = {p.stem: p for p in label_files(ann_dir)}
        if not labels:
            raise DatasetError(f"sequence {name!r}: no annotation PNGs in {ann_dir}")
        stems = {p.stem for p in images}
        orphans = sorted(set(labels) - stems, key=natural_key)
        if orphans:
            raise DatasetError(
                f"sequence {name!r}: annotation {ann_dir / (orphans[0] + '.png')} has no frame "
                f"{img_dir / (orphans[0] + '.jpg')}")
        if images[0].stem not in labels:
            raise DatasetError(
                f"sequence {name!r}: the first frame {images[0]} has no annotation "
                f"{ann_dir / (images[0].stem + '.png')} (needed for the first-frame prompts)")
        return SequenceData(name, images, labels)

    def __iter__(self):
        for name in self.sequence_names:
            yield self.sequence(name)

    def __len__(self) -> int:
        return len(self.sequence_names)


__all__ = [
    "DatasetError", "davis_palette", "read_label_png", "write_label_png", "annotation_root",
    "prediction_root", "image_root", "image_frame_names", "resolution_folder", "list_sequences",
    "imageset_file", "read_imageset", "select_sequences", "unique_sequences", "label_files",
    "SequenceData", "DavisDataset", "VOID_LABEL", "DEFAULT_RESOLUTION",
]

"""A small synthetic DAVIS-layout dataset: moving, occluding, textured shapes with exact masks.

Each sequence has a textured background that pans slowly and 1..N objects (ellipse, rectangle,
triangle, ring, star) with their own stripe/checker/dot texture and colours, moving with constant
velocity and bouncing off the borders, drawn back to front in a fixed depth order so they occlude
each other. The label map is exact: pixel = id of the front-most object covering it (shapes are
rasterised without anti-aliasing, then the same masks paint the RGB frame). Frames are JPEG
(quality 95) like DAVIS; labels are indexed PNGs with the DAVIS palette. Every object is visible on
frame 0 (positions start on a grid, so they do not overlap there). Deterministic for a seed.

Also written: ``ImageSets/2017/val.txt`` (all sequences) and ``text_prompts.json``
(``{seq: {obj_id: "red striped ellipse"}}``), the format ``fastsam2-eval run --text-prompts``
reads. Generating is fast (a 4x20-frame 320x240 set takes well under a second).

A folder an earlier run of the generator wrote is replaced: the files its ``synthetic.json``
records are removed first (other files there are kept), so no sequence or frame of the earlier
set is left among the new ones. Any other non-empty folder is refused.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import numpy as np

from ..core.errors import InputError
from .davis_io import DEFAULT_RESOLUTION, write_label_png

LOG = logging.getLogger(__name__)
GENERATOR = "fastsam2_ros.eval.synthetic"  # synthetic.json's mark of a folder this module wrote

SHAPES = ("ellipse", "rectangle", "triangle", "ring", "star")
TEXTURES = ("striped", "checkered", "dotted")
COLOURS = {
    "red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 80, 220), "yellow": (230, 210, 40),
    "purple": (150, 60, 190), "orange": (240, 140, 30), "cyan": (40, 200, 210), "white": (240, 240, 240),
}


@dataclass
class _Obj:
    obj_id: int
    shape: str
    texture: str
    colour: str
    size: float  # radius-like, pixels
    x: float
    y: float
    vx: float
    vy: float
    angle: float
    spin: float
    texture_img: np.ndarray  # [2R, 2R, 3]

    @property
    def text(self) -> str:
        return f"{self.colour} {self.texture} {self.shape}"


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Smooth colour gradient + blotches + fine noise, larger than the frame (for panning)."""
    import cv2

    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = rng.uniform(60, 160, size=3)
    gx, gy = rng.uniform(-60, 60, size=(2, 3))
    img = base[None, None] + (xx[..., None] / w) * gx + (yy[..., None] / h) * gy
    blot = rng.normal(0, 1, size=(max(2, h // 16), max(2, w // 16), 3)).astype(np.float32)
    blot = cv2.resize(blot, (w, h), interpolation=cv2.INTER_CUBIC) * 18.0
    img = img + blot + rng.normal(0, 6, size=(h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def _texture(rng: np.random.Generator, kind: str, colour: Tuple[int, int, int], side: int) -> np.ndarray:
    c1 = np.array(colour, np.float32)
    c2 = np.clip(c1 * rng.uniform(0.35, 0.6), 0, 255)
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32)
    period = max(4.0, side / rng.uniform(3, 6))
    if kind == "striped":
        theta = rng.uniform(0, math.pi)
        t = (xx * math.cos(theta) + yy * math.sin(theta)) / period
        sel = (np.floor(t * 2) % 2) == 0
    elif kind == "checkered":
        sel = ((np.floor(xx / period) + np.floor(yy / period)) % 2) == 0
    else:  # dotted
        cx = (xx % period) - period / 2
        cy = (yy % period) - period / 2
        sel = (cx * cx + cy * cy) > (period * 0.3) ** 2
    img = np.where(sel[..., None], c1, c2) + rng.normal(0, 5, size=(side, side, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def _shape_mask(obj: _Obj, h: int, w: int) -> np.ndarray:
    """Binary mask of ``obj`` on an h x w canvas (no anti-aliasing: exact labels)."""
    import cv2

    m = np.zeros((h, w), np.uint8)
    cx, cy, r, a = obj.x, obj.y, obj.size, obj.angle
    sh = 4  # sub-pixel precision bits for cv2 drawing
    s = float(1 << sh)

    def pts(vertices):
        return np.round(np.asarray(vertices) * s).astype(np.int32).reshape(-1, 1, 2)

    if obj.shape in ("ellipse", "ring"):
        axes = (int(round(r * s)), int(round(r * 0.65 * s)))
        cv2.ellipse(m, (int(round(cx * s)), int(round(cy * s))), axes, math.degrees(a), 0, 360, 1,
                    -1, cv2.LINE_8, sh)
        if obj.shape == "ring":
            inner = (int(round(r * 0.55 * s)), int(round(r * 0.3 * s)))
            cv2.ellipse(m, (int(round(cx * s)), int(round(cy * s))), inner, math.degrees(a), 0, 360,
                        0, -1, cv2.LINE_8, sh)
    else:
        if obj.shape == "rectangle":
            base = [(-1.0, -0.6), (1.0, -0.6), (1.0, 0.6), (-1.0, 0.6)]
        elif obj.shape == "triangle":
            base = [(0.0, -1.0), (0.95, 0.75), (-0.95, 0.75)]
        else:  # star
            base = [((1.0 if k % 2 == 0 else 0.45) * math.cos(k * math.pi / 5 - math.pi / 2),
                     (1.0 if k % 2 == 0 else 0.45) * math.sin(k * math.pi / 5 - math.pi / 2))
                    for k in range(10)]
        ca, sa = math.cos(a), math.sin(a)
        verts = [(cx + r * (u * ca - v * sa), cy + r * (u * sa + v * ca)) for u, v in base]
        cv2.fillPoly(m, [pts(verts)], 1, cv2.LINE_8, sh)
    return m.astype(bool)


def _paint(frame: np.ndarray, obj: _Obj, mask: np.ndarray) -> None:
    """Texture ``obj`` into ``frame`` where ``mask`` (texture moves with the object)."""
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        return
    tex = obj.texture_img
    side = tex.shape[0]
    ty = np.clip(np.round(ys - obj.y + side / 2).astype(int), 0, side - 1)
    tx = np.clip(np.round(xs - obj.x + side / 2).astype(int), 0, side - 1)
    frame[ys, xs] = tex[ty, tx]


def generate_sequence(rng: np.random.Generator, size: Tuple[int, int], frames: int,
                      n_objects: int, full_masks: Optional[List[Dict[int, np.ndarray]]] = None
                      ) -> Tuple[List[np.ndarray], List[np.ndarray], Dict[int, str]]:
    """RGB frames, uint8 label maps and ``{obj_id: description}`` of one sequence.

    ``full_masks``, if a list, receives per frame ``{obj_id: whole shape mask}`` (before
    occlusion) and the drawing order as key ``0`` (back to front ids), for tests.
    """
    w, h = size
    pad = max(8, int(0.1 * max(w, h)))
    bg = _background(rng, h + 2 * pad, w + 2 * pad)
    pan = rng.uniform(-0.6, 0.6, size=2)
    cols = int(math.ceil(math.sqrt(n_objects)))
    rows = int(math.ceil(n_objects / cols))
    cell_w, cell_h = w / cols, h / rows
    names = list(COLOURS)
    colour_idx = rng.permutation(len(names))
    objs: List[_Obj] = []
    for i in range(n_objects):
        r0, c0 = divmod(i, cols)
        size_px = float(rng.uniform(0.28, 0.4) * min(cell_w, cell_h))
        size_px = max(size_px, 3.0)
        colour = names[int(colour_idx[i % len(names)])]
        shape = SHAPES[int(rng.integers(len(SHAPES)))]
        texture = TEXTURES[int(rng.integers(len(TEXTURES)))]
        side = int(2 * math.ceil(size_px) + 4)
        speed = rng.uniform(0.02, 0.05) * min(w, h)
        heading = rng.uniform(0, 2 * math.pi)
        objs.append(_Obj(
            obj_id=i + 1, shape=shape, texture=texture, colour=colour, size=size_px,
            x=(c0 + 0.5) * cell_w + rng.uniform(-0.1, 0.1) * cell_w,
            y=(r0 + 0.5) * cell_h + rng.uniform(-0.1, 0.1) * cell_h,
            vx=speed * math.cos(heading), vy=speed * math.sin(heading),
            angle=float(rng.uniform(0, math.pi)), spin=float(rng.uniform(-0.08, 0.08)),
            texture_img=_texture(rng, texture, COLOURS[colour], side)))
    depth = list(rng.permutation(n_objects))  # drawing order, last = front
    out_frames: List[np.ndarray] = []
    out_labels: List[np.ndarray] = []
    for t in range(frames):
        ox = int(round(np.clip(pad + pan[0] * t, 0, 2 * pad)))
        oy = int(round(np.clip(pad + pan[1] * t, 0, 2 * pad)))
        frame = bg[oy: oy + h, ox: ox + w].copy()
        labels = np.zeros((h, w), np.uint8)
        full: Dict[int, np.ndarray] = {}
        for k in depth:
            o = objs[k]
            m = _shape_mask(o, h, w)
            _paint(frame, o, m)
            labels[m] = o.obj_id
            full[o.obj_id] = m
        if full_masks is not None:
            full[0] = np.array([objs[k].obj_id for k in depth])
            full_masks.append(full)
        out_frames.append(frame)
        out_labels.append(labels)
        for o in objs:  # move, bounce inside the frame
            o.x += o.vx
            o.y += o.vy
            o.angle += o.spin
            lo_x, hi_x = o.size * 0.6, w - o.size * 0.6
            lo_y, hi_y = o.size * 0.6, h - o.size * 0.6
            if not lo_x <= o.x <= hi_x:
                o.vx = -o.vx
                o.x = float(np.clip(o.x, lo_x, hi_x))
            if not lo_y <= o.y <= hi_y:
                o.vy = -o.vy
                o.y = float(np.clip(o.y, lo_y, hi_y))
    return out_frames, out_labels, {o.obj_id: o.text for o in objs}


def parse_size(text: str) -> Tuple[int, int]:
    """``"320x240"`` -> (320, 240)."""
    try:
        w, h = (int(v) for v in str(text).lower().split("x"))
    except ValueError as exc:
        raise InputError(f"size must look like WIDTHxHEIGHT (e.g. 320x240), got {text!r}") from exc
    if w < 16 or h < 16 or w > 4096 or h > 4096:
        raise InputError(f"size {w}x{h} out of range (16..4096 per side)")
    return w, h


def sequence_names(count: int) -> List[str]:
    """The names of a synthetic set's sequences."""
    return [f"synth{i:03d}" for i in range(count)]


def earlier_dataset_files(out: Path) -> Optional[List[Path]]:
    """The files and folders an earlier run of the generator wrote to ``out``, from its
    ``synthetic.json`` (None: ``out`` holds no synthetic set). Sets written before the record
    named its resolution used the default one."""
    try:
        record = json.loads((out / "synthetic.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("generator") != GENERATOR:
        return None
    count, resolution = record.get("sequences"), record.get("resolution", DEFAULT_RESOLUTION)
    if isinstance(count, bool) or not isinstance(count, int):
        return None
    if not isinstance(resolution, str) or Path(resolution).name != resolution or resolution == "..":
        return None  # one folder name, never a path out of ``out``
    folders = [out / kind / resolution / name for name in sequence_names(count)
               for kind in ("JPEGImages", "Annotations")]
    # synthetic.json last: a removal that stops half-way leaves the set recognisable
    return folders + [out / "ImageSets" / "2017" / "val.txt", out / "text_prompts.json",
                      out / "synthetic.json"]


def prepare_output_folder(out: Path) -> None:
    """Make ``out`` ready for a new set. Writing over an earlier set would keep its extra
    sequences and frames (of another seed or object count) among the new ones, so its files are
    removed first; a non-empty folder of anything else is refused, as its files are not ours."""
    if not out.exists():
        return
    if not out.is_dir():
        raise InputError(f"{out} is a file, not a folder")
    if not any(out.iterdir()):
        return
    earlier = earlier_dataset_files(out)
    if earlier is None:
        raise InputError(f"{out} is not empty and holds no earlier synthetic dataset (no "
                         "synthetic.json of this generator); write to a new or empty folder")
    for path in earlier:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
    LOG.info("replaced the earlier synthetic dataset in %s", out)


def generate_dataset(out: Union[str, Path], sequences: int = 3, frames: int = 12,
                     size: Union[str, Tuple[int, int]] = (320, 240), objects: int = 2,
                     seed: int = 0, resolution: str = DEFAULT_RESOLUTION,
                     jpeg_quality: int = 95) -> Path:
    """Write the dataset under ``out`` (DAVIS layout) and return ``out``.

    ``objects`` is the number of objects of every sequence; ``frames`` >= 3 so the DAVIS protocol
    (first and last frame not scored) leaves at least one scored frame. An earlier set in
    ``out`` is replaced, another non-empty folder refused (``prepare_output_folder``).
    """
    from PIL import Image

    if isinstance(size, str):
        size = parse_size(size)
    if sequences < 1:
        raise InputError("sequences must be >= 1")
    if frames < 3:
        raise InputError("frames must be >= 3 (DAVIS scoring drops the first and last frame)")
    if not 1 <= objects <= 20:
        raise InputError("objects must be in 1..20")
    if seed < 0:  # numpy's generators take no negative seed
        raise InputError(f"seed must be >= 0, got {seed}")
    w, h = size
    if objects > 1 and min(w, h) < 32:
        raise InputError(f"size {w}x{h} is too small for {objects} objects (min side 32)")
    out = Path(out)
    prepare_output_folder(out)
    rng = np.random.default_rng(seed)
    names = sequence_names(sequences)
    texts: Dict[str, Dict[str, str]] = {}
    for name in names:
        fr, labs, desc = generate_sequence(rng, tuple(size), frames, objects)
        img_dir = out / "JPEGImages" / resolution / name
        img_dir.mkdir(parents=True, exist_ok=True)
        for t, (f, lab) in enumerate(zip(fr, labs)):
            Image.fromarray(f).save(img_dir / f"{t:05d}.jpg", quality=jpeg_quality)
            write_label_png(out / "Annotations" / resolution / name / f"{t:05d}.png", lab)
        texts[name] = {str(k): v for k, v in desc.items()}
    sets = out / "ImageSets" / "2017"
    sets.mkdir(parents=True, exist_ok=True)
    (sets / "val.txt").write_text("\n".join(names) + "\n")
    (out / "text_prompts.json").write_text(json.dumps(texts, indent=1, sort_keys=True) + "\n")
    (out / "synthetic.json").write_text(json.dumps(
        {"generator": GENERATOR, "seed": seed, "sequences": sequences, "frames": frames,
         "size": list(size), "objects": objects, "resolution": resolution}, indent=1) + "\n")
    return out


__all__ = ["generate_dataset", "generate_sequence", "parse_size", "SHAPES", "TEXTURES", "COLOURS"]

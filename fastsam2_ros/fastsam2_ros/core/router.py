"""Token router: scores every top-level SAM 2 token and keeps the top-k (paper §3.4-3.6).

Signals per token i of one object on one frame:

* text relevance ``s_i`` (see text_relevance.py) when the object has a text prompt;
* Monte-Carlo-dropout uncertainty ``σ̃_i``: T stochastic passes (batched as one [T, N, C] tensor)
  of the pre-softmax attention logits of the first memory-attention layer's self-attention
  projections, queries = dropout(tokens), keys = an 8x8 pooled context of the frame; the logit per
  token is the log-sum-exp over keys; σ̃ = min-max normalised std over passes (paper eq. 6-8).
  Dropout is applied only here, with its own generator — the model is never put in train mode
  (that would change SAM 2's memory stride, pointer rule and mask binarisation). The paper
  drops out encoder layers 3-5 instead; re-running encoder blocks T times costs more than the
  pruning saves (design note), so the uncertainty runs on the encoder output;
* visual context: the token itself (``x_i``, MLP input), and for the training-free fusion the
  cosine to the object prototype (mean token under the previous mask) plus the previous mask
  dilated by one token (expected motion).

With trained weights (``router_weights``) the paper's MLP scores ``h_i = [x_i; text_i; U_i]``
(3C -> 256 -> 1, GELU), U_i = σ̃_i W_u with W_u = argmin ||X W - σ̃||² (paper eq. 9), solved
with a ridge of W_U_RIDGE x the mean of diag(XᵀX) — the one deviation from eq. 9: without it
W_u blows up when the tokens are nearly collinear (a uniform frame) or N ≈ C (image_size 256:
N = C = 256), U_i then up to 20x |x_i| and swinging by 400x between frames. A router trained
with the uncertainty off reads none (``RouterMLP.reads_uncertainty``): no Monte-Carlo passes
are run for it. Without trained weights a training-free fusion of the same signals is used and
reported as ``training_free``.
Both add a bonus to tokens under the object's previous mask (dilated by one token): the paper's
MLP input says what a token is, not where the tracked object was a frame ago.
The kept set is the top-k of the scores themselves: the paper's softmax (eq. 12) keeps their
order, and in float32 it underflows to 0 (ties) past a spread of ~104, so it is not computed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import TrackerConfig, short_model_name
from .errors import CheckpointError
from .text_relevance import TextRows
from .weight_files import check_torch_file, load_torch_file, require_finite

ROUTER_FORMAT = "fastsam2_ros.router.v1"
#: Where router files come from, said when one is missing.
ROUTER_HELP = ("train them with `fastsam2-train-router`, or leave router_weights empty for the "
               "training-free fusion")
#: Weights of the standardised signals in the training-free fusion (no trained router).
TEXT_WEIGHT, PROTOTYPE_WEIGHT, UNCERTAINTY_WEIGHT = 1.0, 1.0, 0.5
#: Margin (in standard deviations) by which the lowest-scored token under the object's previous
#: mask, dilated, outranks the highest-scored token outside it (see ``prior_first``).
PRIOR_BONUS = 3.0
#: Ridge of the eq. 9 solve for W_u, relative to the mean of diag(XᵀX) (see the module docstring).
W_U_RIDGE = 1e-3
#: The ridge of routers trained before W_U_RIDGE (their files do not record one).
OLD_W_U_RIDGE = 1e-9


class RouterMLP(nn.Module):
    """The paper's two-layer router: Linear(3C, hidden) -> GELU -> Linear(hidden, 1)."""

    def __init__(self, token_dim: int = 256, hidden: int = 256) -> None:
        super().__init__()
        self.token_dim = token_dim
        self.net = nn.Sequential(nn.Linear(3 * token_dim, hidden), nn.GELU(), nn.Linear(hidden, 1))
        self.meta: dict = {}  # the training settings stored in its file (see ``load_router``)

    @property
    def reads_text(self) -> bool:
        """Trained with texts. Trained without (``text_mode: none``), its text input was zero, so
        its weights for that part are still the random initialisation: it gets zeros again."""
        return self.meta.get("text_mode") != "none"

    @property
    def reads_uncertainty(self) -> bool:
        """Trained with U_i (``trained_with_uncertainty``); trained without, its U_i input was zero
        and its weights for it are still random: it gets no U_i, and no passes are run for it."""
        return trained_with_uncertainty(self.meta)

    def forward(self, fused: torch.Tensor) -> torch.Tensor:
        return self.net(fused).squeeze(-1)


def save_router(mlp: RouterMLP, path: str | Path, meta: Optional[dict] = None) -> None:
    """Write router weights; a file that cannot be written is a CheckpointError naming it."""
    try:
        torch.save({"format": ROUTER_FORMAT, "token_dim": mlp.token_dim,
                    "hidden": mlp.net[0].out_features, "state_dict": mlp.state_dict(),
                    "meta": dict(meta or {})}, str(path))
    except (OSError, RuntimeError) as exc:  # torch.save: RuntimeError for a missing folder
        raise CheckpointError(f"cannot write router weights {path}: {exc}") from exc


def read_router_file(path: str | Path) -> Tuple[Path, dict]:
    """(path, contents) of a router file, read without building anything (tools check it before
    their long work); a missing, unreadable or foreign file is a CheckpointError naming it."""
    p = Path(path).expanduser()
    if not p.exists():
        raise CheckpointError(f"router weights not found: {p} ({ROUTER_HELP})")
    check_torch_file(p, "a router file", "Give a file written by `fastsam2-train-router`.")
    blob = load_torch_file(p, "router weights")
    if not isinstance(blob, dict) or blob.get("format") != ROUTER_FORMAT:
        raise CheckpointError(f"{p} is not a fastsam2_ros router file ({ROUTER_FORMAT})")
    return p, blob


def load_router(path: str | Path, token_dim: int) -> RouterMLP:
    """Load trained router weights; any problem is a CheckpointError naming the file."""
    p, blob = read_router_file(path)
    try:
        trained_dim, hidden = int(blob["token_dim"]), int(blob["hidden"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"router {p}: missing or bad 'token_dim'/'hidden' entry ({exc!r})") from exc
    if trained_dim != token_dim:
        raise CheckpointError(f"router {p} was trained for {trained_dim}-dim tokens, "
                              f"this model has {token_dim}")
    try:
        mlp = RouterMLP(token_dim, hidden)
        mlp.load_state_dict(blob["state_dict"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"router {p}: its weights do not fit a router with {hidden} hidden "
                              f"units: {exc}") from exc
    require_finite(mlp.state_dict(), p, "router weights")
    meta = blob.get("meta") or {}
    if not isinstance(meta, dict) or not all(
            isinstance(k, str) and isinstance(v, (str, int, float, bool, list, type(None)))
            for k, v in meta.items()):
        raise CheckpointError(f"router {p}: its 'meta' entry is not a mapping of names to plain "
                              "values (as fastsam2-train-router writes it)")
    mlp.meta = dict(meta)
    return mlp.eval()


def uncertainty_on(mc_passes: int, mc_dropout: float) -> bool:
    """The Monte-Carlo uncertainty is a signal only with two passes or more and some dropout
    (else its std is zero)."""
    return int(mc_passes) >= 2 and float(mc_dropout) > 0.0


def trained_with_uncertainty(meta: dict) -> bool:
    """A router file's ``uncertainty`` (``router_inputs``): False when trained without U_i. A
    file written before that key has the trainer's ``mc_passes``/``mc_dropout``, which tell; one
    with neither reads it."""
    if "uncertainty" in meta:
        return meta["uncertainty"] is not False
    try:
        return uncertainty_on(meta["mc_passes"], meta.get("mc_dropout", TrackerConfig.mc_dropout))
    except (KeyError, TypeError, ValueError):
        return True


def router_inputs(model_cfg: str, mc_passes: int, mc_dropout: float, text_mode: str,
                  clip_model: str, image_size: Optional[int] = None) -> dict:
    """What shapes the router's inputs — SAM 2's token features (its model, and the image size:
    the same object gives other features on a coarser grid), whether U_i is a signal and the
    ridge of its W_u (None without it), the text vector's kind (``none``: trained without texts)
    and the CLIP model whose embeddings it is made of (None without texts) — stored with trained
    weights and compared with the tracker's when they are loaded."""
    uncertainty = uncertainty_on(mc_passes, mc_dropout)
    return {"model_cfg": short_model_name(model_cfg),
            "image_size": None if image_size is None else int(image_size), "uncertainty": uncertainty,
            "w_u_ridge": W_U_RIDGE if uncertainty else None, "text_mode": text_mode,
            "clip_model": None if text_mode == "none" else str(clip_model)}


def router_setting_mismatches(meta: dict, running: dict) -> list:
    """Where a loaded router was trained with other input settings than ``running``
    (``router_inputs``; a router trained without text, ``text_mode: none``, fits any text mode:
    its text input stays zero, ``RouterMLP.reads_text``; one trained without the uncertainty is
    said not to use it, ``RouterMLP.reads_uncertainty``; a setting that is None on either side
    did not shape an input there; a file may name its model by an alias)."""
    meta = dict(meta)
    if "uncertainty" not in meta and "mc_passes" in meta:  # a file from before that key
        meta["uncertainty"] = trained_with_uncertainty(meta)
    if "w_u_ridge" not in meta and meta.get("uncertainty") is True:
        meta["w_u_ridge"] = OLD_W_U_RIDGE  # trained with U_i before the ridge was recorded
    out = []
    for key, value in running.items():
        if key not in meta or meta[key] is None or value is None:
            continue
        trained = short_model_name(str(meta[key])) if key == "model_cfg" else meta[key]
        if trained == value or (key == "text_mode" and trained == "none"):
            continue
        unused = key == "uncertainty" and not trained_with_uncertainty(meta)
        out.append(f"{key} {trained!r} in training, {value!r} here"
                   + (": that router does not read it, the uncertainty is not used" if unused else ""))
    return out


#: The smallest standard deviation ``standardize`` divides by (a constant row gives zeros).
STD_FLOOR = 1e-6


def block_max(x: torch.Tensor, grid_hw: Tuple[int, int]) -> torch.Tensor:
    """``F.adaptive_max_pool2d(x, grid_hw)`` of [B, C, H, W] (a mask to the token grid), as one
    plain max pooling where the grid divides the size: the same values, without the adaptive
    kernel's general indexing (every pruned step pools two masks; see the H200 profile in the
    README)."""
    (height, width), (rows, cols) = x.shape[-2:], grid_hw
    if height % rows or width % cols:
        return F.adaptive_max_pool2d(x, grid_hw)
    return F.max_pool2d(x, (height // rows, width // cols))


def block_mean_rows(tokens: torch.Tensor, grid_hw: Tuple[int, int], out_hw: Tuple[int, int]) -> torch.Tensor:
    """Token rows [H*W, C] of a grid averaged over ``out_hw`` blocks, as rows [oh*ow, C]:
    ``F.adaptive_avg_pool2d`` of the grid, as one reduction of the rows where the blocks divide
    the grid (the adaptive kernel on the rows' channels-last view was the router's slowest on the
    H200: 0.12 ms)."""
    (height, width), (rows, cols) = grid_hw, out_hw
    channels = tokens.shape[-1]
    if height % rows or width % cols:
        grid = tokens.reshape(1, height, width, channels).permute(0, 3, 1, 2)
        return F.adaptive_avg_pool2d(grid, out_hw).permute(0, 2, 3, 1).reshape(-1, channels)
    blocks = tokens.reshape(rows, height // rows, cols, width // cols, channels)
    return blocks.mean(dim=(1, 3)).reshape(-1, channels)


def minmax(x: torch.Tensor) -> torch.Tensor:
    """``x`` scaled to [0, 1] along its last dimension (one reduction for both ends)."""
    lo, hi = torch.aminmax(x, dim=-1, keepdim=True)
    return (x - lo) / (hi - lo).clamp_min(1e-12)


def standardize(x: torch.Tensor) -> torch.Tensor:
    """Zero mean, unit (population) standard deviation along the last dimension: a layer norm
    without weights, one kernel where mean, subtract, std, clamp and divide were five (the
    router runs in every pruned step, and a captured step pays per kernel)."""
    return F.layer_norm(x, x.shape[-1:], eps=STD_FLOOR ** 2)


@dataclass
class RouterSignals:
    """Per-token signals on one frame for B objects. Frame-level signals are [N] (shared by the
    objects), object-level ones [B, N]."""

    tokens: torch.Tensor  # [N, C]
    uncertainty: Optional[torch.Tensor] = None  # [N]
    text: Optional[torch.Tensor] = None  # [B, N] (zero rows for objects without text)
    has_text: Optional[torch.Tensor] = None  # [B] 1.0 / 0.0
    text_scales: Optional[torch.Tensor] = None  # [B, N]: text_i = text_scales_i * text_vector
    text_vector: Optional[torch.Tensor] = None  # [B, C]
    prototype: Optional[torch.Tensor] = None  # [B, N] cosine to the mean token under the previous mask
    has_prototype: Optional[torch.Tensor] = None  # [B] bool
    prior: Optional[torch.Tensor] = None  # [B, N] previous mask dilated by one token, {0, 1}


@dataclass
class FusedFactors:
    """The router input h_i = [x_i; a_i t; u_i w] of B objects, stored factored: an annotated
    frame's tokens once for all its objects, and the rank-one text and uncertainty parts as a
    scale per token and one vector (router training keeps thousands of these)."""

    tokens: torch.Tensor  # x [N, C]
    text_scales: torch.Tensor  # a [B, N]
    text_vector: torch.Tensor  # t [B, C]
    uncertainty: torch.Tensor  # u [N], float64 (σ̃ of eq. 9)
    uncertainty_vector: torch.Tensor  # w [C], float64 (W_u of eq. 9)

    def compose(self) -> torch.Tensor:
        """h [B, N, 3C] in the tokens' dtype."""
        x = self.tokens
        rows = self.text_scales.shape[0]
        text_vec = self.text_scales[..., None] * self.text_vector[:, None]
        unc_vec = (self.uncertainty[:, None] * self.uncertainty_vector[None]).to(x)  # U_i = σ̃_i W_u^T
        return torch.cat([x[None].expand(rows, -1, -1), text_vec.to(x),
                          unc_vec[None].expand(rows, -1, -1)], dim=-1)


@dataclass
class RouterOutput:
    scores: torch.Tensor  # [B, N] raw router logits
    keep_idx: torch.Tensor  # [B, k] grid indices, in no particular order
    mode: str  # mlp | training_free


class TokenRouter(nn.Module):
    """Computes the signals and the top-k keep sets of B objects on one frame (batched, no host
    syncs, fixed k: it runs inside the captured per-frame step)."""

    def __init__(self, token_dim: int, mc_passes: int = 5, mc_dropout: float = 0.1,
                 mlp: Optional[RouterMLP] = None, seed: int = 0) -> None:
        super().__init__()
        self.token_dim = token_dim
        self.mc_passes = int(mc_passes)
        self.mc_dropout = float(mc_dropout)
        self.mlp = mlp
        self.seed = int(seed)
        self._generators = {}

    def _generator(self, device: torch.device, frame_idx: Optional[int] = None) -> Optional[torch.Generator]:
        """The dropout masks' generator. On the CPU seeded from ``seed`` and the frame: every
        router call on a frame draws the same masks, so the uncertainty is one per frame for all
        objects, whatever prompts came (batched objects equal objects tracked one by one); without
        a frame, one generator per device. CUDA uses the default generator: it is the one
        CUDA-graph replays advance (seed it with torch.cuda)."""
        if device.type == "cuda":
            return None
        if frame_idx is not None:
            return torch.Generator(device=device).manual_seed(
                (self.seed * 1_000_003 + int(frame_idx)) % (2 ** 63))
        key = str(device)
        if key not in self._generators:
            self._generators[key] = torch.Generator(device=device).manual_seed(self.seed)
        return self._generators[key]

    @property
    def mode(self) -> str:
        return "mlp" if self.mlp is not None else "training_free"

    @property
    def uses_uncertainty(self) -> bool:
        """The uncertainty is computed: it is on, and no loaded MLP was trained without it."""
        return (uncertainty_on(self.mc_passes, self.mc_dropout)
                and (self.mlp is None or self.mlp.reads_uncertainty))

    # ---- signals ------------------------------------------------------------------------------
    @torch.no_grad()
    def mc_uncertainty(self, tokens: torch.Tensor, grid_hw: tuple, attn_layer,
                       frame_idx: Optional[int] = None) -> Optional[torch.Tensor]:
        """Min-max normalised std of attention logits over T dropout passes, [N]; None when
        T < 2 or dropout is 0 (the std is then zero: no signal, so no work either) or the loaded
        MLP does not read it (``uses_uncertainty``).
        A property of the frame's tokens, computed once per frame for all objects."""
        if not self.uses_uncertainty:
            return None
        # (written for few kernels: the passes run in every pruned step, paying per kernel)
        n, c = tokens.shape
        h, w = grid_hw
        x = attn_layer.norm1(tokens.float())
        ctx = block_mean_rows(x, (h, w), (min(8, h), min(8, w)))  # the pooled context [M, C]
        attn = attn_layer.self_attn
        keys = attn.k_proj(ctx)  # [M, d]
        keys = keys * (1.0 / math.sqrt(keys.shape[-1]))  # the logits' scale, on the M keys
        keep = 1.0 - self.mc_dropout
        # inverted dropout: the mask drawn in one kernel, its 1/keep on q_proj's weight (not the bias)
        mask = torch.empty((self.mc_passes, n, c), device=x.device, dtype=x.dtype).bernoulli_(
            keep, generator=self._generator(x.device, frame_idx))
        q = attn.q_proj
        queries = F.linear(x[None] * mask, q.weight * (1.0 / max(keep, 1e-6)), q.bias)  # [T, N, d]
        logits = (queries @ keys.T).float()  # [T, N, M] pre-softmax
        # log-sum-exp over the keys (torch.logsumexp adds infinity checks: 3 more kernels)
        top = logits.amax(-1, keepdim=True)
        per_token = (logits - top).exp_().sum(-1).log_() + top[..., 0]  # [T, N]
        return minmax(per_token.std(dim=0, unbiased=False))

    @staticmethod
    def previous_mask_tokens(mask_logits: torch.Tensor, grid_hw: tuple) -> torch.Tensor:
        """Previous low-res mask logits [B, 1, h, w] -> {0,1} per token [B, 1, gh, gw]: the
        tokens the object covered (the prototype's support)."""
        return block_max((mask_logits.float() > 0).float(), grid_hw)

    @staticmethod
    def dilated(under: torch.Tensor) -> torch.Tensor:
        """``previous_mask_tokens`` [B, 1, gh, gw] dilated by one token (the expected motion), as
        [B, N]: the prior."""
        return F.max_pool2d(under, kernel_size=3, stride=1, padding=1).flatten(1)

    def signals(self, tokens: torch.Tensor, grid_hw: tuple, attn_layer,
                text: Optional[TextRows], prev_mask_logits: Optional[torch.Tensor],
                frame_idx: Optional[int] = None) -> RouterSignals:
        sig = RouterSignals(tokens=tokens.float())
        sig.uncertainty = self.mc_uncertainty(tokens, grid_hw, attn_layer, frame_idx)
        if text is not None:
            sig = self.with_text(sig, text)
        if prev_mask_logits is not None:
            under = self.previous_mask_tokens(prev_mask_logits, grid_hw)
            sig.prior = self.dilated(under)
            # the prototype: the mean token under the mask, not under its dilation (mostly
            under = under.flatten(1)  # background around a small object); its cosine is that of
            proto = (sig.tokens[None] * under[..., None]).sum(1)  # the tokens' sum (no division)
            sig.prototype = F.cosine_similarity(sig.tokens[None], proto[:, None], dim=-1)
            sig.has_prototype = under.amax(1) > 0
        return sig

    @staticmethod
    def with_text(sig: RouterSignals, text: TextRows) -> RouterSignals:
        """``sig`` with the text signals of ``text`` (router training adds them per object to a
        frame's signals)."""
        relevance = text.relevance(sig.tokens)
        return replace(sig, text=relevance, has_text=text.has_text,
                       text_scales=text.token_scales(relevance), text_vector=text.vector)

    # ---- fusion ---------------------------------------------------------------------------------
    def fused_features(self, sig: RouterSignals, rows: int = 1) -> torch.Tensor:
        """The paper's h_i = [x_i; text_i; U_i], [B, N, 3C] (zeros for a missing signal)."""
        rows = sig.prior.shape[0] if sig.prior is not None else rows
        return self.fused_factors(sig, rows).compose()

    def fused_factors(self, sig: RouterSignals, rows: int) -> "FusedFactors":
        """h_i in factored form (text_i and U_i are rank one): what router training stores."""
        x = sig.tokens
        n, c = x.shape
        if sig.text_scales is not None:
            text_scales, text_vector = sig.text_scales, sig.text_vector
        else:
            text_scales, text_vector = x.new_zeros(rows, n), x.new_zeros(rows, c)
        if sig.uncertainty is not None:
            u = sig.uncertainty.double()
            xd = x.double()
            gram = xd.T @ xd
            ridge = W_U_RIDGE * gram.diagonal().mean().clamp_min(1e-12)
            eye = torch.eye(c, dtype=gram.dtype, device=gram.device)
            # paper eq. 9, W_u = argmin ||X W - σ̃||² + ridge (normal equations: no host sync)
            w_u = torch.linalg.solve_ex(gram + ridge * eye, xd.T @ u[:, None])[0][:, 0]  # [C]
        else:
            u, w_u = x.new_zeros(n, dtype=torch.float64), x.new_zeros(c, dtype=torch.float64)
        return FusedFactors(x, text_scales, text_vector, u, w_u)

    def training_free_scores(self, sig: RouterSignals, rows: int) -> torch.Tensor:
        """Standardised sum of the scalar signals; previous-mask tokens get a large bonus."""
        terms = []  # (standardised signal, weight); an object without it gets a zero row
        if sig.text is not None:
            terms.append((standardize(sig.text) * sig.has_text[:, None], TEXT_WEIGHT))
        if sig.prototype is not None:
            terms.append((standardize(sig.prototype) * sig.has_prototype[:, None], PROTOTYPE_WEIGHT))
        if sig.uncertainty is not None:
            terms.append((standardize(sig.uncertainty)[None], UNCERTAINTY_WEIGHT))
        score = torch.zeros(rows, sig.tokens.shape[0], device=sig.tokens.device)
        for term, weight in terms:  # (weight and sum in one kernel per signal)
            score = torch.add(score, term, alpha=weight)
        if sig.prior is not None:
            score = prior_first(score, sig.prior)
        return score

    @torch.no_grad()
    def route(self, sig: RouterSignals, keep: int, rows: int = 1) -> RouterOutput:
        scores = self.scores(sig, rows)
        return RouterOutput(scores=scores, keep_idx=top_k_indices(scores, keep), mode=self.mode)

    @torch.no_grad()
    def scores(self, sig: RouterSignals, rows: int = 1) -> torch.Tensor:
        """Router scores [B, N] (higher = keep): the trained MLP's, or the training-free sum."""
        if sig.prior is not None:
            rows = sig.prior.shape[0]
        if self.mlp is not None:
            # on the tokens' device already: the tracker moves it there once, outside inference
            # mode (moved here, inside it, its weights would become inference tensors for good)
            mlp = self.mlp
            if not mlp.reads_text:
                sig = replace(sig, text_scales=None, text_vector=None)
            if not mlp.reads_uncertainty:  # zero, as in training (mc_uncertainty computes none)
                sig = replace(sig, uncertainty=None)
            scores = standardize(mlp(self.fused_features(sig, rows)).float())
            if sig.prior is not None:  # the MLP input does not say where the object just was
                scores = prior_first(scores, sig.prior)
        else:
            scores = self.training_free_scores(sig, rows)
        return scores


def top_k_indices(scores: torch.Tensor, keep: int) -> torch.Tensor:
    """The grid indices [B, k] of the ``keep`` best tokens of each row of ``scores`` [B, N], in
    no particular order (the paper's softmax keeps the order; it is not computed: in float32 it
    underflows to ties). Unsorted on purpose: every consumer is order-free (attention carries
    each token's rotary position by its index, the scatter back and the kept-token grid go by
    index), and sorting cost two kernels a frame on the GPU."""
    keep = max(1, min(int(keep), scores.shape[-1]))
    return torch.topk(scores.float(), keep, dim=-1, sorted=False).indices


def router_scores(router: TokenRouter, tokens: torch.Tensor, grid_hw: tuple, attn_layer,
                  text: Optional[TextRows], prev_mask_logits: Optional[torch.Tensor], rows: int,
                  frame_idx: Optional[int] = None) -> torch.Tensor:
    """A frame's signals and scores [B, N]: the router's dozens of small kernels in one
    function, which ``torch_compile`` (``router``, ``all``) fuses into a few (a captured step pays
    each kernel; the router is what pruning adds to it). The top-k stays outside: a keep ratio
    changed live would otherwise be a recompile."""
    return router.scores(router.signals(tokens, grid_hw, attn_layer, text, prev_mask_logits,
                                        frame_idx), rows)


def prior_first(scores: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
    """Scores [B, N] where every token under the previous mask (``prior`` 1) outranks every other
    one by PRIOR_BONUS at least: that region is kept first, and when it holds k tokens or more
    every kept token lies in it (the signals only rank inside it). No host sync (captured)."""
    lo, hi = torch.aminmax(scores, dim=-1, keepdim=True)
    return torch.addcmul(scores, prior, hi - lo + PRIOR_BONUS)


def num_kept(total: int, keep_ratio: float) -> int:
    """Fixed k for a grid of ``total`` tokens (fixed shapes keep torch.compile happy)."""
    return max(1, min(total, int(round(total * float(keep_ratio)))))

"""Per-object text relevance of SAM 2 tokens.

Two modes (``TrackerConfig.text_mode``):

* ``paper_lsq`` — the paper's eq. 4-5: W = argmin ||X W - 1 e^T||^2, e' = W e. The solution is
  rank one, so e' = ||e||^2 (X^T X)^+ X^T 1 does not depend on the text's direction: for
  L2-normalised CLIP embeddings every text gives the same e' and the same token ranking (a test
  shows it). Kept as a documented baseline only.
* ``clip_ridge`` (default) — a per-token relevance that depends on the text: on a prompt frame a
  ridge map W (SAM 2 token space -> CLIP space) is fitted to dense CLIP patch features of that
  frame (MaskCLIP value path); on every frame s_i = cos(x_i W + b, e_text) costs one small matmul,
  with no CLIP image pass.

Both give the router a scalar relevance per token and a per-token vector ``text_i`` for the
MLP input ``[x_i; text_i; unc_i]``. A fitted :class:`TextState` is stored in the memory bank as
rows of one affine form (``TextState.rows``) that :class:`TextRows` evaluates for a batch of
objects at once: relevance_i = cos((x_i - m) W + b, e) (``paper_lsq`` is W = I, m = b = 0,
e = e').
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional

import torch
import torch.nn.functional as F


@dataclass
class TextState:
    """What one object's text prompt contributes to the router on every frame."""

    mode: str  # clip_ridge | paper_lsq
    text: str
    text_embedding: torch.Tensor  # [D] L2-normalised CLIP text embedding
    weight: Optional[torch.Tensor] = None  # clip_ridge: [C, D]
    bias: Optional[torch.Tensor] = None  # clip_ridge: [D]
    token_mean: Optional[torch.Tensor] = None  # clip_ridge: [C]
    aligned: Optional[torch.Tensor] = None  # paper_lsq: e' [C]

    def relevance(self, tokens: torch.Tensor) -> torch.Tensor:
        """Scalar relevance per token, [N] in [-1, 1]."""
        tokens = tokens.float()
        if self.mode == "paper_lsq":
            return F.cosine_similarity(tokens, self.aligned[None].to(tokens), dim=-1)
        pred = (tokens - self.token_mean.to(tokens)) @ self.weight.to(tokens) + self.bias.to(tokens)
        return F.cosine_similarity(pred, self.text_embedding[None].to(tokens), dim=-1)

    def rows(self, token_dim: int) -> Dict[str, torch.Tensor]:
        """This state as one row of :class:`TextRows` (weight [C, D], bias [D], mean [C],
        embedding [D], vector [C])."""
        if self.mode == "paper_lsq":
            aligned = self.aligned.float()
            eye = torch.eye(token_dim, device=aligned.device)
            zeros = torch.zeros(token_dim, device=aligned.device)
            return {"weight": eye, "bias": zeros, "mean": zeros, "embedding": aligned,
                    "vector": aligned}
        return {"weight": self.weight.float(), "bias": self.bias.float(),
                "mean": self.token_mean.float(), "embedding": self.text_embedding.float(),
                "vector": self.direction()}

    def direction(self) -> torch.Tensor:
        """Unit vector in SAM 2 token space associated with the text, [C]."""
        if self.mode == "paper_lsq":
            return F.normalize(self.aligned.float(), dim=0)
        return F.normalize(self.weight.float() @ self.text_embedding.float(), dim=0)


def fit_paper_lsq(tokens: torch.Tensor, text_embedding: torch.Tensor, text: str) -> TextState:
    """Paper eq. 4-5 (text-independent, see module doc): e' = W_t e, W_t = pinv(X) 1 e^T."""
    x = tokens.double()
    e = text_embedding.double()
    target = torch.ones(x.shape[0], 1, dtype=x.dtype, device=x.device) @ e[None]  # [N, D]
    # the minimum-norm least-squares solution via the pseudo-inverse: CUDA's lstsq (gels) refuses
    # fewer tokens than channels and assumes full rank
    w_t = torch.linalg.pinv(x) @ target
    aligned = (w_t @ e).float()  # [C]
    return TextState(mode="paper_lsq", text=text, text_embedding=text_embedding.float(),
                     aligned=aligned)


def fit_clip_ridge(tokens: torch.Tensor, clip_dense: torch.Tensor, text_embedding: torch.Tensor,
                   text: str, ridge: float = 1e-1) -> TextState:
    """Fit W: SAM 2 tokens [N, C] -> dense CLIP features [N, D] by ridge regression."""
    x = tokens.double()
    y = clip_dense.double()
    mean_x, mean_y = x.mean(0), y.mean(0)
    xc, yc = x - mean_x, y - mean_y
    gram = xc.T @ xc
    lam = ridge * gram.diagonal().mean().clamp_min(1e-12)
    eye = torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
    weight = torch.linalg.solve(gram + lam * eye, xc.T @ yc)  # [C, D]
    return TextState(mode="clip_ridge", text=text, text_embedding=text_embedding.float(),
                     weight=weight.float(), bias=mean_y.float(), token_mean=mean_x.float())


@dataclass
class TextRows:
    """The text signal of B objects (rows of the memory bank's text buffers), evaluated batched.

    ``scale_by_relevance``: the MLP's text_i is relevance x direction (clip_ridge) or the paper's
    e' broadcast to every token (paper_lsq).
    """

    weight: torch.Tensor  # [B, C, D]
    bias: torch.Tensor  # [B, D]
    mean: torch.Tensor  # [B, C]
    embedding: torch.Tensor  # [B, D]
    vector: torch.Tensor  # [B, C]
    has_text: torch.Tensor  # [B] 1.0 where the object has a text prompt
    scale_by_relevance: bool = True

    @classmethod
    def from_state(cls, state: TextState, token_dim: int) -> "TextRows":
        row = state.rows(token_dim)
        return cls(has_text=torch.ones(1, device=row["weight"].device),
                   scale_by_relevance=state.mode != "paper_lsq",
                   **{name: value[None] for name, value in row.items()})

    def relevance(self, tokens: torch.Tensor) -> torch.Tensor:
        """[N, C] tokens -> [B, N] relevance in [-1, 1] (0 rows for objects without text)."""
        tokens = tokens.float()
        pred = (tokens[None] - self.mean[:, None]) @ self.weight + self.bias[:, None]
        rel = F.cosine_similarity(pred, self.embedding[:, None], dim=-1)
        return rel * self.has_text[:, None]

    def token_scales(self, relevance: torch.Tensor) -> torch.Tensor:
        """``text_i`` of the router input is ``scale_i * vector`` (rank one per object): the
        scales [B, N], relevance (clip_ridge) or 1 (paper_lsq), 0 for objects without text."""
        scale = relevance if self.scale_by_relevance else torch.ones_like(relevance)
        return scale * self.has_text[:, None]

"""``fastsam2-train-router``: train the paper's router MLP on a DAVIS-layout dataset.

For every annotated frame and object, the frozen SAM 2 encoder gives the top-level tokens; the
router computes the same signals its MLP reads when tracking (MC-dropout uncertainty and W_u
once per frame for all its objects, text relevance when a text per object is given) and the fused
input h_i = [x_i; text_i; U_i]. As when tracking, an object's text map is fitted on its first
annotated frame (its prompt frame) and reused on the later ones. The target of a token is whether
the object (dilated by one token) covers it — the tokens memory attention must keep. Each example
is kept factored (``FusedFactors``): a frame's tokens and uncertainty once, tokens in float16, for
all its objects, and the rank-one text part as a scale per token and a vector — 2 MiB per
annotated frame at 1024 px instead of 12 MiB per frame and object. The MLP is trained with
class-balanced binary cross-entropy; the recall of object tokens within the top-k on held-out
sequences (one in five; frames of one sequence look alike, so a split by frame would be
optimistic) is reported and stored in the file's metadata.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import random
import sys
import warnings
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from .core.config import TrackerConfig
from .core.errors import FastSam2Error, InputError
from .core.router import (FusedFactors, RouterMLP, TokenRouter, block_max, num_kept, router_inputs,
                          save_router)
from .core.text_relevance import TextRows
from .core.weight_files import require_finite
from .eval.cli import IMAGESET_HELP, _names
from .eval.davis_io import VOID_LABEL

#: the image set trained on by default where a dataset has it (DAVIS: ImageSets/2017/train.txt)
TRAINING_SET = "train"


def _grid_target(mask: np.ndarray, grid: Tuple[int, int]) -> torch.Tensor:
    m = torch.from_numpy(mask.astype(np.float32))[None, None]
    return TokenRouter.dilated(block_max(m, grid))[0]  # (the tracker's prior: one token of motion)


@dataclass
class Example:
    """One annotated frame and object: the router input, factored (``tokens`` and the uncertainty
    parts shared with the frame's other objects, tokens in float16), and the target of each
    token."""

    factors: FusedFactors  # one row
    target: torch.Tensor  # [N] 1.0 where the object (dilated by one token) covers the token
    sequence: str

    def features(self) -> torch.Tensor:
        """h [N, 3C], float32, as the tracker feeds its router (up to float16 tokens)."""
        tokens = self.factors.tokens.float()
        return dataclasses.replace(self.factors, tokens=tokens).compose()[0]

    def nbytes(self, counted: set) -> int:
        """Bytes this example adds (tensors shared with other examples counted once, in
        ``counted``)."""
        f = self.factors
        parts = [f.tokens, f.text_scales, f.text_vector, f.uncertainty, f.uncertainty_vector,
                 self.target]
        new = [t for t in parts if id(t) not in counted]
        counted.update(id(t) for t in new)
        return sum(t.numel() * t.element_size() for t in new)


def collect_examples(tracker, dataset, texts: Dict[str, Dict[int, str]], max_frames: Optional[int],
                     log=print) -> List[Example]:
    """An :class:`Example` for every annotated frame and object. A frame's uncertainty and W_u
    are computed once and shared by its objects, as when tracking; its dropout masks are drawn
    for its index in the data set (on the CPU), so the examples do not depend on object ids."""
    model = tracker.model
    router: TokenRouter = tracker.router
    layer = model.memory_attention.layers[0]
    examples: List[Example] = []
    counted: set = set()
    nbytes = 0
    frame_idx = 0  # annotated frames so far: each draws its own masks
    for seq in dataset:
        seq = seq.truncated(max_frames)
        frames = seq.read_frames()
        labels = seq.read_labels(frames[0].shape)
        fitted: Dict[int, object] = {}  # object id -> text map fitted on its first frame
        for name, frame in zip(seq.frame_names, frames):
            if name not in labels:
                continue
            tokens, grid = tracker.frame_tokens(frame)
            with torch.no_grad():
                sig = router.signals(tokens, grid, layer, None, None, frame_idx)
                f = router.fused_factors(sig, rows=1)
            frame_idx += 1
            # the frame's x_i, zero text and U_i parts, for all its objects
            shared = FusedFactors(tokens.detach().to("cpu", torch.float16), f.text_scales.cpu(),
                                  f.text_vector.cpu(), f.uncertainty.cpu(),
                                  f.uncertainty_vector.cpu())
            label = labels[name]
            ids = [int(v) for v in np.unique(label) if v not in (0, VOID_LABEL)]  # void: no object
            for obj_id in ids:
                text = texts.get(seq.name, {}).get(obj_id)
                if text and obj_id not in fitted:
                    fitted[obj_id] = tracker.text_state(text)
                text_state = fitted.get(obj_id) if text else None
                factors = shared
                if text_state:
                    with torch.no_grad():
                        texted = router.with_text(sig, TextRows.from_state(text_state,
                                                                           model.hidden_dim))
                    factors = dataclasses.replace(shared, text_scales=texted.text_scales.cpu(),
                                                  text_vector=texted.text_vector.cpu())
                examples.append(Example(factors, _grid_target(label == obj_id, grid), seq.name))
                nbytes += examples[-1].nbytes(counted)
        log(f"{seq.name}: {len(examples)} examples so far ({nbytes / 2**20:.0f} MiB)")
    if not examples:
        raise InputError("no annotated object found in the dataset")
    return examples


def texts_of_trained_sequences(texts: Dict[str, Dict[int, str]],
                               trained: List[str]) -> Dict[str, Dict[int, str]]:
    """The texts of the sequences trained on. A text file written for fastsam2-eval also holds
    the val sequences' texts: they are set aside (said on stderr), and a file none of whose texts
    is trained on is refused, since the router would be recorded as trained with texts."""
    kept = {seq: objs for seq, objs in texts.items() if seq in trained and objs}
    left_out = sorted(seq for seq, objs in texts.items() if objs and seq not in kept)
    named = ", ".join(left_out[:5]) + (" ..." if len(left_out) > 5 else "")
    if left_out and not kept:
        raise InputError(f"--text-prompts has texts only for sequences that are not trained on "
                         f"({named}); give the training sequences' texts, or none")
    if left_out:
        print(f"fastsam2-train-router: texts of {len(left_out)} sequence(s) not trained on are not "
              f"used: {named}", file=sys.stderr)
    return kept


def check_text_objects(dataset, texts: Dict[str, Dict[int, str]], max_frames: Optional[int]) -> None:
    """A text for an object that a sequence's annotations (those used) lack is refused before
    any frame is encoded, as fastsam2-eval refuses it: it would train nothing, and the file would
    say it saw texts. Reads the label maps of the sequences that have texts."""
    for seq in dataset:
        wanted = texts.get(seq.name)
        if not wanted:
            continue
        present = set()
        for label in seq.truncated(max_frames).read_labels().values():
            present.update(int(v) for v in np.unique(label))
        unknown = sorted(set(wanted) - (present - {0, VOID_LABEL}))
        if unknown:
            frames = f" (its first {max_frames} frames)" if max_frames else ""
            raise InputError(f"sequence {seq.name!r}: text prompts for object id(s) {unknown} that "
                             f"its annotations{frames} do not contain")


def split_by_sequence(examples, rng: random.Random) -> Tuple[List[int], List[int], str]:
    """Held-out example indices, training ones, and what was held out: one sequence in five (at
    least one) when there are several, else one example in five."""
    sequences = sorted({ex.sequence for ex in examples})
    if len(sequences) > 1:
        rng.shuffle(sequences)
        held = set(sequences[:max(1, len(sequences) // 5)])
        val = [i for i, ex in enumerate(examples) if ex.sequence in held]
        return val, [i for i, ex in enumerate(examples) if ex.sequence not in held], "sequences"
    order = list(range(len(examples)))
    rng.shuffle(order)
    n_val = max(1, len(order) // 5) if len(order) > 1 else 0
    return order[:n_val], order[n_val:] or order, "examples (one sequence only)"


def train(examples, token_dim: int, epochs: int, lr: float, seed: int, keep_ratio: float,
          log=print) -> Tuple[RouterMLP, dict]:
    rng = random.Random(seed)
    torch.manual_seed(seed)
    val, trn, held_out = split_by_sequence(examples, rng)
    mlp = RouterMLP(token_dim)
    opt = torch.optim.Adam(mlp.parameters(), lr=lr)
    pos = torch.cat([examples[i].target for i in trn]).mean().clamp(1e-3, 1 - 1e-3)
    pos_weight = (1 - pos) / pos

    def loss_of(idx):
        ex = examples[idx]
        return F.binary_cross_entropy_with_logits(mlp(ex.features()), ex.target, pos_weight=pos_weight)

    def recall(idxs):
        hits = total = 0
        with torch.no_grad():
            for i in idxs:
                target = examples[i].target
                k = num_kept(target.numel(), keep_ratio)
                top = torch.topk(mlp(examples[i].features()), k).indices
                hits += float(target[top].sum())
                total += float(target.sum())
        return hits / total if total else float("nan")

    with torch.no_grad():
        first_loss = float(np.mean([float(loss_of(i)) for i in trn]))
    history = [first_loss]
    for epoch in range(epochs):
        rng.shuffle(trn)
        losses = []
        for i in trn:
            opt.zero_grad()
            loss = loss_of(i)
            if not torch.isfinite(loss):  # diverged (e.g. a too large --lr): no file is written
                raise InputError(f"training diverged in epoch {epoch + 1} (loss {loss.item()}); "
                                 "try a smaller --lr")
            loss.backward()
            opt.step()
            losses.append(loss.item())
        history.append(float(np.mean(losses)))
        log(f"epoch {epoch + 1}/{epochs}: train loss {history[-1]:.4f}")
    require_finite(mlp.state_dict(), "(trained in this run)", "router weights")
    metrics = {"train_loss_history": history, "train_examples": len(trn), "val_examples": len(val),
               "val_held_out": held_out,
               f"train_recall_at_{keep_ratio:g}": recall(trn),
               f"val_recall_at_{keep_ratio:g}": recall(val) if val else None,
               "positive_fraction": float(pos)}
    return mlp.eval(), metrics


def default_training_set(root: str, sequences) -> Optional[str]:
    """``TRAINING_SET`` when the dataset has that image set and no sequences were named: a router
    trained on the sequences it is then evaluated on would report a recall it does not have."""
    from .eval.davis_io import DatasetError, imageset_file

    if sequences is not None:  # an empty --sequences is refused as such (select_sequences)
        return None
    try:
        imageset_file(root, TRAINING_SET)
    except (DatasetError, OSError):
        return None
    return TRAINING_SET


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="fastsam2-train-router", description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="DAVIS-layout dataset (JPEGImages + Annotations)")
    p.add_argument("--out", required=True, help="router weights file to write (.pt)")
    p.add_argument("--model", default="tiny")
    weights = p.add_mutually_exclusive_group(required=True)
    weights.add_argument("--checkpoint", help="official SAM 2 checkpoint")
    weights.add_argument("--random-weights", action="store_true", help="smoke runs only")
    p.add_argument("--image-size", type=int, default=1024)
    p.add_argument("--device", default="auto")
    p.add_argument("--resolution", help="resolution folder of --data (default 480p where it has "
                   "resolution folders)")
    p.add_argument("--imageset", help=IMAGESET_HELP + f"; default {TRAINING_SET!r} where the dataset "
                   "has that image set (a DAVIS download keeps train and val side by side), else "
                   "every sequence")
    p.add_argument("--sequences", type=_names, help="comma-separated sequences to train on")
    p.add_argument("--max-frames", type=int, default=None, help="use only the first N frames of each sequence")
    p.add_argument("--text-prompts", help='JSON {"sequence": {"object id": "text"}} (as fastsam2-eval run)')
    p.add_argument("--clip-model", default=TrackerConfig.clip_model,
                   help="open_clip architecture of --clip-weights (the tracker's clip_model, "
                   "recorded in the file; default %(default)s)")
    p.add_argument("--clip-weights", default="")
    p.add_argument("--text-mode", default="clip_ridge", choices=["clip_ridge", "paper_lsq"])
    p.add_argument("--mc-passes", type=int, default=5)
    p.add_argument("--keep-ratio", type=float, default=0.3, help="ratio the recall is reported at, (0, 1]")
    p.add_argument("--epochs", type=int, default=10, help=">= 1")
    p.add_argument("--lr", type=float, default=1e-3, help="> 0")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore", message=".*RANDOM weights.*")
    try:
        from .core.tracker import StreamingTracker, check_tracker_files
        from .eval.cli import check_max_frames, check_output_file, check_text_sequences, load_text_prompts
        from .eval.davis_io import DavisDataset

        check_output_file(args.out, "--out", makes_folders=False)  # before all the work
        check_max_frames(args.max_frames)
        if args.epochs < 1:
            raise InputError("--epochs must be >= 1")
        if not (math.isfinite(args.lr) and args.lr > 0):
            raise InputError(f"--lr must be a finite number > 0, got {args.lr}")
        cfg = TrackerConfig(model_cfg=args.model, checkpoint=args.checkpoint or "",
                            allow_random_weights=args.random_weights, device=args.device,
                            image_size=args.image_size, mc_passes=args.mc_passes,
                            text_mode=args.text_mode, clip_model=args.clip_model,
                            clip_weights=args.clip_weights,
                            keep_ratio=args.keep_ratio, seed=args.seed)
        texts = load_text_prompts(args.text_prompts, cfg.max_text_length,
                                  cfg.text_encoder)  # as fastsam2-eval reads them
        dataset = DavisDataset(args.data, args.resolution, sequences=args.sequences,
                               imageset=args.imageset or default_training_set(args.data, args.sequences))
        if dataset.imageset_path is None and args.sequences is None:
            print(f"fastsam2-train-router: {args.data} has no {TRAINING_SET!r} image set: training on "
                  f"every sequence ({len(dataset.sequence_names)}); give --imageset or --sequences "
                  "to keep the sequences you evaluate on out", file=sys.stderr)
        check_text_sequences(texts, dataset.available_sequences(), f"dataset {args.data}")
        texts = texts_of_trained_sequences(texts, dataset.sequence_names)
        check_tracker_files(cfg, with_texts=any(texts.values()))  # before any label or frame is read
        check_text_objects(dataset, texts, args.max_frames)
        tracker = StreamingTracker(cfg)
        examples = collect_examples(tracker, dataset, texts, args.max_frames)
        mlp, metrics = train(examples, tracker.model.hidden_dim, args.epochs, args.lr, args.seed,
                             args.keep_ratio)
        # compared when loaded; every text left was used (unknown sequences and objects are
        # refused, texts of sequences not trained on set aside)
        inputs = router_inputs(cfg.model_cfg, cfg.mc_passes, cfg.mc_dropout,
                               args.text_mode if any(texts.values()) else "none", cfg.clip_model,
                               cfg.image_size)
        meta = {"dataset": str(args.data), "sequences": list(dataset.sequence_names),
                "imageset": str(dataset.imageset_path) if dataset.imageset_path else None,
                **inputs,
                "mc_passes": args.mc_passes, "mc_dropout": cfg.mc_dropout,
                "random_weights": bool(args.random_weights), "epochs": args.epochs, **metrics}
        save_router(mlp, args.out, meta)
    except (FastSam2Error, ValueError) as exc:
        print(f"fastsam2-train-router: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({k: v for k, v in meta.items() if k != "train_loss_history"}, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

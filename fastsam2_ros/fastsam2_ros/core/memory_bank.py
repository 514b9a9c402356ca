"""The streaming tracker's memory bank: preallocated, static-shape, on the model's device.

It is the one place that knows SAM 2's memory rule (``SAM2Base._prepare_memory_conditioned_features``
for forward tracking with ``memory_temporal_stride_for_eval == 1``): frame t reads

* the conditioning (prompted) frames of the object before t that it reads (at most
  ``max_cond_frames``, see below), oldest first, temporal slot ``num_maskmem-1`` (a frame becomes
  one when tracking moves on from it, as in sam2's ``propagate_in_video_preflight``: further
  prompts on frame t do not read the first one's memory);
* the ``num_maskmem - 1`` frames before t that are not read as conditioning frames, oldest first
  — a prompted frame left out of the conditioning read is read here, at its own temporal slot,
  as sam2 reads an "unselected" conditioning frame;
* object pointers of the conditioning frames read, then of frames t-1, t-2, ... down
  to ``min(num_frames, max_obj_ptrs) - 1`` frames back (a prompted frame left out included),
  with their true temporal offsets.

Storage per object row (rows are the tracked objects in insertion order):

* ``max_cond_frames`` + 1 conditioning slots: a frame reads at most ``max_cond_frames`` of them
  (the first prompt, pinned, and the latest others; with 1, the latest), and the spare one lets a
  prompt on frame t be stored without overwriting a frame that the next click on t still reads
  (the one replaced is the one no frame from t on reads as a conditioning frame); a ring of
  ``num_maskmem`` memory slots and a ring of ``max_obj_ptrs`` pointer slots (one more than read,
  likewise for the current frame's entry); a prompt is written to its conditioning slot and to
  the rings, so a prompted frame that is not read as a conditioning frame (or whose slot was
  replaced) is still there as a recent memory and pointer while it is recent — which copy a frame
  reads is the layout's choice, and the read path stays the same static gather;
* each memory slot holds ``k`` retained tokens (bf16 features, grid indices, a per-token validity
  flag) — ``k`` follows the keep ratio, so nothing grows with the stream;
* the latest low-res mask logits (router prior, refinement input) and the object's text signal.

Every tensor is changed under ``torch.inference_mode`` (the tracker runs in it; tensors made there
can only be changed there). The host keeps which frame sits in which slot and turns that into a :class:`BankLayout` per call
(a few small index/flag tensors). Slots that are empty for some objects are padded and masked in
attention; when nothing is padded the layout says so and attention runs unmasked.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch

NO_FRAME = -1
#: names and dtypes of the per-call layout tensors (integers are packed into one int64 buffer)
_INT_FIELDS = ("cond_order", "cond_valid", "ring_order", "ring_valid", "ptr_order", "ptr_valid",
               "slot_tpos", "write_ring", "write_ptr")


@dataclass(frozen=True)
class LayoutShape:
    """Static sizes of one layout: what a captured step is specialised on."""

    rows: int  # objects read/written together (batch)
    n_cond: int  # conditioning slots read per object (the batch's maximum; padded)
    ring: int  # memory frames read besides conditioning frames (num_maskmem - 1)
    ptrs: int  # pointer frames read besides conditioning frames (max_obj_ptrs - 1)

    def int_sizes(self) -> Dict[str, int]:
        b, n, r, p = self.rows, self.n_cond, self.ring, self.ptrs
        return {"cond_order": b * n, "cond_valid": b * n, "ring_order": r, "ring_valid": b * r,
                "ptr_order": p, "ptr_valid": b * (n + p), "slot_tpos": n + r,
                "write_ring": 1, "write_ptr": 1}


@dataclass
class BankLayout:
    """What one frame reads from and writes to the bank for some rows (``MemoryBank.layout``).

    ``ints``/``floats`` are host tensors (copied to the device by the step runner); ``masked`` is
    True when some read slot or token is padding, so attention must take a key mask.
    """

    shape: LayoutShape
    masked: bool
    ints: torch.Tensor  # int64, the _INT_FIELDS packed in order
    floats: torch.Tensor  # float32 [rows * (n_cond + ptrs)]: pointer offsets / (max_ptrs - 1)

    def inputs(self) -> Dict[str, torch.Tensor]:
        return {"layout_ints": self.ints, "layout_floats": self.floats}


def unpack_layout(shape: LayoutShape, ints: torch.Tensor, floats: torch.Tensor) -> Dict[str, torch.Tensor]:
    """Named views of a packed layout (device tensors), shaped for the memory read."""
    b, n, r, p = shape.rows, shape.n_cond, shape.ring, shape.ptrs
    out, start, sizes = {}, 0, shape.int_sizes()
    for name in _INT_FIELDS:
        size = sizes[name]
        out[name] = ints[start:start + size]
        start += size
    out["cond_order"] = out["cond_order"].view(b, n)
    out["cond_valid"] = out["cond_valid"].view(b, n).bool()
    out["ring_valid"] = out["ring_valid"].view(b, r).bool()
    out["ptr_valid"] = out["ptr_valid"].view(b, n + p).bool()
    out["ptr_pos"] = floats.view(b, n + p)
    return out


def token_grid(indices: np.ndarray, grid: int) -> np.ndarray:
    """bool [grid, grid] with the tokens at the flat grid ``indices`` set: a kept-token map."""
    kept = np.zeros(grid * grid, dtype=bool)
    kept[indices] = True
    return kept.reshape(grid, grid)


class MemoryBank:
    """Preallocated per-object memory of a streaming SAM 2 tracker (see module docstring)."""

    def __init__(self, model, max_objects: int, max_cond_frames: int, tokens_per_frame: int,
                 device: torch.device, num_frames: int) -> None:
        if model.memory_temporal_stride_for_eval != 1:
            raise ValueError("the streaming memory bank reads consecutive frames "
                             "(memory_temporal_stride_for_eval must be 1)")
        self.device = device
        self.num_maskmem = int(model.num_maskmem)
        self.max_obj_ptrs = int(model.max_obj_ptrs_in_encoder)
        self.ring_read = self.num_maskmem - 1
        self.ptr_read = self.max_obj_ptrs - 1
        self.ring_len = self.ring_read + 1
        self.ptr_len = self.ptr_read + 1
        self.capacity = int(max_objects)
        self.max_cond = int(max_cond_frames)  # conditioning frames a frame reads
        self.cond_slots = self.max_cond + 1  # and the spare (see the module docstring)
        self.grid = model.image_size // 16
        self.mem_dim = int(model.mem_dim)
        self.hidden_dim = int(model.hidden_dim)
        self.mask_side = model.image_size // 4
        self.rows = 0
        self.num_frames = int(num_frames)
        self.dense_pos: Optional[torch.Tensor] = None  # [N, C_mem], the constant memory pos-enc
        self.text: Dict[str, torch.Tensor] = {}  # per-row text signal (allocated on first use)
        self._allocate_tokens(int(tokens_per_frame))
        o, c = self.capacity, self.hidden_dim
        self.cond_ptr = torch.zeros(o, self.cond_slots, c, device=device)
        self.ptr_ring = torch.zeros(o, self.ptr_len, c, device=device)
        self.prev_logits = torch.zeros(o, 1, self.mask_side, self.mask_side, device=device)
        self.presence = torch.zeros(o, device=device)  # latest object-presence logit
        self.clear()

    # ------------------------------------------------------------------ storage
    def _allocate_tokens(self, k: int) -> None:
        o, cm, dev = self.capacity, self.mem_dim, self.device
        self.k = k
        for prefix, slots in (("cond", self.cond_slots), ("ring", self.ring_len)):
            setattr(self, f"{prefix}_feat", torch.zeros(o, slots, k, cm, dtype=torch.bfloat16, device=dev))
            setattr(self, f"{prefix}_idx", torch.zeros(o, slots, k, dtype=torch.long, device=dev))
            setattr(self, f"{prefix}_tok_valid", torch.ones(o, slots, k, dtype=torch.bool, device=dev))
            setattr(self, f"{prefix}_score", torch.zeros(o, slots, k, dtype=torch.float16, device=dev))

    def _token_tensors(self, prefix: str) -> List[torch.Tensor]:
        return [getattr(self, f"{prefix}_{name}") for name in ("feat", "idx", "tok_valid", "score")]

    def _row_tensors(self) -> List[torch.Tensor]:
        """Every tensor indexed by object row first."""
        return (self._token_tensors("cond") + self._token_tensors("ring")
                + [self.cond_ptr, self.ptr_ring, self.prev_logits, self.presence]
                + list(self.text.values()))

    @torch.inference_mode()
    def clear(self) -> None:
        """Forget every object (tensors stay allocated, so captured steps stay valid)."""
        self.rows = 0
        self.cond_frames = np.full((self.capacity, self.cond_slots), NO_FRAME, dtype=np.int64)
        self.ring_frames = np.full((self.capacity, self.ring_len), NO_FRAME, dtype=np.int64)
        self.ptr_frames = np.full((self.capacity, self.ptr_len), NO_FRAME, dtype=np.int64)
        # valid tokens per slot: k when written, fewer once k grew (padded with masked tokens)
        self.cond_tokens = np.zeros((self.capacity, self.cond_slots), dtype=np.int64)
        self.ring_tokens = np.zeros((self.capacity, self.ring_len), dtype=np.int64)
        if self.text:
            self.text["has_text"].zero_()

    def set_num_frames(self, num_frames: int) -> None:
        self.num_frames = int(num_frames)

    @property
    def ptrs_in_attention(self) -> int:
        """SAM 2 reads min(num_frames, max_obj_ptrs) pointers (a stream: max_obj_ptrs)."""
        return min(self.num_frames, self.max_obj_ptrs)

    @torch.inference_mode()
    def resize_tokens(self, k: int) -> bool:
        """Change the tokens kept per memory frame (a new keep ratio). Stored frames keep their
        best-scored tokens (fewer) or are padded with masked tokens (more). True if changed."""
        if k == self.k:
            return False
        old = {prefix: self._token_tensors(prefix) for prefix in ("cond", "ring")}
        old_k = self.k
        self._allocate_tokens(k)
        keep = min(k, old_k)
        for prefix, (feat, idx, valid, score) in old.items():
            order = torch.argsort(score.float() + valid.float() * 1e4, dim=-1, descending=True)[..., :keep]
            new_feat, new_idx, new_valid, new_score = self._token_tensors(prefix)
            new_feat[..., :keep, :] = torch.gather(feat, 2, order[..., None].expand(-1, -1, -1, feat.shape[-1]))
            new_idx[..., :keep] = torch.gather(idx, 2, order)
            new_valid[..., :keep] = torch.gather(valid, 2, order)
            new_score[..., :keep] = torch.gather(score, 2, order)
            new_valid[..., keep:] = False
            counts = getattr(self, f"{prefix}_tokens")
            np.minimum(counts, k, out=counts)
        return True

    def nbytes(self, rows: Optional[int] = None) -> int:
        """Bytes held for ``rows`` objects (default: the tracked ones)."""
        rows = min(self.rows if rows is None else rows, self.capacity)
        # (per row from the shapes: a slice per tensor cost more than the sum, on every frame)
        return rows * sum(t.numel() // t.shape[0] * t.element_size() for t in self._row_tensors())

    def _stored(self, row: int) -> Dict[int, int]:
        """Frame -> valid tokens of the memory frames held for ``row`` (conditioning + ring): a
        prompted frame's ring copy is the same frame's memory, counted once."""
        per_frame: Dict[int, int] = {}
        for frames, counts in ((self.cond_frames[row], self.cond_tokens[row]),
                               (self.ring_frames[row], self.ring_tokens[row])):
            for f, n in zip(frames.tolist(), counts.tolist()):  # (Python ints: no numpy scalars)
                if f != NO_FRAME:
                    per_frame[f] = max(per_frame.get(f, 0), n)
        return per_frame

    def stored(self, rows: Optional[int] = None) -> Tuple[int, int]:
        """(distinct memory frames, their valid tokens) held for the tracked objects (see
        :meth:`_stored`; a frame stored before the keep ratio grew holds its old k, not the new
        one), in one pass: the tracker reports both on every frame."""
        rows = self.rows if rows is None else rows
        held = [self._stored(r) for r in range(rows)]
        return sum(map(len, held)), sum(sum(h.values()) for h in held)

    def frame_token_grids(self, frame_idx: int, rows: int) -> Dict[int, np.ndarray]:
        """row -> bool [grid, grid]: the top-level tokens stored for frame ``frame_idx`` in the
        row's ring entry (a tracking step's memory, or the prompt's that replaced it), for the
        first ``rows`` rows that hold that frame pruned (a dense memory, every token, is left out;
        one stored before the keep ratio grew keeps its tokens)."""
        slot = int(frame_idx) % self.ring_len
        held = [r for r in range(rows) if self.ring_frames[r, slot] == frame_idx
                and self.ring_tokens[r, slot] < self.grid * self.grid]
        if not held:
            return {}
        idx = self.ring_idx[held, slot].cpu().numpy()
        valid = self.ring_tok_valid[held, slot].cpu().numpy()
        return {r: token_grid(idx[i][valid[i]], self.grid) for i, r in enumerate(held)}

    @contextlib.contextmanager
    def preserved(self) -> Iterator[None]:
        """Restore every tensor afterwards (warm-up runs before a CUDA-graph capture write to it)."""
        tensors = self._row_tensors()
        with torch.inference_mode():
            saved = [t.clone() for t in tensors]
        try:
            yield
        finally:
            with torch.inference_mode():
                for t, s in zip(tensors, saved):
                    t.copy_(s)

    # ------------------------------------------------------------------ objects
    @torch.inference_mode()
    def add_row(self) -> int:
        if self.rows >= self.capacity:
            raise ValueError(f"memory bank is full ({self.capacity} objects)")
        row = self.rows
        self.rows += 1
        self._clear_row(row)
        return row

    def _clear_row(self, row: int) -> None:
        self.cond_frames[row] = NO_FRAME
        self.ring_frames[row] = NO_FRAME
        self.ptr_frames[row] = NO_FRAME
        self.cond_tokens[row] = 0
        self.ring_tokens[row] = 0
        if self.text:
            self.text["has_text"][row] = 0.0

    @torch.inference_mode()
    def remove_row(self, row: int) -> None:
        """Drop one object; later rows move up by one (rows stay contiguous for batching)."""
        last = self.rows - 1
        if row < last:
            for t in self._row_tensors():
                t[row:last] = t[row + 1:last + 1].clone()
            for arr in (self.cond_frames, self.ring_frames, self.ptr_frames, self.cond_tokens,
                        self.ring_tokens):
                arr[row:last] = arr[row + 1:last + 1].copy()
        self._clear_row(last)
        self.rows = last

    @torch.inference_mode()
    def set_text(self, row: int, **fields: torch.Tensor) -> bool:
        """Store one object's text signal (``TextState.rows``: weight [C, D], bias [D], mean [C],
        embedding [D], vector [C]). The buffers are allocated on first use; the return value
        says whether that happened (captured steps do not know them yet)."""
        allocate = not self.text or any(self.text[k].shape[1:] != v.shape for k, v in fields.items())
        if allocate:
            self.text = {k: torch.zeros(self.capacity, *v.shape, device=self.device)
                         for k, v in fields.items()}
            self.text["has_text"] = torch.zeros(self.capacity, device=self.device)
        for name, value in fields.items():
            self.text[name][row].copy_(value.to(self.device, torch.float32))
        self.text["has_text"][row] = 1.0
        return allocate

    @torch.inference_mode()
    def clear_text(self, row: int) -> None:
        if self.text:
            self.text["has_text"][row] = 0.0

    # ------------------------------------------------------------------ the slot rule
    def layout(self, frame_idx: int, rows: slice, compact: bool = False) -> BankLayout:
        """What frame ``frame_idx`` reads (and where it writes) for the objects in ``rows``.

        Static by default: every ring and pointer slot is read, empty ones masked (one captured
        graph serves every frame). ``compact`` (eager steps) leaves out the slots no object in
        ``rows`` reads, so the first frames cost what they cost SAM 2."""
        t = int(frame_idx)
        row_ids = range(rows.start, rows.stop)
        # a prompt on frame t does not read what an earlier prompt on t stored: sam2 makes a
        # prompted frame a conditioning memory only when it propagates from it, so every click on
        # a frame sees the same memory (tracking steps never find t stored)
        readable = {r: self._cond_read(r, before=t) for r in row_ids}
        n_cond = max(1, max(len(filled) for filled in readable.values()))
        t_diff_max = max(1, self.ptrs_in_attention - 1)
        ring_expected = [t - self.ring_read + j for j in range(self.ring_read)]  # oldest first
        ptr_expected = [t - d for d in range(1, self.ptr_read + 1)]  # newest first
        cond_order, cond_valid, cond_ptr_valid, cond_offsets = [], [], [], []
        ring_valid, ptr_valid = [], []
        padded = False
        in_attention = self.ptrs_in_attention
        for r in row_ids:
            filled = readable[r]
            read_slots = {s for _, s in filled}
            read_frames = {f for f, _ in filled}
            # the row's host arrays as Python lists: this runs before every frame's step, and
            # numpy scalars cost more than the rule they feed
            cond_tokens, ring_tokens = self.cond_tokens[r].tolist(), self.ring_tokens[r].tolist()
            ring_frames, ptr_frames = self.ring_frames[r].tolist(), self.ptr_frames[r].tolist()
            unread = [s for s in range(len(cond_tokens)) if s not in read_slots]
            pad = n_cond - len(filled)
            cond_order.extend([s for _, s in filled] + unread[:pad])
            cond_valid.extend([True] * len(filled) + [False] * pad)
            padded |= any(cond_tokens[s] < self.k for _, s in filled)
            cond_ptr_valid.append([True] * len(filled) + [False] * pad)  # and their pointers
            cond_offsets.append([t - f for f, _ in filled] + [0] * pad)
            ring_valid.append([self._recent(ring_frames, f, read_frames) for f in ring_expected])
            padded |= any(ring_tokens[f % self.ring_len] < self.k
                          for f, ok in zip(ring_expected, ring_valid[-1]) if ok)
            ptr_valid.append([d < in_attention and self._recent(ptr_frames, f, read_frames)
                              for d, f in enumerate(ptr_expected, start=1)])
        ring_keep = [j for j in range(self.ring_read) if not compact or any(v[j] for v in ring_valid)]
        ptr_keep = [j for j in range(self.ptr_read) if not compact or any(v[j] for v in ptr_valid)]
        ring_valid = [[v[j] for j in ring_keep] for v in ring_valid]
        ptr_valid = [[v[j] for j in ptr_keep] for v in ptr_valid]
        ring_pos = [ring_expected[j] % self.ring_len for j in ring_keep]
        ptr_pos_ring = [ptr_expected[j] % self.ptr_len for j in ptr_keep]
        shape = LayoutShape(len(row_ids), n_cond, len(ring_keep), len(ptr_keep))
        all_ptr_valid = [c + p for c, p in zip(cond_ptr_valid, ptr_valid)]
        ptr_offsets = [c + [ptr_keep_j + 1 for ptr_keep_j in ptr_keep] for c in cond_offsets]
        slot_tpos = [self.num_maskmem - 1] * n_cond + [self.ring_read - 1 - j for j in ring_keep]
        flat = lambda rows_: [int(v) for row in rows_ for v in row]  # noqa: E731
        ints = torch.tensor(
            cond_order + [int(v) for v in cond_valid] + ring_pos + flat(ring_valid)
            + ptr_pos_ring + flat(all_ptr_valid) + slot_tpos
            + [t % self.ring_len, t % self.ptr_len], dtype=torch.int64)
        # as SAM 2 computes it: integer offsets divided by (max pointers - 1), in float32
        floats = torch.tensor(flat(ptr_offsets), dtype=torch.int64) / t_diff_max
        masked = padded or not (all(cond_valid) and all(map(all, ring_valid))
                                and all(map(all, all_ptr_valid)))
        return BankLayout(shape=shape, masked=masked, ints=ints, floats=floats.to(torch.float32))

    def reads_full(self, layout: BankLayout) -> bool:
        """Whether a frame's ``layout`` reads a full bank: no empty or padded slot (not
        ``masked``) and, for a compact layout, no empty slot left out — what the static layout of
        the same frame says. False while the bank fills after a prompt, while objects differ in
        age or in their number of conditioning frames (a refinement click on one of several
        objects: the others are padded until they hold as many, at most ``max_cond``), and after a
        keep ratio grew (padded tokens) until the object is prompted again."""
        return not layout.masked and (layout.shape.ring, layout.shape.ptrs) == (self.ring_read,
                                                                                 self.ptr_read)

    @staticmethod
    def _recent(ring_frames: Sequence[int], frame: int, cond_read: set) -> bool:
        """Whether a frame reads ``frame``'s ring entry (memory or pointer): it is stored there and
        not read as a conditioning frame — sam2 drops a conditioning frame from the recent ones,
        but reads one left out of its conditioning read ("unselected") as a recent frame."""
        return (frame >= 0 and ring_frames[frame % len(ring_frames)] == frame
                and frame not in cond_read)

    def commit_tracked(self, frame_idx: int, rows: slice) -> None:
        """Host side of a tracking step: the step wrote frame ``frame_idx`` into the rings."""
        self.ring_frames[rows, frame_idx % self.ring_len] = frame_idx
        self.ring_tokens[rows, frame_idx % self.ring_len] = self.k
        self.ptr_frames[rows, frame_idx % self.ptr_len] = frame_idx

    def _cond_read(self, row: int, before: int) -> List[tuple]:
        """(frame, slot) of the conditioning frames a frame ``before`` reads, oldest first: all
        stored ones before it, at most ``max_cond``: the first prompt and the latest others (with
        ``max_cond`` 1, the latest)."""
        stored = sorted((f, s) for s, f in enumerate(self.cond_frames[row].tolist())
                        if f != NO_FRAME and f < before)
        if len(stored) <= self.max_cond:
            return stored
        latest = stored[len(stored) - self.max_cond + 1:] if self.max_cond > 1 else stored[-1:]
        return (stored[:1] if self.max_cond > 1 else []) + latest

    def cond_slot_for(self, row: int, frame_idx: int) -> int:
        """The conditioning slot a prompt on ``frame_idx`` writes: its own, a free one, or (all
        full, all before ``frame_idx``) the one that frame does not read — so the frame's later
        clicks read what its first one read, and no frame after it reads the one replaced as a
        conditioning frame (its copy in the rings stays a recent memory while it is recent)."""
        frames = self.cond_frames[row]
        hit = np.flatnonzero(frames == frame_idx)
        if hit.size:
            return int(hit[0])
        free = np.flatnonzero(frames == NO_FRAME)
        if free.size:
            return int(free[0])
        read = {s for _, s in self._cond_read(row, before=frame_idx)}
        return min((int(f), s) for s, f in enumerate(frames) if s not in read)[1]

    @torch.inference_mode()
    def write_prompt(self, row: int, frame_idx: int, feats: torch.Tensor, idx: torch.Tensor,
                     score: torch.Tensor, obj_ptr: torch.Tensor, low_res: torch.Tensor,
                     presence: torch.Tensor) -> None:
        """Store a prompted frame as a conditioning frame of ``row`` (eager, outside any graph):
        feats [k, C_mem], idx/score [k], obj_ptr [C], low_res [1, h, w], presence logit [1].
        It replaces the frame's tracked memory and pointer in the rings too: a later frame that
        does not read it as a conditioning frame reads it there while it is recent, as sam2 does
        (``layout`` picks the copy)."""
        slot = self.cond_slot_for(row, frame_idx)
        ring, ptr = frame_idx % self.ring_len, frame_idx % self.ptr_len
        for prefix, s in (("cond", slot), ("ring", ring)):
            getattr(self, f"{prefix}_feat")[row, s] = feats.to(torch.bfloat16)
            getattr(self, f"{prefix}_idx")[row, s] = idx
            getattr(self, f"{prefix}_score")[row, s] = score.to(torch.float16)
            getattr(self, f"{prefix}_tok_valid")[row, s] = True
        self.cond_ptr[row, slot] = obj_ptr.float()
        self.ptr_ring[row, ptr] = obj_ptr.float()
        self.prev_logits[row] = low_res.float()
        self.presence[row] = presence.float().reshape(())
        self.cond_frames[row, slot] = frame_idx
        self.cond_tokens[row, slot] = self.k
        self.ring_frames[row, ring] = frame_idx
        self.ring_tokens[row, ring] = self.k
        self.ptr_frames[row, ptr] = frame_idx

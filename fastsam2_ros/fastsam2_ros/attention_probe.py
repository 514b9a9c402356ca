"""Memory attention's attention kernel at the tracker's shapes, alone: a diagnostic for a GPU lease.

On the H200 (torch 2.11) the memory attention's kernel time grew linearly with the keep ratio
(0.94, 1.66, 2.37 and 4.16 ms at keep 0.1, 0.3, 0.5 and 1.0), not with its FLOPs. This probe
showed why: for these one-head shapes sdpa picked its cuDNN kernel, and the flash kernel ran the
same attention 1.3-3x faster at batch 1 (slower at batch 4 with keep >= 0.5): the tracker's
``attention_backend: flash`` (``core.pruned_attention.sdpa_preference``).

This module times, for the cross-attention and self-attention shapes of each keep ratio and for
one and four objects: torch's ``scaled_dot_product_attention`` as torch picks its kernel, and
each kernel alone where it takes the shape, with its largest difference from torch's pick.
``python -m fastsam2_ros.attention_probe --json out.json`` on a GPU; ``--device cpu --small`` is a
dry run (what the tests run).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch.nn.attention import sdpa_kernel

from .core.pruned_attention import SDPA_KERNELS

#: SAM 2 tiny at 1024 px: a 64x64 grid, 7 memory frames, 16 object pointers of 4 tokens each;
#: one head of 256 channels (memory attention's internal dim).
GRID_TOKENS = 64 * 64
MEMORY_FRAMES = 7
POINTER_TOKENS = 16 * 4
HEAD_DIM = 256
KEEP_RATIOS = (1.0, 0.5, 0.3, 0.1)


def attention_shapes(grid_tokens: int = GRID_TOKENS, keeps=KEEP_RATIOS) -> List[Tuple[str, int, int]]:
    """(name, queries, keys) of memory attention's two attentions per keep ratio."""
    shapes = []
    for keep in keeps:
        k = max(1, int(round(grid_tokens * keep)))
        shapes.append((f"cross@{keep}", k, MEMORY_FRAMES * k + POINTER_TOKENS))
        shapes.append((f"self@{keep}", k, k))
    return shapes


def _timed(fn: Callable[[], torch.Tensor], device: torch.device, repeats: int) -> float:
    """Median ms of ``fn`` after two warm-up calls (CUDA events on a GPU)."""
    for _ in range(2):
        fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return sorted(times)[len(times) // 2]


def probe(device: torch.device, dtype: torch.dtype, shapes, batches=(1, 4), repeats: int = 20,
          seed: int = 0) -> List[dict]:
    """One row per (shape, batch): ms of sdpa as torch picks its kernel ("auto") and of each
    kernel alone where it takes the input (None where not), with each kernel's max |difference|
    from auto relative to auto's max |value|."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    rows = []
    for name, queries, keys in shapes:
        for batch in batches:
            q, k, v = (torch.randn(batch, 1, n, HEAD_DIM, generator=gen).to(device, dtype)
                       for n in (queries, keys, keys))
            with torch.inference_mode():
                want = F.scaled_dot_product_attention(q, k, v)
                scale = float(want.abs().max()) or 1.0
                row = {"shape": name, "batch": batch, "queries": queries, "keys": keys,
                       "sdpa_ms": _timed(lambda: F.scaled_dot_product_attention(q, k, v), device, repeats)}
                for backend, kernel in SDPA_KERNELS.items():
                    try:
                        with sdpa_kernel([kernel]):
                            got = F.scaled_dot_product_attention(q, k, v)
                            row[f"{backend}_ms"] = _timed(
                                lambda: F.scaled_dot_product_attention(q, k, v), device, repeats)
                        row[f"{backend}_rel_diff"] = float((got.float() - want.float()).abs().max()) / scale
                    except RuntimeError:  # the kernel does not take this shape, dtype or device
                        row[f"{backend}_ms"] = None
            rows.append(row)
    return rows


def report(rows: List[dict]) -> str:
    lines = []
    for r in rows:
        ran = {b: r[f"{b}_ms"] for b in SDPA_KERNELS if r.get(f"{b}_ms") is not None}
        kernels = ", ".join(f"{b} {ms:.3f}" for b, ms in ran.items())
        line = (f"{r['shape']:>10} B={r['batch']} q={r['queries']} k={r['keys']}: auto "
                f"{r['sdpa_ms']:.3f} ms ({kernels})")
        if ran:
            best = min(ran, key=ran.get)
            line += (f"; fastest {best} x{r['sdpa_ms'] / ran[best]:.2f} over auto "
                     f"(rel diff {r[f'{best}_rel_diff']:.1e})")
        lines.append(line)
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--small", action="store_true",
                        help="a 16x16 grid and 3 repeats (a dry run; the tests use it)")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--json", default="")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    from .core.errors import InputError
    from .core.models import resolve_device
    from .eval.cli import check_output_file

    try:  # (a bad device or an unwritable --json: a clear error before any work)
        device = resolve_device(args.device)
        check_output_file(args.json, "--json")
    except InputError as exc:
        print(f"attention_probe: {exc}", file=sys.stderr)
        return 2
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    shapes = attention_shapes(16 * 16 if args.small else GRID_TOKENS)
    rows = probe(device, dtype, shapes, repeats=3 if args.small else args.repeats)
    print(report(rows))
    if args.json:
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
        with open(args.json, "w") as f:
            json.dump({"device": name, "torch": torch.__version__, "dtype": str(dtype),
                       "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Memory attention's attention kernel at the tracker's shapes, alone: a diagnostic for a GPU lease.

On the H200 the memory attention's kernel time grew linearly with the keep ratio (0.94, 1.66,
2.37 and 4.16 ms at keep 0.1, 0.3, 0.5 and 1.0), not with its FLOPs (which grow with its square).
That is what a flash-attention kernel does when too few query blocks exist to fill the GPU: SAM 2's
memory attention has one head and batch 1, so 4096 queries are 32 blocks of 128 rows for 132
SMs, and each block walks every key in turn: the time follows the key count. Splitting the keys
into parts that run side by side, and merging the parts by their log-sum-exp (what flash
decoding does), would then make the attention follow its FLOPs.

This module times, for the cross-attention and self-attention shapes of each keep ratio: torch's
``scaled_dot_product_attention`` (the tracker's call) under each backend that takes the shape, and
the keys split into parts (``core.pruned_attention.split_key_attention``, what the tracker's
``attention_key_splits`` runs: torch's flash kernel, which returns the log-sum-exp, on every part
in one launch), with the split's largest difference from the unsplit result.
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

from .core.pruned_attention import key_parts, split_key_attention

#: SAM 2 tiny at 1024 px: a 64x64 grid, 7 memory frames, 16 object pointers of 4 tokens each;
#: one head of 256 channels (memory attention's internal dim).
GRID_TOKENS = 64 * 64
MEMORY_FRAMES = 7
POINTER_TOKENS = 16 * 4
HEAD_DIM = 256
KEEP_RATIOS = (1.0, 0.5, 0.3, 0.1)
SPLITS = (2, 4, 8, 16, 32)


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


def _backends() -> Dict[str, object]:
    from torch.nn.attention import SDPBackend
    return {name: getattr(SDPBackend, name) for name in
            ("FLASH_ATTENTION", "EFFICIENT_ATTENTION", "CUDNN_ATTENTION", "MATH")
            if hasattr(SDPBackend, name)}


def probe(device: torch.device, dtype: torch.dtype, shapes, batches=(1, 4), splits=SPLITS,
          repeats: int = 20, seed: int = 0) -> List[dict]:
    """One row per (shape, batch): ms of sdpa (default choice and each backend that runs) and of
    each split, the split's max |difference| from sdpa, relative to sdpa's max |value|."""
    from torch.nn.attention import sdpa_kernel

    gen = torch.Generator(device="cpu").manual_seed(seed)
    rows = []
    for name, queries, keys in shapes:
        for batch in batches:
            q, k, v = (torch.randn(batch, 1, n, HEAD_DIM, generator=gen).to(device, dtype)
                       for n in (queries, keys, keys))
            with torch.inference_mode():
                want = F.scaled_dot_product_attention(q, k, v)
                row = {"shape": name, "batch": batch, "queries": queries, "keys": keys,
                       "sdpa_ms": _timed(lambda: F.scaled_dot_product_attention(q, k, v), device, repeats)}
                for backend, value in _backends().items():
                    try:
                        with sdpa_kernel([value]):
                            row[f"sdpa_{backend.lower()}_ms"] = _timed(
                                lambda: F.scaled_dot_product_attention(q, k, v), device, repeats)
                    except RuntimeError:  # the backend does not take this shape, dtype or device
                        row[f"sdpa_{backend.lower()}_ms"] = None
                scale = float(want.abs().max()) or 1.0
                for target in splits:
                    n = key_parts(keys, target)
                    if n == 1 or f"split{n}_ms" in row:
                        continue
                    try:
                        got = split_key_attention(q, k, v, n)
                    except RuntimeError as exc:  # the flash kernel refused the shape or dtype
                        row["split_error"] = f"{type(exc).__name__}: {exc}"[:300]
                        break
                    row[f"split{n}_ms"] = _timed(lambda: split_key_attention(q, k, v, n), device, repeats)
                    row[f"split{n}_rel_diff"] = float((got.float() - want.float()).abs().max()) / scale
            rows.append(row)
    return rows


def report(rows: List[dict]) -> str:
    lines = []
    for r in rows:
        splits = sorted((int(key[5:-3]), ms) for key, ms in r.items()
                        if key.startswith("split") and key.endswith("_ms"))
        best = min(splits, key=lambda s: s[1]) if splits else None
        backends = ", ".join(f"{key[5:-3]} {ms:.3f}" for key, ms in r.items()
                             if key.startswith("sdpa_") and key.endswith("_ms") and key != "sdpa_ms"
                             and ms is not None)
        lines.append(f"{r['shape']:>10} B={r['batch']} q={r['queries']} k={r['keys']}: sdpa "
                     f"{r['sdpa_ms']:.3f} ms ({backends})"
                     + (f"; best split {best[0]}: {best[1]:.3f} ms "
                        f"(x{r['sdpa_ms'] / best[1]:.2f}, rel diff "
                        f"{r[f'split{best[0]}_rel_diff']:.1e})" if best else "")
                     + (f"; split failed: {r['split_error']}" if "split_error" in r else ""))
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

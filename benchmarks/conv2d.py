"""Speed of segcore's reference conv2d (NumPy backend) on ResNet-style 3x3 layers.

For each layer, in one run and interleaved so that load from other processes hits every column alike:

* the machine's float32 matmul throughput on a square GEMM with about the layer's FLOPs (the ceiling a
  GEMM-based convolution can reach);
* segcore ``conv2d`` forward GFLOP/s and its fraction of that matmul;
* segcore forward + backward (input, weight and bias gradients);
* the three BLAS products of a forward + backward alone, on ready-made patch matrices: the floor that NumPy's
  BLAS sets under any im2col convolution;
* PyTorch CPU forward and forward + backward, when ``import torch`` works, and the segcore/torch ratios.

Times are the median of ``--repeat`` runs after 0.1 s of untimed settling runs (benchmarks/timing.py). Prints a
table and writes JSON to ``benchmarks/results/conv2d.json`` (atomically). Run from the repo root: ``python benchmarks/conv2d.py``.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from pathlib import Path
from typing import Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from timing import interleaved  # noqa: E402  (benchmarks/timing.py, next to this script)

from segcore.io import save_json  # noqa: E402
import segcore  # noqa: E402
import segcore.functional as F  # noqa: E402

# torch's OpenMP workers busy-wait after each op by default; in this shared process they then take the cores
# from NumPy's BLAS while the segcore columns run (measured: segcore forward+backward 61 -> 44 ms on the
# 64-channel layer, torch's own times unchanged). Passive waiting keeps the columns independent. libgomp reads
# the variable when torch is imported, so it is set first; an explicit setting by the user wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

try:
    import torch
except ImportError:  # torch is an optional comparison, never a dependency
    torch = None

# (name, N, C_in, C_out, H=W): stride 1, padding 1, 3x3, the body layers of ResNet-18/34 at batch 8.
LAYERS = [
    ("res2 64->64 @56", 8, 64, 64, 56),
    ("res3 128->128 @28", 8, 128, 128, 28),
    ("res4 256->256 @14", 8, 256, 256, 14),
]
TARGET_FRACTION_OF_MATMUL = 0.45
TARGET_RATIO_TO_TORCH = 2.0


def bench_layer(name: str, n: int, cin: int, cout: int, size: int, repeat: int, rounds: int) -> dict:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, cin, size, size), dtype=np.float32)
    w = (rng.standard_normal((cout, cin, 3, 3), dtype=np.float32) / np.sqrt(9 * cin)).astype(np.float32)
    b = rng.standard_normal(cout, dtype=np.float32)
    gout = rng.standard_normal((n, cout, size, size), dtype=np.float32)
    flops = 2.0 * n * cout * size * size * cin * 9

    side = int(round((flops / 2) ** (1 / 3)))
    a_mm = rng.standard_normal((side, side), dtype=np.float32)
    b_mm = rng.standard_normal((side, side), dtype=np.float32)
    mm_flops = 2.0 * side**3

    # The three matrix products of a forward+backward (forward, input gradient as a correlation with the
    # flipped kernel, weight gradient) in the shapes the reference multiplies, on ready-made patch matrices:
    # what NumPy's BLAS alone takes, a floor under any im2col convolution built on it.
    pixels = n * size * size
    patches = rng.standard_normal((pixels, 9 * cin), dtype=np.float32)
    patches_out = patches if cin == cout else rng.standard_normal((pixels, 9 * cout), dtype=np.float32)
    w_mat, w_flipped = w.reshape(cout, 9 * cin), rng.standard_normal((cin, 9 * cout), dtype=np.float32)
    g_mat = gout.reshape(cout, pixels)  # any (Cout, pixels) matrix: only the shape matters

    def blas_products():
        return w_mat @ patches.T, w_flipped @ patches_out.T, g_mat @ patches

    xs, ws, bs = segcore.tensor(x), segcore.tensor(w), segcore.tensor(b)

    def seg_forward():
        with segcore.no_grad():
            return F.conv2d(xs, ws, bs, padding=1)

    def seg_train():
        xg = segcore.tensor(x, requires_grad=True)
        wg = segcore.tensor(w, requires_grad=True)
        bg = segcore.tensor(b, requires_grad=True)
        F.conv2d(xg, wg, bg, padding=1).backward(gout)
        return xg.grad, wg.grad, bg.grad

    columns: dict[str, Callable[[], object]] = {
        "matmul": lambda: a_mm @ b_mm,
        "segcore_forward": seg_forward,
        "segcore_forward_backward": seg_train,
        "blas_products": blas_products,
    }
    if torch is not None:
        xt, wt, bt, gt = (torch.from_numpy(v) for v in (x, w, b, gout))

        def torch_forward():
            with torch.no_grad():
                return torch.nn.functional.conv2d(xt, wt, bt, padding=1)

        def torch_train():
            # New leaves on the same memory (detach, not clone: a copy of the input is not torch's work).
            xg, wg, bg = (v.detach().requires_grad_(True) for v in (xt, wt, bt))
            torch.nn.functional.conv2d(xg, wg, bg, padding=1).backward(gt)
            return xg.grad, wg.grad, bg.grad

        columns["torch_forward"] = torch_forward
        columns["torch_forward_backward"] = torch_train

    t, samples = interleaved(columns, repeat, rounds)

    row = {
        "layer": name,
        "shape": {"N": n, "C_in": cin, "C_out": cout, "H": size, "W": size, "kernel": 3, "stride": 1, "padding": 1},
        "gflop": flops / 1e9,
        "matmul_side": side,
        "matmul_gflops": mm_flops / t["matmul"] / 1e9,
        "segcore_forward_s": t["segcore_forward"],
        "segcore_forward_gflops": flops / t["segcore_forward"] / 1e9,
        "segcore_forward_backward_s": t["segcore_forward_backward"],
        "blas_products_s": t["blas_products"],
    }
    row["segcore_forward_fraction_of_matmul"] = row["segcore_forward_gflops"] / row["matmul_gflops"]
    # Per-round medians, so that a reader can see how noisy the machine was during the run.
    row["round_medians_s"] = samples
    if torch is not None:
        row["torch_forward_s"] = t["torch_forward"]
        row["torch_forward_backward_s"] = t["torch_forward_backward"]
        row["forward_ratio_segcore_to_torch"] = t["segcore_forward"] / t["torch_forward"]
        row["forward_backward_ratio_segcore_to_torch"] = t["segcore_forward_backward"] / t["torch_forward_backward"]
        row["blas_products_ratio_to_torch_forward_backward"] = t["blas_products"] / t["torch_forward_backward"]
    return row


def blas_info() -> list[dict] | None:
    """NumPy's BLAS (library, version, CPU kernel set, threads) when threadpoolctl is installed."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    keys = ("internal_api", "version", "architecture", "num_threads")
    return [{k: lib.get(k) for k in keys} for lib in threadpool_info() if lib.get("user_api") == "blas"]




def print_table(rows: list[dict], have_torch: bool) -> None:
    header = (
        f"{'layer':<20} {'GFLOP':>6} {'matmul GF/s':>11} {'fwd GF/s':>9} {'% mm':>6} {'fwd ms':>8} {'fwd+bwd ms':>10}"
        f" {'3 GEMMs ms':>10}"
    )
    if have_torch:
        header += f" {'torch fwd':>9} {'torch f+b':>9} {'fwd x':>6} {'f+b x':>6} {'GEMMs x':>7}"
    print(header)
    print("-" * len(header))
    for r in rows:
        line = (
            f"{r['layer']:<20} {r['gflop']:>6.2f} {r['matmul_gflops']:>11.1f} {r['segcore_forward_gflops']:>9.1f} "
            f"{100 * r['segcore_forward_fraction_of_matmul']:>5.0f}% {1e3 * r['segcore_forward_s']:>8.1f} "
            f"{1e3 * r['segcore_forward_backward_s']:>10.1f} {1e3 * r['blas_products_s']:>10.1f}"
        )
        if have_torch:
            line += (
                f" {1e3 * r['torch_forward_s']:>9.1f} {1e3 * r['torch_forward_backward_s']:>9.1f}"
                f" {r['forward_ratio_segcore_to_torch']:>6.2f} {r['forward_backward_ratio_segcore_to_torch']:>6.2f}"
                f" {r['blas_products_ratio_to_torch_forward_backward']:>7.2f}"
            )
        print(line)
    print(
        f"targets: forward >= {100 * TARGET_FRACTION_OF_MATMUL:.0f}% of matmul; "
        f"forward+backward <= {TARGET_RATIO_TO_TORCH:.1f}x PyTorch CPU (ratios 'x' = segcore time / torch time); "
        "'3 GEMMs': the f+b's three BLAS products alone, on ready-made patches"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per measurement (median taken)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds over all columns (median taken)")
    parser.add_argument("--batch", type=int, default=None, help="override N of every layer")
    parser.add_argument(
        "--output", type=Path, default=Path(__file__).resolve().parent / "results" / "conv2d.json", help="JSON path"
    )
    args = parser.parse_args(argv)
    if args.repeat < 1 or args.rounds < 1:
        parser.error(f"--repeat and --rounds must be >= 1, got {args.repeat} and {args.rounds}")
    if args.batch is not None and args.batch < 1:
        parser.error(f"--batch must be >= 1, got {args.batch}")

    rows = []
    for name, n, cin, cout, size in LAYERS:
        rows.append(bench_layer(name, args.batch or n, cin, cout, size, args.repeat, args.rounds))
    print_table(rows, torch is not None)

    payload = {
        "benchmark": "conv2d",
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "blas": blas_info(),
            "openblas_coretype_env": os.environ.get("OPENBLAS_CORETYPE"),
            "torch": None if torch is None else torch.__version__,
            "torch_threads": None if torch is None else torch.get_num_threads(),
        },
        "timing": {"repeat": args.repeat, "rounds": args.rounds, "statistic": "median of per-round medians"},
        "targets": {
            "forward_fraction_of_matmul": TARGET_FRACTION_OF_MATMUL,
            "forward_backward_ratio_to_torch": TARGET_RATIO_TO_TORCH,
        },
        "layers": rows,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    save_json(args.output, payload)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Speed of the ``numba`` backend's CPU kernels against the NumPy reference, side by side in one run.

Three workloads (issue 8), each timed for every column in interleaved rounds so that load from other processes
hits all columns alike (a time is the median over ``--rounds`` of the median of ``--repeat`` runs after 0.1 s
of untimed settling runs, see benchmarks/timing.py, whose first call also compiles):

* **RoIAlign** forward and backward (input gradient) at the kernel level: 512 RoIs, 256 channels, 7x7 bins,
  ``sampling_ratio=2``, ``spatial_scale=1/16`` on a ``(2, 256, 50, 50)`` float32 map (an 800x800 image at
  stride 16; boxes with sides in [16, 320] px, fixed seed). Target: numba >= 10x faster than the reference.
* **Dense CRF**: ``segcore.crf.dense_crf`` on a 500x375 photo-like image, 21 labels, 10 mean-field
  iterations, pydensecrf's README parameters, lattice builds included; with ``pydensecrf`` (``DenseCRF2D``)
  when it is installed. Target: numba faster than pydensecrf.
* **conv2d** forward + backward (both gradients) at the kernel level on three ResNet 3x3 body layers, a
  strided (downsampling) and two dilated (ASPP rates 6 and 18) 3x3 layers, at batch 8, and
  ``torch.nn.functional.conv2d`` forward + backward on the CPU when torch is importable. Target: numba no
  slower than the reference (and as fast as PyTorch CPU where installed).

Each workload also checks that numba's results agree with the reference. Prints a table and writes JSON to
``benchmarks/results/numba_kernels.json`` atomically (:func:`segcore.io.save_json`). Run from the repository root
with ``segcore-numba`` installed: ``python benchmarks/numba_kernels.py`` (about 2-4 minutes on 2 cores).
Shared machines are noisy: compare the ratios, not the absolute times.
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
from workloads import max_abs_diff, photo_like  # noqa: E402  (benchmarks/workloads.py)

from segcore.backend import get_backend  # noqa: E402
from segcore.crf import DEFAULTS, dense_crf  # noqa: E402
from segcore.io import save_json  # noqa: E402

# torch's OpenMP workers busy-wait after each op by default and then take the cores from the numba and NumPy
# columns; and once torch has loaded libgomp without this setting, segcore_numba can no longer choose its
# passive OpenMP threading layer and falls back to workqueue (measured: numba conv forward+backward on the
# 64-channel layer 47 ms without, 20 ms with). libgomp reads the variable when it is loaded, so it is set
# before torch is imported; an explicit setting by the user wins. benchmarks/conv2d.py does the same.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

try:
    import pydensecrf.densecrf as dcrf
except ImportError:  # an optional comparison, never a dependency
    dcrf = None
try:
    import torch
except ImportError:  # an optional comparison; segcore never imports torch
    torch = None

ROI_CHANNELS, ROI_SIZE, ROI_COUNT, ROI_OUTPUT, ROI_SAMPLING, ROI_SCALE, ROI_IMAGE = 256, 50, 512, 7, 2, 1 / 16, 800
# (label, C_in, C_out, H=W, stride, padding, dilation), all 3x3. The ResNet body layers go to the Winograd
# kernels; the strided (ResNet downsampling) and dilated (DeepLab ASPP: rate 6, and rate 18 on the 32x32 map
# of a 512x512 image at output stride 16, where most outer taps read padding) layers to the implicit GEMM
# (forward and both gradients, the strided input gradient split by phase of the input).
CONV_LAYERS = (
    ("res2 64->64 @56", 64, 64, 56, 1, 1, 1),
    ("res3 128->128 @28", 128, 128, 28, 1, 1, 1),
    ("res4 256->256 @14", 256, 256, 14, 1, 1, 1),
    ("s2 64->128 @56", 64, 128, 56, 2, 1, 1),
    ("d6 256->256 @28", 256, 256, 28, 1, 6, 6),
    ("d18 256->256 @32", 256, 256, 32, 1, 18, 18),
)
TARGETS = {
    "roi_align_speedup_vs_reference": 10.0,
    "crf_ratio_numba_to_pydensecrf": 1.0,
    "conv_speedup_vs_reference": 1.0,
}


# -- workloads ------------------------------------------------------------------------------------------------


def bench_roi_align(repeat: int, rounds: int) -> dict:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, ROI_CHANNELS, ROI_SIZE, ROI_SIZE), dtype=np.float32)
    sides = rng.uniform(16, 320, (ROI_COUNT, 2))
    corner = rng.uniform(0, 1, (ROI_COUNT, 2)) * (ROI_IMAGE - sides)
    rois = np.concatenate([rng.integers(0, 2, (ROI_COUNT, 1)), corner, corner + sides], axis=1).astype(np.float32)
    grad = rng.standard_normal((ROI_COUNT, ROI_CHANNELS, ROI_OUTPUT, ROI_OUTPUT), dtype=np.float32)
    params = (ROI_SCALE, (ROI_OUTPUT, ROI_OUTPUT), ROI_SAMPLING, False)
    columns = {}
    for name in ("numpy", "numba"):
        backend = get_backend(name)
        forward, backward = backend.kernel("roi_align"), backend.kernel("roi_align_backward")
        columns[f"{name}_forward"] = lambda f=forward, xp=backend.xp: f(xp, x, rois, *params)
        columns[f"{name}_backward"] = lambda f=backward, xp=backend.xp: f(xp, grad, rois, x.shape, *params)
    t, _ = interleaved(columns, repeat, rounds)
    return {
        "setting": {"N": 2, "C": ROI_CHANNELS, "H": ROI_SIZE, "W": ROI_SIZE, "rois": ROI_COUNT,
                    "output_size": ROI_OUTPUT, "sampling_ratio": ROI_SAMPLING, "spatial_scale": ROI_SCALE},
        "seconds": t,
        "forward_speedup_vs_reference": t["numpy_forward"] / t["numba_forward"],
        "backward_speedup_vs_reference": t["numpy_backward"] / t["numba_backward"],
        "max_abs_diff_forward": max_abs_diff(columns["numba_forward"](), columns["numpy_forward"]()),
        "max_abs_diff_backward": max_abs_diff(columns["numba_backward"](), columns["numpy_backward"]()),
    }  # fmt: skip


def bench_crf(
    repeat: int, rounds: int, height: int = 375, width: int = 500, labels: int = 21, iterations: int = 10
) -> dict:
    image, probs = photo_like(height, width, labels, np.random.default_rng(0))
    columns: dict[str, Callable[[], object]] = {
        name: (lambda name=name: dense_crf(image, probs, iterations=iterations, backend=name))
        for name in ("numpy", "numba")
    }
    if dcrf is not None:
        p = DEFAULTS

        def pydensecrf_crf():
            crf = dcrf.DenseCRF2D(width, height, labels)
            crf.setUnaryEnergy(np.ascontiguousarray(-np.log(probs).reshape(labels, -1)))
            crf.addPairwiseGaussian(sxy=p["gaussian_sxy"], compat=p["gaussian_compat"])
            crf.addPairwiseBilateral(
                sxy=p["bilateral_sxy"], srgb=p["bilateral_srgb"], rgbim=image, compat=p["bilateral_compat"]
            )
            return np.array(crf.inference(iterations)).reshape(labels, height, width)

        columns["pydensecrf"] = pydensecrf_crf
    t, _ = interleaved(columns, repeat, rounds)
    q_numba, q_ref = columns["numba"](), columns["numpy"]()
    row = {
        "setting": {"height": height, "width": width, "labels": labels, "iterations": iterations, **DEFAULTS},
        "seconds": t,
        "speedup_vs_reference": t["numpy"] / t["numba"],
        "max_abs_marginal_diff_vs_reference": max_abs_diff(q_numba, q_ref),
    }
    if dcrf is not None:
        row["ratio_numba_to_pydensecrf"] = t["numba"] / t["pydensecrf"]
        row["argmax_agreement_with_pydensecrf"] = float(np.mean(q_numba.argmax(0) == columns["pydensecrf"]().argmax(0)))
    return row


def bench_conv(repeat: int, rounds: int, batch: int = 8) -> list[dict]:
    rows = []
    for label, cin, cout, size, stride, padding, dilation in CONV_LAYERS:
        args = ((stride, stride), (padding, padding), (dilation, dilation), 1)
        out_size = (size + 2 * padding - dilation * 2 - 1) // stride + 1
        rng = np.random.default_rng(0)
        x = rng.standard_normal((batch, cin, size, size), dtype=np.float32)
        w = (rng.standard_normal((cout, cin, 3, 3)) / np.sqrt(9 * cin)).astype(np.float32)
        g = rng.standard_normal((batch, cout, out_size, out_size), dtype=np.float32)
        columns: dict[str, Callable[[], object]] = {}
        for name in ("numpy", "numba"):
            backend = get_backend(name)
            kernels = [backend.kernel(k) for k in ("conv2d", "conv2d_grad_input", "conv2d_grad_weight")]

            def step(xp=backend.xp, k=kernels, args=args, x=x, w=w, g=g):
                return k[0](xp, x, w, *args), k[1](xp, g, w, x.shape, *args), k[2](xp, x, g, w.shape, *args)

            columns[name] = step
        if torch is not None:
            xt, wt, gt = (torch.from_numpy(a) for a in (x, w, g))

            def torch_step(xt=xt, wt=wt, gt=gt, stride=stride, padding=padding, dilation=dilation):
                # New leaves on the same memory (detach, not clone: a copy of the input is not torch's work).
                xr, wr = xt.detach().requires_grad_(True), wt.detach().requires_grad_(True)
                torch.nn.functional.conv2d(xr, wr, stride=stride, padding=padding, dilation=dilation).backward(gt)
                return xr.grad, wr.grad

            columns["torch"] = torch_step
        t, _ = interleaved(columns, repeat, rounds)
        outs, refs = columns["numba"](), columns["numpy"]()
        row = {
            "layer": label,
            "shape": {"N": batch, "C_in": cin, "C_out": cout, "H": size, "W": size, "kernel": 3, "stride": stride,
                      "padding": padding, "dilation": dilation},
            "gflop_forward_backward": 3 * 2 * batch * cin * cout * 9 * out_size * out_size / 1e9,
            "seconds": t,
            "speedup_vs_reference": t["numpy"] / t["numba"],
            "max_abs_diff": max(max_abs_diff(a, b) for a, b in zip(outs, refs)),
        }
        if torch is not None:
            row["ratio_numba_to_torch"] = t["numba"] / t["torch"]
        rows.append(row)
    return rows


# -- report ---------------------------------------------------------------------------------------------------


def print_table(result: dict) -> None:
    ra, crf, conv = result["roi_align"], result["crf"], result["conv2d"]
    print(f"{'workload':<34} {'numpy ms':>10} {'numba ms':>10} {'speedup':>8}  {'other':<26}")
    print("-" * 92)
    for key, label in (("forward", "RoIAlign forward"), ("backward", "RoIAlign backward")):
        s = ra["seconds"]
        print(f"{label:<34} {1e3 * s[f'numpy_{key}']:>10.1f} {1e3 * s[f'numba_{key}']:>10.1f} "
              f"{ra[f'{key}_speedup_vs_reference']:>7.1f}x")  # fmt: skip
    s = crf["seconds"]
    other = "pydensecrf not installed"
    if "pydensecrf" in s:
        other = f"pydensecrf {1e3 * s['pydensecrf']:.0f} ms (numba/pdc {crf['ratio_numba_to_pydensecrf']:.2f})"
    print(f"{'dense CRF 500x375x21, 10 it':<34} {1e3 * s['numpy']:>10.0f} {1e3 * s['numba']:>10.0f} "
          f"{crf['speedup_vs_reference']:>7.2f}x  {other}")  # fmt: skip
    for row in conv:
        s = row["seconds"]
        other = "torch not installed"
        if "torch" in s:
            other = f"torch {1e3 * s['torch']:.0f} ms (numba/torch {row['ratio_numba_to_torch']:.2f})"
        print(f"{'conv f+b ' + row['layer']:<34} {1e3 * s['numpy']:>10.0f} {1e3 * s['numba']:>10.0f} "
              f"{row['speedup_vs_reference']:>7.2f}x  {other}")  # fmt: skip
    print(f"targets: RoIAlign >= {TARGETS['roi_align_speedup_vs_reference']:.0f}x the reference; CRF faster than "
          "pydensecrf; conv f+b no slower than the reference")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per measurement (median taken)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds over all columns (median taken)")
    parser.add_argument("--conv-batch", type=int, default=8, help="N of the conv layers (default 8)")
    parser.add_argument(
        "--output",
        type=Path,
        default=Path(__file__).resolve().parent / "results" / "numba_kernels.json",
        help="JSON path",
    )
    args = parser.parse_args(argv)
    if args.repeat < 1 or args.rounds < 1 or args.conv_batch < 1:
        parser.error("--repeat, --rounds and --conv-batch must be >= 1")
    get_backend("numba")  # fails early, saying why, when the backend cannot run here

    import numba

    result = {
        "roi_align": bench_roi_align(args.repeat, args.rounds),
        "crf": bench_crf(args.repeat, args.rounds),
        "conv2d": bench_conv(args.repeat, args.rounds, args.conv_batch),
    }
    print_table(result)
    payload = {
        "benchmark": "numba_kernels",
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "numba": numba.__version__,
            "numba_threading_layer": numba.threading_layer(),
            "numba_threads": numba.get_num_threads(),
            "torch": None if torch is None else torch.__version__,
            "torch_threads": None if torch is None else torch.get_num_threads(),
            "pydensecrf": dcrf is not None,
        },
        "timing": {"repeat": args.repeat, "rounds": args.rounds, "statistic": "median of per-round medians"},
        "targets": TARGETS,
        "result": result,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    save_json(args.output, payload)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

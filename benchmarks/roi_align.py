"""Speed of segcore's reference RoIAlign (NumPy backend) against torchvision's CPU kernel, in one run.

Configuration (issue 7): 512 RoIs, 256 channels, 7x7 output, ``sampling_ratio=2``, ``spatial_scale=1/16``, on
a ``(N, 256, 50, 50)`` float32 feature map (N = 2 by default, ``--batch``), i.e. an 800x800 image at stride 16.
Boxes are drawn with a fixed seed: sides uniform in [16, 320] pixels, placed uniformly inside the image, image
index uniform in [0, N). Columns, interleaved over ``--rounds`` rounds so that load from other processes hits
all of them alike (each time is the median over rounds of the median of ``--repeat`` runs after 0.1 s of settling,
benchmarks/timing.py):

* ``segcore fwd``: ``segcore.ops.roi_align`` under ``no_grad``;
* ``segcore f+b``: forward with autograd, then ``backward`` of a fixed output gradient (input gradient);
* ``torchvision fwd`` / ``torchvision f+b``: the same with ``torchvision.ops.roi_align`` on the CPU, when
  ``import torchvision`` works (optional; segcore never imports torch), and the segcore/torchvision ratios.

The run also checks that both libraries agree (maximum absolute difference of outputs and input gradients).
Prints a table and writes JSON to ``benchmarks/results/roi_align.json`` atomically (temp file + ``os.replace``).
Run from the repository root: ``python benchmarks/roi_align.py``. Target: segcore <= 3x torchvision CPU.
torchvision's CPU kernel runs on one thread while NumPy's BLAS uses every core; on a machine shared with other
jobs, a thread pool that oversubscribes the cores can be much slower than one thread, so also compare with
``OPENBLAS_NUM_THREADS=1`` (recorded in the JSON).
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
import segcore.ops as ops  # noqa: E402

try:
    import torch
    import torchvision
except ImportError:  # torchvision is an optional comparison, never a dependency
    torch = torchvision = None

CHANNELS, SIZE, ROIS, OUTPUT, SAMPLING, SCALE, IMAGE = 256, 50, 512, 7, 2, 1 / 16, 800
TARGET_RATIO = 3.0


def make_inputs(batch: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, CHANNELS, SIZE, SIZE), dtype=np.float32)
    sides = rng.uniform(16, 320, (ROIS, 2))
    corner = rng.uniform(0, 1, (ROIS, 2)) * (IMAGE - sides)
    image = rng.integers(0, batch, (ROIS, 1))
    rois = np.concatenate([image, corner, corner + sides], axis=1).astype(np.float32)
    grad = rng.standard_normal((ROIS, CHANNELS, OUTPUT, OUTPUT), dtype=np.float32)
    return x, rois, grad


def bench(batch: int, repeat: int, rounds: int) -> dict:
    x, rois, grad = make_inputs(batch)
    xs, rs, gs = segcore.tensor(x), segcore.tensor(rois), segcore.tensor(grad)

    def seg_forward():
        with segcore.no_grad():
            return ops.roi_align(xs, rs, OUTPUT, SCALE, SAMPLING)

    def seg_train():
        xg = segcore.tensor(x, requires_grad=True)
        ops.roi_align(xg, rs, OUTPUT, SCALE, SAMPLING).backward(gs)
        return xg.grad

    columns: dict[str, Callable[[], object]] = {"segcore_forward": seg_forward, "segcore_forward_backward": seg_train}
    if torchvision is not None:
        xt, rt, gt = (torch.from_numpy(v) for v in (x, rois, grad))

        def tv_forward():
            with torch.no_grad():
                return torchvision.ops.roi_align(xt, rt, OUTPUT, SCALE, SAMPLING)

        def tv_train():
            xg = xt.detach().requires_grad_(True)  # a new leaf on the same memory: no copy timed
            torchvision.ops.roi_align(xg, rt, OUTPUT, SCALE, SAMPLING).backward(gt)
            return xg.grad

        columns["torchvision_forward"] = tv_forward
        columns["torchvision_forward_backward"] = tv_train

    t, samples = interleaved(columns, repeat, rounds)

    row = {
        "shape": {"N": batch, "C": CHANNELS, "H": SIZE, "W": SIZE, "rois": ROIS, "output_size": OUTPUT},
        "sampling_ratio": SAMPLING,
        "spatial_scale": SCALE,
        "segcore_forward_s": t["segcore_forward"],
        "segcore_forward_backward_s": t["segcore_forward_backward"],
    }
    if torchvision is not None:
        row["torchvision_forward_s"] = t["torchvision_forward"]
        row["torchvision_forward_backward_s"] = t["torchvision_forward_backward"]
        row["forward_ratio_segcore_to_torchvision"] = t["segcore_forward"] / t["torchvision_forward"]
        row["forward_backward_ratio_segcore_to_torchvision"] = (
            t["segcore_forward_backward"] / t["torchvision_forward_backward"]
        )
        out = seg_forward().numpy()
        ref = tv_forward().numpy()
        row["max_abs_diff_output"] = float(np.max(np.abs(out - ref)))
        row["max_abs_diff_input_grad"] = float(np.max(np.abs(seg_train().numpy() - tv_train().numpy())))
    return row


def blas_info() -> list[dict] | None:
    """NumPy's BLAS (library, version, CPU kernel set, threads) when threadpoolctl is installed."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    keys = ("internal_api", "version", "architecture", "num_threads")
    return [{k: lib.get(k) for k in keys} for lib in threadpool_info() if lib.get("user_api") == "blas"]




def print_table(row: dict) -> None:
    shape = row["shape"]
    print(
        f"RoIAlign: {shape['rois']} RoIs x {shape['C']} channels x {shape['output_size']}x{shape['output_size']}, "
        f"sampling_ratio {row['sampling_ratio']}, map ({shape['N']}, {shape['C']}, {shape['H']}, {shape['W']}), float32"
    )
    header = f"{'pass':<18} {'segcore ms':>11}"
    have_tv = "torchvision_forward_s" in row
    if have_tv:
        header += f" {'torchvision ms':>15} {'segcore / tv':>13}"
    print(header)
    print("-" * len(header))
    for name, key, ratio in (
        ("forward", "forward", "forward_ratio_segcore_to_torchvision"),
        ("forward+backward", "forward_backward", "forward_backward_ratio_segcore_to_torchvision"),
    ):
        line = f"{name:<18} {1e3 * row[f'segcore_{key}_s']:>11.1f}"
        if have_tv:
            line += f" {1e3 * row[f'torchvision_{key}_s']:>15.1f} {row[ratio]:>12.2f}x"
        print(line)
    if have_tv:
        print(
            f"max |segcore - torchvision|: output {row['max_abs_diff_output']:.2e}, "
            f"input gradient {row['max_abs_diff_input_grad']:.2e}"
        )
    else:
        print("torchvision is not installed: no comparison column")
    print(f"target: segcore <= {TARGET_RATIO:.0f}x torchvision CPU")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per measurement (median taken)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds over all columns (median taken)")
    parser.add_argument("--batch", type=int, default=2, help="N of the feature map (1 or 2 in issue 7)")
    parser.add_argument(
        "--output", type=Path, default=Path(__file__).resolve().parent / "results" / "roi_align.json", help="JSON path"
    )
    args = parser.parse_args(argv)
    if args.repeat < 1 or args.rounds < 1:
        parser.error(f"--repeat and --rounds must be >= 1, got {args.repeat} and {args.rounds}")
    if args.batch < 1:
        parser.error(f"--batch must be >= 1, got {args.batch}")

    row = bench(args.batch, args.repeat, args.rounds)
    print_table(row)
    payload = {
        "benchmark": "roi_align",
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "blas": blas_info(),
            "openblas_num_threads_env": os.environ.get("OPENBLAS_NUM_THREADS"),
            "torch": None if torch is None else torch.__version__,
            "torchvision": None if torchvision is None else torchvision.__version__,
            "torch_threads": None if torch is None else torch.get_num_threads(),
        },
        "timing": {"repeat": args.repeat, "rounds": args.rounds, "statistic": "median of per-round medians"},
        "target": {"ratio_to_torchvision": TARGET_RATIO},
        "result": row,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    save_json(args.output, payload)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

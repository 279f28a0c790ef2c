"""GPU benchmarks of the ``numba-cuda`` backend (issue 8). Needs a CUDA GPU with numba-cuda and CuPy.

* ``roi_align``: RoIAlign forward and backward (the default atomic one and the deterministic gather) at the
  kernel level on a detection-sized map: a ``(2, 256, 200, 272)`` float32 feature map (an 800x1088 image at
  stride 4), 1024 RoIs with sides in [16, 316] px, 7x7 bins, ``sampling_ratio=2``, ``spatial_scale=1/4``,
  aligned. Against ``torchvision.ops.roi_align`` on the same GPU when torch (a CUDA build) and torchvision
  import -- forward, and backward through autograd. Target: numba-cuda within 1.5x of torchvision CUDA.
* ``crf``: ``segcore.crf.dense_crf`` with 10 mean-field iterations on a 500x375 photo-like image with 21 labels
  (the CPU benchmark's setting), host to host. Target: under 20 ms.

Each part also compares its results with the NumPy reference on the CPU (and RoIAlign with torchvision when it
runs), and reports the largest difference. Times are medians of ``--repeat`` runs between CUDA events after a
warm-up run (compilation). Prints a table and writes ``benchmarks/results/numba_gpu.json`` atomically; exits
with status 2 and the backend's reason when the backend cannot run here. Run from the repository root with
``segcore-numba[cuda]`` installed: ``python benchmarks/numba_gpu.py`` (the script is not called
``numba_cuda.py``: run as a script, that name would shadow the numba-cuda package).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from timing import cuda_event_time  # noqa: E402  (benchmarks/timing.py, next to this script)
from workloads import max_abs_diff, photo_like  # noqa: E402

from segcore.backend import get_backend  # noqa: E402
from segcore.crf import dense_crf  # noqa: E402
from segcore.io import save_json  # noqa: E402

BACKEND = "numba-cuda"
ROI_SHAPE, ROI_COUNT, ROI_OUTPUT, ROI_SAMPLING, ROI_SCALE, ROI_IMAGE = (2, 256, 200, 272), 1024, 7, 2, 1 / 4, 800
CRF_HEIGHT, CRF_WIDTH, CRF_LABELS, CRF_ITERATIONS = 375, 500, 21, 10
TARGETS = {"roi_align_ratio_to_torchvision": 1.5, "crf_ms": 20.0}
PARTS = ("roi_align", "crf")


def roi_inputs(rng: np.random.Generator):
    """(features, rois, grad_out) as NumPy arrays: boxes ``(batch index, x1, y1, x2, y2)`` in image pixels."""
    x = rng.standard_normal(ROI_SHAPE, dtype=np.float32)
    sides = rng.uniform(16, 316, (ROI_COUNT, 2))
    corner = rng.uniform(0, 1, (ROI_COUNT, 2)) * (ROI_IMAGE - sides)
    rois = np.concatenate([rng.integers(0, 2, (ROI_COUNT, 1)), corner, corner + sides], axis=1).astype(np.float32)
    grad = rng.standard_normal((ROI_COUNT, ROI_SHAPE[1], ROI_OUTPUT, ROI_OUTPUT), dtype=np.float32)
    return x, rois, grad


def _torch_cuda():
    """``(torch, torchvision.ops)`` when both import and torch sees a CUDA device, else ``(None, why not)``."""
    try:
        import torch
        import torchvision.ops
    except ImportError as exc:
        return None, f"torch/torchvision not importable ({exc})"
    if not torch.cuda.is_available():
        return None, "torch sees no CUDA device (a CPU build?)"
    return torch, torchvision.ops


def _torch_event_time(torch, fn: Callable[[], object], repeat: int) -> float:
    """:func:`timing.cuda_event_time` with torch's events, for work on torch's current stream."""
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeat):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop) / 1e3)
    return statistics.median(times)


def bench_roi_align(repeat: int) -> dict:
    import cupy

    backend, reference = get_backend(BACKEND), get_backend("numpy")
    x, rois, grad = roi_inputs(np.random.default_rng(0))
    params = (ROI_SCALE, (ROI_OUTPUT, ROI_OUTPUT), ROI_SAMPLING, True)
    forward, backward = backend.kernel("roi_align"), backend.kernel("roi_align_backward")
    dx, drois, dgrad = cupy.asarray(x), cupy.asarray(rois), cupy.asarray(grad)
    runs = {
        "forward": lambda: forward(backend.xp, dx, drois, *params),
        "backward_atomic": lambda: backward(backend.xp, dgrad, drois, x.shape, *params, deterministic=False),
        "backward_deterministic": lambda: backward(backend.xp, dgrad, drois, x.shape, *params, deterministic=True),
    }
    ms = {name: 1e3 * cuda_event_time(run, repeat) for name, run in runs.items()}
    ref_forward = reference.kernel("roi_align")(reference.xp, x, rois, *params)
    ref_backward = reference.kernel("roi_align_backward")(reference.xp, grad, rois, x.shape, *params)
    result: dict[str, Any] = {
        "setting": {"input": list(ROI_SHAPE), "rois": ROI_COUNT, "output_size": ROI_OUTPUT,
                    "sampling_ratio": ROI_SAMPLING, "spatial_scale": ROI_SCALE, "aligned": True},
        "ms": ms,
        "max_abs_diff_vs_reference": {
            "forward": max_abs_diff(cupy.asnumpy(runs["forward"]()), ref_forward),
            "backward_atomic": max_abs_diff(cupy.asnumpy(runs["backward_atomic"]()), ref_backward),
            "backward_deterministic": max_abs_diff(cupy.asnumpy(runs["backward_deterministic"]()), ref_backward),
        },
    }  # fmt: skip
    torch, ops = _torch_cuda()
    if torch is None:
        result["torchvision"] = f"not measured: {ops}"
    else:
        tx = torch.from_numpy(x).cuda().requires_grad_()
        trois, tgrad = torch.from_numpy(rois).cuda(), torch.from_numpy(grad).cuda()
        out = ops.roi_align(tx, trois, (ROI_OUTPUT, ROI_OUTPUT), ROI_SCALE, ROI_SAMPLING, True)
        tv = {
            "forward": 1e3 * _torch_event_time(
                torch, lambda: ops.roi_align(tx, trois, (ROI_OUTPUT, ROI_OUTPUT), ROI_SCALE, ROI_SAMPLING, True), repeat
            ),
            "backward": 1e3 * _torch_event_time(
                torch, lambda: torch.autograd.grad(out, tx, tgrad, retain_graph=True), repeat
            ),
        }  # fmt: skip
        result["torchvision_ms"] = tv
        result["ratio_to_torchvision"] = {
            "forward": ms["forward"] / tv["forward"],
            "backward_atomic": ms["backward_atomic"] / tv["backward"],
            "backward_deterministic": ms["backward_deterministic"] / tv["backward"],
        }
        result["torchvision_max_abs_diff_vs_reference"] = {
            "forward": max_abs_diff(out.detach().cpu().numpy(), ref_forward),
            "backward": max_abs_diff(torch.autograd.grad(out, tx, tgrad)[0].cpu().numpy(), ref_backward),
        }
    return result


def bench_crf(repeat: int) -> dict:
    image, probs = photo_like(CRF_HEIGHT, CRF_WIDTH, CRF_LABELS, np.random.default_rng(0))

    def run(backend: str):
        return dense_crf(image, probs, iterations=CRF_ITERATIONS, backend=backend)

    return {
        "setting": {"height": CRF_HEIGHT, "width": CRF_WIDTH, "labels": CRF_LABELS, "iterations": CRF_ITERATIONS},
        "ms": 1e3 * cuda_event_time(lambda: run(BACKEND), repeat),
        "max_abs_marginal_diff_vs_reference": max_abs_diff(run(BACKEND), run("numpy")),
    }


def print_table(result: dict) -> None:
    roi = result.get("roi_align")
    if roi is not None:
        print(f"RoIAlign {roi['setting']}")
        tv = roi.get("torchvision_ms", {})
        for name, ms in roi["ms"].items():
            versus = tv.get("forward" if name == "forward" else "backward")
            other = f"  torchvision {versus:.3f} ms ({ms / versus:.2f}x)" if versus else ""
            print(f"  {name:<24} {ms:>9.3f} ms{other}")
        if not tv:
            print(f"  torchvision: {roi['torchvision']}")
    crf = result.get("crf")
    if crf is not None:
        print(f"dense CRF {crf['setting']}, host to host: {crf['ms']:.2f} ms")
    print(f"targets: RoIAlign within {TARGETS['roi_align_ratio_to_torchvision']}x of torchvision CUDA; "
          f"CRF under {TARGETS['crf_ms']:.0f} ms")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", choices=PARTS, default=list(PARTS))
    parser.add_argument("--repeat", type=int, default=20, help="timed runs per measurement (median taken)")
    parser.add_argument("--output", type=Path, default=Path(__file__).resolve().parent / "results" / "numba_gpu.json")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error(f"--repeat must be >= 1, got {args.repeat}")

    from segcore_numba.gpu import probe

    reason = probe()
    if reason is not None:
        print(f"numba_gpu.py needs a usable CUDA GPU for the {BACKEND} backend: {reason}", file=sys.stderr)
        return 2
    import cupy
    import numba

    props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
    name = props["name"]
    result: dict[str, Any] = {}
    if "roi_align" in args.only:
        result["roi_align"] = bench_roi_align(args.repeat)
    if "crf" in args.only:
        result["crf"] = bench_crf(args.repeat)
    print_table(result)
    payload = {
        "benchmark": "numba_gpu",
        "device": name.decode() if isinstance(name, bytes) else str(name),
        "versions": {"python": platform.python_version(), "numba": numba.__version__, "cupy": cupy.__version__},
        "timing": {"repeat": args.repeat, "clock": "CUDA events, median after one warm-up run"},
        "targets": TARGETS,
        "result": result,
    }
    save_json(args.output, payload)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

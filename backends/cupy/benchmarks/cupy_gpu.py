"""GPU benchmarks and the model-level check of the ``cupy`` backend (issue 9). Needs a CUDA GPU.

* ``conv``: conv2d forward through the backend vs a bare ``cupy.matmul`` GEMM of the same ``M x N x K`` (what
  the im2col costs on top of cuBLAS); target: conv2d at >= 60% of the GEMM's throughput.
* ``roi_align``: forward and backward (deterministic gather and atomic) on a detection-sized map. The
  torchvision CUDA comparison (target: within 1.25x) is not made here: segcore never imports torch.
* ``crf``: ``segcore.crf.dense_crf`` with 10 iterations on 500x375 x 21 labels (target: < 10 ms).
* ``step``: DeepLabv3+ (ResNet-50, 513x513, batch 2) training step time (forward, backward, SGD update).
* ``check``: the same step on ``cupy`` and ``numpy`` from identical weights: loss and every parameter gradient
  agree (rtol 5e-3, atol 5e-4). The NumPy side takes minutes.
* ``train``: a short training run on the synthetic shapes data on both backends; mIoU compared.

    python backends/cupy/benchmarks/cupy_gpu.py                  # conv, roi_align, crf, step
    python backends/cupy/benchmarks/cupy_gpu.py --only check train

Prints a table per part and writes ``backends/cupy/benchmarks/results/cupy_gpu.json`` atomically. Exits with
status 2 and the backend's reason when no usable GPU is found. Times are medians of CUDA-event-timed runs after
a warm-up; ratios matter more than absolute times on shared machines.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

import segcore
from segcore.backend import get_backend
from segcore.io import save_json
from segcore.testing import assert_arrays_agree

# The shared timing helpers in the repository's benchmarks/ directory.
sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "benchmarks"))
from timing import cuda_event_time  # noqa: E402

PARTS = ("conv", "roi_align", "crf", "step", "check", "train")
DEFAULT_PARTS = ("conv", "roi_align", "crf", "step")

# (name, n, c, h, w, o, kernel, stride, padding, dilation, groups): DeepLabv3+ / ResNet-50 layers at 513x513.
CONV_SHAPES = [
    ("stem 7x7/2", 2, 3, 513, 513, 64, 7, 2, 3, 1, 1),
    ("layer1 3x3", 2, 64, 129, 129, 64, 3, 1, 1, 1, 1),
    ("layer2 3x3", 2, 128, 65, 65, 128, 3, 1, 1, 1, 1),
    ("layer3 3x3", 2, 256, 33, 33, 256, 3, 1, 1, 1, 1),
    ("layer4 3x3 d2", 2, 512, 33, 33, 512, 3, 1, 2, 2, 1),
    ("aspp 3x3 d12", 2, 2048, 33, 33, 256, 3, 1, 12, 12, 1),
    ("1x1 1024->256", 2, 1024, 33, 33, 256, 1, 1, 0, 1, 1),
    ("decoder 3x3", 2, 304, 129, 129, 256, 3, 1, 1, 1, 1),
]


def bench_conv(repeat: int) -> list[dict]:
    import cupy

    backend = get_backend("cupy")
    conv2d = backend.kernel("conv2d")
    rng = np.random.default_rng(0)
    rows = []
    for name, n, c, h, w, o, k, s, p, d, g in CONV_SHAPES:
        x = cupy.asarray(rng.standard_normal((n, c, h, w), dtype=np.float32))
        weight = cupy.asarray(rng.standard_normal((o, c // g, k, k), dtype=np.float32))
        ho = (h + 2 * p - d * (k - 1) - 1) // s + 1
        wo = (w + 2 * p - d * (k - 1) - 1) // s + 1
        # The GEMM conv2d does, alone: (G, O/G, K) @ (G, K, N*Ho*Wo).
        a = cupy.asarray(rng.standard_normal((g, o // g, c // g * k * k), dtype=np.float32))
        b = cupy.asarray(rng.standard_normal((g, c // g * k * k, n * ho * wo), dtype=np.float32))
        t_conv = cuda_event_time(lambda: conv2d(backend.xp, x, weight, (s, s), (p, p), (d, d), g), repeat)
        t_gemm = cuda_event_time(lambda: cupy.matmul(a, b), repeat)
        flops = 2.0 * n * o * ho * wo * (c // g) * k * k
        rows.append(
            {"layer": name, "conv_ms": 1e3 * t_conv, "gemm_ms": 1e3 * t_gemm, "conv_tflops": flops / t_conv / 1e12,
             "gemm_tflops": flops / t_gemm / 1e12, "conv_vs_gemm": t_gemm / t_conv}
        )
    print(f"{'layer':<16} {'conv ms':>9} {'GEMM ms':>9} {'conv TF/s':>10} {'GEMM TF/s':>10} {'ratio':>7}")
    for r in rows:
        print(f"{r['layer']:<16} {r['conv_ms']:>9.3f} {r['gemm_ms']:>9.3f} {r['conv_tflops']:>10.2f} "
              f"{r['gemm_tflops']:>10.2f} {r['conv_vs_gemm']:>7.2f}")
    print(f"target: conv2d at >= 0.60 of GEMM throughput; worst ratio {min(r['conv_vs_gemm'] for r in rows):.2f}\n")
    return rows


def bench_roi_align(repeat: int) -> dict:
    import cupy

    backend = get_backend("cupy")
    forward, backward = backend.kernel("roi_align"), backend.kernel("roi_align_backward")
    rng = np.random.default_rng(1)
    x = cupy.asarray(rng.standard_normal((2, 256, 200, 272), dtype=np.float32))
    count = 1024
    xy = rng.uniform(0, 700, (count, 2))
    boxes = np.concatenate([rng.integers(0, 2, (count, 1)), xy, xy + rng.uniform(16, 300, (count, 2))], axis=1)
    rois = cupy.asarray(boxes.astype(np.float32))
    params = (0.25, (7, 7), 2, True)
    grad = cupy.asarray(rng.standard_normal((count, 256, 7, 7), dtype=np.float32))
    result = {
        "shape": "input (2, 256, 200, 272), 1024 RoIs, 7x7, sampling 2, aligned",
        "forward_ms": 1e3 * cuda_event_time(lambda: forward(backend.xp, x, rois, *params), repeat),
        "backward_deterministic_ms": 1e3
        * cuda_event_time(lambda: backward(backend.xp, grad, rois, x.shape, *params, deterministic=True), repeat),
        "backward_atomic_ms": 1e3
        * cuda_event_time(lambda: backward(backend.xp, grad, rois, x.shape, *params, deterministic=False), repeat),
    }
    print(f"RoIAlign {result['shape']}")
    for key in ("forward_ms", "backward_deterministic_ms", "backward_atomic_ms"):
        print(f"  {key:<28} {result[key]:>9.3f}")
    print("  torchvision CUDA comparison (target: within 1.25x): run torchvision.ops.roi_align on the same shapes "
          "separately; segcore does not import torch\n")
    return result


def bench_crf(repeat: int) -> dict:
    from segcore.crf import dense_crf

    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, (375, 500, 3), dtype=np.uint8)
    probs = rng.dirichlet(np.ones(21), size=(375, 500)).transpose(2, 0, 1).astype(np.float32)
    t = cuda_event_time(lambda: dense_crf(image, probs, iterations=10, backend="cupy"), repeat)
    print(f"dense CRF 500x375 x 21 labels, 10 iterations, host to host: {1e3 * t:.2f} ms (target < 10 ms)\n")
    return {"shape": "500x375, 21 labels, 10 iterations", "ms": 1e3 * t}


def _deeplab(backend: str, size: int, batch: int, width: float):
    model = segcore.build(
        "deeplabv3plus", backend=backend, num_classes=21, backbone="resnet50", width=width, rng=np.random.default_rng(0)
    )
    rng = np.random.default_rng(3)
    images = segcore.tensor(rng.standard_normal((batch, 3, size, size)).astype(np.float32), backend=backend)
    masks = segcore.tensor(rng.integers(0, 21, (batch, size, size)), backend=backend)
    return model, images, masks


def _step(model, images, masks, optimizer=None) -> float:
    model.zero_grad()
    total = sum(model.losses(images, masks).values())
    total.backward()
    if optimizer is not None:
        optimizer.step()
    return float(total.item())


def bench_step(repeat: int, size: int, batch: int) -> dict:
    from segcore.optim import SGD

    model, images, masks = _deeplab("cupy", size, batch, 1.0)
    model.train()
    optimizer = SGD(model.parameters(), lr=1e-3, momentum=0.9)
    t = cuda_event_time(lambda: _step(model, images, masks, optimizer), repeat)
    print(f"DeepLabv3+ ResNet-50 {size}x{size} batch {batch} training step: {1e3 * t:.1f} ms\n")
    return {"size": size, "batch": batch, "ms": 1e3 * t}


def check_model(size: int, batch: int) -> dict:
    results = {}
    for backend in ("cupy", "numpy"):
        model, images, masks = _deeplab(backend, size, batch, 1.0)
        model.train()
        start = time.perf_counter()
        loss = _step(model, images, masks)
        grads = {name: p.grad.numpy() for name, p in model.named_parameters()}
        results[backend] = (loss, grads, time.perf_counter() - start)
    (loss_gpu, grads_gpu, _), (loss_cpu, grads_cpu, cpu_s) = results["cupy"], results["numpy"]
    assert abs(loss_gpu - loss_cpu) <= 1e-3 * max(1.0, abs(loss_cpu)), (loss_gpu, loss_cpu)
    for name, grad in grads_cpu.items():
        assert_arrays_agree(grads_gpu[name], grad, rtol=5e-3, atol=5e-4, what=name)
    print(f"model check: loss cupy {loss_gpu:.6f} vs numpy {loss_cpu:.6f}; {len(grads_cpu)} gradients agree "
          f"(NumPy step {cpu_s:.0f} s)\n")
    return {"loss_cupy": loss_gpu, "loss_numpy": loss_cpu, "gradients": len(grads_cpu)}


def train_shapes(epochs: int) -> dict:
    from segcore.data import DataLoader, shapes
    from segcore.data import transforms as T
    from segcore.optim import SGD
    from segcore.train import evaluate, fit

    miou = {}
    for backend in ("cupy", "numpy"):
        model = segcore.build(
            "deeplabv3plus", backend=backend, num_classes=4, backbone="resnet50", width=0.25,
            rng=np.random.default_rng(0),
        )
        train = DataLoader(
            shapes(64, (64, 64), num_classes=4, rng=0), batch_size=8, shuffle=True, transform=T.Normalize(), rng=1
        )
        val = DataLoader(shapes(32, (64, 64), num_classes=4, rng=2), batch_size=8, transform=T.Normalize())
        fit(model, train, epochs=epochs, optimizer=SGD(model.parameters(), lr=0.01, momentum=0.9), progress=False)
        miou[backend] = float(evaluate(model, val).miou)
    print(f"shapes, {epochs} epochs: mIoU cupy {miou['cupy']:.4f} vs numpy {miou['numpy']:.4f}\n")
    return miou


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", choices=PARTS, default=list(DEFAULT_PARTS))
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--size", type=int, default=513)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "results" / "cupy_gpu.json")
    args = parser.parse_args(argv)

    from segcore_cupy.device import probe

    reason = probe()
    if reason is not None:
        print(f"cupy_gpu.py needs a usable CUDA GPU for the cupy backend: {reason}", file=sys.stderr)
        return 2
    import cupy

    props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
    payload: dict[str, Any] = {
        "device": props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"]),
        "cupy": cupy.__version__,
        "python": platform.python_version(),
    }
    print(f"device: {payload['device']}, CuPy {payload['cupy']}\n")
    if "conv" in args.only:
        payload["conv"] = bench_conv(args.repeat)
    if "roi_align" in args.only:
        payload["roi_align"] = bench_roi_align(args.repeat)
    if "crf" in args.only:
        payload["crf"] = bench_crf(args.repeat)
    if "step" in args.only:
        payload["step"] = bench_step(args.repeat, args.size, args.batch)
    if "check" in args.only:
        payload["check"] = check_model(args.size, args.batch)
    if "train" in args.only:
        payload["train"] = train_shapes(args.epochs)
    save_json(args.output, payload)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

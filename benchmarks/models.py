"""Model zoo table: parameters at the paper configuration and NumPy forward time of one 1x3x256x256 image.

Every registered semantic model is built at full width with its paper defaults (21 VOC classes unless the
paper used another data set), its parameters counted, and one eval-mode forward pass timed on the NumPy
reference backend (median of ``--repeat`` runs after a warm-up).

    python benchmarks/models.py                  # every model, ~5-10 minutes on 2 cores
    python benchmarks/models.py --models unet deeplabv3plus --repeat 1

Prints a table and writes ``benchmarks/results/models.json`` atomically.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import segcore  # noqa: E402
from segcore.io import save_json  # noqa: E402

# The paper's data set where it was not VOC: U-Net (ISBI cell tracking, 2 classes), SegNet (CamVid, 11).
PAPER_KWARGS: dict[str, dict] = {
    "unet": {"num_classes": 2},
    "segnet": {"num_classes": 11},
    "segnet_basic": {"num_classes": 11},
}
DEFAULT_KWARGS = {"num_classes": 21}


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


def time_forward(model, image, repeat: int) -> float:
    model.eval()
    with segcore.no_grad():
        model(image)  # warm-up: first-call allocations and lazy imports are not the steady state
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            model(image)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", help="model names (default: every registered semantic model)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "results" / "models.json")
    args = parser.parse_args(argv)

    names = args.models or [spec.name for spec in segcore.list_models("semantic")]
    rng = np.random.default_rng(0)
    image = segcore.tensor(rng.standard_normal((1, 3, args.size, args.size)).astype(np.float32))
    rows = []
    print(f"{'model':28s} {'parameters':>13s} {'forward s':>10s}")
    for name in names:
        kwargs = dict(PAPER_KWARGS.get(name, DEFAULT_KWARGS))
        model = segcore.build(name, rng=np.random.default_rng(0), **kwargs)
        row = {"model": name, "kwargs": kwargs, "parameters": count_parameters(model)}
        row["forward_s"] = time_forward(model, image, args.repeat)
        rows.append(row)
        print(f"{name:28s} {row['parameters']:>13,d} {row['forward_s']:>10.2f}", flush=True)
        del model

    payload = {
        "benchmark": "models",
        "input": [1, 3, args.size, args.size],
        "backend": "numpy",
        "repeat": args.repeat,
        "machine": platform.platform(),
        "numpy": np.__version__,
        "rows": rows,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    save_json(args.output, payload)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()

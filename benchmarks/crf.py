"""Speed of segcore's dense CRF (permutohedral, NumPy backend) side by side with pydensecrf.

The issue's setting: a 500x375 photo-like image, 21 labels, 10 mean-field iterations, pydensecrf's README
parameters (gaussian sxy=3 compat=3; bilateral sxy=80 srgb=13 compat=10). Columns, interleaved over rounds so
that load from other processes hits every column alike:

* ``segcore``: ``segcore.crf.dense_crf`` from probabilities to marginals (lattice builds included);
* ``segcore_lattices``: building the two lattices and their normalisations alone (part of the above);
* ``pydensecrf``: ``DenseCRF2D`` + ``setUnaryEnergy(-log p)`` + both pairwise terms + ``inference``, when
  ``import pydensecrf.densecrf`` works (``pip install pydensecrf2``).

Times are the median of ``--repeat`` runs after 0.1 s of untimed settling runs (benchmarks/timing.py), then the median over ``--rounds``. Also reports
how closely the two agree (argmax agreement, largest marginal difference). Prints a table and writes JSON to
``benchmarks/results/crf.json`` (atomically). Run from the repo root: ``python benchmarks/crf.py``.
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
from workloads import photo_like  # noqa: E402  (benchmarks/workloads.py)

from segcore.io import save_json  # noqa: E402
from segcore.backend import get_backend  # noqa: E402
from segcore.crf import DEFAULTS, dense_crf  # noqa: E402
from segcore.nn.crf import PairwiseFilter, pairwise_features  # noqa: E402

try:
    import pydensecrf.densecrf as dcrf
except ImportError:  # pydensecrf is an optional comparison, never a dependency
    dcrf = None

TARGET_RATIO_TO_PYDENSECRF = 3.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=500)
    parser.add_argument("--height", type=int, default=375)
    parser.add_argument("--labels", type=int, default=21)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per measurement (median taken)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds over all columns (median taken)")
    parser.add_argument(
        "--output", type=Path, default=Path(__file__).resolve().parent / "results" / "crf.json", help="JSON path"
    )
    args = parser.parse_args(argv)
    for name in ("width", "height", "labels", "repeat", "rounds"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.iterations < 0:
        parser.error(f"--iterations must be >= 0, got {args.iterations}")

    h, w, k, iters = args.height, args.width, args.labels, args.iterations
    image, probs = photo_like(h, w, k, np.random.default_rng(0))
    p = DEFAULTS
    backend = get_backend("numpy")

    def segcore_crf():
        return dense_crf(image, probs, iterations=iters)

    def segcore_lattices():
        xp = backend.xp
        smooth = pairwise_features(xp, h, w, (p["gaussian_sxy"],) * 2, np.float32)
        appearance = pairwise_features(
            xp, h, w, (p["bilateral_sxy"],) * 2, np.float32, image, (p["bilateral_srgb"],) * 3
        )
        return PairwiseFilter(backend, smooth, "permutohedral"), PairwiseFilter(backend, appearance, "permutohedral")

    def pydensecrf_crf():
        crf = dcrf.DenseCRF2D(w, h, k)
        crf.setUnaryEnergy(np.ascontiguousarray(-np.log(probs).reshape(k, -1)))
        crf.addPairwiseGaussian(sxy=p["gaussian_sxy"], compat=p["gaussian_compat"])
        crf.addPairwiseBilateral(
            sxy=p["bilateral_sxy"], srgb=p["bilateral_srgb"], rgbim=image, compat=p["bilateral_compat"]
        )
        return np.array(crf.inference(iters)).reshape(k, h, w)

    columns: dict[str, Callable[[], object]] = {"segcore": segcore_crf, "segcore_lattices": segcore_lattices}
    if dcrf is not None:
        columns["pydensecrf"] = pydensecrf_crf
    t, samples = interleaved(columns, args.repeat, args.rounds)

    result: dict = {
        "setting": {"height": h, "width": w, "labels": k, "iterations": iters, "method": "permutohedral",
                    "backend": "numpy", **{key: p[key] for key in p if key != "iterations"}},
        "segcore_s": t["segcore"],
        "segcore_lattices_s": t["segcore_lattices"],
        "segcore_rounds_s": samples["segcore"],
    }
    labels_changed = float((segcore_crf().argmax(axis=0) != probs.argmax(axis=0)).mean())
    result["fraction_of_labels_changed_by_crf"] = labels_changed
    if dcrf is not None:
        ours, theirs = segcore_crf(), pydensecrf_crf()
        result.update(
            pydensecrf_s=t["pydensecrf"],
            pydensecrf_rounds_s=samples["pydensecrf"],
            ratio_segcore_to_pydensecrf=t["segcore"] / t["pydensecrf"],
            argmax_agreement=float((ours.argmax(axis=0) == theirs.argmax(axis=0)).mean()),
            max_abs_marginal_difference=float(np.abs(ours - theirs).max()),
        )

    print(f"dense CRF, permutohedral, {w}x{h} image, {k} labels, {iters} iterations, pydensecrf README parameters")
    print(f"{'column':<28} {'time ms':>9}")
    print("-" * 38)
    print(f"{'segcore dense_crf':<28} {1e3 * t['segcore']:>9.1f}")
    print(f"{'  of which lattice builds':<28} {1e3 * t['segcore_lattices']:>9.1f}")
    if dcrf is not None:
        print(f"{'pydensecrf':<28} {1e3 * t['pydensecrf']:>9.1f}")
        print(
            f"ratio segcore / pydensecrf: {result['ratio_segcore_to_pydensecrf']:.2f}x "
            f"(target <= {TARGET_RATIO_TO_PYDENSECRF:.1f}x); argmax agreement {100 * result['argmax_agreement']:.2f}%, "
            f"max |marginal difference| {result['max_abs_marginal_difference']:.2e}"
        )
    else:
        print("pydensecrf not installed (pip install pydensecrf2): no comparison column")
    print(f"labels changed by the CRF: {100 * labels_changed:.1f}% of pixels")

    payload = {
        "benchmark": "crf",
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "pydensecrf": dcrf is not None,
        },
        "timing": {"repeat": args.repeat, "rounds": args.rounds, "statistic": "median of per-round medians"},
        "targets": {"ratio_to_pydensecrf": TARGET_RATIO_TO_PYDENSECRF},
        "result": result,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    save_json(args.output, payload)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

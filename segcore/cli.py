"""The ``segcore`` command line.

Each subcommand is a function decorated with :func:`command`; it receives the parsed arguments and returns
the exit status. Errors are printed to stderr as one line (``segcore: error: ...``) with exit status 1;
``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import traceback
import warnings
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

__all__ = ["main", "command", "build_parser"]


@dataclass(frozen=True)
class _Command:
    name: str
    help: str
    run: Callable[[argparse.Namespace], int]
    configure: Callable[[argparse.ArgumentParser], None] | None


_COMMANDS: dict[str, _Command] = {}


def command(
    name: str, help: str, configure: Callable[[argparse.ArgumentParser], None] | None = None
) -> Callable[[Callable[[argparse.Namespace], int]], Callable[[argparse.Namespace], int]]:
    """Register ``segcore NAME``: the decorated ``run(args) -> int`` runs it; ``configure(parser)`` adds
    its arguments."""

    def decorate(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        if name in _COMMANDS:
            raise ValueError(f"segcore command {name!r} is defined twice")
        _COMMANDS[name] = _Command(name, help, run, configure)
        return run

    return decorate


def _table(rows: list[tuple[str, ...]], header: tuple[str, ...]) -> str:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in [header, *rows]]
    return "\n".join(lines)


# -- commands ---------------------------------------------------------------------------------------------


def _configure_models(parser: argparse.ArgumentParser) -> None:
    from .registry import TASKS

    parser.add_argument("--task", choices=TASKS, help="only models for this task")


@command("models", "list the models that segcore.build can build", _configure_models)
def _models(args: argparse.Namespace) -> int:
    from .registry import list_models

    specs = list_models(args.task)
    if not specs:
        print("no models registered" + (f" for task {args.task!r}" if args.task else ""))
        return 0
    rows = [(s.name, s.task, s.provider, s.description) for s in specs]
    print(_table(rows, ("NAME", "TASK", "PLUGIN", "DESCRIPTION")))
    return 0


@command("backends", "list the backends, with whether each can run here and, if not, why")
def _backends(args: argparse.Namespace) -> int:
    from .backend import _all_backends

    table = _all_backends()
    width = max(len(name) for name in table)
    for name, (backend, provider) in sorted(table.items()):
        if backend.is_available():
            status = "available"
        else:
            status = f"unavailable: {backend.unavailable_reason}"
            if backend.install_hint:
                status += f" (to use it: {backend.install_hint})"
        print(f"{name.ljust(width)}  {status}  [plugin {provider}]")
    return 0


@command("plugins", "list plugins with version, source and whether they loaded")
def _plugins(args: argparse.Namespace) -> int:
    from .plugins import manager

    infos = manager.plugins(load=True)
    rows = [
        (i.name, i.version or "-", i.source, f"{i.status}: {i.error}" if i.error else i.status) for i in infos
    ]
    print(_table(rows, ("NAME", "VERSION", "SOURCE", "STATUS")))
    return 0


# -- training, evaluation and prediction ------------------------------------------------------------------
# The demo's settings: a 3-level U-Net with 1/8 of the paper's channels (8..64) and batch norm, trained with
# Adam and a poly schedule on 2400 synthetic 48x48 images for 3000 steps, reaches mIoU 0.93-0.94 on held-out
# images (seeds 0 and 1) in about 140 s on 2 CPU cores; with under ~1500 steps it has not yet learnt to tell
# the shapes apart, and 2400 steps end near 0.92.
DEMO_MODEL = "unet"
DEMO_TARGET = 0.90
DEMO_EPOCHS = 10
DEMO_SIZE = 48
DEMO_LR = 6e-3
DEMO_TRAIN_IMAGES = 2400
DEMO_VAL_IMAGES = 200
DEMO_MODEL_ARGS = {"width": 0.125, "depth": 3, "batch_norm": True, "dropout": 0.0}
MODEL_METADATA_KEY = "segcore.model"


@contextlib.contextmanager
def _blas_threads(count: int | None) -> Iterator[None]:
    """Limit the BLAS library's threads for the duration (``None``: leave them as they are).

    OpenBLAS threads busy-wait for each other: as soon as another thread (a data loader worker, another
    process) wants one of the cores, a BLAS call can take ten times longer. On a small machine one BLAS thread
    plus a loader thread is the fastest setting.
    """
    if count is None:
        yield
        return
    if count < 1:
        raise ValueError(f"--blas-threads must be at least 1, got {count}")
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        warnings.warn("--blas-threads needs threadpoolctl (pip install threadpoolctl); BLAS keeps its thread count")
        yield
        return
    with threadpool_limits(count, user_api="blas"):
        yield


def _model_spec(name: str):
    from .registry import list_models

    specs = {spec.name: spec for spec in list_models()}
    if name not in specs:
        from .registry import build

        build(name)  # raises the registry's error with close matches and the full list
    return specs[name]


def _factory_accepts(spec, name: str) -> bool:
    import inspect

    try:
        params = inspect.signature(spec.factory).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def _parse_model_args(pairs: Sequence[str] | None) -> dict:
    """``KEY=VALUE`` strings as a dict; values are read as JSON (numbers, true/false, lists) or kept as str."""
    import json

    kwargs = {}
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        if not sep or not key.isidentifier():
            raise ValueError(f"--model-arg must look like KEY=VALUE (e.g. width=0.25), got {pair!r}")
        try:
            kwargs[key] = json.loads(value)
        except json.JSONDecodeError:
            kwargs[key] = value
    return kwargs


def _build_model(name: str, num_classes: int, kwargs: dict, backend: str, seed: int):
    import numpy as np

    from .registry import build

    spec = _model_spec(name)
    kwargs = dict(kwargs)
    if _factory_accepts(spec, "rng"):
        kwargs["rng"] = np.random.default_rng(seed)
    return build(name, backend=backend, num_classes=num_classes, **kwargs)


def _save_weights(model, path: str, config: dict) -> None:
    """Weights plus what ``evaluate``/``predict`` need to rebuild the model, in the safetensors metadata."""
    import json

    from .io import save_state_dict

    save_state_dict(model.state_dict(), path, metadata={MODEL_METADATA_KEY: json.dumps(config)})


def _load_model(args: argparse.Namespace):
    """The model of ``--weights`` (rebuilt from the file's metadata or ``--model``) and its config."""
    import json
    import os

    from safetensors import safe_open

    from .data.transforms import IMAGENET_MEAN, IMAGENET_STD
    from .io import load_state_dict

    path = args.weights
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--weights: no file {path!r}")
    try:
        with safe_open(path, framework="np") as handle:
            metadata = handle.metadata() or {}
    except Exception as exc:  # safetensors has its own exception types for damaged files
        raise ValueError(f"--weights: {path!r} is not a safetensors file ({type(exc).__name__}: {exc})") from None
    config = json.loads(metadata[MODEL_METADATA_KEY]) if MODEL_METADATA_KEY in metadata else {}
    name = args.model or config.get("model")
    if name is None:
        raise ValueError(
            f"--weights {path!r} does not say which model it holds (it was not written by `segcore train`); "
            "pass --model NAME and --num-classes K"
        )
    kwargs = dict(config.get("model_args", {}))
    kwargs.update(_parse_model_args(args.model_arg))
    num_classes = args.num_classes or config.get("num_classes")
    if num_classes is None:
        raise ValueError("pass --num-classes K: the weights file does not record the number of classes")
    model = _build_model(name, int(num_classes), kwargs, args.backend, 0)
    model.load_state_dict(load_state_dict(path))
    model.eval()
    config = {
        "model": name,
        "num_classes": int(num_classes),
        "class_names": config.get("class_names") or [str(i) for i in range(int(num_classes))],
        "mean": config.get("mean", list(IMAGENET_MEAN)),
        "std": config.get("std", list(IMAGENET_STD)),
        "palette": config.get("palette"),
    }
    return model, config


def _dataset(spec: str, split: str | None, args: argparse.Namespace, train: bool):
    """The data set named by ``--data`` (``shapes``, ``voc:PATH``, ``coco:PATH``, ``cityscapes:PATH``)."""
    import os

    from . import data

    kind, _, path = spec.partition(":")
    if kind == "shapes":
        if path:
            raise ValueError(f"--data shapes takes no path, got {spec!r}")
        n = args.train_images if train else args.val_images
        # Train and validation images come from different seeds: the validation split is held out.
        return data.shapes(n, args.size, num_classes=args.shape_classes, rng=args.seed * 2 + (0 if train else 1))
    if not path:
        raise ValueError(f"--data must be shapes, voc:PATH, coco:PATH or cityscapes:PATH, got {spec!r}")
    if kind == "voc":
        return data.VOCSegmentation(path, split or ("train" if train else "val"))
    if kind == "cityscapes":
        return data.CityscapesSegmentation(path, split or ("train" if train else "val"))
    if kind == "coco":
        split = split or ("train2017" if train else "val2017")
        annotations = os.path.join(path, "annotations", f"instances_{split}.json")
        return data.COCOInstances(os.path.join(path, split), annotations)
    raise ValueError(f"--data must be shapes, voc:PATH, coco:PATH or cityscapes:PATH, got {spec!r}")


def _train_loader(args: argparse.Namespace, train_set):
    from .data import DataLoader
    from .data import transforms as T

    if args.data == "shapes":
        # Shapes images already have the training size and vary enough; flipping is the one cheap extra.
        augment = T.Compose([T.RandomHorizontalFlip(), T.Normalize()])
    else:
        augment = T.Compose(
            [
                T.RandomScale((0.5, 2.0)),
                T.RandomCrop(args.crop_size, ignore_index=train_set.ignore_index),
                T.RandomHorizontalFlip(),
                T.ColorJitter(),
                T.Normalize(),
            ]
        )
    return DataLoader(
        train_set, args.batch_size, shuffle=True, drop_last=True, transform=augment, rng=args.seed,
        num_workers=args.workers,
    )  # fmt: skip


def _val_loader(args: argparse.Namespace, val_set):
    from .data import DataLoader
    from .data import transforms as T

    if args.data == "shapes":
        return DataLoader(
            val_set, args.batch_size, transform=T.Normalize(), rng=args.seed + 1, num_workers=args.workers
        )
    # Real images differ in size: evaluate one at a time at full resolution, padded for the model (the padding
    # is labelled ignore, so it does not count).
    return DataLoader(
        val_set, 1, transform=T.Compose([T.PadToMultiple(32), T.Normalize()]), rng=args.seed + 1,
        num_workers=args.workers,
    )  # fmt: skip


def _optimizer(args: argparse.Namespace, model, steps: int):
    from .optim import SGD, Adam, AdamW
    from .optim.lr_scheduler import PolyLR

    if args.optimizer == "sgd":
        optimizer = SGD(model.parameters(), lr=args.lr or 0.01, momentum=0.9, weight_decay=args.weight_decay)
    else:
        cls = Adam if args.optimizer == "adam" else AdamW
        optimizer = cls(model.parameters(), lr=args.lr or 3e-3, weight_decay=args.weight_decay)
    return optimizer, PolyLR(optimizer, total_iters=max(steps, 1), power=0.9)


def _print_iou(class_names: Sequence[str], iou, miou: float) -> None:
    import math

    rows = [(name, "-" if math.isnan(v) else f"{v:.4f}") for name, v in zip(class_names, iou)]
    print(_table(rows, ("CLASS", "IoU")))
    print(f"mIoU {miou:.4f}")


def _overlay_grid(model, dataset, count: int, mean, std, palette=None):
    """Rows of input | ground truth | prediction for the first ``count`` samples, and a legend."""
    import numpy as np

    from . import viz
    from .data.transforms import Normalize

    normalise = Normalize(mean, std)
    rows = []
    count = min(count, len(dataset))
    samples = [dataset[i] for i in range(count)]
    images = np.stack([normalise(s, np.random.default_rng(0))["image"] for s in samples])
    predictions = model.predict(images)
    scale = max(1, 128 // max(samples[0]["image"].shape[:2]))
    for sample, prediction in zip(samples, predictions):
        panels = [
            sample["image"],
            viz.overlay(sample["image"], sample["mask"], palette=palette, alpha=0.6),
            viz.overlay(sample["image"], np.asarray(prediction), palette=palette, alpha=0.6),
        ]
        titles = ["input", "ground truth", "prediction"] if not rows else None
        rows.append(viz.side_by_side(panels, titles, scale=scale))
    return viz.stack(rows + [viz.legend(list(dataset.class_names), palette)], pad=4)


def _add_training_options(
    parser: argparse.ArgumentParser, *, epochs: int, batch_size: int, lr: float | None, blas_threads: int | None
) -> None:
    parser.add_argument("--backend", default="numpy", help="backend the model runs on (default: numpy)")
    parser.add_argument("--epochs", type=int, default=epochs, help=f"training epochs (default: {epochs})")
    parser.add_argument("--batch-size", type=int, default=batch_size, help=f"images per batch (default: {batch_size})")
    parser.add_argument("--optimizer", choices=("adam", "adamw", "sgd"), default="adam", help="default: adam")
    default = f"{lr:g}" if lr is not None else "3e-3 for Adam, 0.01 for SGD"
    parser.add_argument("--lr", type=float, default=lr, help=f"learning rate (default: {default})")
    parser.add_argument("--weight-decay", type=float, default=0.0, help="weight decay (default: 0)")
    parser.add_argument("--workers", type=int, default=1, help="data loading threads (default: 1)")
    parser.add_argument("--seed", type=int, default=0, help="seed of data, weights and shuffling (default: 0)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    help_threads = f"BLAS threads (default: {blas_threads})" if blas_threads else "BLAS threads (default: BLAS's own)"
    parser.add_argument("--blas-threads", type=int, default=blas_threads, help=help_threads)


def _configure_demo(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=DEMO_MODEL, help=f"registered model to train (default: {DEMO_MODEL})")
    parser.add_argument("--out", default="segcore-demo", help="output directory (default: ./segcore-demo)")
    parser.add_argument("--size", type=int, default=DEMO_SIZE, help=f"image size (default: {DEMO_SIZE})")
    parser.add_argument(
        "--train-images", type=int, default=DEMO_TRAIN_IMAGES, help=f"training images (default: {DEMO_TRAIN_IMAGES})"
    )
    parser.add_argument(
        "--val-images", type=int, default=DEMO_VAL_IMAGES, help=f"held-out images (default: {DEMO_VAL_IMAGES})"
    )
    parser.add_argument(
        "--target", type=float, default=DEMO_TARGET, help=f"validation mIoU to reach for PASS (default: {DEMO_TARGET})"
    )
    _add_training_options(parser, epochs=DEMO_EPOCHS, batch_size=8, lr=DEMO_LR, blas_threads=1)


@command(
    "demo",
    "train a small U-Net on the built-in synthetic shapes, report held-out mIoU, write overlays and weights",
    _configure_demo,
)
def _demo(args: argparse.Namespace) -> int:
    with _blas_threads(args.blas_threads):
        return _run_demo(args)


def _run_demo(args: argparse.Namespace) -> int:
    import os
    import time

    from . import viz
    from .data.transforms import IMAGENET_MEAN, IMAGENET_STD
    from .train import evaluate, fit

    started = time.perf_counter()
    if not 0.0 <= args.target <= 1.0:
        raise ValueError(f"--target must be an mIoU in [0, 1], got {args.target}")
    for name in ("epochs", "size", "train_images", "val_images", "batch_size"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    args.data, args.shape_classes = "shapes", 4
    train_set = _dataset("shapes", None, args, train=True)
    val_set = _dataset("shapes", None, args, train=False)
    spec = _model_spec(args.model)
    model_args = {k: v for k, v in DEMO_MODEL_ARGS.items() if _factory_accepts(spec, k)}
    model = _build_model(args.model, train_set.num_classes, model_args, args.backend, args.seed)
    train_loader, val_loader = _train_loader(args, train_set), _val_loader(args, val_set)
    optimizer, scheduler = _optimizer(args, model, args.epochs * len(train_loader))
    print(
        f"segcore demo: {args.model} ({model.num_parameters():,} parameters) on {len(train_set)} synthetic "
        f"{args.size}x{args.size} images of {train_set.num_classes} classes ({', '.join(train_set.class_names)}), "
        f"{len(val_set)} held out; {args.epochs} epochs on the {args.backend} backend",
        flush=True,
    )
    os.makedirs(args.out, exist_ok=True)
    history = fit(
        model, train_loader, epochs=args.epochs, optimizer=optimizer, scheduler=scheduler, val_data=val_loader,
        checkpoint_dir=os.path.join(args.out, "checkpoint"), progress=not args.no_progress,
        on_epoch_end=None if not args.no_progress else lambda record: print(record.summary(args.epochs), flush=True),
    )  # fmt: skip
    result = evaluate(model, val_loader)
    print(f"\nper-class IoU on the {len(val_set)} held-out images:")
    _print_iou(train_set.class_names, result.iou, result.miou)
    config = {
        "model": args.model, "model_args": model_args, "num_classes": train_set.num_classes,
        "class_names": list(train_set.class_names), "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD),
    }  # fmt: skip
    weights = os.path.join(args.out, "model.safetensors")
    _save_weights(model, weights, config)
    overlay = os.path.join(args.out, "overlay.png")
    viz.save_png(overlay, _overlay_grid(model, val_set, 6, IMAGENET_MEAN, IMAGENET_STD))
    curves = os.path.join(args.out, "curves.png")
    viz.plot_history(history, curves)
    elapsed = time.perf_counter() - started
    passed = result.miou >= args.target
    print(f"wrote {overlay}, {curves}, {weights} and {os.path.join(args.out, 'checkpoint')}/")
    print(
        f"{'PASS' if passed else 'FAIL'}: held-out mIoU {result.miou:.4f} "
        f"{'>=' if passed else '<'} target {args.target:.2f} (wall time {elapsed:.0f} s)"
    )
    return 0 if passed else 1


def _configure_train(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="registered model (see `segcore models`)")
    parser.add_argument(
        "--data", required=True, help="shapes, voc:PATH (VOC20XX dir), coco:PATH (with annotations/), cityscapes:PATH"
    )
    parser.add_argument(
        "--model-arg", action="append", metavar="KEY=VALUE", help="keyword for the model factory (repeatable)"
    )
    parser.add_argument("--train-split", default=None, help="default: train (coco: train2017)")
    parser.add_argument("--val-split", default=None, help="default: val (coco: val2017); 'none' to skip validation")
    parser.add_argument("--crop-size", type=int, default=512, help="training crop of real images (default: 512)")
    parser.add_argument("--size", type=int, default=DEMO_SIZE, help=f"shapes: image size (default: {DEMO_SIZE})")
    parser.add_argument(
        "--train-images", type=int, default=DEMO_TRAIN_IMAGES, help=f"shapes: training images ({DEMO_TRAIN_IMAGES})"
    )
    parser.add_argument(
        "--val-images", type=int, default=DEMO_VAL_IMAGES, help=f"shapes: validation images ({DEMO_VAL_IMAGES})"
    )
    parser.add_argument("--shape-classes", type=int, default=4, help="shapes: number of classes, 2-6 (4)")
    parser.add_argument("--out", default="segcore-run", help="output directory (default: ./segcore-run)")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint")
    _add_training_options(parser, epochs=20, batch_size=8, lr=None, blas_threads=None)


@command("train", "train a registered model on shapes, Pascal VOC, COCO or Cityscapes data", _configure_train)
def _train(args: argparse.Namespace) -> int:
    with _blas_threads(args.blas_threads):
        return _run_train(args)


def _run_train(args: argparse.Namespace) -> int:
    import os

    from .data.transforms import IMAGENET_MEAN, IMAGENET_STD
    from .train import fit

    for name in ("epochs", "batch_size", "crop_size", "size"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    train_set = _dataset(args.data, args.train_split, args, train=True)
    val_set = None if args.val_split == "none" else _dataset(args.data, args.val_split, args, train=False)
    model_args = _parse_model_args(args.model_arg)
    model = _build_model(args.model, train_set.num_classes, model_args, args.backend, args.seed)
    train_loader = _train_loader(args, train_set)
    val_loader = None if val_set is None else _val_loader(args, val_set)
    optimizer, scheduler = _optimizer(args, model, args.epochs * len(train_loader))
    print(
        f"training {args.model} ({model.num_parameters():,} parameters) on {len(train_set)} images of "
        f"{train_set.num_classes} classes" + (f", validating on {len(val_set)}" if val_set is not None else ""),
        flush=True,
    )
    os.makedirs(args.out, exist_ok=True)
    if args.resume and args.no_progress:  # with progress, fit itself says where it resumed from
        print(f"resumed from {os.path.join(args.out, 'checkpoint')}", flush=True)
    history = fit(
        model, train_loader, epochs=args.epochs, optimizer=optimizer, scheduler=scheduler, val_data=val_loader,
        checkpoint_dir=os.path.join(args.out, "checkpoint"), resume=args.resume, progress=not args.no_progress,
        on_epoch_end=None if not args.no_progress else lambda record: print(record.summary(args.epochs), flush=True),
    )  # fmt: skip
    palette = train_set.palette.tolist() if train_set.palette is not None else None
    config = {
        "model": args.model, "model_args": model_args, "num_classes": train_set.num_classes,
        "class_names": list(train_set.class_names), "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD),
        "palette": palette,
    }  # fmt: skip
    weights = os.path.join(args.out, "model.safetensors")
    _save_weights(model, weights, config)
    from . import viz

    if history.last is not None and history.last.class_iou is not None:
        print(f"\nper-class IoU on {len(val_set)} validation images:")
        _print_iou(train_set.class_names, history.last.class_iou, history.last.val["miou"])
    if len(history):
        viz.plot_history(history, os.path.join(args.out, "curves.png"))
    print(f"wrote {weights}")
    return 0


def _configure_evaluate(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights", required=True, help="a model.safetensors written by `segcore train` or `demo`")
    parser.add_argument("--data", required=True, help="shapes, voc:PATH, coco:PATH or cityscapes:PATH")
    parser.add_argument("--split", default=None, help="default: val (coco: val2017)")
    parser.add_argument("--model", default=None, help="model name, when the weights file does not record it")
    parser.add_argument("--num-classes", type=int, default=None, help="when the weights file does not record it")
    parser.add_argument("--model-arg", action="append", metavar="KEY=VALUE", help="keyword for the model factory")
    parser.add_argument("--backend", default="numpy", help="default: numpy")
    parser.add_argument("--batch-size", type=int, default=8, help="shapes: images per batch (real images: 1)")
    parser.add_argument("--size", type=int, default=DEMO_SIZE, help="shapes: image size")
    parser.add_argument("--val-images", type=int, default=DEMO_VAL_IMAGES, help="shapes: images to evaluate")
    parser.add_argument("--shape-classes", type=int, default=4, help="shapes: number of classes")
    parser.add_argument("--seed", type=int, default=0, help="shapes: seed (the same as for training holds out)")
    parser.add_argument("--workers", type=int, default=1, help="data loading threads")
    parser.add_argument("--json", default=None, metavar="PATH", help="also write the scores as JSON")


@command("evaluate", "evaluate trained weights on a data set: per-class IoU, mIoU, pixel accuracy", _configure_evaluate)
def _evaluate(args: argparse.Namespace) -> int:
    import json

    from .train import evaluate
    from .io import atomic_write

    model, config = _load_model(args)
    data_set = _dataset(args.data, args.split, args, train=False)
    if data_set.num_classes != config["num_classes"]:
        raise ValueError(
            f"--data has {data_set.num_classes} classes but the model predicts {config['num_classes']}"
        )
    result = evaluate(model, _val_loader(args, data_set), progress=True)
    if isinstance(result, dict):  # an instance model: COCO mask AP/AR
        print(_table([(name, f"{value:.4f}") for name, value in result.items()], ("METRIC", "VALUE")))
        if args.json:
            payload = json.dumps(result, indent=1).encode()
            atomic_write(args.json, lambda handle: handle.write(payload))
        return 0
    _print_iou(data_set.class_names, result.iou, result.miou)
    print(f"pixel accuracy {result.pixel_accuracy:.4f}  mean class accuracy {result.mean_class_accuracy:.4f}")
    if args.json:
        scores = {
            "miou": result.miou, "pixel_accuracy": result.pixel_accuracy,
            "mean_class_accuracy": result.mean_class_accuracy, "fwiou": result.fwiou,
            "iou": dict(zip(data_set.class_names, (None if v != v else float(v) for v in result.iou))),
        }  # fmt: skip
        payload = json.dumps(scores, indent=1).encode()
        atomic_write(args.json, lambda handle: handle.write(payload))
    return 0


def _configure_predict(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", help="image files")
    parser.add_argument("--weights", required=True, help="a model.safetensors written by `segcore train` or `demo`")
    parser.add_argument("--out", required=True, help="directory for label PNGs and overlays")
    parser.add_argument("--model", default=None, help="model name, when the weights file does not record it")
    parser.add_argument("--num-classes", type=int, default=None, help="when the weights file does not record it")
    parser.add_argument("--model-arg", action="append", metavar="KEY=VALUE", help="keyword for the model factory")
    parser.add_argument("--backend", default="numpy", help="default: numpy")


@command("predict", "segment images: writes a label PNG and an overlay per image", _configure_predict)
def _predict(args: argparse.Namespace) -> int:
    import os

    import numpy as np

    from . import viz
    from .data import read_image
    from .data.transforms import Normalize, PadToMultiple

    model, config = _load_model(args)
    os.makedirs(args.out, exist_ok=True)
    palette = np.asarray(config["palette"], dtype=np.uint8) if config.get("palette") else None
    prepare = [PadToMultiple(32), Normalize(config["mean"], config["std"])]
    stems: dict[str, str] = {}
    for path in args.images:
        image = read_image(path)  # errors name the file
        stem = os.path.splitext(os.path.basename(path))[0]
        if stem in stems:
            raise ValueError(f"{path} and {stems[stem]} would write the same output files ({stem}.png)")
        stems[stem] = path
        sample = {"image": image}
        for step in prepare:
            sample = step(sample, np.random.default_rng(0))
        h, w = image.shape[:2]
        output = model.predict(sample["image"][None])[0]
        label_path = os.path.join(args.out, f"{stem}.png")
        overlay_path = os.path.join(args.out, f"{stem}_overlay.png")
        if isinstance(output, dict):
            keep = np.asarray(output["boxes"])[:, 0] < w  # instances found only in the padding are dropped
            masks = np.asarray(output["masks"], dtype=bool)[keep][:, :h, :w]
            order = np.argsort(-np.asarray(output["scores"])[keep], kind="stable")
            # Label PNG: instance index (1 = highest score) per pixel, 0 where no instance is.
            index = np.zeros((h, w), dtype=np.uint8)
            for rank, r in reversed(list(enumerate(order[:255], start=1))):
                index[masks[r]] = rank
            viz.save_png(label_path, index)
            picture = viz.draw_instances(
                image, masks, np.asarray(output["boxes"])[keep], np.asarray(output["labels"])[keep],
                np.asarray(output["scores"])[keep], class_names=config["class_names"],
            )  # fmt: skip
        else:
            labels = np.asarray(output)[:h, :w]
            viz.save_png(label_path, labels, palette=palette)
            present = sorted(int(v) for v in np.unique(labels))
            colours = viz.colormap(256) if palette is None else palette
            legend = viz.legend([config["class_names"][v] for v in present], colours[present])
            picture = viz.side_by_side([viz.overlay(image, labels, palette=palette), legend], pad=2)
        viz.save_png(overlay_path, picture)
        print(f"{path}: wrote {label_path} and {overlay_path}")
    return 0


# -- entry point ------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every registered subcommand."""
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="segcore", description="segcore: plugin-based image segmentation. Run `segcore COMMAND --help`."
    )
    parser.add_argument("--version", action="version", version=f"segcore {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    # Also accepted after the command; SUPPRESS keeps the subparser from overwriting a --debug given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks of errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for cmd in _COMMANDS.values():
        cmd_parser = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help, parents=[common])
        if cmd.configure is not None:
            cmd.configure(cmd_parser)
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"segcore: warning: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``segcore`` command with ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, --version and usage errors: argparse has printed what it had to
        return exit_.code if isinstance(exit_.code, int) else 2
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        try:
            return _COMMANDS[args.command].run(args)
        except KeyboardInterrupt:
            print("segcore: interrupted", file=sys.stderr)
            return 130
        except Exception as exc:
            if args.debug:
                traceback.print_exc()
            else:
                print(f"segcore: error: {exc}", file=sys.stderr)
                print("(run `segcore --debug ...` to see the traceback)", file=sys.stderr)
            return 1


if __name__ == "__main__":
    sys.exit(main())

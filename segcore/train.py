"""Training and evaluation loops on the model contract (``losses`` to train, ``predict`` to evaluate).

:func:`fit` trains for a number of epochs, evaluates on validation data after each (mIoU for semantic
models, COCO mask AP for instance models), and can checkpoint every epoch and resume exactly: a run stopped
after epoch ``k`` and resumed ends with bit-identical weights to one that never stopped, because the
checkpoint holds everything the rest of the run depends on -- weights and buffers, optimizer and scheduler
state, the data loaders' generator states and the states of generators owned by modules (dropout).

A checkpoint directory holds ``checkpoint.safetensors`` (tensors in safetensors; all other state as JSON in
its metadata, never pickle), ``model.safetensors`` (the weights alone, for :meth:`Module.load`) and
``history.json``. Each file is replaced atomically, so an interrupted write leaves the previous checkpoint.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from collections.abc import Iterator
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from .autograd import Tensor, tensor
from .io import load_state_dict, save_state_dict
from .metrics import SemanticMetric, SemanticSegmentationResult, coco_evaluate, mask_rle
from .nn import Module
from .optim import Optimizer
from .optim.lr_scheduler import LRScheduler
from .io import atomic_write

__all__ = [
    "CHECKPOINT_FILE",
    "WEIGHTS_FILE",
    "EpochRecord",
    "History",
    "NonFiniteLossError",
    "evaluate",
    "fit",
    "load_checkpoint",
    "save_checkpoint",
]

CHECKPOINT_FILE = "checkpoint.safetensors"
WEIGHTS_FILE = "model.safetensors"
HISTORY_FILE = "history.json"
_METADATA_KEY = "segcore.checkpoint"
_FORMAT = 1

SEMANTIC_METRICS = ("miou", "pixel_accuracy", "mean_class_accuracy", "fwiou", "mean_dice")
INSTANCE_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; the message names the step and the checkpoint that was kept."""


@dataclass
class EpochRecord:
    """What one epoch of :func:`fit` measured.

    Attributes
    ----------
    epoch : int
        1-based epoch number.
    loss : float
        Mean training loss (sum of the loss terms) over the epoch's batches.
    lr : float
        Learning rate of the first param group at the end of the epoch.
    seconds, images_per_second : float
        Training time of the epoch (without validation) and training throughput.
    val : dict
        Validation metrics by name (empty without validation data).
    class_iou : list of float or None
        Per-class validation IoU of semantic models (NaN for classes absent from prediction and ground truth).
    """

    epoch: int
    loss: float
    lr: float
    seconds: float
    images_per_second: float
    val: dict[str, float] = field(default_factory=dict)
    class_iou: list[float] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self, epochs: int | None = None) -> str:
        """One line: epoch, loss, rate, metrics, throughput."""
        head = f"epoch {self.epoch}/{epochs}" if epochs else f"epoch {self.epoch}"
        parts = [head, f"loss {self.loss:.4f}", f"lr {self.lr:.3g}"]
        parts += [f"{'mIoU' if k == 'miou' else k} {v:.4f}" for k, v in self.val.items()]
        parts.append(f"({self.images_per_second:.1f} img/s, {self.seconds:.1f} s)")
        return "  ".join(parts)


class History:
    """The :class:`EpochRecord` of every epoch trained so far (including those before a resume)."""

    def __init__(self, records: Iterable[EpochRecord] = ()) -> None:
        self.records: list[EpochRecord] = list(records)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> EpochRecord:
        return self.records[index]

    def __iter__(self):
        return iter(self.records)

    @property
    def last(self) -> EpochRecord | None:
        return self.records[-1] if self.records else None

    def to_list(self) -> list[dict[str, Any]]:
        return [r.to_dict() for r in self.records]

    @classmethod
    def from_list(cls, entries: Sequence[dict[str, Any]]) -> History:
        return cls(EpochRecord(**entry) for entry in entries)

    def __repr__(self) -> str:
        return f"History({len(self)} epochs" + (f", last: {self.last.summary()})" if self.last else ")")


# -- batches ----------------------------------------------------------------------------------------------
def _task(model: Module) -> str:
    task = getattr(model, "task", "semantic")
    if task not in ("semantic", "instance"):
        raise ValueError(f"model.task must be 'semantic' or 'instance', got {task!r}")
    return task


def _split_batch(batch: Any, index: int) -> tuple[np.ndarray, Any, dict[str, Any]]:
    """``(images, semantic_masks or None, batch dict)`` of a loader batch (a dict, or an ``(images, masks)``
    pair)."""
    if isinstance(batch, dict):
        if "image" not in batch:
            raise ValueError(f"batch {index} has no 'image' entry (keys: {sorted(batch)})")
        return batch["image"], batch.get("mask"), batch
    if isinstance(batch, (tuple, list)) and len(batch) == 2:
        return batch[0], batch[1], {"image": batch[0], "mask": batch[1]}
    raise TypeError(
        f"batch {index} must be a dict with 'image' and 'mask' (as DataLoader yields) or an (images, masks) "
        f"pair, got {type(batch).__name__}"
    )


def _instance_targets(batch: dict[str, Any], model: Module, index: int) -> list[dict[str, Tensor]]:
    missing = [k for k in ("boxes", "labels", "masks") if k not in batch]
    if missing:
        raise ValueError(f"batch {index} lacks the instance entries {missing} an instance model trains on")
    backend = next(iter(model.parameters())).backend
    targets = []
    for boxes, labels, masks in zip(batch["boxes"], batch["labels"], batch["masks"]):
        targets.append(
            {
                "boxes": tensor(np.asarray(boxes, dtype=np.float32), backend=backend),
                "labels": tensor(np.asarray(labels, dtype=np.int64), backend=backend),
                "masks": tensor(np.asarray(masks, dtype=np.uint8), backend=backend),
            }
        )
    return targets


# -- evaluation -------------------------------------------------------------------------------------------
def evaluate(model: Module, data: Iterable[Any], *, progress: bool = False) -> SemanticSegmentationResult | dict:
    """Evaluate ``model`` on ``data`` with its ``predict``.

    Semantic models: a :class:`~segcore.metrics.SemanticSegmentationResult` (per-class IoU, mIoU, pixel
    accuracy, ...) over all batches, pixels labelled ``model.ignore_index`` (255) left out. Instance models:
    COCO mask AP/AR (:func:`~segcore.metrics.coco_evaluate`) of the predictions against the batches'
    instances.
    """
    _check_model(model)
    task = _task(model)
    if task == "semantic":
        metric = SemanticMetric(model.num_classes, ignore_index=getattr(model, "ignore_index", 255))
    else:
        images_gt: list[dict] = []
        annotations: list[dict] = []
        outputs: dict[int, Any] = {}
    bar = _progress_bar(data, "evaluate", progress)
    try:
        for index, batch in enumerate(bar):
            images, masks, batch = _split_batch(batch, index)
            predictions = model.predict(images)
            if task == "semantic":
                if masks is None:
                    raise ValueError(f"batch {index} has no 'mask' to evaluate a semantic model against")
                metric.update(np.stack([np.asarray(p) for p in predictions]), np.asarray(masks))
                continue
            if "masks" not in batch or "labels" not in batch:
                raise ValueError(f"batch {index} has no instance 'masks' and 'labels' to evaluate an instance model")
            for i, output in enumerate(predictions):
                image_id = len(images_gt) + 1
                h, w = int(images.shape[-2]), int(images.shape[-1])
                images_gt.append({"id": image_id, "height": h, "width": w})
                crowd = batch.get("iscrowd", [np.zeros(len(m), bool) for m in batch["masks"]])[i]
                for m, label, is_crowd in zip(batch["masks"][i], batch["labels"][i], crowd):
                    rle = mask_rle.encode(np.asarray(m, dtype=bool))
                    annotations.append(
                        {
                            "id": len(annotations) + 1,
                            "image_id": image_id,
                            "category_id": int(label),
                            "segmentation": rle,
                            "area": float(mask_rle.area(rle)),
                            "bbox": mask_rle.to_bbox(rle).tolist(),
                            "iscrowd": int(bool(is_crowd)),
                        }
                    )
                outputs[image_id] = output
    finally:
        if hasattr(bar, "close"):
            bar.close()
    if task == "semantic":
        return metric.compute()
    categories = [{"id": k} for k in range(1, max(int(getattr(model, "num_classes", 2)), 2))]
    ground_truth = {"images": images_gt, "annotations": annotations, "categories": categories}
    return coco_evaluate(outputs, ground_truth, iou_type="segm")


def _metric_values(result: Any, names: Sequence[str]) -> tuple[dict[str, float], list[float] | None]:
    if isinstance(result, SemanticSegmentationResult):
        return {n: float(getattr(result, n)) for n in names}, [float(v) for v in result.iou]
    return {n: float(result[n]) for n in names}, None


# -- checkpoints ------------------------------------------------------------------------------------------
def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot store a {type(value).__name__} in a checkpoint's JSON state")


def _module_generators(model: Module) -> dict[str, np.random.Generator]:
    """Generators owned by modules (e.g. dropout masks), by dotted name; a shared one is listed once."""
    found: dict[str, np.random.Generator] = {}
    seen: set[int] = set()
    for prefix, module in model.named_modules():
        for attribute, value in vars(module).items():
            if isinstance(value, np.random.Generator) and id(value) not in seen:
                seen.add(id(value))
                found[f"{prefix}.{attribute}" if prefix else attribute] = value
    return found


def _flat_params(optimizer: Optimizer) -> list[Tensor]:
    # Optimizer.state_dict numbers parameters in this order.
    return [p for group in optimizer.param_groups for p in group["params"]]


def save_checkpoint(
    directory: str | os.PathLike,
    model: Module,
    optimizer: Optimizer,
    scheduler: LRScheduler | None = None,
    *,
    epoch: int,
    step: int = 0,
    loaders: dict[str, Any] | None = None,
    history: History | None = None,
) -> str:
    """Write ``checkpoint.safetensors``, ``model.safetensors`` and ``history.json`` into ``directory``
    (created if needed), each atomically; returns the checkpoint's path."""
    os.makedirs(directory, exist_ok=True)
    tensors: dict[str, Any] = {f"model.{k}": v for k, v in model.state_dict().items()}
    opt_state = optimizer.state_dict()
    params = _flat_params(optimizer)
    scalars: dict[str, dict[str, Any]] = {}
    for index, entries in opt_state["state"].items():
        for key, value in entries.items():
            if isinstance(value, Tensor):
                tensors[f"optimizer.{index}.{key}"] = value.numpy()
            elif hasattr(value, "shape") and hasattr(value, "dtype"):
                tensors[f"optimizer.{index}.{key}"] = params[index].backend.to_numpy(value)
            else:
                scalars.setdefault(str(index), {})[key] = value
    state = {
        "format": _FORMAT,
        "epoch": int(epoch),
        "step": int(step),
        "optimizer": {
            "class": type(optimizer).__name__,
            "param_groups": opt_state["param_groups"],
            "scalars": scalars,
        },
        "scheduler": None
        if scheduler is None
        else {"class": type(scheduler).__name__, "state": scheduler.state_dict()},
        "loaders": {
            name: loader.state_dict() for name, loader in (loaders or {}).items() if hasattr(loader, "state_dict")
        },
        "module_rngs": {name: g.bit_generator.state for name, g in _module_generators(model).items()},
        "history": history.to_list() if history is not None else [],
    }
    metadata = {_METADATA_KEY: json.dumps(state, default=_json_default)}
    path = os.path.join(os.fspath(directory), CHECKPOINT_FILE)
    save_state_dict(tensors, path, metadata=metadata)
    save_state_dict(model.state_dict(), os.path.join(os.fspath(directory), WEIGHTS_FILE))
    payload = json.dumps(state["history"], indent=1, default=_json_default).encode()
    atomic_write(os.path.join(os.fspath(directory), HISTORY_FILE), lambda handle: handle.write(payload))
    return path


def _read_checkpoint(path: str) -> tuple[dict[str, Any], dict[str, Any]]:
    from safetensors import safe_open

    if not os.path.isfile(path):
        raise FileNotFoundError(f"no checkpoint at {path!r}")
    tensors = load_state_dict(path)
    try:
        with safe_open(path, framework="np") as handle:
            metadata = handle.metadata() or {}
    except Exception as exc:  # safetensors raises its own error types for damaged headers
        raise ValueError(f"{path}: cannot read the checkpoint header ({type(exc).__name__}: {exc})") from None
    if _METADATA_KEY not in metadata:
        raise ValueError(f"{path}: not a segcore training checkpoint (no {_METADATA_KEY!r} metadata)")
    try:
        state = json.loads(metadata[_METADATA_KEY])
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: checkpoint state is not valid JSON ({exc})") from None
    if not isinstance(state, dict) or state.get("format") != _FORMAT:
        found = state.get("format") if isinstance(state, dict) else state
        raise ValueError(f"{path}: unsupported checkpoint format {found!r}, expected {_FORMAT}")
    return tensors, state


def load_checkpoint(
    directory: str | os.PathLike,
    model: Module,
    optimizer: Optimizer,
    scheduler: LRScheduler | None = None,
    *,
    loaders: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Restore a :func:`save_checkpoint` into the given objects; returns ``{"epoch", "step", "history"}``.

    The optimizer and scheduler must be of the classes that were saved. Everything is checked before the
    first object is changed.
    """
    path = os.path.join(os.fspath(directory), CHECKPOINT_FILE)
    tensors, state = _read_checkpoint(path)
    opt = state["optimizer"]
    if opt["class"] != type(optimizer).__name__:
        raise ValueError(f"{path}: checkpoint holds a {opt['class']} optimizer, got a {type(optimizer).__name__}")
    saved_sched = state["scheduler"]
    if (saved_sched is None) != (scheduler is None) or (
        scheduler is not None and saved_sched["class"] != type(scheduler).__name__
    ):
        saved = "no scheduler" if saved_sched is None else f"a {saved_sched['class']} scheduler"
        given = "none" if scheduler is None else f"a {type(scheduler).__name__}"
        raise ValueError(f"{path}: checkpoint holds {saved}, got {given}")
    weights = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    opt_state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, index, name = key.split(".", 2)
            opt_state.setdefault(int(index), {})[name] = value.numpy()
    for index, entries in opt["scalars"].items():
        opt_state.setdefault(int(index), {}).update(entries)
    generators = _module_generators(model)
    if set(generators) != set(state["module_rngs"]):
        raise ValueError(
            f"{path}: checkpoint has generator states for {sorted(state['module_rngs'])}, the model owns "
            f"generators {sorted(generators)}"
        )
    # Module.load_state_dict (like torch's) copies the entries that fit before reporting those that do not,
    # so keep a copy to put back; the optimizer and the schedulers check everything before changing anything.
    backup = {k: v.numpy().copy() for k, v in model.state_dict().items()}
    try:
        model.load_state_dict(weights)
        optimizer.load_state_dict({"state": opt_state, "param_groups": opt["param_groups"]})
        if scheduler is not None:
            scheduler.load_state_dict(saved_sched["state"])
    except (TypeError, ValueError) as exc:
        model.load_state_dict(backup)
        raise ValueError(f"{path}: cannot restore the training state ({exc})") from None
    for name, loader in (loaders or {}).items():
        if name in state["loaders"] and hasattr(loader, "load_state_dict"):
            loader.load_state_dict(state["loaders"][name])
    for name, generator in generators.items():
        generator.bit_generator.state = state["module_rngs"][name]
    return {"epoch": state["epoch"], "step": state["step"], "history": History.from_list(state["history"])}


# -- fit --------------------------------------------------------------------------------------------------
def _check_model(model: Any) -> None:
    if not isinstance(model, Module):
        raise TypeError(f"model must be a segcore.nn.Module, got {type(model).__name__}")
    for method in ("losses", "predict"):
        if not callable(getattr(model, method, None)):
            raise TypeError(f"model must implement the model contract's {method}(); {type(model).__name__} does not")


def _progress_bar(iterable: Iterable, desc: str, enabled: bool, total: int | None = None):
    if not enabled:
        return iterable
    from tqdm import tqdm

    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)
    return tqdm(iterable, desc=desc, total=total, unit="batch", leave=False, dynamic_ncols=True, file=sys.stderr)


def fit(
    model: Module,
    train_data: Iterable[Any],
    *,
    epochs: int,
    optimizer: Optimizer,
    scheduler: LRScheduler | None = None,
    val_data: Iterable[Any] | None = None,
    metrics: Sequence[str] | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    resume: bool = False,
    progress: bool = True,
    scheduler_interval: str = "step",
    on_epoch_end: Callable[[EpochRecord], None] | None = None,
) -> History:
    """Train ``model`` with ``model.losses`` and evaluate it with ``model.predict`` after every epoch.

    Parameters
    ----------
    model : Module
        A model following the contract (``losses(images, targets)``, ``predict(images)``, ``task``).
    train_data : iterable of batches
        Re-iterable each epoch, usually a :class:`segcore.data.DataLoader`; batches are dicts with ``"image"``
        ``(N, C, H, W)`` float and ``"mask"`` ``(N, H, W)`` int (plus ``boxes``/``labels``/``masks`` for instance
        models), or ``(images, masks)`` pairs.
    epochs : int
        Total number of epochs (a resumed run continues up to the same total).
    optimizer, scheduler :
        A :mod:`segcore.optim` optimizer over the model's parameters and an optional schedule.
    val_data : iterable of batches, optional
        Evaluated after every epoch (:func:`evaluate`).
    metrics : sequence of str, optional
        Validation metrics to record: attributes of :class:`~segcore.metrics.SemanticSegmentationResult`
        (default ``("miou", "pixel_accuracy")``) or, for instance models, :func:`~segcore.metrics.coco_evaluate`
        keys (default ``("AP", "AP50")``).
    checkpoint_dir : path, optional
        Where a checkpoint is written (atomically) after every epoch.
    resume : bool
        Continue from the checkpoint in ``checkpoint_dir`` (which must exist).
    progress : bool
        Show a progress bar (loss, images/s) and print one summary line per epoch.
    scheduler_interval : {"step", "epoch"}
        Step the scheduler after every optimizer step (segmentation's poly schedule) or every epoch.
    on_epoch_end : callable, optional
        Called with each :class:`EpochRecord`.

    Returns
    -------
    History
        One :class:`EpochRecord` per epoch, including epochs restored from a checkpoint. The model is left in
        eval mode.

    Raises
    ------
    NonFiniteLossError
        When a loss is NaN or infinite: training stops before that step changes the weights, and the last
        checkpoint on disk (from the last completed epoch) is left as it was.
    """
    _check_model(model)
    task = _task(model)
    if isinstance(epochs, bool) or not isinstance(epochs, numbers.Integral) or epochs < 1:
        raise ValueError(f"epochs must be a positive int, got {epochs!r}")
    if not isinstance(optimizer, Optimizer):
        raise TypeError(f"optimizer must be a segcore.optim.Optimizer, got {type(optimizer).__name__}")
    if scheduler is not None and not isinstance(scheduler, LRScheduler):
        raise TypeError(
            f"scheduler must be a segcore.optim.lr_scheduler.LRScheduler or None, got {type(scheduler).__name__}"
        )
    if scheduler is not None and scheduler.optimizer is not optimizer:
        raise ValueError("scheduler was built on another optimizer than the one given to fit")
    if scheduler_interval not in ("step", "epoch"):
        raise ValueError(f"scheduler_interval must be 'step' or 'epoch', got {scheduler_interval!r}")
    if not hasattr(train_data, "__iter__"):
        raise TypeError(
            f"train_data must be an iterable of batches (e.g. a DataLoader), got {type(train_data).__name__}"
        )
    if isinstance(train_data, Iterator):
        raise TypeError(
            "train_data is a one-shot iterator; fit needs data it can iterate once per epoch (a DataLoader)"
        )
    allowed = SEMANTIC_METRICS if task == "semantic" else INSTANCE_METRICS
    if metrics is None:
        metrics = ("miou", "pixel_accuracy") if task == "semantic" else ("AP", "AP50")
    if isinstance(metrics, str) or not all(m in allowed for m in metrics):
        raise ValueError(f"metrics must be a sequence of names from {allowed} for a {task} model, got {metrics!r}")
    for name, value in (("resume", resume), ("progress", progress)):
        if not isinstance(value, bool):
            raise TypeError(f"{name} must be True or False, got {value!r}")
    if checkpoint_dir is not None and not isinstance(checkpoint_dir, (str, os.PathLike)):
        raise TypeError(f"checkpoint_dir must be a path or None, got {type(checkpoint_dir).__name__}")
    if resume and checkpoint_dir is None:
        raise ValueError("resume=True needs checkpoint_dir, the directory holding the checkpoint to resume from")
    if on_epoch_end is not None and not callable(on_epoch_end):
        raise TypeError(f"on_epoch_end must be callable, got {on_epoch_end!r}")
    trainable = {id(p) for p in model.parameters()}
    if not any(id(p) in trainable for p in _flat_params(optimizer)):
        raise ValueError("optimizer holds none of the model's parameters; build it on model.parameters()")

    loaders = {"train": train_data}
    if val_data is not None:
        loaders["val"] = val_data
    history = History()
    start_epoch, step = 0, 0
    if resume:
        restored = load_checkpoint(checkpoint_dir, model, optimizer, scheduler, loaders=loaders)
        start_epoch, step, history = restored["epoch"], restored["step"], restored["history"]
        if progress:
            _say(f"resumed from {os.path.join(os.fspath(checkpoint_dir), CHECKPOINT_FILE)} after epoch {start_epoch}")
    saved_epoch = start_epoch if resume else None

    for epoch in range(start_epoch + 1, epochs + 1):
        model.train()
        started = time.perf_counter()
        total_loss, batches, images_seen = 0.0, 0, 0
        bar = _progress_bar(train_data, f"epoch {epoch}/{epochs}", progress)
        try:
            for index, batch in enumerate(bar):
                images, masks, batch = _split_batch(batch, index)
                if task == "semantic":
                    if masks is None:
                        raise ValueError(f"batch {index} has no 'mask' to train a semantic model on")
                    targets = np.asarray(masks).astype(np.int64, copy=False)
                else:
                    targets = _instance_targets(batch, model, index)
                terms = model.losses(images, targets)
                loss = None
                for term in terms.values():
                    loss = term if loss is None else loss + term
                value = float(loss.item())
                step += 1
                if not math.isfinite(value):
                    raise NonFiniteLossError(
                        _non_finite_message(value, terms, step, epoch, index, _len_or_none(train_data),
                                            checkpoint_dir, saved_epoch)
                    )  # fmt: skip
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                if scheduler is not None and scheduler_interval == "step":
                    scheduler.step()
                total_loss += value
                batches += 1
                images_seen += int(images.shape[0])
                if progress:
                    elapsed = max(time.perf_counter() - started, 1e-9)
                    bar.set_postfix(loss=f"{total_loss / batches:.4f}", img_s=f"{images_seen / elapsed:.1f}")
        finally:
            if progress:
                bar.close()
        if batches == 0:
            raise ValueError(f"train_data yielded no batch in epoch {epoch}; check its size and drop_last")
        if scheduler is not None and scheduler_interval == "epoch":
            scheduler.step()
        seconds = time.perf_counter() - started
        record = EpochRecord(
            epoch=epoch,
            loss=total_loss / batches,
            lr=float(optimizer.param_groups[0]["lr"]),
            seconds=seconds,
            images_per_second=images_seen / max(seconds, 1e-9),
        )
        if val_data is not None:
            result = evaluate(model, val_data, progress=progress)
            record.val, record.class_iou = _metric_values(result, metrics)
        history.records.append(record)
        if checkpoint_dir is not None:
            save_checkpoint(
                checkpoint_dir, model, optimizer, scheduler, epoch=epoch, step=step, loaders=loaders, history=history
            )
            saved_epoch = epoch
        if progress:
            _say(record.summary(epochs))
        if on_epoch_end is not None:
            on_epoch_end(record)
    model.eval()
    return history


def _len_or_none(data: Any) -> int | None:
    try:
        return len(data)
    except TypeError:
        return None


def _say(line: str) -> None:
    from tqdm import tqdm

    # tqdm.write keeps an active progress bar intact below the line.
    tqdm.write(line, file=sys.stdout)


def _non_finite_message(
    value: float,
    terms: dict[str, Tensor],
    step: int,
    epoch: int,
    index: int,
    batches: int | None,
    checkpoint_dir: Any,
    saved_epoch: int | None,
) -> str:
    parts = ", ".join(f"{name}={float(t.item()):.4g}" for name, t in terms.items())
    of = f" of {batches}" if batches is not None else ""
    message = (
        f"training stopped: the loss is {value} at step {step} (epoch {epoch}, batch {index + 1}{of}); "
        f"loss terms: {parts}. The weights were not updated with it. "
    )
    if checkpoint_dir is None:
        message += "No checkpoint is kept (checkpoint_dir=None)."
    elif saved_epoch is None:
        message += f"No checkpoint had been written to {os.fspath(checkpoint_dir)!r} yet."
    else:
        path = os.path.join(os.fspath(checkpoint_dir), CHECKPOINT_FILE)
        message += f"The last good checkpoint, {path!r} (end of epoch {saved_epoch}), is kept."
    return message + " Try a lower learning rate, or check the data of that batch."

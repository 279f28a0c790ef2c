"""segcore.train: fit on a tiny problem, exact resume, NaN handling, checkpoints, evaluate (semantic, instance)."""

from __future__ import annotations

import json
import os
import struct

import numpy as np
import pytest
from scipy import ndimage

import segcore
import segcore.functional as F
import segcore.nn as nn
from segcore.data import DataLoader, shapes
from segcore.data._base import boxes_from_masks
from segcore.data import transforms as T
from segcore.metrics import semantic
from segcore.models.base import SemanticSegmentationModel, as_image_batch
from segcore.optim import SGD, Adam
from segcore.optim.lr_scheduler import PolyLR
from segcore.train import (
    CHECKPOINT_FILE,
    WEIGHTS_FILE,
    NonFiniteLossError,
    evaluate,
    fit,
    load_checkpoint,
)


class TinyNet(SemanticSegmentationModel):
    """A 3x3 conv with batch norm and channel dropout (its own generator: every kind of state fit saves), a
    context branch at 1/4 resolution, and a head on both."""

    def __init__(self, num_classes: int = 2, width: int = 8, seed: int = 0, poison_at: int | None = None) -> None:
        super().__init__(num_classes)
        rng = np.random.default_rng(seed)
        self.conv1 = nn.Conv2d(3, width, 3, padding=1, rng=rng)
        self.bn1 = nn.BatchNorm2d(width)
        self.drop = nn.Dropout2d(0.1, rng=np.random.default_rng(seed + 1))
        self.context = nn.Conv2d(width, width, 3, padding=1, rng=rng)
        self.conv2 = nn.Conv2d(2 * width, width, 3, padding=1, rng=rng)
        self.head = nn.Conv2d(width, num_classes, 1, rng=rng)
        self.poison_at = poison_at
        self.calls = 0

    def forward(self, x):
        x = self.drop(F.relu(self.bn1(self.conv1(x))))
        context = F.relu(self.context(F.max_pool2d(x, 4)))
        context = F.interpolate(context, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return self.head(F.relu(self.conv2(F.cat([x, context], dim=1))))

    def losses(self, images, targets):
        terms = super().losses(images, targets)
        self.calls += 1
        if self.calls == self.poison_at:
            terms["loss"] = terms["loss"] * float("nan")
        return terms


def _loaders(n=32, size=24, batch=8, seed=0, workers=0, num_classes=2):
    augment = T.Compose([T.RandomScale((0.8, 1.25)), T.RandomCrop(size), T.RandomHorizontalFlip(), T.Normalize()])
    train = DataLoader(
        shapes(n, size, num_classes=num_classes, rng=seed), batch, shuffle=True, transform=augment, rng=seed + 1,
        num_workers=workers,
    )  # fmt: skip
    val = DataLoader(shapes(16, size, num_classes=num_classes, rng=seed + 100), 8, transform=T.Normalize())
    return train, val


def _setup(epochs=4, workers=0, poison_at=None, seed=0):
    model = TinyNet(poison_at=poison_at, seed=seed)
    optimizer = Adam(model.parameters(), lr=0.01)
    train, val = _loaders(workers=workers)
    scheduler = PolyLR(optimizer, total_iters=epochs * len(train))
    return model, optimizer, scheduler, train, val


def _weights(model) -> dict[str, np.ndarray]:
    return {k: v.numpy().copy() for k, v in model.state_dict().items()}


def _redder_than_green(n: int, size: int, seed: int) -> list[dict]:
    """Blobby images whose label is 1 where red exceeds green: learnable by a small net in a few steps."""
    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(n):
        fields = ndimage.zoom(rng.uniform(0, 255, (4, 4, 3)), (size / 4, size / 4, 1), order=1)
        image = np.clip(fields + rng.normal(0, 4, fields.shape), 0, 255).astype(np.uint8)
        mask = image[..., 0] > image[..., 1]
        components, count = ndimage.label(mask)
        masks = components[None] == np.arange(1, count + 1)[:, None, None]
        samples.append(
            {
                "image": image,
                "mask": mask.astype(np.uint8),
                "masks": masks,
                "labels": np.ones(count, dtype=np.int64),
                "boxes": boxes_from_masks(masks),
            }
        )
    return samples


def test_fit_learns_a_tiny_problem_to_the_stated_accuracy():
    model = TinyNet(width=8)
    train = DataLoader(_redder_than_green(48, 16, 0), 8, shuffle=True, transform=T.Normalize(), rng=0)
    val = DataLoader(_redder_than_green(16, 16, 1), 8, transform=T.Normalize())
    before = evaluate(model, val).miou
    history = fit(model, train, epochs=8, optimizer=Adam(model.parameters(), lr=0.02), val_data=val, progress=False)
    assert len(history) == 8 and [r.epoch for r in history] == list(range(1, 9))
    assert history[-1].loss < history[0].loss / 2
    # The stated accuracy: held-out mIoU >= 0.85 after 48 steps.
    assert history[-1].val["miou"] >= 0.85 > before
    assert history[-1].class_iou is not None and len(history[-1].class_iou) == 2
    assert history[-1].images_per_second > 0 and not model.training


class Interrupting(DataLoader):
    """A loader that raises KeyboardInterrupt in the middle of a given epoch, like a user pressing Ctrl-C."""

    def __init__(self, *args, stop_epoch: int, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.stop_epoch, self.epochs = stop_epoch, 0

    def __iter__(self):
        self.epochs += 1
        for i, batch in enumerate(super().__iter__()):
            if self.epochs == self.stop_epoch and i == 2:
                raise KeyboardInterrupt
            yield batch


def test_interrupted_and_resumed_run_ends_with_identical_weights(tmp_path):
    epochs = 4
    model, optimizer, scheduler, train, val = _setup(epochs, workers=2)
    full = fit(model, train, epochs=epochs, optimizer=optimizer, scheduler=scheduler, val_data=val, progress=False)
    expected = _weights(model)

    model, optimizer, scheduler, train, val = _setup(epochs, workers=2)
    interrupting = Interrupting(
        train.dataset, 8, shuffle=True, transform=train.transform, rng=1, num_workers=2, stop_epoch=3
    )
    with pytest.raises(KeyboardInterrupt):
        fit(model, interrupting, epochs=epochs, optimizer=optimizer, scheduler=scheduler, val_data=val,
            checkpoint_dir=tmp_path, progress=False)  # fmt: skip
    assert json.load(open(tmp_path / "history.json"))[-1]["epoch"] == 2

    model, optimizer, scheduler, train, val = _setup(epochs, workers=2)
    resumed = fit(model, train, epochs=epochs, optimizer=optimizer, scheduler=scheduler, val_data=val,
                  checkpoint_dir=tmp_path, resume=True, progress=False)  # fmt: skip
    got = _weights(model)
    assert got.keys() == expected.keys()
    for key in expected:
        assert np.array_equal(got[key], expected[key]), key
    assert [r.loss for r in resumed] == [r.loss for r in full]
    assert [r.val for r in resumed] == [r.val for r in full]


def test_checkpoint_files_hold_json_state_and_loadable_weights(tmp_path):
    model, optimizer, scheduler, train, val = _setup(2)
    fit(model, train, epochs=2, optimizer=optimizer, scheduler=scheduler, val_data=val, checkpoint_dir=tmp_path,
        progress=False)  # fmt: skip
    assert sorted(os.listdir(tmp_path)) == sorted([CHECKPOINT_FILE, WEIGHTS_FILE, "history.json"])
    raw = open(tmp_path / CHECKPOINT_FILE, "rb").read()
    (header_len,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + header_len])  # a plain safetensors header: no pickle anywhere
    state = json.loads(header["__metadata__"]["segcore.checkpoint"])
    assert state["epoch"] == 2 and state["step"] == 2 * len(train)
    assert state["optimizer"]["class"] == "Adam" and state["scheduler"]["class"] == "PolyLR"
    assert state["scheduler"]["state"]["last_epoch"] == 2 * len(train)
    assert set(state["loaders"]) == {"train", "val"} and "drop.rng" in state["module_rngs"]
    assert any(k.startswith("optimizer.0.exp_avg") for k in header)
    fresh = TinyNet(seed=5)
    fresh.load(tmp_path / WEIGHTS_FILE)
    assert all(np.array_equal(a, b) for a, b in zip(_weights(fresh).values(), _weights(model).values()))


def test_sgd_momentum_state_round_trips(tmp_path):
    model = TinyNet()
    optimizer = SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-4)
    train, _ = _loaders()
    fit(model, train, epochs=1, optimizer=optimizer, scheduler_interval="epoch", checkpoint_dir=tmp_path,
        progress=False)  # fmt: skip
    fresh = TinyNet(seed=9)
    restored = SGD(fresh.parameters(), lr=1.0, momentum=0.5)
    load_checkpoint(tmp_path, fresh, restored)
    saved, loaded = optimizer.state_dict(), restored.state_dict()
    assert loaded["param_groups"][0]["nesterov"] is True and loaded["param_groups"][0]["lr"] == 0.05
    assert saved["state"].keys() == loaded["state"].keys()
    for index, entries in saved["state"].items():
        for key, value in entries.items():
            assert np.array_equal(np.asarray(value), np.asarray(loaded["state"][index][key])), (index, key)


def test_resume_checks_what_it_restores_into(tmp_path):
    model, optimizer, scheduler, train, val = _setup(1)
    fit(model, train, epochs=1, optimizer=optimizer, scheduler=scheduler, checkpoint_dir=tmp_path, progress=False)
    other = TinyNet()
    with pytest.raises(ValueError, match="checkpoint holds a Adam optimizer, got a SGD"):
        load_checkpoint(tmp_path, other, SGD(other.parameters(), lr=0.1))
    with pytest.raises(ValueError, match="checkpoint holds a PolyLR scheduler, got none"):
        load_checkpoint(tmp_path, other, Adam(other.parameters()))
    wide = TinyNet(width=4)
    before = _weights(wide)
    opt = Adam(wide.parameters())
    with pytest.raises(ValueError, match="size mismatch"):
        load_checkpoint(tmp_path, wide, opt, PolyLR(opt, total_iters=4))
    assert all(np.array_equal(before[k], v) for k, v in _weights(wide).items())
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        fit(model, train, epochs=2, optimizer=optimizer, checkpoint_dir=tmp_path / "empty", resume=True, progress=False)
    # Resuming a finished run trains nothing more and returns its history.
    model, optimizer, scheduler, train, val = _setup(1)
    history = fit(model, train, epochs=1, optimizer=optimizer, scheduler=scheduler, checkpoint_dir=tmp_path,
                  resume=True, progress=False)  # fmt: skip
    assert len(history) == 1 and model.calls == 0


def test_non_finite_loss_stops_with_the_step_and_keeps_the_last_checkpoint(tmp_path):
    model, optimizer, scheduler, train, val = _setup(3, poison_at=6)
    snapshots = {}

    def remember(record):
        snapshots[record.epoch] = open(tmp_path / CHECKPOINT_FILE, "rb").read()

    with pytest.raises(NonFiniteLossError) as info:
        fit(model, train, epochs=3, optimizer=optimizer, scheduler=scheduler, checkpoint_dir=tmp_path,
            progress=False, on_epoch_end=remember)  # fmt: skip
    message = str(info.value)
    assert "step 6 (epoch 2, batch 2 of 4)" in message and "loss=nan" in message
    assert str(tmp_path / CHECKPOINT_FILE) in message and "end of epoch 1" in message
    assert list(snapshots) == [1]
    assert open(tmp_path / CHECKPOINT_FILE, "rb").read() == snapshots[1]
    assert all(np.isfinite(v).all() for v in _weights(model).values())
    # Without a checkpoint directory the message says so.
    model, optimizer, scheduler, train, val = _setup(3, poison_at=1)
    with pytest.raises(NonFiniteLossError, match=r"step 1 \(epoch 1, batch 1 of 4\).*No checkpoint is kept"):
        fit(model, train, epochs=1, optimizer=optimizer, progress=False)


def test_a_failed_checkpoint_write_leaves_the_previous_one(tmp_path, monkeypatch):
    import segcore.io

    model, optimizer, scheduler, train, val = _setup(2)
    fit(model, train, epochs=1, optimizer=optimizer, scheduler=scheduler, checkpoint_dir=tmp_path, progress=False)
    before = open(tmp_path / CHECKPOINT_FILE, "rb").read()

    def crash(handle, payload):
        handle.write(payload[:100])
        raise OSError("disk full")

    monkeypatch.setattr(segcore.io, "_write_bytes", crash)
    with pytest.raises(OSError, match="disk full"):
        fit(model, train, epochs=2, optimizer=optimizer, scheduler=scheduler, checkpoint_dir=tmp_path,
            resume=True, progress=False)  # fmt: skip
    assert open(tmp_path / CHECKPOINT_FILE, "rb").read() == before
    assert sorted(os.listdir(tmp_path)) == sorted([CHECKPOINT_FILE, WEIGHTS_FILE, "history.json"])


def test_evaluate_matches_the_metric_on_all_predictions():
    model = TinyNet(num_classes=3, seed=3)
    val = DataLoader(shapes(12, 20, num_classes=3, rng=4), 5, transform=T.Normalize())
    result = evaluate(model, val)
    predictions, masks = [], []
    for batch in val:
        predictions += model.predict(batch["image"])
        masks.append(batch["mask"])
    expected = semantic(np.stack(predictions), np.concatenate(masks), 3)
    assert np.array_equal(result.confusion_matrix, expected.confusion_matrix)
    assert result.miou == expected.miou


def test_progress_bar_and_epoch_lines(capsys):
    model, optimizer, scheduler, train, val = _setup(1)
    fit(model, train, epochs=1, optimizer=optimizer, val_data=val, progress=True)
    out, err = capsys.readouterr()
    assert out.startswith("epoch 1/1  loss ") and "mIoU " in out and "img/s" in out
    assert "epoch 1/1" in err and "img_s=" in err  # the tqdm bar with throughput


class TinyInstanceNet(nn.Module):
    """An instance model on the contract: per-pixel classes, instances as connected components."""

    task = "instance"

    def __init__(self, num_classes: int = 2) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.net = TinyNet(num_classes)

    def forward(self, x):
        return self.net(x)

    def losses(self, images, targets):
        h, w = images.shape[-2:]
        semantic_targets = np.zeros((len(targets), h, w), dtype=np.int64)
        for i, target in enumerate(targets):
            for mask, label in zip(target["masks"].numpy(), target["labels"].numpy()):
                semantic_targets[i][mask.astype(bool)] = label
        return self.net.losses(images, semantic_targets)

    def predict(self, images):
        images = as_image_batch(images, self)
        self.eval()
        with segcore.no_grad():
            probabilities = F.softmax(self(images), dim=1).numpy()
        self.train()
        outputs = []
        for p in probabilities:
            labels = p.argmax(0)
            boxes, classes, scores, masks = [], [], [], []
            for c in range(1, self.num_classes):
                components, count = ndimage.label(labels == c)
                for k in range(1, count + 1):
                    m = components == k
                    ys, xs = np.nonzero(m)
                    boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
                    classes.append(c)
                    scores.append(float(p[c][m].mean()))
                    masks.append(m)
            outputs.append(
                {
                    "boxes": np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
                    "labels": np.asarray(classes, dtype=np.int64),
                    "scores": np.asarray(scores, dtype=np.float32),
                    "masks": np.asarray(masks, dtype=bool).reshape(-1, *labels.shape),
                }
            )
        return outputs


def test_fit_trains_and_scores_instance_models():
    model = TinyInstanceNet()
    train = DataLoader(_redder_than_green(48, 16, 0), 8, shuffle=True, transform=T.Normalize(), rng=0)
    val = DataLoader(_redder_than_green(16, 16, 1), 8, transform=T.Normalize())
    before = evaluate(model, val)
    history = fit(model, train, epochs=8, optimizer=Adam(model.parameters(), lr=0.02), val_data=val, progress=False)
    assert set(history[-1].val) == {"AP", "AP50"} and history[-1].class_iou is None
    assert history[-1].val["AP50"] > max(before["AP50"], 0.5)


class Oracle(nn.Module):
    """Predicts the ground truth it was given, keyed by the image's bytes."""

    task = "instance"
    num_classes = 4

    def __init__(self, answers: dict[bytes, dict]) -> None:
        super().__init__()
        self.weight = nn.Parameter(segcore.tensor(np.zeros(1, dtype=np.float32)))
        self.answers = answers

    def losses(self, images, targets):
        return {"loss": (self.weight * 0).sum()}

    def predict(self, images):
        return [self.answers[np.asarray(image).tobytes()] for image in np.asarray(images)]


def test_instance_evaluation_of_perfect_predictions_is_ap_one():
    data = shapes(6, 24, rng=2)
    loader = DataLoader(data, 3, transform=T.Normalize())
    answers = {}
    for batch in loader:
        for image, boxes, labels, masks in zip(batch["image"], batch["boxes"], batch["labels"], batch["masks"]):
            scores = np.ones(len(labels))
            answers[image.tobytes()] = {"boxes": boxes, "labels": labels, "scores": scores, "masks": masks}
    result = evaluate(Oracle(answers), loader)
    assert result["AP"] == pytest.approx(1.0) and result["AP50"] == pytest.approx(1.0)


@pytest.mark.parametrize(
    "kwargs, error, fragment",
    [
        ({"epochs": 0}, ValueError, "epochs must be a positive int"),
        ({"metrics": ("miou", "AP")}, ValueError, "metrics must be a sequence of names from"),
        ({"resume": True}, ValueError, "resume=True needs checkpoint_dir"),
        ({"scheduler_interval": "batch"}, ValueError, "scheduler_interval must be 'step' or 'epoch'"),
        ({"progress": 1}, TypeError, "progress must be True or False"),
        ({"optimizer": "adam"}, TypeError, "optimizer must be a segcore.optim.Optimizer"),
    ],
)
def test_bad_arguments(kwargs, error, fragment):
    model, optimizer, scheduler, train, val = _setup(1)
    arguments = {"epochs": 1, "optimizer": optimizer, "progress": False, **kwargs}
    with pytest.raises(error) as info:
        fit(model, train, **arguments)
    assert fragment in str(info.value)
    with pytest.raises(TypeError, match="one-shot iterator"):
        fit(model, iter(train), epochs=1, optimizer=optimizer, progress=False)
    with pytest.raises(ValueError, match="optimizer holds none of the model's parameters"):
        fit(model, train, epochs=1, optimizer=Adam(TinyNet().parameters()), progress=False)

"""dice_loss, jaccard_loss and tversky_loss with segmentation_models.pytorch semantics.

The reference walks the classes one at a time and keeps only the valid pixels of each, instead of masking
arrays as the implementation does.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import segcore
from segcore.losses import DiceLoss, JaccardLoss, TverskyLoss, dice_loss, jaccard_loss, tversky_loss
from segcore.testing import gradcheck

IGNORE = 255


def _t(a, requires_grad=False):
    return segcore.tensor(a, requires_grad=requires_grad)


def _probabilities(x, mode):
    if mode == "multiclass":
        e = np.exp(x - x.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    return 1.0 / (1.0 + np.exp(-x))


def ref_region(x, y, kind, mode, classes=None, log_loss=False, from_logits=True, smooth=0.0, ignore_index=None,
               eps=1e-7, alpha=0.5, beta=0.5, gamma=1.0):
    p = _probabilities(x, mode) if from_logits else x
    n, k = p.shape[:2]
    losses = []
    for c in range(k):
        probs = p[:, c].reshape(-1)
        if mode == "multiclass":
            labels = y.reshape(-1)
            keep = labels != ignore_index if ignore_index is not None else np.ones(labels.shape, bool)
            truth = (labels == c).astype(float)
        else:
            labels = (y.reshape(n, -1) if mode == "binary" else y[:, c].reshape(-1)).reshape(-1)
            keep = labels != ignore_index if ignore_index is not None else np.ones(labels.shape, bool)
            truth = labels.astype(float)
        probs, truth = probs[keep], truth[keep]
        inter, pred_sum, true_sum = np.sum(probs * truth), np.sum(probs), np.sum(truth)
        if kind == "dice":
            score = (2 * inter + smooth) / max(pred_sum + true_sum + smooth, eps)
        elif kind == "jaccard":
            score = (inter + smooth) / max(pred_sum + true_sum - inter + smooth, eps)
        else:
            fp, fn = np.sum(probs * (1 - truth)), np.sum((1 - probs) * truth)
            score = (inter + smooth) / max(inter + alpha * fp + beta * fn + smooth, eps)
        loss = -np.log(max(score, eps)) if log_loss else 1 - score
        losses.append(loss if true_sum > 0 else 0.0)
    chosen = losses if classes is None else [losses[c] for c in classes]
    return float(np.mean(chosen)) ** gamma


LOSS = {"dice": dice_loss, "jaccard": jaccard_loss, "tversky": tversky_loss}


def _call(kind, x, y, **kw):
    if kind != "tversky":
        for name in ("alpha", "beta", "gamma"):
            kw.pop(name, None)
    return LOSS[kind](x, y, **kw)


def test_binary_by_hand():
    p = _t([[[0.8, 0.2, 0.6, 0.0]]], requires_grad=True)  # (N=1, 1, 4) probabilities
    y = _t([[1, 0, 1, 0]])
    # I = 1.4, P = 1.6, T = 2.
    loss = dice_loss(p, y, mode="binary", from_logits=False)
    np.testing.assert_allclose(loss.item(), 1 - 2.8 / 3.6, rtol=1e-6)
    loss.backward()
    # d/dp_i (1 - 2I / (P + T)) = -(2 t_i (P + T) - 2I) / (P + T)^2.
    np.testing.assert_allclose(p.grad.numpy()[0, 0], [-4.4 / 12.96, 2.8 / 12.96, -4.4 / 12.96, 2.8 / 12.96], rtol=1e-5)
    np.testing.assert_allclose(jaccard_loss(p, y, mode="binary", from_logits=False).item(), 1 - 1.4 / 2.2, rtol=1e-6)
    # Tversky alpha 0.3, beta 0.7: FP = 0.2, FN = 0.6.
    tv = tversky_loss(p, y, mode="binary", from_logits=False, alpha=0.3, beta=0.7)
    np.testing.assert_allclose(tv.item(), 1 - 1.4 / (1.4 + 0.06 + 0.42), rtol=1e-6)
    # Tversky with alpha = beta = 0.5 is the Dice loss, alpha = beta = 1 the Jaccard loss.
    np.testing.assert_allclose(
        tversky_loss(p, y, mode="binary", from_logits=False, alpha=1.0, beta=1.0).item(), 1 - 1.4 / 2.2, rtol=1e-6
    )
    np.testing.assert_allclose(
        dice_loss(p, y, mode="binary", from_logits=False, log_loss=True).item(), -np.log(2.8 / 3.6), rtol=1e-6
    )


def test_multiclass_by_hand_with_ignore_and_absent_class():
    # Class probabilities along axis 1 for three pixels: class 0 (0.7, 0.2, 0.1), class 1 (0.1, 0.6, 0.3),
    # class 2 (0.3, 0.3, 0.4). Pixel 2 is ignored.
    p = _t([[[[0.7, 0.2, 0.1]], [[0.1, 0.6, 0.3]], [[0.3, 0.3, 0.4]]]])  # (1, 3, 1, 3)
    y = _t([[[0, 1, IGNORE]]])
    # Class 0: I 0.7, P 0.9, T 1 -> 1 - 1.4/1.9. Class 1: I 0.6, P 0.7, T 1 -> 1 - 1.2/1.7.
    # Class 2 has no true pixel: smp zeroes it but keeps it in the mean over classes.
    loss = dice_loss(p, y, from_logits=False, ignore_index=IGNORE)
    np.testing.assert_allclose(loss.item(), (0.5 / 1.9 + 0.5 / 1.7 + 0) / 3, rtol=1e-6)
    subset = dice_loss(p, y, from_logits=False, ignore_index=IGNORE, classes=[0, 1])
    np.testing.assert_allclose(subset.item(), (0.5 / 1.9 + 0.5 / 1.7) / 2, rtol=1e-6)
    # smooth = 1 on the Jaccard score: class 0 (0.7 + 1)/(0.9 + 1 - 0.7 + 1), class 1 (0.6 + 1)/(0.7 + 1 - 0.6 + 1).
    smooth = jaccard_loss(p, y, from_logits=False, ignore_index=IGNORE, smooth=1.0)
    np.testing.assert_allclose(smooth.item(), ((1 - 1.7 / 2.2) + (1 - 1.6 / 2.1)) / 3, rtol=1e-6)


@given(
    kind=st.sampled_from(["dice", "jaccard", "tversky"]),
    mode=st.sampled_from(["binary", "multiclass", "multilabel"]),
    n=st.integers(1, 2),
    k=st.integers(1, 4),
    spatial=st.lists(st.integers(1, 4), min_size=1, max_size=2),
    log_loss=st.booleans(),
    from_logits=st.booleans(),
    smooth=st.sampled_from([0.0, 1.0]),
    ignore=st.booleans(),
    subset=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_matches_reference(kind, mode, n, k, spatial, log_loss, from_logits, smooth, ignore, subset, seed):
    rng = np.random.default_rng(seed)
    k = 1 if mode == "binary" else k
    x = rng.normal(0, 2, (n, k, *spatial))
    if not from_logits:
        x = _probabilities(x, mode)
    if mode == "multiclass":
        y = rng.integers(0, k, (n, *spatial))
    elif mode == "binary":
        y = rng.integers(0, 2, (n, *spatial))
    else:
        y = rng.integers(0, 2, (n, k, *spatial))
    if ignore:
        y[rng.random(y.shape) < 0.3] = IGNORE
    classes = sorted(set(rng.integers(0, k, 2).tolist())) if subset and mode != "binary" else None
    kw = dict(
        mode=mode, classes=classes, log_loss=log_loss, from_logits=from_logits, smooth=smooth,
        ignore_index=IGNORE if ignore else None, alpha=0.3, beta=0.7, gamma=1.5,
    )
    out = _call(kind, _t(x), _t(y), **kw)
    expected = ref_region(x, y, kind, **kw) if kind == "tversky" else ref_region(x, y, kind, **{**kw, "gamma": 1.0})
    np.testing.assert_allclose(out.item(), expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("kind", ["dice", "jaccard", "tversky"])
@pytest.mark.parametrize("mode", ["binary", "multiclass", "multilabel"])
@pytest.mark.parametrize("log_loss", [False, True])
def test_gradcheck(kind, mode, log_loss):
    rng = np.random.default_rng(14)
    k = 1 if mode == "binary" else 3
    x = _t(rng.normal(size=(2, k, 3, 3)), requires_grad=True)
    shape = (2, k, 3, 3) if mode == "multilabel" else (2, 3, 3)
    y = rng.integers(0, k if mode == "multiclass" else 2, shape)
    y.reshape(-1)[:3] = IGNORE
    kw = dict(mode=mode, log_loss=log_loss, smooth=0.5, ignore_index=IGNORE, alpha=0.3, beta=0.7, gamma=1.5)
    gradcheck(lambda x: _call(kind, x, _t(y), **kw), [x])


@pytest.mark.parametrize("kind", ["dice", "jaccard", "tversky"])
@pytest.mark.parametrize("log_loss", [False, True])
def test_all_ignored_gives_zero_and_zero_gradient(kind, log_loss):
    x = _t(np.random.default_rng(15).normal(size=(2, 3, 2, 2)).astype(np.float32), requires_grad=True)
    loss = _call(kind, x, _t(np.full((2, 2, 2), IGNORE)), ignore_index=IGNORE, log_loss=log_loss, gamma=0.5)
    assert loss.item() == 0.0
    loss.backward()
    np.testing.assert_array_equal(x.grad.numpy(), 0.0)


@pytest.mark.parametrize("kind", ["dice", "jaccard", "tversky"])
def test_single_class_and_extreme_logits(kind):
    # One class in multiclass mode: softmax gives 1 everywhere and every pixel is that class: a perfect score.
    single = _t(np.ones((2, 1, 2, 2), dtype=np.float32), requires_grad=True)
    loss = _call(kind, single, _t(np.zeros((2, 2, 2), dtype=np.int64)))
    np.testing.assert_allclose(loss.item(), 0.0, atol=1e-7)
    loss.backward()
    np.testing.assert_allclose(single.grad.numpy(), 0.0, atol=1e-7)
    # Logits +-1e4: exactly one-hot probabilities. Pixel 0 right, pixel 1 wrong (class 1 predicted for class 0).
    x = _t(np.array([[[[1e4, -1e4]], [[-1e4, 1e4]]]], dtype=np.float32), requires_grad=True)
    y = _t(np.array([[[0, 0]]]))
    loss = _call(kind, x, y, alpha=0.5, beta=0.5)
    # Class 0: I = 1, P = 1, T = 2; class 1 absent (zeroed, counted).
    expected = {"dice": 1 - 2 / 3, "jaccard": 1 - 1 / 2, "tversky": 1 - 1 / (1 + 0.5)}[kind] / 2
    np.testing.assert_allclose(loss.item(), expected, rtol=1e-6)
    loss.backward()
    assert np.all(np.isfinite(x.grad.numpy()))


def test_modules_and_bad_arguments():
    rng = np.random.default_rng(16)
    x, y = rng.normal(size=(2, 3, 4, 4)), rng.integers(0, 3, (2, 4, 4))
    np.testing.assert_allclose(DiceLoss()(_t(x), _t(y)).item(), ref_region(x, y, "dice", "multiclass"), rtol=1e-12)
    np.testing.assert_allclose(
        JaccardLoss(log_loss=True)(_t(x), _t(y)).item(), ref_region(x, y, "jaccard", "multiclass", log_loss=True),
        rtol=1e-12,
    )
    np.testing.assert_allclose(
        TverskyLoss(alpha=0.2, beta=0.8, gamma=2.0)(_t(x), _t(y)).item(),
        ref_region(x, y, "tversky", "multiclass", alpha=0.2, beta=0.8, gamma=2.0),
        rtol=1e-12,
    )
    with pytest.raises(ValueError, match="DiceLoss: mode must be one of"):
        DiceLoss(mode="multi-class")
    with pytest.raises(ValueError, match="classes cannot be selected in mode='binary'"):
        dice_loss(_t(x[:, :1]), _t(y), mode="binary", classes=[0])
    with pytest.raises(ValueError, match="classes \\[3\\] are outside \\[0, 3\\)"):
        dice_loss(_t(x), _t(y), classes=[0, 3])
    with pytest.raises(ValueError, match="mode='binary' needs input of shape \\(N, 1, ...\\)"):
        dice_loss(_t(x), _t(y), mode="binary")
    with pytest.raises(ValueError, match="target contains class 255"):
        dice_loss(_t(x), _t(np.full((2, 4, 4), IGNORE)))  # 255 is only ignored when ignore_index says so
    with pytest.raises(ValueError, match="mode='multilabel' needs target of the input's shape"):
        jaccard_loss(_t(x), _t(y), mode="multilabel")
    with pytest.raises(ValueError, match="gamma must be > 0"):
        TverskyLoss(gamma=0)
    with pytest.raises(TypeError, match="log_loss must be a bool"):
        dice_loss(_t(x), _t(y), log_loss=1)

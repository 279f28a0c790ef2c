"""multi_margin_loss (torch's formula) and pixel_hinge_loss against hand values and explicit loops."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import segcore
import segcore.functional as F
from segcore.losses import MultiMarginLoss, PixelHingeLoss, pixel_hinge_loss
from segcore.testing import gradcheck

IGNORE = 255


def _t(a, requires_grad=False):
    return segcore.tensor(a, requires_grad=requires_grad)


def ref_hinge(x, target, p=1, margin=1.0, weight=None, ignore_index=None, reduction="mean"):
    """One position at a time: sum over i != y of w[y] max(0, margin - x[y] + x[i])^p / K."""
    x = np.asarray(x, dtype=np.float64)
    k = x.shape[1]
    scores = np.moveaxis(x, 1, -1).reshape(-1, k)
    labels = np.asarray(target).reshape(-1)
    losses, count = [], 0
    for row, y in zip(scores, labels):
        if ignore_index is not None and y == ignore_index:
            losses.append(0.0)
            continue
        count += 1
        w = 1.0 if weight is None else weight[y]
        losses.append(sum(w * max(0.0, margin - row[y] + row[i]) ** p for i in range(k) if i != y) / k)
    losses = np.array(losses).reshape(np.asarray(target).shape)
    if reduction == "none":
        return losses
    if reduction == "sum":
        return losses.sum()
    return losses.sum() / count if count else 0.0


def test_multi_margin_by_hand():
    # torch's documentation example: x = (0.1, 0.2, 0.4, 0.8), y = 3.
    x = _t([[0.1, 0.2, 0.4, 0.8]], requires_grad=True)
    y = _t([3])
    loss = F.multi_margin_loss(x, y)
    # (max(0, 1 - 0.8 + 0.1) + max(0, 1 - 0.8 + 0.2) + max(0, 1 - 0.8 + 0.4)) / 4 = (0.3 + 0.4 + 0.6) / 4.
    np.testing.assert_allclose(loss.item(), 0.325, rtol=1e-6)
    loss.backward()
    # Each active term adds +1/4 to x_i and -1/4 to x_y.
    np.testing.assert_allclose(x.grad.numpy(), [[0.25, 0.25, 0.25, -0.75]], rtol=1e-6)
    squared = F.multi_margin_loss(x, y, p=2)
    np.testing.assert_allclose(squared.item(), (0.09 + 0.16 + 0.36) / 4, rtol=1e-6)
    # weight[y] = 2 doubles every term; the mean stays over samples (not over weights).
    weighted = F.multi_margin_loss(x, y, weight=_t([5.0, 5.0, 5.0, 2.0]))
    np.testing.assert_allclose(weighted.item(), 0.65, rtol=1e-6)
    # Unbatched input: scores (K,) and a 0-d target.
    np.testing.assert_allclose(F.multi_margin_loss(_t([0.1, 0.2, 0.4, 0.8]), _t(3)).item(), 0.325, rtol=1e-6)


@given(
    n=st.integers(1, 4),
    k=st.integers(1, 5),
    p=st.sampled_from([1, 2]),
    margin=st.floats(0.0, 2.0),
    use_weight=st.booleans(),
    reduction=st.sampled_from(["none", "mean", "sum"]),
    seed=st.integers(0, 2**16),
)
def test_multi_margin_matches_loop(n, k, p, margin, use_weight, reduction, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, k))
    y = rng.integers(0, k, n)
    w = rng.random(k) if use_weight else None
    weight = None if w is None else _t(w)
    out = F.multi_margin_loss(_t(x), _t(y), p=p, margin=margin, weight=weight, reduction=reduction)
    np.testing.assert_allclose(out.numpy(), ref_hinge(x, y, p, margin, w, reduction=reduction), rtol=1e-12, atol=1e-14)


@given(
    n=st.integers(1, 2),
    k=st.integers(1, 4),
    spatial=st.lists(st.integers(1, 4), min_size=1, max_size=2),
    p=st.sampled_from([1, 2]),
    use_weight=st.booleans(),
    reduction=st.sampled_from(["none", "mean", "sum"]),
    seed=st.integers(0, 2**16),
)
def test_pixel_hinge_matches_loop(n, k, spatial, p, use_weight, reduction, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, k, *spatial))
    y = rng.integers(0, k, (n, *spatial))
    y[rng.random(y.shape) < 0.3] = IGNORE
    w = rng.random(k) if use_weight else None
    out = pixel_hinge_loss(_t(x), _t(y), p=p, margin=0.5, weight=None if w is None else _t(w), reduction=reduction)
    expected = ref_hinge(x, y, p, 0.5, w, ignore_index=IGNORE, reduction=reduction)
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-12, atol=1e-14)


def test_pixel_hinge_without_ignored_pixels_is_multi_margin():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(6, 3)), rng.integers(0, 3, 6)
    np.testing.assert_allclose(pixel_hinge_loss(_t(x), _t(y)).item(), F.multi_margin_loss(_t(x), _t(y)).item())


@pytest.mark.parametrize("p", [1, 2])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_hinge_gradcheck(p, reduction):
    rng = np.random.default_rng(4)
    x = rng.normal(size=(2, 3, 3, 2))
    y = rng.integers(0, 3, (2, 3, 2))
    y[0, 0, 0] = IGNORE
    picked = np.take_along_axis(x, np.where(y == IGNORE, 0, y)[:, None], axis=1)
    assert np.min(np.abs(1.0 - picked + x)) > 1e-3  # away from the hinge's kink
    w = _t(rng.random(3))
    gradcheck(lambda x: pixel_hinge_loss(x, _t(y), p=p, weight=w, reduction=reduction), [_t(x, requires_grad=True)])
    gradcheck(
        lambda x: F.multi_margin_loss(x, _t(y[:, 0, 0] % 3), p=p, reduction=reduction),
        [_t(x[:, :, 0, 0], requires_grad=True)],
    )


def test_hinge_edge_cases():
    x = _t(np.random.default_rng(5).normal(size=(2, 3, 2, 2)).astype(np.float32), requires_grad=True)
    # Every pixel ignored: 0 with a zero gradient, no NaN.
    loss = pixel_hinge_loss(x, _t(np.full((2, 2, 2), IGNORE)))
    assert loss.item() == 0.0
    loss.backward()
    np.testing.assert_array_equal(x.grad.numpy(), 0.0)
    # A single class has no competitor: the loss is 0.
    single = _t(np.ones((2, 1, 2, 2), dtype=np.float32), requires_grad=True)
    loss = pixel_hinge_loss(single, _t(np.zeros((2, 2, 2), dtype=np.int64)))
    assert loss.item() == 0.0
    # Extreme logits: x_y = -1e4 against 1e4 gives (1 + 2e4) / 2, finite with the gradient (1/2, -1/2).
    extreme = _t(np.array([[1e4, -1e4]], dtype=np.float32), requires_grad=True)
    loss = F.multi_margin_loss(extreme, _t([1]))
    np.testing.assert_allclose(loss.item(), 10000.5, rtol=1e-6)
    loss.backward()
    np.testing.assert_allclose(extreme.grad.numpy(), [[0.5, -0.5]])
    squared = F.multi_margin_loss(extreme, _t([1]), p=2)
    np.testing.assert_allclose(squared.item(), 20001.0**2 / 2, rtol=1e-6)


def test_modules_and_bad_arguments():
    rng = np.random.default_rng(6)
    x, y = rng.normal(size=(2, 3, 2, 2)), rng.integers(0, 3, (2, 2, 2))
    np.testing.assert_allclose(PixelHingeLoss(p=2, margin=0.3)(_t(x), _t(y)).item(), ref_hinge(x, y, 2, 0.3))
    np.testing.assert_allclose(
        MultiMarginLoss(reduction="sum")(_t(x[:, :, 0, 0]), _t(y[:, 0, 0])).item(),
        ref_hinge(x[:, :, 0, 0], y[:, 0, 0], reduction="sum"),
    )
    with pytest.raises(ValueError, match="p must be 1 or 2, got 3"):
        F.multi_margin_loss(_t(x[:, :, 0, 0]), _t(y[:, 0, 0]), p=3)
    with pytest.raises(ValueError, match="use pixel_hinge_loss"):
        F.multi_margin_loss(_t(x), _t(y))
    with pytest.raises(ValueError, match="target contains class 255 outside \\[0, 3\\)"):
        F.multi_margin_loss(_t(x[:, :, 0, 0]), _t(np.array([0, 255])))
    with pytest.raises(ValueError, match="margin must be a finite number"):
        pixel_hinge_loss(_t(x), _t(y), margin=float("nan"))
    with pytest.raises(ValueError, match="weight must have shape \\(3,\\)"):
        pixel_hinge_loss(_t(x), _t(y), weight=_t(np.ones(2)))
    with pytest.raises(ValueError, match="MultiMarginLoss: p must be 1 or 2"):
        MultiMarginLoss(p=0)

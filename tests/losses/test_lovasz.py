"""lovasz_softmax (Berman et al. 2018).

The reference evaluates the Lovasz extension through its integral form, ``f(m) = int_0^1 Delta({i: m_i >= s}) ds``
with the Jaccard set loss ``Delta(M) = |M| / |F u M|`` computed on Python sets, which shares nothing with the
sorted cumulative-sum formula of the implementation.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import segcore
from segcore.losses import LovaszSoftmaxLoss, lovasz_softmax
from segcore.testing import gradcheck

IGNORE = 255


def _t(a, requires_grad=False):
    return segcore.tensor(a, requires_grad=requires_grad)


def lovasz_extension(errors, foreground):
    """int_0^1 Delta({i : errors_i >= s}) ds for the piecewise constant integrand, Delta(M) = |M| / |F u M|."""
    fg = {i for i, f in enumerate(foreground) if f}
    levels = sorted(set(errors.tolist()) | {0.0}, reverse=True)
    total = 0.0
    for high, low in zip(levels, levels[1:]):
        mistakes = {i for i, e in enumerate(errors) if e >= high}
        total += (high - low) * len(mistakes) / len(fg | mistakes)
    return total


def ref_lovasz(probas, labels, classes="present", per_image=False, ignore=None):
    def flat(p, y):
        k = p.shape[1]
        p = np.moveaxis(p, 1, -1).reshape(-1, k)
        y = y.reshape(-1)
        if ignore is not None:
            p, y = p[y != ignore], y[y != ignore]
        chosen = range(k) if classes in ("all", "present") else classes
        losses = []
        for c in chosen:
            fg = y == c
            if classes == "present" and not fg.any():
                continue
            losses.append(lovasz_extension(np.abs(fg - p[:, c]), fg))
        return float(np.mean(losses)) if losses else 0.0

    if per_image:
        return float(np.mean([flat(p[None], y[None]) for p, y in zip(probas, labels)]))
    return flat(probas, labels)


def _softmax(x):
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_lovasz_extension_reference_by_hand():
    # Errors (0.2, 0.4) with the first pixel foreground: Delta({1}) = 1/2 on [0.2, 0.4], Delta({0, 1}) = 1 below.
    assert np.isclose(lovasz_extension(np.array([0.2, 0.4]), [True, False]), 0.2 * 0.5 + 0.2 * 1.0)


def test_lovasz_by_hand():
    # Two pixels, labels (0, 1); class 0 probabilities (0.8, 0.4), class 1 (0.2, 0.6). Both classes have errors
    # (0.2, 0.4). Class 0: sorted fg (0, 1) -> Lovasz gradient (1/2, 1/2) -> 0.3. Class 1: sorted fg (1, 0) ->
    # gradient (1, 0) -> 0.4. Mean 0.35.
    p = _t([[[0.8, 0.4], [0.2, 0.6]]], requires_grad=True)  # (N=1, K=2, 2 pixels)
    loss = lovasz_softmax(p, _t([[0, 1]]))
    np.testing.assert_allclose(loss.item(), 0.35, rtol=1e-6)
    loss.backward()
    # d error / d p is -1 on foreground, +1 elsewhere, times the pixel's Lovasz weight, / 2 classes.
    np.testing.assert_allclose(p.grad.numpy(), [[[-0.25, 0.25], [0.0, -0.5]]], rtol=1e-6)
    # A class absent from the labels but listed explicitly: fg is empty, so the loss is the largest error.
    np.testing.assert_allclose(lovasz_softmax(p, _t([[0, 0]]), classes=[1]).item(), 0.6, rtol=1e-6)


@given(
    n=st.integers(1, 3),
    k=st.integers(1, 4),
    spatial=st.lists(st.integers(1, 4), min_size=1, max_size=2),
    classes=st.sampled_from(["present", "all", "list"]),
    per_image=st.booleans(),
    ignore=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_lovasz_matches_integral_form(n, k, spatial, classes, per_image, ignore, seed):
    rng = np.random.default_rng(seed)
    probas = _softmax(rng.normal(0, 2, (n, k, *spatial)))
    labels = rng.integers(0, k, (n, *spatial))
    if ignore:
        labels[rng.random(labels.shape) < 0.3] = IGNORE
    if classes == "list":
        classes = rng.integers(0, k, 2).tolist()
    out = lovasz_softmax(_t(probas), _t(labels), classes, per_image, IGNORE if ignore else None)
    expected = ref_lovasz(probas, labels, classes, per_image, IGNORE if ignore else None)
    np.testing.assert_allclose(out.item(), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("classes", ["present", "all", [0, 2]])
@pytest.mark.parametrize("per_image", [False, True])
def test_lovasz_gradcheck(classes, per_image):
    rng = np.random.default_rng(17)
    labels = rng.integers(0, 3, (2, 3, 3))
    labels[0, 0] = IGNORE
    logits = _t(rng.normal(size=(2, 3, 3, 3)), requires_grad=True)
    module = LovaszSoftmaxLoss(classes=classes, per_image=per_image, ignore_index=IGNORE)
    gradcheck(lambda x: module(x, _t(labels)), [logits])
    probas = _t(_softmax(rng.normal(size=(2, 3, 3, 3))), requires_grad=True)
    gradcheck(lambda p: lovasz_softmax(p, _t(labels), classes, per_image, IGNORE), [probas])


def test_lovasz_edge_cases():
    p = _t(_softmax(np.random.default_rng(18).normal(size=(2, 3, 2, 2))).astype(np.float32), requires_grad=True)
    for per_image in (False, True):
        loss = lovasz_softmax(p, _t(np.full((2, 2, 2), IGNORE)), per_image=per_image, ignore=IGNORE)
        assert loss.item() == 0.0
        loss.backward()
        np.testing.assert_array_equal(p.grad.numpy(), 0.0)
    # Per image, a void image counts as 0 in the mean over images.
    labels = np.zeros((2, 2, 2), dtype=np.int64)
    labels[1] = IGNORE
    both = lovasz_softmax(p, _t(labels), per_image=True, ignore=IGNORE).item()
    first = lovasz_softmax(p[0:1], _t(labels[0:1])).item()
    np.testing.assert_allclose(both, first / 2, rtol=1e-6)
    # One class: softmax gives probability 1, every error is 0.
    single = _t(np.zeros((1, 1, 2, 2), dtype=np.float32), requires_grad=True)
    loss = LovaszSoftmaxLoss()(single, _t(np.zeros((1, 2, 2), dtype=np.int64)))
    assert loss.item() == 0.0
    # Logits +-1e4: one-hot probabilities; pixel 0 right, pixel 1 wrong -> each class has one error of 1.
    x = _t(np.array([[[[1e4, 1e4]], [[-1e4, -1e4]]]], dtype=np.float32), requires_grad=True)
    loss = LovaszSoftmaxLoss()(x, _t(np.array([[[0, 1]]])))
    # Class 0: errors (0, 1), fg (1, 0): Delta({1}) = 1/2. Class 1: errors (0, 1), fg (0, 1): Delta({1}) = 1.
    np.testing.assert_allclose(loss.item(), 0.75, rtol=1e-6)
    loss.backward()
    assert np.all(np.isfinite(x.grad.numpy()))


def test_lovasz_bad_arguments():
    p = _t(np.full((1, 2, 2, 2), 0.5))
    y = _t(np.zeros((1, 2, 2), dtype=np.int64))
    with pytest.raises(ValueError, match="classes must be 'all', 'present' or a sequence"):
        lovasz_softmax(p, y, classes="some")
    with pytest.raises(ValueError, match="classes \\[2\\] are outside \\[0, 2\\)"):
        lovasz_softmax(p, y, classes=[2])
    with pytest.raises(ValueError, match="labels shape \\(1, 2\\) does not match probas shape"):
        lovasz_softmax(p, _t(np.zeros((1, 2), dtype=np.int64)))
    with pytest.raises(TypeError, match="labels must be a Tensor"):
        lovasz_softmax(p, np.zeros((1, 2, 2)))
    with pytest.raises(TypeError, match="per_image must be a bool"):
        LovaszSoftmaxLoss(per_image="yes")

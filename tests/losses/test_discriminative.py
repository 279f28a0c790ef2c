"""discriminative_loss (De Brabandere et al. 2017) against hand values and explicit per-cluster loops."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import segcore
from segcore.losses import DiscriminativeLoss, DiscriminativeLossTerms, discriminative_loss
from segcore.testing import gradcheck


def _t(a, requires_grad=False):
    return segcore.tensor(a, requires_grad=requires_grad)


def ref_discriminative(emb, masks_per_image, delta_v=0.5, delta_d=1.5, alpha=1.0, beta=1.0, gamma=0.001):
    """Loops over images, clusters, pixels and ordered pairs; ``masks_per_image``: list of (C, H, W) bool."""
    n = emb.shape[0]
    totals = np.zeros(3)
    for i in range(n):
        clusters = [m for m in masks_per_image[i] if m.any()]
        if not clusters:
            continue
        means = []
        variance = 0.0
        for m in clusters:
            points = [emb[i][(slice(None),) + idx] for idx in zip(*np.nonzero(m))]
            mu = np.mean(points, axis=0)
            means.append(mu)
            variance += np.mean([max(0.0, np.linalg.norm(mu - x) - delta_v) ** 2 for x in points])
        c = len(clusters)
        pairs = list(itertools.permutations(range(c), 2))
        distance = (
            sum(max(0.0, 2 * delta_d - np.linalg.norm(means[a] - means[b])) ** 2 for a, b in pairs) / len(pairs)
            if pairs
            else 0.0
        )
        totals += [variance / c, distance, np.mean([np.linalg.norm(mu) for mu in means])]
    variance, distance, reg = totals / n
    return alpha * variance + beta * distance + gamma * reg, variance, distance, reg


def test_by_hand():
    # D = 1, four pixels in a row with embeddings 0, 1, 4, 6; instance A = {0, 1}, B = {2, 3}: mu = 0.5 and 5.
    emb = _t([[[[0.0, 1.0, 4.0, 6.0]]]])  # (N=1, D=1, H=1, W=4)
    labels = _t(np.array([[[1, 1, 2, 2]]]))
    out = discriminative_loss(emb, labels, delta_v=0.25, delta_d=3.0)
    assert isinstance(out, DiscriminativeLossTerms)
    # Pull: A (0.5 - 0.25)^2 for both pixels, B (1 - 0.25)^2 for both: (0.0625 + 0.5625) / 2.
    # Push: (2 * 3 - 4.5)^2 = 2.25. Regularisation: (0.5 + 5) / 2.
    np.testing.assert_allclose(out.variance.item(), 0.3125, rtol=1e-6)
    np.testing.assert_allclose(out.distance.item(), 2.25, rtol=1e-6)
    np.testing.assert_allclose(out.regularization.item(), 2.75, rtol=1e-6)
    np.testing.assert_allclose(out.loss.item(), 0.3125 + 2.25 + 0.001 * 2.75, rtol=1e-6)


def test_gradient_by_hand_single_instance():
    # One instance {x0 = 0, x1 = 2}, delta_v = 0: variance = (x1 - x0)^2 / 4, distance = 0, reg = |mu|.
    emb = _t([[[[0.0, 2.0]]]], requires_grad=True)
    out = discriminative_loss(emb, _t(np.array([[[[True, True]]]])), delta_v=0.0, gamma=0.1)
    assert out.distance.item() == 0.0
    np.testing.assert_allclose(out.variance.item(), 1.0, rtol=1e-6)
    out.loss.backward()
    # d variance = (-(x1 - x0)/2, (x1 - x0)/2) = (-1, 1); d reg = (1/2, 1/2) times gamma.
    np.testing.assert_allclose(emb.grad.numpy().reshape(-1), [-1.0 + 0.05, 1.0 + 0.05], rtol=1e-6)


def _random_instances(rng, n, h, w, max_instances):
    masks = []
    for _ in range(n):
        c = int(rng.integers(0, max_instances + 1))
        m = rng.random((c, h, w)) < 0.4
        masks.append(m)
    return masks


@given(
    n=st.integers(1, 3),
    d=st.integers(1, 4),
    h=st.integers(1, 4),
    w=st.integers(1, 4),
    form=st.sampled_from(["labels", "masks", "list"]),
    deltas=st.sampled_from([(0.5, 1.5), (0.1, 3.0), (0.0, 0.5)]),
    seed=st.integers(0, 2**16),
)
def test_matches_loops(n, d, h, w, form, deltas, seed):
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(n, d, h, w))
    if form == "labels":
        labels = rng.integers(0, 4, (n, h, w))
        masks = [np.stack([labels[i] == j for j in range(1, 4)]) for i in range(n)]
        given_masks = _t(labels)
    elif form == "masks":
        stacked = rng.random((n, 3, h, w)) < 0.4  # overlapping masks, possibly empty channels
        masks = list(stacked)
        given_masks = _t(stacked)
    else:
        masks = _random_instances(rng, n, h, w, 3)
        given_masks = [_t(m.astype(np.uint8)) for m in masks]
    delta_v, delta_d = deltas
    out = discriminative_loss(_t(emb), given_masks, delta_v, delta_d, alpha=0.7, beta=1.3, gamma=0.01)
    expected = ref_discriminative(emb, masks, delta_v, delta_d, 0.7, 1.3, 0.01)
    np.testing.assert_allclose([t.item() for t in out], expected, rtol=1e-10, atol=1e-12)


def test_gradcheck():
    rng = np.random.default_rng(19)
    labels = rng.integers(0, 4, (2, 4, 4))
    labels[1] = 0
    labels[1, :2, :2] = 3  # the second image has a single instance
    emb = _t(rng.normal(size=(2, 3, 4, 4)), requires_grad=True)
    # delta_d large enough for the push term to be active, delta_v small enough for the pull term.
    for part in range(4):
        gradcheck(lambda e: discriminative_loss(e, _t(labels), delta_v=0.2, delta_d=2.0, gamma=0.1)[part], [emb])


def test_empty_instance_set_and_degenerate_norms():
    emb = _t(np.random.default_rng(20).normal(size=(2, 3, 2, 2)).astype(np.float32), requires_grad=True)
    out = discriminative_loss(emb, _t(np.zeros((2, 2, 2), dtype=np.int64)))
    assert [t.item() for t in out] == [0.0, 0.0, 0.0, 0.0]
    out.loss.backward()
    np.testing.assert_array_equal(emb.grad.numpy(), 0.0)
    # Masks with only empty channels are an empty instance set too.
    assert discriminative_loss(emb, _t(np.zeros((2, 4, 2, 2), dtype=bool))).loss.item() == 0.0
    # An image without instances counts as 0 in the batch mean.
    labels = np.zeros((2, 2, 2), dtype=np.int64)
    labels[0, 0] = 1
    both = discriminative_loss(emb, _t(labels)).variance.item()
    alone = discriminative_loss(emb[0:1], _t(labels[0:1])).variance.item()
    np.testing.assert_allclose(both, alone / 2, rtol=1e-6)
    # One-pixel instances (each pixel on its own mean) and two instances with the same mean: norms of 0, whose
    # gradient is taken as 0 instead of 0/0.
    # Both pixels embed at (0.3, -0.2): only the regularisation term (|mu_1| + |mu_2|) / 2 keeps a gradient,
    # gamma * x / |x| / 2 per pixel.
    same = _t(np.array([[[[0.3, 0.3]], [[-0.2, -0.2]]]]), requires_grad=True)  # (N=1, D=2, H=1, W=2)
    out = discriminative_loss(same, _t(np.array([[[1, 2]]])))
    assert out.variance.item() == 0.0
    np.testing.assert_allclose(out.distance.item(), 9.0)  # (2 * 1.5 - 0)^2
    out.loss.backward()
    unit = np.array([0.3, -0.2]) / np.sqrt(0.13)
    np.testing.assert_allclose(same.grad.numpy()[0, :, 0, :], np.stack([unit, unit], axis=1) * 0.001 / 2, rtol=1e-12)


def test_module_and_bad_arguments():
    rng = np.random.default_rng(21)
    emb, labels = rng.normal(size=(1, 2, 3, 3)), rng.integers(0, 3, (1, 3, 3))
    masks = [np.stack([labels[0] == 1, labels[0] == 2])]
    np.testing.assert_allclose(
        DiscriminativeLoss(delta_v=0.1)(_t(emb), _t(labels)).item(), ref_discriminative(emb, masks, delta_v=0.1)[0]
    )
    e = _t(emb)
    with pytest.raises(ValueError, match="instance_masks must have shape \\(1, C, 3, 3\\)"):
        discriminative_loss(e, _t(np.zeros((1, 2, 3, 4), dtype=bool)))
    with pytest.raises(ValueError, match="must hold 0/1 masks, got values in \\[2, 2\\]"):
        discriminative_loss(e, _t(np.full((1, 2, 3, 3), 2)))
    with pytest.raises(ValueError, match="label map instance_masks must be >= 0"):
        discriminative_loss(e, _t(np.full((1, 3, 3), -1)))
    with pytest.raises(ValueError, match="lists 2 images but embeddings has 1"):
        discriminative_loss(e, [_t(np.zeros((1, 3, 3), dtype=bool))] * 2)
    with pytest.raises(TypeError, match="instance_masks must be a \\(N, C, H, W\\) mask Tensor"):
        discriminative_loss(e, np.zeros((1, 3, 3)))
    with pytest.raises(TypeError, match="must hold integer instance ids, got dtype float64"):
        discriminative_loss(e, _t(np.zeros((1, 3, 3))))
    with pytest.raises(ValueError, match="delta_v must be a finite number >= 0.0"):
        discriminative_loss(e, _t(labels), delta_v=-0.5)
    with pytest.raises(ValueError, match="embeddings must be \\(N, D, H, W\\)"):
        discriminative_loss(_t(np.zeros((2, 3))), _t(labels))

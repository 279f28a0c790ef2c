"""``segcore.nn.crf``: gradients of the differentiable mean-field (CRF-as-RNN) against central differences,
the layer against ``dense_crf``, its parameters, and its argument errors."""

import numpy as np
import pytest

import segcore
import segcore.functional as F
from segcore.crf import dense_crf
from segcore.nn.crf import DenseCRF, crf_mean_field
from segcore.optim import SGD
from segcore.testing import gradcheck


def tensor64(array, requires_grad=True):
    return segcore.tensor(np.asarray(array, dtype=np.float64), requires_grad=requires_grad)


@pytest.mark.parametrize("method", ["exact", "permutohedral"])
def test_mean_field_gradcheck(method):
    rng = np.random.default_rng(0)
    n, k, h, w = 2, 3, 4, 5
    images = rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8)
    logits = tensor64(rng.standard_normal((n, k, h, w)))
    weights = tensor64(rng.uniform(0.5, 3.0, (2, k)))
    compat = tensor64(rng.uniform(-1.0, 2.0, (k, k)))  # not symmetric: the layer learns a full matrix

    def fn(x, wk, mu):
        # Small bilateral standard deviations so that both kernels vary across a 4x5 image.
        return crf_mean_field(x, images, wk, mu, iterations=3, bilateral_sxy=3, bilateral_srgb=40, method=method)

    gradcheck(fn, [logits, weights, compat], rng=np.random.default_rng(1), directions=3)


def test_gradient_reaches_every_parameter():
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (1, 4, 5, 3), dtype=np.uint8)
    crf = DenseCRF(3, iterations=2, bilateral_sxy=3, bilateral_srgb=40, method="exact", dtype=np.float64)
    logits = tensor64(rng.standard_normal((1, 3, 4, 5)))
    (crf(logits, images) * tensor64(rng.standard_normal((1, 3, 4, 5)), False)).sum().backward()
    for name, p in crf.named_parameters():
        assert p.grad is not None and np.all(p.grad.numpy() != 0), name
    assert logits.grad is not None and logits.grad.shape == logits.shape


@pytest.mark.parametrize("method", ["exact", "permutohedral"])
def test_potts_initialisation_equals_dense_crf(method):
    rng = np.random.default_rng(3)
    n, k, h, w = 2, 3, 9, 11
    images = rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8)
    logits = rng.standard_normal((n, k, h, w))
    crf = DenseCRF(k, iterations=4, gaussian_sxy=2, bilateral_sxy=5, bilateral_srgb=30, method=method, dtype=np.float64)
    with segcore.no_grad():
        marginals = F.softmax(crf(tensor64(logits, False), images), dim=1).numpy()
    for i in range(n):
        p = np.exp(logits[i] - logits[i].max(axis=0))
        p /= p.sum(axis=0)
        expected = dense_crf(
            images[i], p, iterations=4, gaussian_sxy=2, bilateral_sxy=5, bilateral_srgb=30, method=method
        )
        np.testing.assert_allclose(marginals[i], expected, atol=1e-10)


def test_parameters_and_state_dict():
    crf = DenseCRF(4, gaussian_weight=2.5, bilateral_weight=7.0)
    state = crf.state_dict()
    assert list(state) == ["kernel_weights", "compatibility"]
    np.testing.assert_array_equal(state["kernel_weights"].numpy(), [[2.5] * 4, [7.0] * 4])
    np.testing.assert_array_equal(state["compatibility"].numpy(), 1.0 - np.eye(4))
    assert state["kernel_weights"].dtype == np.float32
    assert "DenseCRF(4, iterations=5" in repr(crf)


def test_zero_iterations_return_the_logits():
    logits = segcore.tensor(np.ones((1, 2, 3, 3), dtype=np.float32))
    assert DenseCRF(2, iterations=0)(logits, np.zeros((3, 3, 3), dtype=np.uint8)) is logits


def test_one_training_step_reduces_the_loss():
    # Learning the compatibility: a noisy prediction of a two-region image, target the true regions.
    rng = np.random.default_rng(4)
    h, w = 8, 10
    truth = np.zeros((h, w), dtype=np.int64)
    truth[:, 5:] = 1
    image = np.ascontiguousarray(np.broadcast_to(np.where(truth[..., None] == 1, 200, 40), (h, w, 3)).astype(np.uint8))
    logits = segcore.tensor(np.eye(2)[truth].transpose(2, 0, 1)[None] + rng.normal(0, 1.0, (1, 2, h, w)))
    target = segcore.tensor(truth[None])
    crf = DenseCRF(
        2, iterations=3, gaussian_weight=0.5, bilateral_weight=0.5, bilateral_sxy=5, method="exact", dtype=np.float64
    )
    optimizer = SGD(crf.parameters(), lr=0.05)

    def loss():
        return F.cross_entropy(crf(logits, image[None]), target)

    before = loss()
    optimizer.zero_grad()
    before.backward()
    optimizer.step()
    assert loss().item() < before.item()


IMAGES = np.zeros((1, 4, 5, 3), dtype=np.uint8)


@pytest.mark.parametrize(
    "logits, images, error, match",
    [
        (np.zeros((1, 2, 4, 5)), IMAGES, ValueError, r"logits must be a 4-D Tensor.*ndarray"),
        (segcore.tensor(np.zeros((2, 4, 5), dtype=np.float32)), IMAGES, ValueError, r"4-D Tensor.*\(2, 4, 5\)"),
        (segcore.tensor(np.zeros((1, 2, 4, 5), dtype=np.float32)), np.zeros((1, 5, 4, 3), np.uint8), ValueError,
         r"images must be \(N, H, W, 3\) = \(1, 4, 5, 3\).*got \(1, 5, 4, 3\)"),
        (segcore.tensor(np.zeros((1, 2, 4, 5), dtype=np.float32)), IMAGES.astype(np.float32), TypeError,
         "images must be uint8"),
        (segcore.tensor(np.zeros((1, 3, 4, 5), dtype=np.float32)), IMAGES, ValueError,
         r"kernel_weights must be a Tensor of shape \(2, 3\) for K=3 labels, got \(2, 2\)"),
        (segcore.tensor(np.zeros((1, 2, 4, 5), dtype=np.float64)), IMAGES, TypeError,
         "kernel_weights has dtype float32 but logits have float64"),
    ],
)
def test_forward_errors(logits, images, error, match):
    crf = DenseCRF(2)
    with pytest.raises(error, match=match):
        crf(logits, images)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(num_classes=0), "num_classes must be an int >= 1"),
        (dict(iterations=-1), "iterations must be an int >= 0"),
        (dict(method="fast"), r"method must be one of \('permutohedral', 'exact'\), got 'fast'"),
        (dict(bilateral_srgb=-3), "bilateral_srgb must be a positive number"),
        (dict(gaussian_weight=float("nan")), "gaussian_weight must be a finite number"),
    ],
)
def test_constructor_errors(kwargs, match):
    args = dict(num_classes=2)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        DenseCRF(**args)

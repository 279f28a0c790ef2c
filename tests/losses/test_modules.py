"""The loss modules and the LOSSES table that the built-in plugin registers."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

import segcore
import segcore.functional as F
import segcore.losses as L
from segcore.nn import Module

IGNORE = 255
SEMANTIC = {
    "cross_entropy": dict(ignore_index=IGNORE),
    "focal": dict(),
    "pixel_hinge": dict(),
    "dice": dict(ignore_index=IGNORE),
    "jaccard": dict(ignore_index=IGNORE),
    "tversky": dict(ignore_index=IGNORE, alpha=0.3, beta=0.7, gamma=1.5),
    "lovasz_softmax": dict(ignore_index=IGNORE),
}


def _t(a, requires_grad=False):
    return segcore.tensor(a, requires_grad=requires_grad)


def test_table_lists_every_loss_module():
    assert L.LOSSES == {
        "cross_entropy": L.CrossEntropyLoss,
        "nll": L.NLLLoss,
        "bce_with_logits": L.BCEWithLogitsLoss,
        "bce": L.BCELoss,
        "multi_margin": L.MultiMarginLoss,
        "pixel_hinge": L.PixelHingeLoss,
        "sigmoid_focal": L.SigmoidFocalLoss,
        "focal": L.FocalLoss,
        "dice": L.DiceLoss,
        "jaccard": L.JaccardLoss,
        "tversky": L.TverskyLoss,
        "lovasz_softmax": L.LovaszSoftmaxLoss,
        "l1": L.L1Loss,
        "mse": L.MSELoss,
        "smooth_l1": L.SmoothL1Loss,
        "discriminative": L.DiscriminativeLoss,
    }


@pytest.mark.parametrize("name", sorted(L.LOSSES))
def test_factories_build_with_defaults_and_have_a_description(name):
    factory = L.LOSSES[name]
    # segcore.build_loss checks keywords against the signature: every parameter must be keyword-able with a default.
    for parameter in inspect.signature(factory).parameters.values():
        assert parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY), parameter
        assert parameter.default is not parameter.empty, parameter
    module = factory()
    assert isinstance(module, Module)
    assert inspect.getdoc(factory).splitlines()[0]  # the registry's description
    assert repr(module).startswith(type(module).__name__ + "(")


@pytest.mark.parametrize("name", sorted(SEMANTIC))
def test_semantic_losses_train_logits_towards_the_labels(name):
    # Gradient descent on the logits of a fixed batch must lower every semantic loss and end with the labels as
    # the argmax: the gradient points downhill. Steps are normalised by the largest gradient entry because the
    # losses' gradient scales differ by orders of magnitude. float32 throughout, like a training run.
    rng = np.random.default_rng(22)
    labels = rng.integers(0, 3, (2, 5, 5))
    labels[0, 0] = IGNORE
    x = rng.normal(size=(2, 3, 5, 5)).astype(np.float32)
    loss_fn = L.LOSSES[name](**SEMANTIC[name])
    target = _t(labels)
    values = []
    for _ in range(30):
        logits = _t(x, requires_grad=True)
        value = loss_fn(logits, target)
        assert value.shape == () and value.dtype == np.float32
        value.backward()
        values.append(value.item())
        grad = logits.grad.numpy()
        x = x - 0.3 * grad / max(float(np.abs(grad).max()), 1e-12)
    assert values[-1] < 0.1 * values[0]
    predicted = x.argmax(axis=1)
    valid = labels != IGNORE
    np.testing.assert_array_equal(predicted[valid], labels[valid])


def test_weight_tensors_are_buffers():
    w = _t(np.array([1.0, 2.0, 3.0], dtype=np.float32))
    module = L.CrossEntropyLoss(weight=w, ignore_index=IGNORE)
    assert [name for name, _ in module.named_buffers()] == ["weight"]
    assert set(module.state_dict()) == {"weight"}
    rng = np.random.default_rng(23)
    x, y = rng.normal(size=(2, 3, 2, 2)).astype(np.float32), rng.integers(0, 3, (2, 2, 2))
    np.testing.assert_allclose(
        module(_t(x), _t(y)).item(), F.cross_entropy(_t(x), _t(y), weight=w, ignore_index=IGNORE).item()
    )
    focal = L.FocalLoss(alpha=_t(np.array([0.2, 0.3, 0.5], dtype=np.float32)))
    assert [name for name, _ in focal.named_buffers()] == ["alpha"]
    assert "alpha=<Tensor of shape (3,)>" in repr(focal)


def test_functional_losses_are_reexported():
    for name in ("cross_entropy", "nll_loss", "binary_cross_entropy_with_logits", "softmax_focal_loss", "mse_loss"):
        assert getattr(L, name) is getattr(F, name)
    assert set(L.__all__) >= {"dice_loss", "jaccard_loss", "tversky_loss", "lovasz_softmax", "discriminative_loss"}


def test_constructor_arguments_are_checked():
    with pytest.raises(TypeError, match="CrossEntropyLoss: weight must be a Tensor or None, got list"):
        L.CrossEntropyLoss(weight=[1.0, 2.0])
    with pytest.raises(ValueError, match="NLLLoss: reduction must be one of"):
        L.NLLLoss(reduction="batchmean")
    with pytest.raises(ValueError, match="LovaszSoftmaxLoss: classes must be 'all', 'present'"):
        L.LovaszSoftmaxLoss(classes="everything")
    with pytest.raises(ValueError, match="DiscriminativeLoss: delta_d must be a finite number >= 0.0"):
        L.DiscriminativeLoss(delta_d=-1.0)
    with pytest.raises(ValueError, match="SigmoidFocalLoss: gamma must be a finite number >= 0.0"):
        L.SigmoidFocalLoss(gamma=-2)

"""Model-level differential check: small U-Net and DeepLab v3+ give the same logits and parameter gradients
on every backend as on the NumPy reference.

Kernel tests compare one op at a time; this runs whole networks, where the ops' outputs feed each other
(convolutions of every shape, pooling, transposed convolutions, bilinear upsampling, normalisation, losses),
on the same weights.
"""

from __future__ import annotations

import numpy as np
import pytest

import segcore
from segcore.nn import Dropout
from segcore.testing import assert_arrays_agree, backend_params

MODELS = {
    # U-Net at 1/8 width, depth 3: plain 3x3 convs, max pooling, 2x2 transposed convs, skip concatenation.
    "unet": dict(num_classes=3, width=0.125, depth=3, dropout=0.0),
    # DeepLab v3+ on MobileNetV2 at 1/4 width: depthwise and dilated convs, ASPP image pooling, BatchNorm,
    # bilinear upsampling of the decoder.
    "deeplabv3plus": dict(num_classes=3, backbone="mobilenet_v2", width=0.25),
}


def _without_dropout(model):
    # Dropout masks are drawn from each model's own generator; with p = 0 both runs see the same network.
    for module in model.modules():
        if isinstance(module, Dropout):
            module.p = 0.0
    return model


def _forward_backward(model, images: np.ndarray, targets: np.ndarray):
    backend = next(iter(model.parameters())).backend
    x = segcore.tensor(images, backend=backend)
    model.eval()
    with segcore.no_grad():
        logits = backend.to_numpy(model(x).data)
    model.train()
    for p in model.parameters():
        p.grad = None
    losses = model.losses(x, segcore.tensor(targets, backend=backend))
    total = sum(losses.values())
    total.backward()
    grads = {name: backend.to_numpy(p.grad.data) for name, p in model.named_parameters() if p.grad is not None}
    return np.asarray(logits), float(total.item()), grads


# float32 gradients of the small DeepLab v3+ are ill-conditioned, not wrong: BatchNorm over a batch of two 1x1
# or 2x2 maps amplifies rounding differences of the first layers' gradients to ~5% between any two correct
# float32 summation orders, while the same networks in float64 agree to 1e-11. So DeepLab's float32 run
# compares logits and loss, and float64 compares every gradient of both models tightly.
FLOAT32_GRADIENTS = {"unet": True, "deeplabv3plus": False}
TOLERANCE = {np.float32: (2e-3, 2e-4), np.float64: (1e-7, 1e-9)}  # rtol, atol relative to the magnitude


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("backend", backend_params())
def test_logits_and_gradients_match_the_reference(backend, name, dtype):
    kwargs = MODELS[name]
    reference = _without_dropout(segcore.build(name, rng=np.random.default_rng(0), **kwargs)).to(dtype=dtype)
    other = _without_dropout(segcore.build(name, backend=backend, rng=np.random.default_rng(1), **kwargs))
    other.to(dtype=dtype)
    other.load_state_dict(reference.state_dict())
    rng = np.random.default_rng(2)
    images = rng.standard_normal((2, 3, 32, 32)).astype(dtype)
    targets = rng.integers(0, kwargs["num_classes"], (2, 32, 32)).astype(np.int64)
    targets[:, :4] = 255  # ignored pixels

    ref_logits, ref_loss, ref_grads = _forward_backward(reference, images, targets)
    logits, loss, grads = _forward_backward(other, images, targets)

    rtol, atol = TOLERANCE[dtype]
    scale = float(np.abs(ref_logits).max())
    assert_arrays_agree(logits, ref_logits, rtol=rtol, atol=atol * scale, what=f"{name} logits on {backend!r}")
    assert loss == pytest.approx(ref_loss, rel=10 * rtol)
    assert grads.keys() == ref_grads.keys() and len(grads) == len(list(reference.parameters()))
    if dtype == np.float32 and not FLOAT32_GRADIENTS[name]:
        return
    largest = max(float(np.abs(g).max()) for g in ref_grads.values())
    for key, ref in ref_grads.items():
        # Tolerances relative to each gradient's own magnitude, floored at 1e-3 of the model's largest: some
        # gradients are zero in exact arithmetic (a bias followed by BatchNorm) and only rounding noise here.
        magnitude = max(float(np.abs(ref).max()), 1e-3 * largest)
        assert_arrays_agree(
            grads[key], ref, rtol=rtol, atol=atol * magnitude, what=f"{name} gradient of {key!r} on {backend!r}"
        )

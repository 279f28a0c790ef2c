"""LR-ASPP and its MobileNetV3 backbone, tested directly (no plugin machinery): run `pytest plugins/segcore-lraspp`."""

from __future__ import annotations

import numpy as np
import pytest

import segcore
import segcore.functional as F
from segcore.testing import assert_is_semantic_segmentation_model
from segcore_lraspp import LRASPP, MobileNetV3Features, lraspp_mobilenet_v3_large, lraspp_mobilenet_v3_small
from segcore_lraspp.mobilenetv3 import InvertedResidual, make_divisible


def images(n=2, h=32, w=32, seed=0):
    return segcore.tensor(np.random.default_rng(seed).standard_normal((n, 3, h, w)).astype(np.float32))


def test_make_divisible_rounds_like_the_reference():
    assert [make_divisible(v) for v in (4, 16, 25.2, 60, 720, 3.0)] == [8, 16, 24, 64, 720, 8]
    # Never more than 10% below the requested width: 10 would round to 8 (-20%), so it goes up to 16.
    assert make_divisible(10, 16) == 16


@pytest.mark.parametrize(
    ("arch", "reduced_tail", "low", "high"),
    [("large", False, 40, 960), ("small", False, 24, 576), ("large", True, 40, 480), ("small", True, 24, 288)],
)
def test_feature_channels_match_the_paper_tables(arch, reduced_tail, low, high):
    backbone = MobileNetV3Features(arch, reduced_tail=reduced_tail)
    assert backbone.channels == {"low": low, "high": high}


def test_reduced_tail_keeps_the_first_tail_block_expansion():
    backbone = MobileNetV3Features("large", reduced_tail=True)
    assert backbone[13].block[0][0].out_channels == 672  # expansion of the stage's first block is not halved
    assert backbone[13].out_channels == 80 and backbone[14].block[0][0].out_channels == 480


def test_dilation_keeps_output_stride_16():
    x = images(1, 64, 64)
    plain = MobileNetV3Features("small", width_mult=0.25, rng=np.random.default_rng(0))
    dilated = MobileNetV3Features("small", width_mult=0.25, dilated=True, rng=np.random.default_rng(0))
    assert plain(x)["high"].shape[-2:] == (2, 2)
    assert dilated(x)["high"].shape[-2:] == (4, 4)
    assert dilated(x)["low"].shape[-2:] == (8, 8)
    assert dilated[9].block[1][0].dilation == (2, 2) and dilated[9].block[1][0].stride == (1, 1)


def test_return_layers_pick_features_and_drop_later_layers():
    backbone = MobileNetV3Features("large", width_mult=0.25, return_layers={"2": "c1", "4": "c2"})
    assert len(backbone) == 5 and backbone.stage_indices == (0, 2, 4)
    out = backbone(images(1, 32, 32))
    assert list(out) == ["c1", "c2"] and out["c2"].shape[1] == backbone.channels["c2"]
    with pytest.raises(ValueError, match="return_layers key '99' is not a layer index in \\[0, 17\\)"):
        MobileNetV3Features("large", return_layers={"99": "x"})
    with pytest.raises(ValueError, match="arch must be 'large' or 'small', got 'medium'"):
        MobileNetV3Features("medium")


def test_inverted_residual_adds_its_input_only_when_shapes_allow():
    backbone = MobileNetV3Features("large", width_mult=0.25, rng=np.random.default_rng(0))
    x = backbone[0](images(1, 16, 16))
    same, strided = backbone[1], backbone[2]
    assert isinstance(same, InvertedResidual) and same.use_res_connect and not strided.use_res_connect
    np.testing.assert_allclose(same(x).numpy(), (same.block(x) + x).numpy(), rtol=1e-6)


def test_squeeze_excitation_gates_channels_with_hardsigmoid():
    backbone = MobileNetV3Features("large", width_mult=0.25, rng=np.random.default_rng(0))
    se = backbone[4].block[2]
    x = images(1, 8, 8)[:, :1] * segcore.tensor(np.ones((1, se.fc1.in_channels, 1, 1), dtype=np.float32))
    pooled = x.numpy().mean(axis=(2, 3), keepdims=True)
    hidden = np.maximum(np.einsum("oi,nihw->nohw", se.fc1.weight.numpy()[:, :, 0, 0], pooled)
                        + se.fc1.bias.numpy()[None, :, None, None], 0)
    gate = np.einsum("oi,nihw->nohw", se.fc2.weight.numpy()[:, :, 0, 0], hidden)
    gate = gate + se.fc2.bias.numpy()[None, :, None, None]
    gate = np.clip(gate / 6 + 0.5, 0, 1)
    np.testing.assert_allclose(se(x).numpy(), x.numpy() * gate, rtol=1e-5, atol=1e-6)


def test_head_is_gated_high_branch_upsampled_plus_low_branch():
    model = lraspp_mobilenet_v3_large(num_classes=4, width_mult=0.25, inter_channels=8, rng=np.random.default_rng(0))
    head = model.classifier.eval()
    rng = np.random.default_rng(1)
    # Random features rather than the backbone's: at initialisation its eval-mode outputs are nearly zero.
    low = segcore.tensor(rng.standard_normal((2, model.backbone.channels["low"], 6, 5)).astype(np.float32))
    high = segcore.tensor(rng.standard_normal((2, model.backbone.channels["high"], 3, 3)).astype(np.float32))
    gate = F.sigmoid(F.conv2d(F.adaptive_avg_pool2d(high, 1), head.scale[1].weight))
    branch = F.relu(F.conv2d(high, head.cbr[0].weight) / np.sqrt(1 + head.cbr[1].eps)) * gate  # BN: fresh stats
    branch = F.interpolate(branch, size=(6, 5), mode="bilinear", align_corners=False)
    expected = F.conv2d(low, head.low_classifier.weight, head.low_classifier.bias) + F.conv2d(
        branch, head.high_classifier.weight, head.high_classifier.bias
    )
    np.testing.assert_allclose(head({"low": low, "high": high}).numpy(), expected.numpy(), rtol=1e-5, atol=1e-5)


def test_model_upsamples_the_head_output_to_the_input():
    model = lraspp_mobilenet_v3_large(num_classes=4, width_mult=0.25, inter_channels=8, rng=np.random.default_rng(0))
    x = images(2, 48, 40)
    logits = model(x)
    head_out = model.classifier(model.backbone(x))  # train mode: batch statistics, same result on every call
    assert head_out.shape == (2, 4, 6, 5)
    expected = F.interpolate(head_out, size=(48, 40), mode="bilinear", align_corners=False)
    np.testing.assert_allclose(logits.numpy(), expected.numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("factory", [lraspp_mobilenet_v3_large, lraspp_mobilenet_v3_small])
def test_model_follows_the_segcore_model_contract(factory):
    model = factory(num_classes=5, width_mult=0.25, inter_channels=8, rng=np.random.default_rng(0))
    assert_is_semantic_segmentation_model(model, num_classes=5, input_size=(2, 3, 24, 40))


def test_predict_is_the_argmax_of_the_eval_logits_and_keeps_the_mode():
    model = lraspp_mobilenet_v3_small(num_classes=3, width_mult=0.25, inter_channels=8, rng=np.random.default_rng(0))
    x = images()
    labels = model.predict(x)
    assert model.training
    model.eval()
    expected = model(x).numpy().argmax(axis=1)
    assert len(labels) == 2 and labels[0].dtype == np.int64
    np.testing.assert_array_equal(np.stack(labels), expected)


def test_inputs_are_checked_at_the_boundary():
    model = lraspp_mobilenet_v3_small(num_classes=3, width_mult=0.25, inter_channels=8)
    with pytest.raises(ValueError, match=r"images must have shape \(N, 3, H, W\), got \(2, 1, 32, 32\)"):
        model(images()[:, :1])
    with pytest.raises(TypeError, match="images must be a segcore Tensor, got ndarray"):
        model.predict(np.zeros((1, 3, 8, 8), dtype=np.float32))
    with pytest.raises(ValueError, match=r"targets must be integer class indices of shape \(2, 32, 32\), got shape"):
        model.losses(images(), np.zeros((2, 16, 16), dtype=np.int64))
    with pytest.raises(ValueError, match="num_classes must be a positive int, got 0"):
        LRASPP(MobileNetV3Features("small", width_mult=0.25), 0)
    with pytest.raises(ValueError, match=r"must return features 'low' and 'high', it returns \['c1'\]"):
        LRASPP(MobileNetV3Features("small", width_mult=0.25, return_layers={"1": "c1"}), 3)

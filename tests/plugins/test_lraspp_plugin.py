"""The example third-party plugin (plugins/segcore-lraspp), loaded through its real installed entry point."""

from __future__ import annotations

import importlib.metadata

import numpy as np
import pytest

import segcore
from segcore.cli import main
from segcore.optim import SGD
from segcore.registry import build, build_backbone, list_backbones, list_models
from segcore.testing import assert_is_semantic_segmentation_model, isolated_plugins

PLUGIN = "segcore-lraspp"
TINY = dict(num_classes=3, width_mult=0.25, inter_channels=16)


@pytest.fixture(autouse=True)
def installed_plugin():
    try:
        importlib.metadata.distribution(PLUGIN)
    except importlib.metadata.PackageNotFoundError:
        pytest.fail(f"the example plugin is not installed: run `pip install -e plugins/{PLUGIN}`")
    with isolated_plugins() as manager:  # the installed entry points, no SEGCORE_* variables
        yield manager


def test_models_and_backbones_are_listed_with_the_plugin_name(installed_plugin):
    models = {spec.name: spec for spec in list_models("semantic")}
    assert models["lraspp_mobilenet_v3_large"].provider == PLUGIN
    assert models["lraspp_mobilenet_v3_small"].provider == PLUGIN
    backbones = {spec.name: spec.provider for spec in list_backbones()}
    assert backbones["mobilenet_v3_large"] == PLUGIN and backbones["mobilenet_v3_small"] == PLUGIN
    info = {i.name: i for i in installed_plugin.plugins()}[PLUGIN]
    assert (info.status, info.version) == ("loaded", importlib.metadata.version(PLUGIN))
    assert "entry point segcore_lraspp.plugin in segcore-lraspp" == info.source


def test_cli_lists_the_plugin_and_its_models(capsys):
    assert main(["models"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert ["lraspp_mobilenet_v3_large", "semantic", PLUGIN] in [row[:3] for row in rows]
    assert main(["plugins"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert [PLUGIN, importlib.metadata.version(PLUGIN)] in [row[:2] for row in rows]
    assert [row[-1] for row in rows if row[0] == PLUGIN] == ["loaded"]


def test_build_has_torchvision_names_and_the_paper_parameter_count():
    model = build("lraspp_mobilenet_v3_large", num_classes=21, rng=np.random.default_rng(0))
    # torchvision's lraspp_mobilenet_v3_large(num_classes=21) has 3,221,538 parameters.
    assert model.num_parameters() == 3_221_538
    keys = set(model.state_dict())
    for key in (
        "backbone.0.0.weight",
        "backbone.1.block.0.0.weight",
        "backbone.4.block.2.fc1.weight",
        "backbone.16.1.running_var",
        "classifier.cbr.0.weight",
        "classifier.cbr.1.weight",
        "classifier.scale.1.weight",
        "classifier.low_classifier.weight",
        "classifier.high_classifier.bias",
    ):
        assert key in keys, key


@pytest.mark.parametrize("name", ["lraspp_mobilenet_v3_large", "lraspp_mobilenet_v3_small"])
def test_built_model_passes_the_semantic_segmentation_contract(name):
    model = build(name, rng=np.random.default_rng(0), **TINY)
    before = {key: value.numpy().copy() for key, value in model.state_dict().items()}
    assert_is_semantic_segmentation_model(model, num_classes=3, input_size=(2, 3, 40, 24))
    # The check trains for a step in train mode; it must leave BatchNorm statistics as they were.
    after = model.state_dict()
    assert all(np.array_equal(before[key], after[key].numpy()) for key in before)
    assert model.training and all(p.grad is None for p in model.parameters())


def test_backbone_features_are_at_output_stride_8_and_16():
    backbone = build_backbone("mobilenet_v3_large", width_mult=0.25, dilated=True, rng=np.random.default_rng(0))
    features = backbone(segcore.tensor(np.zeros((1, 3, 64, 64), dtype=np.float32)))
    assert features["low"].shape == (1, backbone.channels["low"], 8, 8)
    assert features["high"].shape == (1, backbone.channels["high"], 4, 4)


def test_one_sgd_step_lowers_the_loss_on_a_fixed_batch():
    rng = np.random.default_rng(0)
    model = build("lraspp_mobilenet_v3_small", rng=rng, **TINY)
    images = segcore.tensor(rng.standard_normal((4, 3, 32, 32)).astype(np.float32))
    labels = np.zeros((4, 32, 32), dtype=np.int64)
    labels[:, :, 16:] = 1
    labels[:, 16:, :] = 2
    labels[:, :2, :] = 255
    targets = segcore.tensor(labels)
    optimizer = SGD(model.parameters(), lr=0.05, momentum=0.9)

    def step() -> float:
        loss = model.losses(images, targets)["loss_sem_seg"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss.item()

    before = step()
    after = model.losses(images, targets)["loss_sem_seg"].item()
    assert after < before - 1e-3, (before, after)


def test_unknown_keyword_lists_the_factory_keywords():
    with pytest.raises(TypeError) as err:
        build("lraspp_mobilenet_v3_large", width=0.5)
    message = str(err.value)
    assert "unknown keyword argument 'width'" in message
    assert "num_classes=21, width_mult=1.0, inter_channels=128, reduced_tail=False, in_channels=3, rng=None" in message


def test_allow_list_can_leave_the_plugin_out():
    with isolated_plugins(env={"SEGCORE_PLUGINS": "someone-else"}):
        with pytest.warns(UserWarning, match="'someone-else', which is not installed"):
            names = [spec.name for spec in list_models()]
        assert "lraspp_mobilenet_v3_large" not in names

"""segcore.build / build_backbone / build_loss and the list_* functions, on plugins registered in fixtures."""

from __future__ import annotations

import re

import array_api_compat.numpy as xp
import numpy as np
import pytest

import segcore
from segcore import plugins
from segcore.backend import Backend
from segcore.errors import BackendUnavailableError
from segcore.hookspecs import hookimpl
from segcore.plugins import PluginWarning
from segcore.registry import build, build_backbone, build_loss, list_models, suggest
from segcore.testing import isolated_plugins

#: The provider of everything segcore registers itself (the model zoo, the losses, the numpy backend).
BUILTIN = "segcore.builtin_plugin"


@pytest.fixture
def tiny_plugins(entry_point):
    """The 'good' fixture plugin from an entry point, plus a runtime plugin with a second backend."""

    class TwinBackend:
        @hookimpl
        def segcore_register_backends(self, register):
            register(Backend("twin", lambda: xp))
            register(
                Backend(
                    "nogpu",
                    lambda: pytest.fail("namespace of an unavailable backend must not load"),
                    probe=lambda: "no CUDA device found",
                    install_hint="pip install segcore-cupy",
                )
            )

    with isolated_plugins([entry_point("good", "segcore_test_good_plugin")]) as manager:
        manager.register(TwinBackend(), "twin-plugin")
        yield manager
        manager.unregister("twin-plugin")


def test_build_passes_keywords_and_returns_a_module(tiny_plugins):
    from segcore_test_models import TinyFCN

    model = build("tiny_fcn", num_classes=5, rng=np.random.default_rng(1))
    assert isinstance(model, TinyFCN)
    assert model.conv.weight.shape == (5, 3, 1, 1)
    assert model.conv.weight.backend.name == "numpy"


def test_build_puts_the_parameters_on_the_requested_backend(tiny_plugins):
    model = build("tiny_fcn", backend="twin")
    assert {p.backend.name for p in model.parameters()} == {"twin"}


def test_unknown_keyword_lists_the_accepted_ones_before_building(tiny_plugins, monkeypatch):
    import segcore_test_models

    monkeypatch.setattr(segcore_test_models.TinyFCN, "__init__", lambda *a, **k: pytest.fail("built anyway"))
    with pytest.raises(TypeError) as err:
        build("tiny_fcn", num_class=3)
    message = str(err.value)
    assert "model 'tiny_fcn': unknown keyword argument 'num_class' (did you mean 'num_classes'?)" in message
    assert "Accepted keyword arguments: num_classes=3, in_channels=3, rng=None" in message


def test_unknown_model_name_suggests_close_names_and_lists_all(tiny_plugins):
    with pytest.raises(ValueError) as err:
        build("tiny_fnc")
    message = str(err.value)
    assert "unknown model 'tiny_fnc'. Did you mean 'tiny_fcn'" in message
    listed = re.search(r"Available models: (.*?)\.$", message)
    assert listed, message
    # Every registered model, sorted: the plugin's and the built-in ones.
    assert listed.group(1).split(", ") == [s.name for s in list_models()]
    assert {"tiny_fcn", "tiny_instance"} <= set(listed.group(1).split(", "))
    assert {s.provider for s in list_models()} == {BUILTIN, "good"}
    assert "Plugins that failed to load" not in message


def test_suggestions_include_names_containing_the_query():
    assert suggest("lraspp", ["lraspp_mobilenet_v3_large", "fcn_resnet50"]) == ["lraspp_mobilenet_v3_large"]
    assert suggest("zzz", ["fcn_resnet50"]) == []


def test_unknown_name_mentions_plugins_that_failed(entry_point):
    eps = [entry_point("broken", "segcore_test_broken_plugin")]
    with isolated_plugins(eps):
        with pytest.warns(PluginWarning):
            with pytest.raises(ValueError) as err:
                build("anything")
    message = str(err.value)
    assert message.startswith("unknown model 'anything'. Available models: ")
    assert "(Plugins that failed to load: broken; run `segcore plugins` to see why.)" in message


def test_unknown_name_with_no_models_at_all_says_so_and_mentions_plugins_that_failed(entry_point, monkeypatch):
    # The built-in plugin always registers models, so only a manager without built-ins reaches this message.
    monkeypatch.setattr(plugins, "manager", plugins.PluginManager(default_plugins=()))
    eps = [entry_point("broken", "segcore_test_broken_plugin")]
    with isolated_plugins(eps) as manager:
        assert manager is plugins.manager
        with pytest.warns(PluginWarning):
            with pytest.raises(ValueError) as err:
                build("anything")
        assert list_models() == []
    assert str(err.value) == (
        "unknown model 'anything'. No models are registered. "
        "(Plugins that failed to load: broken; run `segcore plugins` to see why.)"
    )


def test_unavailable_backend_says_why_and_how_to_install(tiny_plugins):
    match = "'nogpu' is not available: no CUDA device found.*pip install segcore-cupy"
    with pytest.raises(BackendUnavailableError, match=match):
        build("tiny_fcn", backend="nogpu")


def test_backend_argument_is_checked(tiny_plugins):
    with pytest.raises(ValueError, match="unknown backend 'twni'. Did you mean 'twin'"):
        build("tiny_fcn", backend="twni")
    with pytest.raises(TypeError, match="backend must be a name or a Backend, got int"):
        build("tiny_fcn", backend=3)


def test_factory_returning_something_else_than_a_module_is_reported():
    class NotAModule:
        @hookimpl
        def segcore_register_models(self, register):
            register("numbers", lambda: 42)

    with isolated_plugins([]) as manager:
        manager.register(NotAModule(), "sloppy")
        match = "model factory 'numbers' from plugin 'sloppy' returned int, expected a segcore.nn.Module"
        with pytest.raises(TypeError, match=match):
            build("numbers")


def test_missing_required_keyword_is_reported():
    class Required:
        @hookimpl
        def segcore_register_models(self, register):
            from segcore_test_models import TinyFCN

            def needs_classes(*, num_classes: int) -> TinyFCN:
                return TinyFCN(num_classes)

            register("needs_classes", needs_classes)

    with isolated_plugins([]) as manager:
        manager.register(Required(), "required")
        with pytest.raises(TypeError, match="missing required keyword argument 'num_classes'"):
            build("needs_classes")
        assert build("needs_classes", num_classes=4).num_classes == 4


def test_list_models_filters_by_task_and_validates_it(tiny_plugins):
    from segcore.models import builtin_models

    def listed(task=None):
        return [(s.name, s.task, s.provider) for s in list_models(task)]

    for task in (None, "semantic", "instance"):
        builtins = sorted((n, t, BUILTIN) for n, (_, t) in builtin_models().items() if task in (None, t))
        assert [entry for entry in listed(task) if entry[2] == BUILTIN] == builtins
    assert [entry for entry in listed("instance") if entry[2] != BUILTIN] == [("tiny_instance", "instance", "good")]
    assert [entry for entry in listed("semantic") if entry[2] != BUILTIN] == [("tiny_fcn", "semantic", "good")]
    assert [entry for entry in listed() if entry[2] != BUILTIN] == [
        ("tiny_fcn", "semantic", "good"),
        ("tiny_instance", "instance", "good"),
    ]
    assert [s.name for s in list_models()] == sorted(s.name for s in list_models())
    with pytest.raises(ValueError, match="task must be one of 'semantic', 'instance' or None, got 'panoptic'"):
        list_models("panoptic")


def test_build_backbone_and_loss(tiny_plugins):
    backbone = build_backbone("tiny_backbone", channels=6, backend="twin")
    assert backbone[0].out_channels == 6 and backbone[0].weight.backend.name == "twin"
    with pytest.raises(TypeError, match="backbone 'tiny_backbone': unknown keyword argument 'chanels'"):
        build_backbone("tiny_backbone", chanels=6)
    loss = build_loss("tiny_cross_entropy", ignore_index=255)
    logits = segcore.tensor(np.zeros((1, 2, 1, 2), dtype=np.float32))
    value = loss(logits, segcore.tensor(np.array([[[0, 255]]])))
    assert value.item() == pytest.approx(np.log(2.0))
    # "dice" is a built-in loss now: an unknown name must be one nobody registers.
    with pytest.raises(ValueError, match="unknown loss 'tiny_cross_entropi'. Did you mean 'tiny_cross_entropy'"):
        build_loss("tiny_cross_entropi")
    with pytest.raises(ValueError, match="unknown backbone 'tiny_backbon'. Did you mean 'tiny_backbone'"):
        build_backbone("tiny_backbon")


def test_registration_rejects_bad_names():
    class BadName:
        @hookimpl
        def segcore_register_models(self, register):
            register("has space", lambda: None)

    with isolated_plugins([]) as manager:
        manager.register(BadName(), "badname")
        with pytest.warns(PluginWarning, match="model name must be a non-empty string.*got 'has space'"):
            models = list_models()
        assert {s.provider for s in models} == {BUILTIN}  # the built-ins, and nothing from 'badname'
        assert "has space" not in {s.name for s in models}
        assert {info.name: info.status for info in manager.plugins()}["badname"] == "failed"

"""Plugin discovery and loading: lazy entry points, failures, allow-list, disable switch, conflicts, kernels."""

from __future__ import annotations

import sys
import warnings

import array_api_compat.numpy as xp
import pytest

import segcore
from segcore.backend import Backend, get_backend
from segcore.errors import BackendUnavailableError
from segcore.hookspecs import hookimpl
from segcore.kernels import reference_kernels
from segcore.plugins import PluginError, PluginWarning
from segcore.registry import build, list_backbones, list_losses, list_models
from segcore.testing import isolated_plugins


def statuses(manager) -> dict[str, tuple[str, str | None]]:
    return {info.name: (info.status, info.error) for info in manager.plugins()}


#: The provider of everything segcore registers itself (the model zoo, the losses, the numpy backend).
BUILTIN = "segcore.builtin_plugin"


def model_names(task=None) -> dict[str, str]:
    """name -> provider of the models from plugins other than the built-in one (what these tests install)."""
    return {spec.name: spec.provider for spec in list_models(task) if spec.provider != BUILTIN}


def builtin_model_names(task=None) -> set[str]:
    """The names of the listed models the built-in plugin provides."""
    return {spec.name for spec in list_models(task) if spec.provider == BUILTIN}


def assert_builtins_listed() -> None:
    """The built-in model zoo, backbones and losses are all listed, provided by the built-in plugin."""
    from segcore.losses import LOSSES
    from segcore.models import builtin_backbones, builtin_models

    assert builtin_model_names() == set(builtin_models()) != set()
    assert {s.name for s in list_backbones() if s.provider == BUILTIN} == set(builtin_backbones()) != set()
    assert {s.name for s in list_losses() if s.provider == BUILTIN} == set(LOSSES) != set()


class ModelsPlugin:
    """A plugin written as a class, registering the given model names with a tiny factory."""

    def __init__(self, *names: str) -> None:
        self.names = names

    @hookimpl
    def segcore_register_models(self, register):
        from segcore_test_models import tiny_fcn

        for name in self.names:
            register(name, tiny_fcn)


def test_builtin_plugin_registers_numpy_backend_through_the_hook():
    with isolated_plugins([]) as manager:
        infos = {info.name: info for info in manager.plugins()}
        assert infos["segcore.builtin_plugin"].status == "loaded"
        assert infos["segcore.builtin_plugin"].source == "built-in"
        backends = {info.name: info for info in segcore.list_backends()}
        assert backends["numpy"].provider == "segcore.builtin_plugin"


def test_entry_points_are_listed_without_import_and_loaded_on_first_use(entry_point):
    with isolated_plugins([entry_point("good", "segcore_test_good_plugin")]) as manager:
        assert statuses(manager)["good"] == ("not loaded", None)
        segcore.tensor([1.0], backend="numpy")  # the built-in backend needs no third-party plugin
        assert "segcore_test_good_plugin" not in sys.modules

        assert model_names() == {"tiny_fcn": "good", "tiny_instance": "good"}
        assert "segcore_test_good_plugin" in sys.modules
        assert statuses(manager)["good"] == ("loaded", None)
        assert [(s.name, s.provider) for s in list_backbones() if s.provider != BUILTIN] == [("tiny_backbone", "good")]
        assert [(s.name, s.provider) for s in list_losses() if s.provider != BUILTIN] == [
            ("tiny_cross_entropy", "good")
        ]
        assert model_names("instance") == {"tiny_instance": "good"}
        semantic = {s.name: s for s in list_models("semantic")}
        assert semantic["tiny_fcn"].description == "A 1x1-conv semantic segmentation model."
        assert "tiny_instance" not in semantic
        assert_builtins_listed()


def test_plugin_failing_on_import_warns_once_naming_it_and_the_rest_works(entry_point):
    eps = [entry_point("broken", "segcore_test_broken_plugin"), entry_point("good", "segcore_test_good_plugin")]
    with isolated_plugins(eps) as manager:
        with pytest.warns(PluginWarning) as record:
            names = model_names()
        assert names == {"tiny_fcn": "good", "tiny_instance": "good"}
        assert_builtins_listed()
        messages = [str(w.message) for w in record if issubclass(w.category, PluginWarning)]
        assert len(messages) == 1
        assert "'broken'" in messages[0]
        assert "RuntimeError: segcore_test_broken_plugin is broken on purpose" in messages[0]
        status, error = statuses(manager)["broken"]
        assert status == "failed" and "broken on purpose" in error
        assert build("tiny_fcn", num_classes=2).conv.out_channels == 2
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            list_models()  # reported once, not on every use


def test_strict_mode_turns_a_failing_plugin_into_an_error(entry_point):
    eps = [entry_point("broken", "segcore_test_broken_plugin"), entry_point("good", "segcore_test_good_plugin")]
    with isolated_plugins(eps, env={"SEGCORE_STRICT_PLUGINS": "1"}) as manager:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with pytest.raises(PluginError, match="'broken'.*RuntimeError: segcore_test_broken_plugin is broken"):
                list_models()
            with pytest.raises(PluginError, match="broken"):
                build("tiny_fcn")
        # Diagnosing stays possible: the plugin list shows the failure instead of raising it.
        assert statuses(manager)["broken"][0] == "failed"
        assert statuses(manager)["good"][0] == "loaded"


def test_invalid_boolean_environment_variable_names_it():
    with isolated_plugins([], env={"SEGCORE_STRICT_PLUGINS": "sometimes"}):
        with pytest.raises(ValueError, match="SEGCORE_STRICT_PLUGINS='sometimes'.*expected 1/0"):
            list_models()


def test_allow_list_loads_only_the_named_plugins(entry_point):
    eps = [entry_point("good", "segcore_test_good_plugin"), entry_point("other", "segcore_test_other_plugin")]
    with isolated_plugins(eps, env={"SEGCORE_PLUGINS": "other"}) as manager:
        assert model_names() == {"other_fcn": "other"}
        assert_builtins_listed()  # the allow-list is about installed plugins; built-ins cannot be left out
        assert statuses(manager)["good"] == ("disabled", "not in SEGCORE_PLUGINS")
        assert "segcore_test_good_plugin" not in sys.modules


def test_allow_list_naming_a_missing_plugin_warns_with_a_suggestion(entry_point):
    with isolated_plugins([entry_point("good", "segcore_test_good_plugin")], env={"SEGCORE_PLUGINS": "godo"}):
        with pytest.warns(PluginWarning, match="'godo', which is not installed.*did you mean 'good'"):
            assert model_names() == {}
        assert_builtins_listed()


def test_empty_allow_list_loads_no_installed_plugin(entry_point):
    with isolated_plugins([entry_point("good", "segcore_test_good_plugin")], env={"SEGCORE_PLUGINS": ""}) as manager:
        assert model_names() == {}
        assert_builtins_listed()
        assert statuses(manager)["good"][0] == "disabled"


def test_disable_autoload_loads_only_builtins_and_runtime_plugins(entry_point):
    env = {"SEGCORE_DISABLE_PLUGIN_AUTOLOAD": "1"}
    with isolated_plugins([entry_point("good", "segcore_test_good_plugin")], env=env) as manager:
        manager.register(ModelsPlugin("runtime_fcn"), "runtime")
        assert model_names() == {"runtime_fcn": "runtime"}
        assert_builtins_listed()
        assert {s.provider for s in list_models()} == {BUILTIN, "runtime"}
        assert statuses(manager)["good"] == ("disabled", "SEGCORE_DISABLE_PLUGIN_AUTOLOAD is set")
        assert statuses(manager)["segcore.builtin_plugin"][0] == "loaded"
        assert "segcore_test_good_plugin" not in sys.modules


def test_duplicate_model_name_is_an_error_naming_both_plugins():
    with isolated_plugins([]) as manager:
        manager.register(ModelsPlugin("shared_name"), "first")
        manager.register(ModelsPlugin("second_only", "shared_name"), "second")
        match = "model 'shared_name' is registered twice: by plugin 'first' and by plugin 'second'"
        with pytest.warns(PluginWarning, match=match):
            names = model_names()
        # The first registration stands, and the second plugin is rolled back entirely (no half plugin).
        assert names == {"shared_name": "first"}
        assert "second_only" not in {s.name for s in list_models()}
        assert statuses(manager)["second"][0] == "failed"


def test_plugin_reusing_a_builtin_model_name_fails_and_the_builtin_stands():
    from segcore.models import builtin_models

    taken = sorted(builtin_models())[0]
    with isolated_plugins([]) as manager:
        manager.register(ModelsPlugin("own_fcn", taken), "squatter")
        match = f"model {taken!r} is registered twice: by plugin {BUILTIN!r} and by plugin 'squatter'"
        with pytest.warns(PluginWarning, match=match):
            names = model_names()
        assert names == {}
        assert {s.name: s.provider for s in list_models()}[taken] == BUILTIN
        assert_builtins_listed()
        assert statuses(manager)["squatter"][0] == "failed"


def test_duplicate_model_name_in_strict_mode_raises_naming_both():
    with isolated_plugins([], env={"SEGCORE_STRICT_PLUGINS": "1"}) as manager:
        manager.register(ModelsPlugin("shared_name"), "first")
        manager.register(ModelsPlugin("shared_name"), "second")
        with pytest.raises(PluginError, match="by plugin 'first' and by plugin 'second'"):
            list_models()


def test_misspelled_hook_fails_loudly_with_a_suggestion():
    class Misspelled:
        def segcore_register_model(self, register):  # missing the final "s"
            register("never", lambda: None)

    with isolated_plugins([]) as manager:
        manager.register(Misspelled(), "typo")
        match = "unknown hook.*'segcore_register_model'.*did you mean 'segcore_register_models'"
        with pytest.warns(PluginWarning, match=match):
            assert model_names() == {}
        assert statuses(manager)["typo"][0] == "failed"


def test_hook_with_an_unknown_argument_fails():
    class WrongArgs:
        @hookimpl
        def segcore_register_models(self, register, extra):
            register("never", lambda: None)

    with isolated_plugins([]) as manager:
        manager.register(WrongArgs(), "wrongargs")
        with pytest.warns(PluginWarning, match="'wrongargs'.*extra"):
            assert model_names() == {}


def test_hook_that_returns_entries_instead_of_registering_fails():
    class Returns:
        @hookimpl
        def segcore_register_models(self, register):
            return ["tiny"]

    with isolated_plugins([]) as manager:
        manager.register(Returns(), "returns")
        with pytest.warns(PluginWarning, match="returned list; hooks must call register"):
            list_models()


def test_invalid_registration_fails_the_plugin_with_the_reason():
    class BadTask:
        @hookimpl
        def segcore_register_models(self, register):
            register("fine", lambda: None)
            register("odd", lambda: None, task="panoptic")

    with isolated_plugins([]) as manager:
        manager.register(BadTask(), "badtask")
        with pytest.warns(PluginWarning, match="task must be one of 'semantic', 'instance', got 'panoptic'"):
            assert model_names() == {}
        assert "fine" not in {s.name for s in list_models()}  # rolled back with the rest of the plugin


def test_runtime_plugin_registered_after_loading_is_loaded_at_once_and_unregistered_cleanly():
    with isolated_plugins([]) as manager:
        assert model_names() == {}
        manager.register(ModelsPlugin("late_fcn"), "late")
        assert model_names() == {"late_fcn": "late"}
        manager.unregister("late")
        assert model_names() == {}
        with pytest.raises(ValueError, match="no plugin named 'late' was registered at runtime"):
            manager.unregister("late")
        with pytest.raises(ValueError, match="already registered"):
            manager.register(ModelsPlugin(), "segcore.builtin_plugin")


def test_plugin_backend_is_listed_with_its_provider_and_reason():
    class GpuPlugin:
        @hookimpl
        def segcore_register_backends(self, register):
            register(
                Backend(
                    "fakegpu",
                    lambda: pytest.fail("an unavailable backend's namespace must not be loaded"),
                    probe=lambda: "no CUDA device found",
                    install_hint="pip install segcore-fakegpu",
                )
            )

    with isolated_plugins([]) as manager:
        manager.register(GpuPlugin(), "segcore-fakegpu")
        infos = {info.name: info for info in segcore.list_backends()}
        assert infos["fakegpu"].provider == "segcore-fakegpu"
        assert not infos["fakegpu"].available and infos["fakegpu"].reason == "no CUDA device found"
        with pytest.raises(BackendUnavailableError, match="no CUDA device found.*pip install segcore-fakegpu"):
            get_backend("fakegpu")
    assert "fakegpu" not in {info.name for info in segcore.list_backends()}


def test_asking_for_an_unknown_backend_loads_installed_plugins(entry_point):
    class TwinPlugin:
        @hookimpl
        def segcore_register_backends(self, register):
            register(Backend("twin", lambda: xp))

    with isolated_plugins([]) as manager:
        manager.register(TwinPlugin(), "twin-plugin")
        assert segcore.tensor([1.0], backend="twin").backend.name == "twin"


def test_kernel_override_through_the_hook_and_its_removal():
    reference = reference_kernels()["conv2d"]

    def conv2d(xp, *args, **kwargs):
        return reference(xp, *args, **kwargs) + 1.0

    class KernelPlugin:
        @hookimpl
        def segcore_register_kernels(self, register):
            register("numpy", "conv2d", conv2d)

    x = segcore.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    w = segcore.tensor([[[[2.0]]]])
    with isolated_plugins([]) as manager:
        manager.register(KernelPlugin(), "fast-conv")
        list_models()  # loads plugins
        assert get_backend("numpy").kernel("conv2d") is conv2d
        assert segcore.functional.conv2d(x, w).numpy().ravel().tolist() == [3.0, 5.0, 7.0, 9.0]
        manager.unregister("fast-conv")
        assert get_backend("numpy").kernel("conv2d") is reference
    assert get_backend("numpy").overrides == {}


def test_kernels_may_target_a_backend_registered_by_a_later_plugin():
    kernel = lambda xp, *args, **kwargs: None  # noqa: E731

    class KernelFirst:
        @hookimpl
        def segcore_register_kernels(self, register):
            register("twin", "conv2d", kernel)

    class BackendSecond:
        @hookimpl
        def segcore_register_backends(self, register):
            register(Backend("twin", lambda: xp))

    with isolated_plugins([]) as manager:
        manager.register(KernelFirst(), "kernels")
        manager.register(BackendSecond(), "backend")
        assert get_backend("twin").kernel("conv2d") is kernel


def test_two_plugins_overriding_one_kernel_is_an_error_naming_both():
    def plugin(tag):
        class KernelPlugin:
            @hookimpl
            def segcore_register_kernels(self, register):
                register("numpy", "conv2d", lambda xp, *a, **k: tag)

        return KernelPlugin()

    with isolated_plugins([]) as manager:
        manager.register(plugin("a"), "kernels-a")
        manager.register(plugin("b"), "kernels-b")
        match = "kernel 'conv2d' of backend 'numpy' is registered twice: by plugin 'kernels-a' and by plugin 'kernels-"
        with pytest.warns(PluginWarning, match=match):
            list_models()
        assert get_backend("numpy").kernel("conv2d")(None) == "a"
    assert get_backend("numpy").overrides == {}


def test_kernel_for_unknown_backend_fails_naming_it():
    class Orphan:
        @hookimpl
        def segcore_register_kernels(self, register):
            register("tpu", "conv2d", lambda xp: None)

    with isolated_plugins([]) as manager:
        manager.register(Orphan(), "orphan")
        with pytest.warns(PluginWarning, match="unknown backend 'tpu'; known backends: numpy"):
            list_models()


def test_failed_plugin_is_rolled_back_across_hooks():
    class HalfBroken:
        @hookimpl
        def segcore_register_backends(self, register):
            register(Backend("halfway", lambda: xp))

        @hookimpl
        def segcore_register_models(self, register):
            raise KeyError("config missing")

    with isolated_plugins([]) as manager:
        manager.register(HalfBroken(), "halfbroken")
        with pytest.warns(PluginWarning, match="'halfbroken'.*KeyError"):
            names = {info.name for info in segcore.list_backends()}
        assert "halfway" not in names


def test_reset_forgets_runtime_plugins_and_rereads_entry_points(entry_point):
    with isolated_plugins([entry_point("good", "segcore_test_good_plugin")]) as manager:
        manager.register(ModelsPlugin("runtime_fcn"), "runtime")
        assert set(model_names()) == {"tiny_fcn", "tiny_instance", "runtime_fcn"}
        manager.reset()
        assert "runtime" not in statuses(manager)
        assert statuses(manager)["good"] == ("not loaded", None)
        assert set(model_names()) == {"tiny_fcn", "tiny_instance"}

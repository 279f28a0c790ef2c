"""The `segcore` command line, run in-process through segcore.cli.main with captured output."""

from __future__ import annotations

import importlib.metadata

import array_api_compat.numpy as xp
import numpy as np
import pytest

from segcore.models import builtin_models

import segcore
import segcore.nn as nn
from segcore.backend import Backend
from segcore.cli import main
from segcore.hookspecs import hookimpl
from segcore.testing import isolated_plugins


def tiny_model(num_classes: int = 2) -> nn.Module:
    """A one-layer test model."""
    return nn.Conv2d(3, num_classes, 1, rng=np.random.default_rng(0))


class DemoPlugin:
    __version__ = "9.9"

    @hookimpl
    def segcore_register_models(self, register):
        register("demo_fcn", tiny_model, task="semantic")
        register("demo_maskrcnn", tiny_model, task="instance", description="Instance demo.")

    @hookimpl
    def segcore_register_backends(self, register):
        register(Backend("twin", lambda: xp))
        register(
            Backend(
                "nogpu",
                lambda: None,
                probe=lambda: "no CUDA device found",
                install_hint="pip install segcore-cupy",
            )
        )


BROKEN = importlib.metadata.EntryPoint("broken", "segcore_test_module_that_does_not_exist", "segcore")


@pytest.fixture
def demo():
    with isolated_plugins([]) as manager:
        manager.register(DemoPlugin(), "demo")
        yield manager


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_version(capsys):
    code, out, err = run(capsys, "--version")
    assert (code, out.strip(), err) == (0, f"segcore {segcore.__version__}", "")


def test_models_lists_name_task_plugin_and_description(demo, capsys):
    code, out, err = run(capsys, "models")
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0].split() == ["NAME", "TASK", "PLUGIN", "DESCRIPTION"]
    # Built-in models are listed too; the rows of the test plugin keep their exact form.
    rows = [line.split() for line in lines[1:]]
    plugin_rows = [row for row in rows if row[2] != "segcore.builtin_plugin"]
    assert plugin_rows[0] == ["demo_fcn", "semantic", "demo", "A", "one-layer", "test", "model."]
    assert plugin_rows[1] == ["demo_maskrcnn", "instance", "demo", "Instance", "demo."]
    assert len(plugin_rows) == 2
    assert {row[0] for row in rows if row[2] == "segcore.builtin_plugin"} == set(builtin_models())
    code, out, _ = run(capsys, "models", "--task", "instance")
    instance_rows = [line.split() for line in out.splitlines()[1:]]
    assert code == 0 and [row[0] for row in instance_rows if row[2] == "demo"] == ["demo_maskrcnn"]
    assert all(row[1] == "instance" for row in instance_rows)


def test_models_with_an_invalid_task_is_a_usage_error(demo, capsys):
    code, out, err = run(capsys, "models", "--task", "panoptic")
    assert code == 2 and out == ""
    assert "invalid choice: 'panoptic'" in err and "Traceback" not in err


def test_backends_prints_one_line_per_backend_with_the_reason(demo, capsys):
    code, out, err = run(capsys, "backends")
    assert code == 0 and err == ""
    lines = {line.split()[0]: line for line in out.splitlines()}
    assert set(lines) == {"numpy", "twin", "nogpu"}
    assert "available" in lines["numpy"] and "[plugin segcore.builtin_plugin]" in lines["numpy"]
    assert "unavailable: no CUDA device found (to use it: pip install segcore-cupy)" in lines["nogpu"]
    assert "[plugin demo]" in lines["twin"]


def test_plugins_shows_version_source_and_status(capsys):
    with isolated_plugins([BROKEN]) as manager:
        manager.register(DemoPlugin(), "demo")
        code, out, err = run(capsys, "plugins")
    assert code == 0
    rows = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert rows["segcore.builtin_plugin"].split()[1:3] == [segcore.__version__, "built-in"]
    assert rows["demo"].split()[1] == "9.9" and rows["demo"].rstrip().endswith("loaded")
    assert "failed: ModuleNotFoundError: No module named 'segcore_test_module_that_does_not_exist'" in rows["broken"]
    # The failure is also reported once on stderr, as a one-line warning rather than a traceback.
    assert err.count("segcore: warning: segcore plugin 'broken'") == 1 and "Traceback" not in err


def test_errors_go_to_stderr_without_traceback_and_exit_nonzero(capsys):
    with isolated_plugins([BROKEN], env={"SEGCORE_STRICT_PLUGINS": "1"}):
        code, out, err = run(capsys, "models")
    assert code == 1 and out == ""
    assert err.startswith("segcore: error: plugins failed to load (SEGCORE_STRICT_PLUGINS=1)")
    assert "'broken'" in err and "Traceback" not in err and "--debug" in err


def test_debug_shows_the_traceback(capsys):
    with isolated_plugins([BROKEN], env={"SEGCORE_STRICT_PLUGINS": "1"}):
        code, _, err = run(capsys, "--debug", "models")
        assert code == 1 and "Traceback (most recent call last)" in err and "PluginError" in err
        code, _, err = run(capsys, "models", "--debug")
        assert code == 1 and "Traceback (most recent call last)" in err


def test_no_command_or_an_unknown_one_is_a_usage_error(capsys):
    code, _, err = run(capsys)
    assert code == 2 and "required: COMMAND" in err
    code, _, err = run(capsys, "trian")
    assert code == 2 and "invalid choice: 'trian'" in err


def test_console_script_is_declared():
    scripts = {ep.name: ep.value for ep in importlib.metadata.entry_points(group="console_scripts")}
    assert scripts.get("segcore") == "segcore.cli:main"

"""The segcore-numba distribution's registration: entry point, both backends, lazy imports, failure reporting."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys

import numpy as np
import pytest

import segcore
from segcore.backend import get_backend
from segcore.errors import BackendUnavailableError
from segcore_numba import plugin


def _run(code: str, **env: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, **env}, timeout=300
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_entry_point_points_at_the_plugin_module():
    points = {ep.name: ep.value for ep in importlib.metadata.entry_points(group="segcore")}
    assert points.get("segcore-numba") == "segcore_numba.plugin"


def test_both_backends_are_registered_by_this_plugin():
    infos = {info.name: info for info in segcore.list_backends()}
    assert infos["numba"].provider == "segcore-numba" and infos["numba-cuda"].provider == "segcore-numba"
    assert infos["numba"].available, infos["numba"].reason


def test_listing_backends_imports_no_kernel_module():
    out = _run("import sys, segcore; segcore.list_backends(); print('segcore_numba.cpu' in sys.modules)")
    assert out == "False"


def test_cli_says_why_numba_cuda_cannot_run_here():
    cuda = get_backend_info("numba-cuda")
    if cuda.available:
        pytest.skip("numba-cuda can run on this machine")
    out = subprocess.run(["segcore", "backends"], capture_output=True, text=True, timeout=300).stdout
    line = next(row for row in out.splitlines() if row.startswith("numba-cuda"))
    assert "unavailable: " in line and cuda.reason in line and "segcore-numba[cuda]" in line
    assert next(row for row in out.splitlines() if row.startswith("numba ")).split()[1] == "available"


def get_backend_info(name: str):
    return next(info for info in segcore.list_backends() if info.name == name)


def test_a_broken_gpu_module_only_disables_numba_cuda(monkeypatch):
    def broken():
        raise ImportError("libcudart.so.12: cannot open shared object file")

    monkeypatch.setattr(plugin, "_cuda_module", broken)
    backend = plugin.numba_cuda_backend()
    assert not backend.is_available()
    assert "libcudart.so.12" in backend.unavailable_reason
    with pytest.raises(BackendUnavailableError, match="numba-cuda.*libcudart"):
        backend.kernel("conv2d")
    assert plugin.numba_backend().is_available()


def test_missing_numba_is_reported_with_the_install_hint(monkeypatch):
    monkeypatch.setattr(plugin.importlib.util, "find_spec", lambda name: None)
    backend = plugin.numba_backend()
    assert backend.unavailable_reason == "numba is not installed"
    with pytest.raises(BackendUnavailableError, match="pip install segcore-numba"):
        backend.require_available()


def test_kernels_load_on_first_lookup_and_earlier_registrations_win():
    backend = plugin.numba_backend()
    assert backend.overrides == {}

    def mine(xp, *args):
        return "mine"

    backend.register_kernel("nms", mine)
    assert backend.kernel("nms") is mine
    from segcore_numba.cpu import KERNELS

    assert backend.kernel("roi_align") is KERNELS["roi_align"]
    # Kernels the backend does not override come from the reference table.
    from segcore.kernels import reference_kernels

    assert backend.kernel("avg_pool2d") is reference_kernels()["avg_pool2d"]


def test_overridden_kernels_are_the_ones_the_issue_lists():
    expected = {
        "conv2d", "conv2d_grad_input", "conv2d_grad_weight", "max_pool2d", "max_pool2d_backward",
        "interpolate_bilinear", "interpolate_bilinear_backward", "roi_align", "roi_align_backward", "roi_pool",
        "roi_pool_backward", "nms", "permutohedral_build", "permutohedral_filter", "dense_crf_mean_field",
    }  # fmt: skip
    from segcore.kernels import reference_kernels
    from segcore_numba.cpu import KERNELS

    assert set(KERNELS) == expected
    assert set(KERNELS) <= set(reference_kernels()), "every override must replace a reference kernel"


def test_float16_operands_run_the_reference_kernel_and_float32_the_numba_one():
    # Numba's CPU target cannot compile for float16; such calls must reach the reference, not fail in Numba.
    import segcore_numba.cpu as cpu
    from segcore.kernels import reference_kernels
    from segcore_numba.cpu import conv as numba_conv

    calls = []
    reference = reference_kernels()["conv2d"]

    def spy_reference(xp, *args, **params):
        calls.append("reference")
        return reference(xp, *args, **params)

    def spy_numba(xp, *args, **params):
        calls.append("numba")
        return numba_conv.conv2d(xp, *args, **params)

    dispatch = cpu.reference_for_float16(spy_numba, spy_reference)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 2, 5, 5))
    w = rng.standard_normal((3, 2, 3, 3))
    half = dispatch(np, x.astype(np.float16), w.astype(np.float16), (1, 1), (1, 1), (1, 1), 1)
    single = dispatch(np, x.astype(np.float32), w.astype(np.float32), (1, 1), (1, 1), (1, 1), 1)
    assert calls == ["reference", "numba"]
    assert half.dtype == np.float16 and single.dtype == np.float32
    # A float16 array inside a list (the CRF's filter pairs, say) counts too.
    assert cpu._holds_float16([(1.0, np.zeros(2, np.float16))]) and not cpu._holds_float16([np.zeros(2)])
    # The backend's own table routes float16 to the reference: bit-identical results.
    x16, w16 = x.astype(np.float16), w.astype(np.float16)
    args = ((2, 2), (1, 1), (1, 1), 1)
    np.testing.assert_array_equal(cpu.KERNELS["conv2d"](np, x16, w16, *args), reference(np, x16, w16, *args))


def test_models_move_to_numba_and_back():
    model = segcore.build("unet", num_classes=2, width=0.0625, depth=2, rng=np.random.default_rng(0))
    x = np.random.default_rng(1).standard_normal((1, 3, 16, 16)).astype(np.float32)
    model.eval()
    with segcore.no_grad():
        expected = model(segcore.tensor(x)).numpy()
        model.to("numba")
        got = model(segcore.tensor(x, backend="numba")).numpy()
    assert next(iter(model.parameters())).backend.name == "numba"
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def _layer_in_fresh_process(code_before: str = "", **env: str) -> tuple[str, str]:
    """(threading layer after importing segcore_numba.cpu, OMP_WAIT_POLICY then) in a new interpreter."""
    code = (
        f"{code_before}import os, segcore_numba.cpu, numba; "
        "print(numba.config.THREADING_LAYER, os.environ.get('OMP_WAIT_POLICY', '-'))"
    )
    clean = {k: v for k, v in os.environ.items() if k not in ("NUMBA_THREADING_LAYER", "OMP_WAIT_POLICY")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**clean, **env}, timeout=300)
    assert out.returncode == 0, out.stderr
    layer, policy = out.stdout.split()
    return layer, policy


def _has_openmp() -> bool:
    code = "from numba.np.ufunc import omppool"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=300).returncode == 0


@pytest.mark.skipif(not _has_openmp(), reason="Numba's OpenMP layer needs an OpenMP runtime (libgomp)")
def test_threading_layer_defaults_to_passive_openmp():
    assert _layer_in_fresh_process() == ("omp", "PASSIVE")
    assert _layer_in_fresh_process(OMP_WAIT_POLICY="passive") == ("omp", "PASSIVE")


def test_spinning_openmp_is_never_chosen():
    # Spinning OpenMP workers take the cores from OpenBLAS: a user's ACTIVE policy, or a libgomp already loaded
    # (its policy fixed at load), makes the default the workqueue layer.
    assert _layer_in_fresh_process(OMP_WAIT_POLICY="ACTIVE") == ("workqueue", "ACTIVE")
    if _has_openmp():
        preload = "from numba.np.ufunc import omppool; "
        assert _layer_in_fresh_process(preload) == ("workqueue", "-")


def test_a_threading_layer_the_user_chose_is_kept():
    assert _layer_in_fresh_process(NUMBA_THREADING_LAYER="workqueue") == ("workqueue", "-")
    assert _run("import segcore_numba.cpu, numba; print(numba.config.THREADING_LAYER)", NUMBA_THREADING_LAYER="omp") == "omp"

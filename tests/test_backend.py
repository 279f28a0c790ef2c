"""Backend registry, kernel lookup, tensor creation and moves between backends."""

import numpy as np
import pytest

import segcore
from segcore.backend import Backend, _unregister_backend, get_backend, register_backend
from segcore.errors import BackendMismatchError, BackendUnavailableError
from segcore.kernels import reference_kernels


@pytest.fixture
def second_numpy_backend():
    """A second backend on NumPy arrays, to exercise moves and mixed-backend errors without a GPU."""
    import array_api_compat.numpy as xp

    backend = Backend("numpy-twin", lambda: xp)
    register_backend(backend, provider="tests")
    yield backend
    _unregister_backend("numpy-twin")


@pytest.fixture
def broken_backend():
    backend = Backend(
        "nodevice",
        lambda: pytest.fail("namespace must not be loaded for an unavailable backend"),
        probe=lambda: "no CUDA device found",
        install_hint="pip install segcore-cupy",
    )
    register_backend(backend, provider="tests")
    yield backend
    _unregister_backend("nodevice")


def test_numpy_backend_is_reference_and_overrides_nothing():
    numpy_backend = get_backend("numpy")
    assert numpy_backend.overrides == {}
    for name, fn in reference_kernels().items():
        assert numpy_backend.kernel(name) is fn


def test_unknown_kernel_lists_known_ones():
    with pytest.raises(KeyError) as err:
        get_backend("numpy").kernel("not_a_kernel")
    message = str(err.value)
    assert "not_a_kernel" in message and "Known kernels:" in message


def test_override_wins_and_other_kernels_fall_back(second_numpy_backend):
    def fake(xp, *args, **kwargs):
        return "override"

    second_numpy_backend.register_kernel("conv2d", fake)
    assert second_numpy_backend.kernel("conv2d") is fake
    assert get_backend("numpy").kernel("conv2d") is not fake
    others = [name for name in reference_kernels() if name != "conv2d"]
    for name in others:
        assert second_numpy_backend.kernel(name) is reference_kernels()[name]


def test_list_backends_reports_availability_and_reason(second_numpy_backend, broken_backend):
    infos = {info.name: info for info in segcore.list_backends()}
    assert infos["numpy"].available and infos["numpy"].reason is None
    assert infos["numpy-twin"].available and infos["numpy-twin"].provider == "tests"
    assert not infos["nodevice"].available
    assert infos["nodevice"].reason == "no CUDA device found"
    assert str(infos["nodevice"]) == "nodevice: unavailable: no CUDA device found"


def test_unavailable_backend_error_says_why_and_how_to_install(broken_backend):
    with pytest.raises(BackendUnavailableError, match="no CUDA device found.*pip install segcore-cupy"):
        segcore.tensor([1.0], backend="nodevice")


def test_crashing_probe_counts_as_unavailable():
    def probe():
        raise ImportError("libcuda.so not found")

    backend = Backend("crashy", lambda: None, probe=probe)
    assert not backend.is_available()
    assert backend.unavailable_reason == "ImportError: libcuda.so not found"


def test_unknown_backend_suggests_close_name():
    with pytest.raises(ValueError, match="Did you mean 'numpy'"):
        get_backend("nunpy")


def test_register_same_name_twice_names_both_providers(second_numpy_backend):
    import array_api_compat.numpy as xp

    with pytest.raises(ValueError, match="'tests'.*'other-plugin'"):
        register_backend(Backend("numpy-twin", lambda: xp), provider="other-plugin")


def test_tensor_dtype_inference_follows_torch():
    assert segcore.tensor([1.0, 2.0]).dtype == np.float32
    assert segcore.tensor([1, 2]).dtype == np.int64
    assert segcore.tensor(np.zeros(2, dtype=np.float64)).dtype == np.float64
    assert segcore.tensor([1, 2], dtype=np.float64).dtype == np.float64
    assert segcore.tensor([True, False]).dtype == np.bool_


def test_tensor_copies_numpy_input():
    source = np.arange(3.0)
    t = segcore.tensor(source)
    source[0] = 100.0
    assert t.numpy()[0] == 0.0


def test_requires_grad_needs_floating_dtype():
    with pytest.raises(TypeError, match="floating-point"):
        segcore.tensor([1, 2], requires_grad=True)


def test_to_moves_between_backends_and_keeps_values(second_numpy_backend):
    t = segcore.tensor([[1.5, -2.0]], requires_grad=True)
    moved = t.to("numpy-twin")
    assert moved.backend is second_numpy_backend
    assert moved.requires_grad and moved.is_leaf
    np.testing.assert_array_equal(moved.numpy(), t.numpy())
    assert t.to("numpy") is t


def test_op_on_two_backends_names_both(second_numpy_backend):
    a = segcore.tensor([1.0, 2.0])
    b = segcore.tensor([3.0, 4.0], backend="numpy-twin")
    with pytest.raises(BackendMismatchError, match="'numpy' and 'numpy-twin'"):
        a + b


def test_to_dtype_casts_and_gradient_returns_in_source_dtype():
    x = segcore.tensor([1.0, 2.0], dtype=np.float32, requires_grad=True)
    y = (x * 3.0).to(dtype=np.float64)
    assert y.dtype == np.float64
    y.sum().backward()
    assert x.grad.dtype == np.float32
    np.testing.assert_array_equal(x.grad.numpy(), [3.0, 3.0])


def test_default_backend_setting(second_numpy_backend):
    try:
        segcore.set_default_backend("numpy-twin")
        assert segcore.tensor([1.0]).backend is second_numpy_backend
    finally:
        segcore.set_default_backend("numpy")
    assert segcore.tensor([1.0]).backend.name == "numpy"

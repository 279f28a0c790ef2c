"""Weights I/O: safetensors round trips, atomic writes, clear errors, strict loading into a model."""

import os

import numpy as np
import pytest
import safetensors.numpy

import segcore
from segcore import io, nn
from segcore.backend import Backend, _unregister_backend, register_backend


@pytest.fixture
def alt_backend():
    import array_api_compat.numpy as xp

    backend = Backend("numpy-io-alt", lambda: xp)
    register_backend(backend, provider="tests")
    yield backend
    _unregister_backend("numpy-io-alt")


class TinyNet(nn.Module):
    """Two affine maps and buffers of three dtypes; forward uses only arithmetic ops."""

    def __init__(self, seed, width=3):
        super().__init__()
        rng = np.random.default_rng(seed)
        self.enc = nn.ModuleDict()
        self.enc["proj"] = nn.Module()
        self.enc["proj"].w = nn.Parameter(segcore.tensor(rng.standard_normal((4, width)).astype(np.float32)))
        self.w2 = nn.Parameter(segcore.tensor(rng.standard_normal((width, 2)).astype(np.float32)))
        self.register_buffer("shift", segcore.tensor(rng.standard_normal(2).astype(np.float64)))
        self.register_buffer("steps", segcore.tensor(np.array(seed, dtype=np.int64)))

    def forward(self, x):
        return (x @ self.enc["proj"].w) @ self.w2 + self.shift.to(dtype=np.float32)


def files_in(directory):
    return sorted(os.listdir(directory))


def test_round_trip_gives_identical_outputs(tmp_path):
    src, dst = TinyNet(seed=1), TinyNet(seed=2)
    x = segcore.tensor(np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32))
    assert not np.array_equal(src(x).numpy(), dst(x).numpy())
    path = tmp_path / "net.safetensors"
    src.save(path)
    assert files_in(tmp_path) == ["net.safetensors"]
    dst.load_state_dict(io.load_state_dict(path))
    np.testing.assert_array_equal(src(x).numpy(), dst(x).numpy())
    assert dst.steps.item() == 1 and dst.steps.dtype == np.int64
    third = TinyNet(seed=3)
    assert third.load(str(path)) == ([], [])
    np.testing.assert_array_equal(src(x).numpy(), third(x).numpy())


def test_loaded_state_dict_keys_dtypes_and_values(tmp_path):
    net = TinyNet(seed=4)
    path = tmp_path / "w.safetensors"
    io.save_state_dict(net.state_dict(), path)
    loaded = io.load_state_dict(path)
    assert list(loaded) == ["enc.proj.w", "shift", "steps", "w2"]  # sorted
    for key, value in net.state_dict().items():
        assert loaded[key].dtype == value.dtype and loaded[key].shape == value.shape
        np.testing.assert_array_equal(loaded[key].numpy(), value.numpy())
        assert not loaded[key].requires_grad
    loaded["w2"].data[0, 0] = 123.0  # writable, and not memory-mapped to the file
    assert io.load_state_dict(path)["w2"].numpy()[0, 0] == net.w2.numpy()[0, 0]


def test_file_is_plain_safetensors_and_views_are_saved_correctly(tmp_path):
    base = np.arange(12, dtype=np.float32).reshape(3, 4)
    path = tmp_path / "plain.safetensors"
    io.save_state_dict({"t": base.T, "cols": base[:, ::2], "m": segcore.tensor(base)}, path, metadata={"who": "me"})
    raw = safetensors.numpy.load_file(str(path))
    np.testing.assert_array_equal(raw["t"], base.T)
    np.testing.assert_array_equal(raw["cols"], base[:, ::2])
    np.testing.assert_array_equal(raw["m"], base)
    # A file written by the safetensors library itself (as a torch conversion would be) loads too.
    other = tmp_path / "external.safetensors"
    safetensors.numpy.save_file({"layer.weight": np.ones((2, 2), np.float64)}, str(other))
    assert io.load_state_dict(other)["layer.weight"].numpy().tolist() == [[1.0, 1.0], [1.0, 1.0]]


def test_load_onto_another_backend(tmp_path, alt_backend):
    path = tmp_path / "w.safetensors"
    io.save_state_dict({"a": np.ones(3, np.float32)}, path)
    loaded = io.load_state_dict(path, backend="numpy-io-alt")
    assert loaded["a"].backend is alt_backend


def test_failure_mid_write_leaves_no_file_and_no_temp(tmp_path, monkeypatch):
    def crash_half_way(handle, payload):
        handle.write(payload[: len(payload) // 2])
        raise OSError("disk full")

    monkeypatch.setattr(io, "_write_bytes", crash_half_way)
    with pytest.raises(OSError, match="disk full"):
        io.save_state_dict(TinyNet(seed=0).state_dict(), tmp_path / "net.safetensors")
    assert files_in(tmp_path) == []


def test_failed_overwrite_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "net.safetensors"
    TinyNet(seed=1).save(path)
    before = path.read_bytes()

    def failing_replace(src, dst):
        raise PermissionError("replace refused")

    monkeypatch.setattr(io.os, "replace", failing_replace)
    with pytest.raises(PermissionError, match="replace refused"):
        TinyNet(seed=2).save(path)
    assert files_in(tmp_path) == ["net.safetensors"]
    assert path.read_bytes() == before


def test_interrupt_during_write_also_cleans_up(tmp_path, monkeypatch):
    def interrupted(handle, payload):
        handle.write(payload[:10])
        raise KeyboardInterrupt

    monkeypatch.setattr(io, "_write_bytes", interrupted)
    with pytest.raises(KeyboardInterrupt):
        io.save_state_dict({"a": np.zeros(2)}, tmp_path / "x.safetensors")
    assert files_in(tmp_path) == []


def test_loading_a_mismatched_file_gives_the_strict_error(tmp_path):
    path = tmp_path / "other.safetensors"
    io.save_state_dict(
        {"enc.proj.w": np.zeros((5, 3), np.float32), "w2": np.zeros((3, 2), np.float32), "extra": np.zeros(1)}, path
    )
    net = TinyNet(seed=0)
    with pytest.raises(ValueError) as err:
        net.load(path)
    message = str(err.value)
    assert 'Missing key(s) in state_dict: "shift", "steps".' in message
    assert 'Unexpected key(s) in state_dict: "extra".' in message
    assert "size mismatch for enc.proj.w: copying a param with shape (5, 3) from checkpoint" in message


def test_missing_file_names_the_path(tmp_path):
    path = tmp_path / "absent.safetensors"
    with pytest.raises(FileNotFoundError, match="no weights file at .*absent.safetensors"):
        io.load_state_dict(path)
    with pytest.raises(FileNotFoundError, match="directory .*nowhere.* does not exist"):
        io.save_state_dict({"a": np.zeros(1)}, tmp_path / "nowhere" / "w.safetensors")


NOT_SAFETENSORS = [b"", b"not a safetensors file at all", b"\x08\x00\x00\x00\x00\x00\x00\x00{bad json"]


@pytest.mark.parametrize("content", NOT_SAFETENSORS)
def test_non_safetensors_file_names_the_path(tmp_path, content):
    path = tmp_path / "model.pth"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=r"model\.pth' is not a valid safetensors file"):
        io.load_state_dict(path)


def test_directory_paths_are_rejected(tmp_path):
    with pytest.raises(IsADirectoryError, match="it is a directory"):
        io.load_state_dict(tmp_path)
    with pytest.raises(IsADirectoryError, match="it is a directory"):
        io.save_state_dict({"a": np.zeros(1)}, tmp_path)


def test_bad_arguments_name_what_was_given(tmp_path):
    with pytest.raises(TypeError, match=r"state_dict\['b'\] must be a Tensor or a numpy array, got list"):
        io.save_state_dict({"a": np.zeros(1), "b": [1, 2]}, tmp_path / "w.safetensors")
    with pytest.raises(TypeError, match="keys must be str, got 1"):
        io.save_state_dict({1: np.zeros(1)}, tmp_path / "w.safetensors")
    with pytest.raises(TypeError, match="path must be a str or os.PathLike, got int"):
        io.load_state_dict(3)
    with pytest.raises(TypeError, match="metadata must be a mapping of str to str"):
        io.save_state_dict({"a": np.zeros(1)}, tmp_path / "w.safetensors", metadata={"n": 1})
    assert files_in(tmp_path) == []


def test_save_accepts_module_or_mapping(tmp_path):
    net = TinyNet(seed=5)
    io.save(net, tmp_path / "a.safetensors")
    io.save(net.state_dict(), tmp_path / "b.safetensors")
    assert (tmp_path / "a.safetensors").read_bytes() == (tmp_path / "b.safetensors").read_bytes()
    assert io.load is io.load_state_dict


def test_save_json_writes_complete_file_and_leaves_nothing_on_failure(tmp_path):
    import json

    from segcore.io import save_json

    target = tmp_path / "result.json"
    save_json(target, {"a": [1, 2.5], "b": "x"})
    assert json.loads(target.read_text()) == {"a": [1, 2.5], "b": "x"}
    with pytest.raises(TypeError):
        save_json(target, {"not serialisable": object()})
    # The failed write left the previous file intact and no temporary behind.
    assert json.loads(target.read_text()) == {"a": [1, 2.5], "b": "x"}
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]

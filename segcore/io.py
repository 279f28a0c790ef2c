"""Weights I/O: state dicts as safetensors files (never pickle), written atomically.

A state dict maps torch-style dotted names to tensors. The file format is plain safetensors, so a file saved
here opens with ``safetensors.torch.load_file`` and a torch checkpoint converted with
``safetensors.torch.save_file`` loads here unchanged.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import OrderedDict
from typing import Any, BinaryIO, Callable, Mapping

import numpy as np
import safetensors.numpy

from .autograd import Tensor
from .backend import Backend, get_backend

__all__ = ["atomic_write", "save_json", "save_state_dict", "load_state_dict", "save", "load"]


def _check_path(path: Any) -> str:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    return os.fspath(path)


def _to_numpy_dict(state_dict: Mapping[str, Any]) -> dict[str, np.ndarray]:
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"state_dict must be a mapping of str to Tensor, got {type(state_dict).__name__}")
    arrays: dict[str, np.ndarray] = {}
    for key, value in state_dict.items():
        if not isinstance(key, str):
            raise TypeError(f"state_dict keys must be str, got {key!r} ({type(key).__name__})")
        if isinstance(value, Tensor):
            array = value.numpy()
        elif isinstance(value, np.ndarray):
            array = value
        else:
            raise TypeError(f"state_dict[{key!r}] must be a Tensor or a numpy array, got {type(value).__name__}")
        # safetensors serialises the raw buffer, so views (transposes, slices) must be made contiguous;
        # np.asarray(order="C") rather than ascontiguousarray, which would turn 0-d arrays into 1-d ones.
        arrays[key] = np.asarray(array, order="C")
    return arrays


def _write_bytes(handle, payload: bytes) -> None:
    """Write ``payload`` fully to the open binary ``handle`` (a seam for tests that simulate a crash)."""
    handle.write(payload)


def save_state_dict(
    state_dict: Mapping[str, Tensor | np.ndarray], path: str | os.PathLike, metadata: Mapping[str, str] | None = None
) -> None:
    """Write ``state_dict`` to ``path`` as a safetensors file.

    The file is written to a temporary file in the same directory and moved into place with ``os.replace``,
    so ``path`` is either the complete new file or untouched (the previous file, or nothing); on any failure
    the temporary file is removed.

    Parameters
    ----------
    state_dict:
        Names to Tensors (any backend) or NumPy arrays.
    path:
        Destination file; its directory must exist.
    metadata:
        Optional ``str -> str`` pairs stored in the safetensors header.
    """
    path = _check_path(path)
    if metadata is not None and not (
        isinstance(metadata, Mapping) and all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())
    ):
        raise TypeError(f"metadata must be a mapping of str to str, got {metadata!r}")
    arrays = _to_numpy_dict(state_dict)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"cannot save state dict to {path!r}: directory {directory!r} does not exist")
    if os.path.isdir(path):
        raise IsADirectoryError(f"cannot save state dict to {path!r}: it is a directory")
    payload = safetensors.numpy.save(arrays, metadata=dict(metadata) if metadata is not None else None)
    atomic_write(path, lambda handle: _write_bytes(handle, payload))


def save_json(path: str | os.PathLike, payload: Any) -> None:
    """Write ``payload`` as indented JSON to ``path`` atomically (see :func:`atomic_write`)."""
    text = json.dumps(payload, indent=2) + "\n"
    atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> None:
    """Write a file through ``write(handle)`` into a temporary file beside ``path``, then ``os.replace`` it.

    ``path`` is afterwards either the complete new file or untouched (the previous file, or nothing); on any
    failure, including KeyboardInterrupt, the temporary file is removed. Every file segcore writes
    (checkpoints, predictions, overlays, benchmark results) goes through here.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"cannot write {path!r}: directory {directory!r} does not exist")
    if os.path.isdir(path):
        raise IsADirectoryError(f"cannot write {path!r}: it is a directory")
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            # Data must be on disk before the rename, or a crash could leave a complete-looking empty file.
            os.fsync(handle.fileno())
        # mkstemp makes the file private (0600); give it the permissions a plain open() would have.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def load_state_dict(path: str | os.PathLike, backend: str | Backend | None = "numpy") -> OrderedDict[str, Tensor]:
    """Read a safetensors file into an ``OrderedDict`` of name -> :class:`Tensor` on ``backend``.

    Tensors are fresh (writable, not memory-mapped) leaves with ``requires_grad=False``; keys are sorted
    (safetensors does not keep insertion order). Raises ``FileNotFoundError`` for a missing file and
    ``ValueError`` for a file that is not safetensors, both naming ``path``.
    """
    path = _check_path(path)
    target = get_backend(backend)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no weights file at {path!r}")
    if os.path.isdir(path):
        raise IsADirectoryError(f"cannot load a state dict from {path!r}: it is a directory")
    with open(path, "rb") as handle:
        payload = handle.read()
    try:
        arrays = safetensors.numpy.load(payload)
    except Exception as exc:  # safetensors raises its own SafetensorError (and others) on malformed headers
        raise ValueError(f"{path!r} is not a valid safetensors file ({type(exc).__name__}: {exc})") from None
    result: OrderedDict[str, Tensor] = OrderedDict()
    for key, array in sorted(arrays.items()):
        # np.array copies: the loaded arrays are read-only views of the file buffer.
        result[key] = Tensor(target.asarray(np.array(array, copy=True)), target)
    return result


def save(obj: Any, path: str | os.PathLike) -> None:
    """Save a :class:`~segcore.nn.Module`'s state dict, or a state dict, to ``path`` (safetensors, atomic)."""
    from .nn.module import Module

    save_state_dict(obj.state_dict() if isinstance(obj, Module) else obj, path)


load = load_state_dict

"""Numba backends for segcore, installed as a plugin (entry point group ``segcore``).

After ``pip install segcore-numba``::

    import segcore
    model = segcore.build("unet", num_classes=2, backend="numba")   # NumPy arrays, Numba CPU kernels

``numba-cuda`` (CuPy arrays, Numba-CUDA kernels) also needs ``pip install "segcore-numba[cuda]"`` and a CUDA
device; ``segcore backends`` says which part is missing. Kernels a backend does not override come from
segcore's NumPy reference kernels.
"""

__version__ = "0.1.0"

"""segcore-cupy: the ``cupy`` backend for segcore (CuPy arrays, CUDA C kernels, cuBLAS).

Registered through the ``segcore`` entry point (:mod:`segcore_cupy.plugin`); importing this package imports
neither CuPy nor any kernel module.
"""

__all__: list[str] = []

"""``DataLoader``: batches of samples, shuffled with an explicit generator, prefetched by worker threads.

Reproducibility does not depend on thread timing: at the start of each epoch the loader draws, from its own
generator, the sample order and one epoch seed, and sample ``i`` is transformed with
``numpy.random.default_rng((epoch_seed, i))``. The loader's generator state (``state_dict``) therefore fixes
every later epoch, which is what :func:`segcore.train.fit` saves in a checkpoint to resume exactly.

Threads rather than processes: decoding (Pillow) and array work (NumPy) release the GIL, threads share the
data set without pickling it, and they start instantly on every platform.
"""

from __future__ import annotations

import numbers
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Iterator, Sequence

import numpy as np


__all__ = ["DataLoader", "default_collate"]


def default_collate(samples: Sequence[dict]) -> dict[str, Any]:
    """Stack a list of sample dicts into a batch dict.

    ``"image"`` and ``"mask"`` are stacked into ``(N, ...)`` arrays (they must have one size per batch; masks
    become int64); per-instance entries (``boxes``, ``labels``, ``masks``, ``iscrowd``) and everything else
    become lists with one entry per sample.
    """
    if not samples:
        raise ValueError("default_collate: samples is empty; expected at least one sample dict")
    keys = list(samples[0])
    for i, sample in enumerate(samples):
        if not isinstance(sample, dict):
            raise TypeError(f"default_collate: samples[{i}] must be a dict, got {type(sample).__name__}")
        if list(sample) != keys:
            raise ValueError(
                f"default_collate: samples[{i}] has keys {sorted(sample)}, samples[0] has {sorted(keys)}"
            )
    batch: dict[str, Any] = {}
    for key in keys:
        values = [sample[key] for sample in samples]
        if key in ("image", "mask"):
            shapes = {np.shape(v) for v in values}
            if len(shapes) != 1:
                raise ValueError(
                    f"default_collate: the samples' {key!r} arrays have different shapes {sorted(shapes)}; "
                    "add a RandomCrop/Resize transform or use batch_size=1"
                )
            stacked = np.stack(values)
            batch[key] = stacked.astype(np.int64) if key == "mask" else stacked
        else:
            batch[key] = values
    return batch


class DataLoader:
    """Iterate over ``dataset`` in batches.

    Parameters
    ----------
    dataset : sequence of sample dicts
        Anything with ``__len__`` and ``__getitem__`` (a :class:`segcore.data.SegmentationDataset`, a list).
    batch_size : int
        Samples per batch.
    shuffle : bool
        Visit samples in a new random order every epoch (drawn from ``rng``).
    drop_last : bool
        Leave out the last, smaller batch.
    transform : callable, optional
        ``transform(sample, rng) -> sample`` applied to every sample (see :mod:`segcore.data.transforms`).
    rng : numpy.random.Generator or int, optional
        The loader's generator (an int seeds a new one); ``None`` means a fresh, unseeded generator.
    num_workers : int
        Threads that load and transform batches in the background; 0 loads in the calling thread.
    prefetch : int
        Batches kept in flight per worker.
    collate_fn : callable
        Turns a list of samples into a batch (:func:`default_collate`).

    Every epoch yields each sample exactly once (less the dropped tail with ``drop_last``), in order.
    """

    def __init__(
        self,
        dataset: Any,
        batch_size: int = 1,
        *,
        shuffle: bool = False,
        drop_last: bool = False,
        transform: Callable[[dict, np.random.Generator], dict] | None = None,
        rng: np.random.Generator | int | None = None,
        num_workers: int = 0,
        prefetch: int = 2,
        collate_fn: Callable[[Sequence[dict]], Any] = default_collate,
    ) -> None:
        if not (hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__")):
            raise TypeError(f"dataset must support len() and indexing, got {type(dataset).__name__}")
        for name, value, low in (
            ("batch_size", batch_size, 1),
            ("num_workers", num_workers, 0),
            ("prefetch", prefetch, 1),
        ):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
        for name, value in (("shuffle", shuffle), ("drop_last", drop_last)):
            if not isinstance(value, bool):
                raise TypeError(f"{name} must be True or False, got {value!r}")
        if transform is not None and not callable(transform):
            raise TypeError(f"transform must be callable as transform(sample, rng), got {transform!r}")
        if not callable(collate_fn):
            raise TypeError(f"collate_fn must be callable, got {collate_fn!r}")
        if rng is None:
            rng = np.random.default_rng()
        elif isinstance(rng, numbers.Integral) and not isinstance(rng, bool) and rng >= 0:
            rng = np.random.default_rng(int(rng))
        elif not isinstance(rng, np.random.Generator):
            raise TypeError(f"rng must be a numpy.random.Generator, a non-negative int seed or None, got {rng!r}")
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.transform = transform
        self.rng = rng
        self.num_workers = int(num_workers)
        self.prefetch = int(prefetch)
        self.collate_fn = collate_fn

    def __len__(self) -> int:
        """Batches per epoch."""
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def _load(self, index: int, epoch_seed: int) -> dict:
        sample = self.dataset[index]
        if self.transform is not None:
            sample = self.transform(sample, np.random.default_rng((epoch_seed, index)))
        return sample

    def _batch(self, indices: np.ndarray, epoch_seed: int) -> Any:
        return self.collate_fn([self._load(int(i), epoch_seed) for i in indices])

    def __iter__(self) -> Iterator[Any]:
        n = len(self.dataset)
        # Both draws happen every epoch whatever the settings, so the generator's state after an epoch does
        # not depend on shuffle or transform.
        order = self.rng.permutation(n)
        epoch_seed = int(self.rng.integers(0, 2**63 - 1))
        if not self.shuffle:
            order = np.arange(n)
        batches = [order[i : i + self.batch_size] for i in range(0, n, self.batch_size)]
        if self.drop_last and batches and len(batches[-1]) < self.batch_size:
            batches.pop()
        if self.num_workers == 0:
            return (self._batch(b, epoch_seed) for b in batches)
        return self._threaded(batches, epoch_seed)

    def _threaded(self, batches: list[np.ndarray], epoch_seed: int) -> Iterator[Any]:
        pool = ThreadPoolExecutor(max_workers=self.num_workers, thread_name_prefix="segcore-loader")
        pending: deque[Future] = deque()
        todo = iter(batches)
        try:
            for b in todo:
                pending.append(pool.submit(self._batch, b, epoch_seed))
                if len(pending) >= self.num_workers * self.prefetch:
                    break
            while pending:
                batch = pending.popleft().result()  # re-raises a worker's exception here, in order
                nxt = next(todo, None)
                if nxt is not None:
                    pending.append(pool.submit(self._batch, nxt, epoch_seed))
                yield batch
        finally:
            # Reached on exhaustion, on an error and when the consumer stops early (generator closed).
            for future in pending:
                future.cancel()
            pool.shutdown(wait=True)

    def state_dict(self) -> dict[str, Any]:
        """The generator's state (JSON-serialisable): restoring it replays the same epochs."""
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`; the bit generator must be of the same kind."""
        if not isinstance(state, dict) or "rng" not in state:
            raise ValueError(f"DataLoader.load_state_dict: expected a dict with an 'rng' entry, got {state!r:.200}")
        kind = state["rng"].get("bit_generator") if isinstance(state["rng"], dict) else None
        current = type(self.rng.bit_generator).__name__
        if kind != current:
            raise ValueError(
                f"DataLoader.load_state_dict: the saved generator is {kind!r}, this loader's is {current!r}"
            )
        self.rng.bit_generator.state = state["rng"]

    def __repr__(self) -> str:
        return (
            f"DataLoader({len(self.dataset)} samples, batch_size={self.batch_size}, shuffle={self.shuffle}, "
            f"drop_last={self.drop_last}, num_workers={self.num_workers})"
        )


"""DataLoader: every sample once per epoch, shuffling, drop_last, determinism with threads, state, errors."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from segcore.data import DataLoader, default_collate, shapes
from segcore.data import transforms as T


class Numbers:
    """Samples that name themselves and record the thread that loaded them."""

    def __init__(self, n: int, fail_at: int | None = None) -> None:
        self.n, self.fail_at = n, fail_at
        self.threads: set[str] = set()
        self.lock = threading.Lock()

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        if i == self.fail_at:
            raise RuntimeError(f"sample {i} is broken")
        with self.lock:
            self.threads.add(threading.current_thread().name)
        return {"image": np.full((2, 2, 3), i, dtype=np.uint8), "mask": np.full((2, 2), i % 3, np.uint8), "index": i}


def _indices(loader) -> list[list[int]]:
    return [batch["index"] for batch in loader]


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("n, batch_size", [(23, 5), (20, 4), (1, 3)])
def test_every_sample_once_per_epoch(workers, n, batch_size):
    loader = DataLoader(Numbers(n), batch_size, shuffle=True, rng=3, num_workers=workers)
    assert len(loader) == -(-n // batch_size)
    orders = []
    for _ in range(3):
        batches = _indices(loader)
        assert len(batches) == len(loader)
        assert all(len(b) == batch_size for b in batches[:-1]) and 1 <= len(batches[-1]) <= batch_size
        flat = [i for b in batches for i in b]
        assert sorted(flat) == list(range(n))
        orders.append(flat)
    if n > 5:
        assert orders[0] != orders[1]  # reshuffled every epoch


def test_drop_last_and_no_shuffle():
    loader = DataLoader(Numbers(23), 5, drop_last=True, rng=0)
    assert len(loader) == 4
    assert _indices(loader) == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9], [10, 11, 12, 13, 14], [15, 16, 17, 18, 19]]
    shuffled = [i for b in _indices(DataLoader(Numbers(23), 5, shuffle=True, drop_last=True, rng=0)) for i in b]
    assert len(shuffled) == len(set(shuffled)) == 20


def test_threads_do_the_loading_and_do_not_change_the_result():
    data = shapes(18, 24, rng=1)
    augment = T.Compose([T.RandomScale((0.5, 1.5)), T.RandomCrop(20), T.ColorJitter(), T.Normalize()])
    serial = DataLoader(data, 4, shuffle=True, transform=augment, rng=9)
    threaded = DataLoader(data, 4, shuffle=True, transform=augment, rng=9, num_workers=3, prefetch=1)
    for _ in range(2):
        for a, b in zip(serial, threaded, strict=True):
            assert np.array_equal(a["image"], b["image"]) and np.array_equal(a["mask"], b["mask"])
            assert all(np.array_equal(x, y) for x, y in zip(a["boxes"], b["boxes"]))
    numbers = Numbers(12)
    list(DataLoader(numbers, 3, num_workers=2))
    assert numbers.threads and all(name.startswith("segcore-loader") for name in numbers.threads)


def test_state_dict_replays_the_next_epoch():
    data = shapes(10, 16, rng=0)
    loader = DataLoader(data, 3, shuffle=True, transform=T.Compose([T.ColorJitter(), T.Normalize()]), rng=4)
    list(loader)
    state = loader.state_dict()
    first = [b["image"] for b in loader]
    fresh = DataLoader(data, 3, shuffle=True, transform=T.Compose([T.ColorJitter(), T.Normalize()]), rng=123)
    fresh.load_state_dict(state)
    assert all(np.array_equal(a, b) for a, b in zip(first, [b["image"] for b in fresh], strict=True))
    with pytest.raises(ValueError, match="expected a dict with an 'rng' entry"):
        fresh.load_state_dict({"seed": 1})


def test_worker_errors_reach_the_caller_and_early_stops_are_clean():
    loader = DataLoader(Numbers(12, fail_at=7), 2, num_workers=2)
    with pytest.raises(RuntimeError, match="sample 7 is broken"):
        list(loader)
    healthy = DataLoader(Numbers(40), 2, num_workers=2)
    for i, _ in enumerate(healthy):
        if i == 1:
            break
    before = threading.active_count()
    assert len(list(healthy)) == 20
    assert threading.active_count() <= before


def test_collate_stacks_images_and_lists_instances():
    samples = [shapes(2, 16, rng=0)[i] for i in range(2)]
    batch = default_collate(samples)
    assert batch["image"].shape == (2, 16, 16, 3) and batch["mask"].dtype == np.int64
    assert isinstance(batch["boxes"], list) and len(batch["masks"]) == 2
    assert batch["id"] == ["shapes-00000", "shapes-00001"]
    other = shapes(1, 20, rng=0)[0]
    with pytest.raises(ValueError, match="add a RandomCrop/Resize transform or use batch_size=1"):
        default_collate([samples[0], other])


@pytest.mark.parametrize(
    "kwargs, error, fragment",
    [
        ({"batch_size": 0}, ValueError, "batch_size must be an int >= 1"),
        ({"num_workers": -1}, ValueError, "num_workers must be an int >= 0"),
        ({"shuffle": 1}, TypeError, "shuffle must be True or False"),
        ({"rng": "seed"}, TypeError, "rng must be a numpy.random.Generator"),
        ({"transform": 5}, TypeError, "transform must be callable"),
    ],
)
def test_bad_arguments(kwargs, error, fragment):
    with pytest.raises(error) as info:
        DataLoader(Numbers(3), **kwargs)
    assert fragment in str(info.value)
    with pytest.raises(TypeError, match="dataset must support len"):
        DataLoader(5)

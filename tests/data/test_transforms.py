"""Joint transforms: image/mask/instance alignment (hypothesis), determinism, padding, flips, colour, checks."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from segcore.data import transforms as T
from segcore.data._base import boxes_from_masks

# Well separated colours, one per label, and a padding colour unlike all of them.
COLOURS = np.array([[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0]], dtype=np.uint8)
FILL = (255, 255, 255)  # outside the convex hull of COLOURS: no blend of them can produce it


def _block_sample(rng: np.random.Generator, h: int, w: int) -> dict:
    """Labels constant on 4x4 blocks, image coloured by label, one instance per label present."""
    coarse = rng.integers(0, len(COLOURS), size=(-(-h // 4), -(-w // 4)))
    mask = np.kron(coarse, np.ones((4, 4), dtype=np.int64))[:h, :w].astype(np.uint8)
    labels = np.unique(mask)
    masks = mask[None] == labels[:, None, None]
    return {
        "image": COLOURS[mask],
        "mask": mask,
        "masks": masks,
        "labels": labels.astype(np.int64),
        "boxes": boxes_from_masks(masks),
    }


@given(
    seed=st.integers(0, 2**32 - 1),
    h=st.integers(8, 40),
    w=st.integers(8, 40),
    lo=st.floats(0.25, 1.5),
    spread=st.floats(0.0, 1.5),
    crop=st.tuples(st.integers(4, 48), st.integers(4, 48)),
)
def test_image_and_masks_stay_aligned(seed, h, w, lo, spread, crop):
    rng = np.random.default_rng(seed)
    sample = _block_sample(rng, h, w)
    pipeline = T.Compose(
        [T.RandomScale((lo, lo + spread)), T.RandomCrop(crop, fill=FILL), T.RandomHorizontalFlip(p=0.5)]
    )
    out = pipeline(sample, rng)
    image, mask = out["image"], out["mask"]
    assert image.shape[:2] == mask.shape == crop
    # Padding: ignored mask pixels are exactly the pixels with the fill colour.
    padded = mask == 255
    assert np.array_equal(padded, (image == FILL).all(axis=-1))
    # Where the label map is constant around a pixel, the image there has exactly that label's colour.
    labels = np.where(padded, 0, mask).astype(np.int64)
    # Bilinear image resizing reads source pixels up to one source pixel away, i.e. up to `scale` output pixels
    # away, while the mask is resized by nearest neighbour: "constant around a pixel" must cover that reach.
    radius = int(np.ceil(lo + spread)) + 1
    inner = np.ones_like(padded)
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            shifted = np.roll(np.roll(mask, dy, 0), dx, 1)
            inner &= shifted == mask
    inner[:radius, :] = False
    inner[-radius:, :] = False
    inner[:, :radius] = False
    inner[:, -radius:] = False
    inner &= ~padded
    assert np.array_equal(image[inner], COLOURS[labels[inner]])
    # Instance masks follow the semantic mask; boxes are the instance masks' boxes.
    for m, label in zip(out["masks"], out["labels"]):
        assert m.any() and (mask[m] == label).all()
    assert np.array_equal(out["masks"].any(axis=0), ~padded)
    assert np.array_equal(boxes_from_masks(out["masks"]), out["boxes"])


@given(seed=st.integers(0, 2**32 - 1), factor=st.floats(0.3, 3.0))
def test_scaled_boxes_stay_within_half_a_pixel_of_the_scaled_masks(seed, factor):
    sample = _block_sample(np.random.default_rng(seed), 20, 28)
    out = T.RandomScale((factor, factor))(sample, np.random.default_rng(seed))
    assert out["image"].shape[:2] == (round(20 * factor), round(28 * factor))
    kept = sample["masks"].any(axis=(1, 2))
    assert len(out["boxes"]) == len(out["masks"]) <= kept.sum()
    # Each output mask pixel takes the nearest input pixel: edges move by at most half an output pixel.
    assert np.abs(boxes_from_masks(out["masks"]) - out["boxes"]).max(initial=0) <= 0.5 + 1e-4


def test_same_generator_state_same_output_and_sensitivity_to_it():
    sample = _block_sample(np.random.default_rng(0), 30, 26)
    pipeline = T.Compose(
        [T.RandomScale(), T.RandomCrop(24), T.RandomHorizontalFlip(), T.ColorJitter(0.4, 0.4, 0.4, 0.1), T.Normalize()]
    )
    a = pipeline(sample, np.random.default_rng(5))
    b = pipeline(sample, np.random.default_rng(5))
    c = pipeline(sample, np.random.default_rng(6))
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["image"], c["image"])
    # The input was not modified.
    assert np.array_equal(sample["image"], COLOURS[sample["mask"]])


def test_crop_pads_with_fill_and_ignore_label():
    sample = _block_sample(np.random.default_rng(1), 10, 6)
    out = T.RandomCrop((16, 12), fill=7, ignore_index=200)(sample, np.random.default_rng(0))
    assert np.array_equal(out["mask"][:10, :6], sample["mask"]) and (out["mask"][10:] == 200).all()
    assert (out["mask"][:, 6:] == 200).all() and (out["image"][:, 6:] == 7).all()
    assert not out["masks"][:, 10:].any()


def test_crop_drops_instances_outside_the_window_and_clips_boxes():
    masks = np.zeros((2, 20, 20), dtype=bool)
    masks[0, 0:4, 0:4] = True
    masks[1, 10:20, 8:20] = True
    sample = {
        "image": np.zeros((20, 20, 3), dtype=np.uint8),
        "mask": masks.argmax(0).astype(np.uint8),
        "masks": masks,
        "boxes": boxes_from_masks(masks),
        "labels": np.array([1, 2]),
        "iscrowd": np.array([False, True]),
    }
    rng = np.random.default_rng(0)
    for _ in range(20):
        out = T.RandomCrop(12)(sample, rng)
        for key in ("masks", "boxes", "labels", "iscrowd"):
            assert len(out[key]) == len(out["masks"])
        assert np.allclose(out["boxes"], boxes_from_masks(out["masks"]))
        if len(out["labels"]) == 2:
            assert out["iscrowd"].tolist() == [False, True]


def test_flip_mirrors_everything():
    sample = _block_sample(np.random.default_rng(2), 12, 17)
    out = T.RandomHorizontalFlip(p=1.0)(sample, np.random.default_rng(0))
    assert np.array_equal(out["image"], sample["image"][:, ::-1])
    assert np.array_equal(out["mask"], sample["mask"][:, ::-1])
    assert np.array_equal(out["boxes"], boxes_from_masks(out["masks"]))
    same = T.RandomHorizontalFlip(p=0.0)(sample, np.random.default_rng(0))
    assert np.array_equal(same["image"], sample["image"])


def test_resize_and_pad_to_multiple():
    sample = _block_sample(np.random.default_rng(3), 13, 21)
    out = T.Resize((26, 42))(sample, np.random.default_rng(0))
    # Doubling: every output pixel's label is the label of the input pixel it came from.
    assert np.array_equal(out["mask"], np.repeat(np.repeat(sample["mask"], 2, 0), 2, 1))
    assert np.allclose(out["boxes"], sample["boxes"] * 2)
    padded = T.PadToMultiple(8)(sample, np.random.default_rng(0))
    assert padded["image"].shape == (16, 24, 3) and (padded["mask"][13:] == 255).all()
    assert np.array_equal(padded["mask"][:13, :21], sample["mask"])


def test_colour_jitter_changes_the_image_only():
    sample = _block_sample(np.random.default_rng(4), 16, 16)
    sample["image"] = np.random.default_rng(0).integers(30, 220, (16, 16, 3), dtype=np.uint8)
    out = T.ColorJitter(0.5, 0.5, 0.5, 0.2)(sample, np.random.default_rng(1))
    assert not np.array_equal(out["image"], sample["image"])
    assert out["image"].dtype == np.uint8 and out["mask"] is sample["mask"]
    identity = T.ColorJitter(0, 0, 0, 0)(sample, np.random.default_rng(1))
    assert np.abs(identity["image"].astype(int) - sample["image"]).max() <= 1


def test_normalize_layout_and_values():
    image = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    out = T.Normalize(mean=(0.5, 0.25, 0.0), std=(0.5, 0.25, 1.0))({"image": image}, np.random.default_rng(0))
    assert out["image"].shape == (3, 5, 7) and out["image"].dtype == np.float32
    expected = (image[2, 3] / 255.0 - np.array([0.5, 0.25, 0.0])) / np.array([0.5, 0.25, 1.0])
    assert np.allclose(out["image"][:, 2, 3], expected, atol=1e-5)


@pytest.mark.parametrize(
    "make, error, fragment",
    [
        (lambda: T.RandomScale((2.0, 1.0)), ValueError, "RandomScale: scale must be a pair"),
        (lambda: T.RandomCrop(0), ValueError, "RandomCrop: size must be"),
        (lambda: T.RandomCrop(8, fill=300), ValueError, "fill must be"),
        (lambda: T.RandomHorizontalFlip(p=2), ValueError, "p must be a probability"),
        (lambda: T.ColorJitter(hue=0.7), ValueError, "hue must be a number in [0, 0.5]"),
        (lambda: T.Normalize(std=(1, 0, 1)), ValueError, "std must be three positive numbers"),
        (lambda: T.PadToMultiple(0), ValueError, "multiple must be a positive int"),
        (lambda: T.Compose([3]), TypeError, "transforms[0] must be callable"),
    ],
)
def test_bad_parameters(make, error, fragment):
    with pytest.raises(error) as info:
        make()
    assert fragment in str(info.value)


def test_bad_samples_and_generators():
    sample = _block_sample(np.random.default_rng(0), 8, 8)
    normalised = T.Normalize()(sample, np.random.default_rng(0))
    with pytest.raises(ValueError, match="Normalize, which makes float CHW images, must come last"):
        T.RandomCrop(4)(normalised, np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"sample\['mask'\] must have the image's shape"):
        T.RandomHorizontalFlip()({**sample, "mask": sample["mask"][:4]}, np.random.default_rng(0))
    with pytest.raises(TypeError, match="rng must be a numpy.random.Generator"):
        T.RandomCrop(4)(sample, 0)

"""Data: the embedded synthetic shapes, readers for VOC / COCO / Cityscapes, joint transforms and a loader.

Every data set is a sequence of sample dicts with ``"image"`` (``(H, W, 3)`` uint8), ``"mask"`` (``(H, W)``
uint8 labels, 255 = ignore), instance entries where available (``"boxes"`` xyxy, ``"labels"``, ``"masks"``,
``"iscrowd"``) and an ``"id"``; see :mod:`segcore.data._base` for the exact layout. A typical pipeline::

    from segcore import data
    train = data.shapes(512, (64, 64), rng=0)
    augment = data.transforms.Compose([
        data.transforms.RandomScale((0.75, 1.5)),
        data.transforms.RandomCrop(64),
        data.transforms.RandomHorizontalFlip(),
        data.transforms.Normalize(),
    ])
    loader = data.DataLoader(train, batch_size=8, shuffle=True, transform=augment, rng=1, num_workers=2)
"""

from . import transforms
from ._base import DataFormatError, SegmentationDataset, read_image, read_label_png
from .cityscapes import CITYSCAPES_CLASSES, CITYSCAPES_ID_TO_TRAIN_ID, CityscapesSegmentation
from .coco import COCOInstances
from .loader import DataLoader, default_collate
from .shapes import SHAPE_CLASSES, ShapesDataset, shapes
from .voc import VOC_CLASSES, VOCSegmentation

__all__ = [
    "CITYSCAPES_CLASSES",
    "CITYSCAPES_ID_TO_TRAIN_ID",
    "COCOInstances",
    "CityscapesSegmentation",
    "DataFormatError",
    "DataLoader",
    "SHAPE_CLASSES",
    "SegmentationDataset",
    "ShapesDataset",
    "VOCSegmentation",
    "VOC_CLASSES",
    "default_collate",
    "read_image",
    "read_label_png",
    "shapes",
    "transforms",
]

"""COCO detection / instance segmentation evaluation (AP and AR), implemented for segcore.

The protocol is the one of the COCO toolbox's ``COCOeval`` with its default parameters, reproduced to the
last tie-break so that numbers agree with published ones:

* per category and image, detections are sorted by descending score (stable: ties keep input order) and the
  best 100 kept (``maxDets`` counts per image *and category*);
* 10 IoU thresholds ``.50:.05:.95``; at each, detections are matched greedily in score order to the
  unmatched ground truth of highest IoU (>= threshold; ties go to the later ground truth), preferring
  non-ignored ground truth over ignored;
* a ground truth is ignored when it is a crowd region, carries ``"ignore": 1``, or its ``area`` field is
  outside the area range (all ``[0, 1e10]``, small ``[0, 32^2]``, medium ``[32^2, 96^2]``, large
  ``[96^2, 1e10]``, bounds inclusive); detections matched to an ignored ground truth are neither true nor
  false positives, and unmatched detections whose area is outside the range are ignored too;
* the IoU with a crowd region divides the intersection by the detection's area, and a crowd region can be
  matched by any number of detections;
* precision is made monotone (running maximum from high recall down) and read at 101 recall points
  ``0:.01:1`` (0 past the highest recall reached); AP averages it over thresholds, recall points and
  categories, AR averages the final recall over thresholds and categories; settings without any
  non-ignored ground truth are left out, and a summary with nothing left is ``-1``.

Deliberate difference: ``COCOeval`` overwrites a ground truth's ``ignore`` field with ``iscrowd``
(cocodataset/cocoapi#123); here ``ignore`` and ``iscrowd`` are or-ed, so a non-crowd annotation marked
``"ignore": 1`` is ignored. Results are identical whenever no annotation carries ``ignore``.

A detection's area (for the area-range rule above) is its box's ``w * h`` when the result carries a
``bbox`` and its mask's pixel count otherwise, as ``COCO.loadRes`` sets it.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from numbers import Integral, Real

import numpy as np

from ._arrays import as_numpy
from .mask_rle import (
    _check_size,
    _cropped_mask_iou,
    _CroppedMask,
    _decode_counts,
    _rle_counts,
    bbox_iou,
    encode,
    segmentation_to_mask,
)

__all__ = [
    "AREA_RANGES",
    "IOU_THRESHOLDS",
    "MAX_DETECTIONS",
    "RECALL_THRESHOLDS",
    "coco_evaluate",
    "predictions_to_coco",
]

# linspace (not arange) so thresholds are the exact doubles COCOeval compares IoUs against.
IOU_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
RECALL_THRESHOLDS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)
MAX_DETECTIONS = (1, 10, 100)
AREA_RANGES = {
    "all": (0.0, 1e5**2),
    "small": (0.0, 32.0**2),
    "medium": (32.0**2, 96.0**2),
    "large": (96.0**2, 1e5**2),
}
_IOU_TYPES = ("segm", "bbox")


# -- input parsing ----------------------------------------------------------------------------------------
@dataclass
class _GroundTruth:
    area: float
    crowd: bool
    ignore: bool
    region: object  # (4,) xywh box or _CroppedMask


@dataclass
class _Detection:
    score: float
    area: float
    source: Mapping  # the result dict; its region is built only if the detection survives the top-100 cut


def _check_id(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise ValueError(f"{name} must be an integer id, got {value!r}")
    return int(value)


def _check_real(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(float(value)):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def _check_flag(value: object, name: str) -> bool:
    if value not in (0, 1) or not isinstance(value, (Integral, np.bool_)):
        raise ValueError(f"{name} must be 0 or 1, got {value!r}")
    return bool(value)


def _check_xywh(value: object, name: str) -> np.ndarray:
    box = np.asarray(value, dtype=np.float64) if isinstance(value, (Sequence, np.ndarray)) else None
    if box is None or box.shape != (4,) or not np.isfinite(box).all() or box[2] < 0 or box[3] < 0:
        raise ValueError(
            f"{name} must be [x, y, width, height] with finite values and width, height >= 0, got {value!r:.200}"
        )
    return box


def _image_and_category(record: Mapping, name: str, images: Mapping, category_set: set[int]) -> tuple[int, int]:
    """The record's ``(image_id, category_id)``, both checked against the ground truth's lists."""
    image_id = _check_id(record["image_id"], f"{name}['image_id']")
    if image_id not in images:
        raise ValueError(f"{name}['image_id'] is {image_id}, which is not in ground_truth['images']")
    category_id = _check_id(record["category_id"], f"{name}['category_id']")
    if category_id not in category_set:
        raise ValueError(f"{name}['category_id'] is {category_id}, expected one of {sorted(category_set)}")
    return image_id, category_id


def _records(container: Mapping, key: str) -> Sequence[Mapping]:
    if key not in container:
        raise ValueError(
            f"ground_truth must have the key {key!r} (a COCO-style dataset dict), got keys {sorted(container)}"
        )
    records = container[key]
    if isinstance(records, (str, bytes, Mapping)) or not isinstance(records, Sequence):
        raise ValueError(f"ground_truth[{key!r}] must be a list of dicts, got {type(records).__name__}")
    for i, record in enumerate(records):
        if not isinstance(record, Mapping):
            raise ValueError(f"ground_truth[{key!r}][{i}] must be a dict, got {type(record).__name__}")
    return records


def _parse_ground_truth(ground_truth: object, iou_type: str):
    if not isinstance(ground_truth, Mapping):
        raise TypeError(f"ground_truth must be a COCO-style dict, got {type(ground_truth).__name__}")
    images: dict[int, tuple[int, int] | None] = {}
    for i, image in enumerate(_records(ground_truth, "images")):
        if "id" not in image:
            raise ValueError(f"ground_truth['images'][{i}] has no 'id'")
        image_id = _check_id(image["id"], f"ground_truth['images'][{i}]['id']")
        if image_id in images:
            raise ValueError(f"ground_truth['images'] lists image id {image_id} twice")
        size = None
        if iou_type == "segm":
            if "height" not in image or "width" not in image:
                raise ValueError(f"ground_truth['images'][{i}] needs 'height' and 'width' for iou_type='segm'")
            size = _check_size([image["height"], image["width"]], f"ground_truth['images'][{i}] [height, width]")
        images[image_id] = size
    categories: list[int] = []
    for i, category in enumerate(_records(ground_truth, "categories")):
        if "id" not in category:
            raise ValueError(f"ground_truth['categories'][{i}] has no 'id'")
        categories.append(_check_id(category["id"], f"ground_truth['categories'][{i}]['id']"))
    if len(set(categories)) != len(categories):
        raise ValueError(f"ground_truth['categories'] has duplicate ids: {sorted(categories)}")
    category_set = set(categories)
    region_key = "segmentation" if iou_type == "segm" else "bbox"
    gts: dict[tuple[int, int], list[_GroundTruth]] = defaultdict(list)
    for i, ann in enumerate(_records(ground_truth, "annotations")):
        name = f"ground_truth['annotations'][{i}]"
        for key in ("image_id", "category_id", "area", region_key):
            if key not in ann:
                raise ValueError(f"{name} has no {key!r} (needed for iou_type={iou_type!r})")
        image_id, category_id = _image_and_category(ann, name, images, category_set)
        area = _check_real(ann["area"], f"{name}['area']")
        crowd = _check_flag(ann.get("iscrowd", 0), f"{name}['iscrowd']")
        ignore = _check_flag(ann.get("ignore", 0), f"{name}['ignore']")
        if iou_type == "segm":
            height, width = images[image_id]
            region = _CroppedMask(_segmentation_mask(ann["segmentation"], height, width, f"{name}['segmentation']"))
        else:
            region = _check_xywh(ann["bbox"], f"{name}['bbox']")
        gts[image_id, category_id].append(_GroundTruth(area, crowd, ignore, region))
    return sorted(images), images, sorted(categories), gts


def _segmentation_mask(segmentation: object, height: int, width: int, name: str) -> np.ndarray:
    try:
        return segmentation_to_mask(segmentation, height, width)
    except (ValueError, TypeError) as err:
        raise ValueError(f"{name} is not a valid COCO segmentation for a {height}x{width} image: {err}") from None


def _parse_predictions(predictions: object, images: Mapping, category_set: set[int], iou_type: str):
    if isinstance(predictions, Mapping):
        predictions = predictions_to_coco(predictions)
    if isinstance(predictions, (str, bytes)) or not isinstance(predictions, Sequence):
        raise TypeError(
            "predictions must be a list of COCO result dicts or a dict {image_id: predict() output}, "
            f"got {type(predictions).__name__}"
        )
    dts: dict[tuple[int, int], list[_Detection]] = defaultdict(list)
    for i, det in enumerate(predictions):
        name = f"predictions[{i}]"
        if not isinstance(det, Mapping):
            raise ValueError(f"{name} must be a dict, got {type(det).__name__}")
        for key in ("image_id", "category_id", "score"):
            if key not in det:
                raise ValueError(f"{name} has no {key!r}")
        image_id, category_id = _image_and_category(det, name, images, category_set)
        score = _check_real(det["score"], f"{name}['score']")
        if "bbox" in det:
            box = _check_xywh(det["bbox"], f"{name}['bbox']")
            det_area = float(box[2] * box[3])
        if iou_type == "segm" or "bbox" not in det:
            if "segmentation" not in det:
                needs = "'segmentation'" if iou_type == "segm" else "'bbox' or 'segmentation'"
                raise ValueError(f"{name} has no {needs} (needed for iou_type={iou_type!r})")
            segmentation = det["segmentation"]
            if not isinstance(segmentation, Mapping):
                raise ValueError(f"{name}['segmentation'] must be an RLE dict, got {type(segmentation).__name__}")
            size, counts = _rle_counts(segmentation, f"{name}['segmentation']")
            expected = images[image_id]
            if expected is not None and size != expected:
                raise ValueError(
                    f"{name}['segmentation'] has size {list(size)}, expected the image size {list(expected)}"
                )
            if "bbox" not in det:
                det_area = float(counts[1::2].sum())
        dts[image_id, category_id].append(_Detection(score, det_area, det))
    return dts


def _detection_region(det: Mapping, iou_type: str):
    if iou_type == "bbox" and "bbox" in det:
        return np.asarray(det["bbox"], dtype=np.float64)
    size, counts = _rle_counts(det["segmentation"])
    crop = _CroppedMask(_decode_counts(counts, *size))
    if iou_type == "segm":
        return crop
    # A mask-only result evaluated as boxes uses the mask's tight box, as COCO.loadRes does.
    return np.array([crop.x0, crop.y0, crop.x1 - crop.x0, crop.y1 - crop.y0], dtype=np.float64)


# -- per-image matching -----------------------------------------------------------------------------------
def _match(ious: np.ndarray, gt_ignore: np.ndarray, gt_crowd: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Greedy matching at every IoU threshold at once.

    ``ious`` is ``(D, G)`` with detections by descending score and ground truths with ignored ones last.
    Returns ``matched`` and ``matched_ignored``, both ``(T, D)`` bool.
    """
    num_thr, (num_dt, num_gt) = len(IOU_THRESHOLDS), ious.shape
    matched = np.zeros((num_thr, num_dt), dtype=bool)
    matched_ignored = np.zeros((num_thr, num_dt), dtype=bool)
    if num_dt == 0 or num_gt == 0:
        return matched, matched_ignored
    thresholds = np.minimum(IOU_THRESHOLDS, 1 - 1e-10)[:, None]
    taken = np.zeros((num_thr, num_gt), dtype=bool)
    rows = np.arange(num_thr)
    for d in range(num_dt):
        # Crowd regions stay available after a match: many detections may fall inside one crowd.
        eligible = (~taken | gt_crowd) & (ious[d] >= thresholds)
        choice = np.full(num_thr, -1)
        # Non-ignored ground truth first; an ignored one is only used when no regular one qualifies.
        for group in (~gt_ignore, gt_ignore):
            open_rows = choice < 0
            candidates = eligible & group & open_rows[:, None]
            if not candidates.any():
                continue
            scores = np.where(candidates, ious[d], -np.inf)
            # Highest IoU; among equal IoUs the later ground truth wins, as in COCOeval's scan.
            last_best = num_gt - 1 - np.argmax(scores[:, ::-1], axis=1)
            has = candidates.any(axis=1)
            choice = np.where(has, last_best, choice)
        hit = choice >= 0
        matched[hit, d] = True
        matched_ignored[hit, d] = gt_ignore[choice[hit]]
        taken[rows[hit], choice[hit]] = True
    return matched, matched_ignored


@dataclass
class _ImageResult:
    scores: np.ndarray  # (D,) descending
    matched: np.ndarray  # (T, D)
    ignored: np.ndarray  # (T, D) neither TP nor FP
    num_gt: int  # non-ignored ground truths


def _evaluate_pair(gts: list[_GroundTruth], dets: list[_Detection], iou_type: str) -> list[_ImageResult]:
    """One image and category: results for each area range, in :data:`AREA_RANGES` order."""
    order = np.argsort([-d.score for d in dets], kind="stable")[: MAX_DETECTIONS[-1]]
    dets = [dets[i] for i in order]
    crowd = np.array([g.crowd for g in gts], dtype=bool)
    if dets and gts:
        regions = [_detection_region(d.source, iou_type) for d in dets]
        if iou_type == "segm":
            ious = _cropped_mask_iou(regions, [g.region for g in gts], crowd)
        else:
            ious = bbox_iou(np.stack(regions), np.stack([g.region for g in gts]), crowd)
    else:
        ious = np.zeros((len(dets), len(gts)))
    scores = np.array([d.score for d in dets], dtype=np.float64)
    dt_area = np.array([d.area for d in dets], dtype=np.float64)
    gt_area = np.array([g.area for g in gts], dtype=np.float64)
    base_ignore = np.array([g.crowd or g.ignore for g in gts], dtype=bool)
    results = []
    for low, high in AREA_RANGES.values():
        gt_ignore = base_ignore | (gt_area < low) | (gt_area > high)
        gt_order = np.argsort(gt_ignore, kind="stable")
        matched, matched_ignored = _match(ious[:, gt_order], gt_ignore[gt_order], crowd[gt_order])
        outside = (dt_area < low) | (dt_area > high)
        ignored = matched_ignored | (~matched & outside[None, :])
        results.append(_ImageResult(scores, matched, ignored, int((~gt_ignore).sum())))
    return results


# -- accumulation -----------------------------------------------------------------------------------------
def _precision_recall(per_image: list[_ImageResult], max_det: int) -> tuple[np.ndarray, np.ndarray] | None:
    """``(T, R)`` interpolated precision and ``(T,)`` recall, or None when no ground truth counts."""
    num_gt = sum(r.num_gt for r in per_image)
    if num_gt == 0:
        return None
    scores = np.concatenate([r.scores[:max_det] for r in per_image])
    # Stable sort: equal scores keep image order, then within-image order, like COCOeval's mergesort.
    order = np.argsort(-scores, kind="stable")
    matched = np.concatenate([r.matched[:, :max_det] for r in per_image], axis=1)[:, order]
    ignored = np.concatenate([r.ignored[:, :max_det] for r in per_image], axis=1)[:, order]
    tp = np.cumsum(matched & ~ignored, axis=1, dtype=np.float64)
    fp = np.cumsum(~matched & ~ignored, axis=1, dtype=np.float64)
    num_thr, num_rec = len(IOU_THRESHOLDS), len(RECALL_THRESHOLDS)
    precision = np.zeros((num_thr, num_rec))
    recall = np.zeros(num_thr)
    if tp.shape[1] == 0:
        return precision, recall
    rc = tp / num_gt
    pr = tp / (fp + tp + np.spacing(1))
    # Interpolated precision at recall r is the best precision at any recall >= r.
    pr = np.maximum.accumulate(pr[:, ::-1], axis=1)[:, ::-1]
    recall[:] = rc[:, -1]
    for t in range(num_thr):
        idx = np.searchsorted(rc[t], RECALL_THRESHOLDS, side="left")
        reached = idx < rc.shape[1]
        precision[t, reached] = pr[t, idx[reached]]
    return precision, recall


def _summary(values: np.ndarray) -> float:
    defined = values[values > -1]
    return float(defined.mean()) if defined.size else -1.0


# -- public API -------------------------------------------------------------------------------------------
def coco_evaluate(predictions: object, ground_truth: Mapping, iou_type: str = "segm") -> dict[str, float]:
    """COCO AP/AR of instance predictions (see the module docstring for the exact protocol).

    Parameters
    ----------
    predictions : list of dict, or dict
        COCO result dicts ``{"image_id", "category_id", "score", "segmentation": RLE, "bbox": [x, y, w, h]}``
        (``segmentation`` needed for ``"segm"``; ``bbox`` or ``segmentation`` for ``"bbox"``), or
        ``{image_id: output}`` with segcore ``predict()`` outputs, converted by :func:`predictions_to_coco`
        (labels used as category ids).
    ground_truth : dict
        COCO-style dataset: ``images`` (``id``, and ``height``/``width`` for ``"segm"``), ``categories``
        (``id``), ``annotations`` (``image_id``, ``category_id``, ``area``, ``iscrowd`` (default 0), optional
        ``ignore``, ``bbox`` ``[x, y, w, h]``, ``segmentation`` as polygons or RLE).
    iou_type : {"segm", "bbox"}
        Overlap of masks or of boxes.

    Returns
    -------
    dict
        ``AP`` (IoU .50:.95), ``AP50``, ``AP75``, ``APs``, ``APm``, ``APl`` (100 detections), ``AR1``,
        ``AR10``, ``AR100``, ``ARs``, ``ARm``, ``ARl``; ``-1.0`` where no category has ground truth to score.
    """
    if iou_type not in _IOU_TYPES:
        raise ValueError(f"iou_type must be one of {_IOU_TYPES}, got {iou_type!r}")
    image_ids, images, category_ids, gts = _parse_ground_truth(ground_truth, iou_type)
    dts = _parse_predictions(predictions, images, set(category_ids), iou_type)

    num_thr, num_rec, num_area = len(IOU_THRESHOLDS), len(RECALL_THRESHOLDS), len(AREA_RANGES)
    shape = (num_thr, num_rec, len(category_ids), num_area, len(MAX_DETECTIONS))
    precision = -np.ones(shape)
    recall = -np.ones((num_thr, len(category_ids), num_area, len(MAX_DETECTIONS)))
    for k, category_id in enumerate(category_ids):
        per_area: list[list[_ImageResult]] = [[] for _ in range(num_area)]
        for image_id in image_ids:
            g, d = gts.get((image_id, category_id), []), dts.get((image_id, category_id), [])
            if not g and not d:
                continue
            for a, result in enumerate(_evaluate_pair(g, d, iou_type)):
                per_area[a].append(result)
        for a in range(num_area):
            for m, max_det in enumerate(MAX_DETECTIONS):
                curves = _precision_recall(per_area[a], max_det) if per_area[a] else None
                if curves is not None:
                    precision[:, :, k, a, m], recall[:, k, a, m] = curves

    t50 = int(np.flatnonzero(np.isclose(IOU_THRESHOLDS, 0.5))[0])
    t75 = int(np.flatnonzero(np.isclose(IOU_THRESHOLDS, 0.75))[0])
    areas = {name: i for i, name in enumerate(AREA_RANGES)}
    last = len(MAX_DETECTIONS) - 1
    stats = {
        "AP": _summary(precision[:, :, :, areas["all"], last]),
        "AP50": _summary(precision[t50, :, :, areas["all"], last]),
        "AP75": _summary(precision[t75, :, :, areas["all"], last]),
        "APs": _summary(precision[:, :, :, areas["small"], last]),
        "APm": _summary(precision[:, :, :, areas["medium"], last]),
        "APl": _summary(precision[:, :, :, areas["large"], last]),
    }
    for m, max_det in enumerate(MAX_DETECTIONS):
        stats[f"AR{max_det}"] = _summary(recall[:, :, areas["all"], m])
    stats["ARs"] = _summary(recall[:, :, areas["small"], last])
    stats["ARm"] = _summary(recall[:, :, areas["medium"], last])
    stats["ARl"] = _summary(recall[:, :, areas["large"], last])
    return stats


def predictions_to_coco(
    outputs: Mapping[int, Mapping], label_to_category: Mapping[int, int] | Sequence[int] | None = None
) -> list[dict]:
    """COCO result dicts from segcore instance ``predict()`` outputs.

    Parameters
    ----------
    outputs : dict
        ``{image_id: {"boxes": (R, 4) xyxy, "labels": (R,), "scores": (R,), "masks": (R, H, W) bool}}``;
        ``masks`` may be absent (box-only results).
    label_to_category : dict or sequence, optional
        Maps a model label to a COCO category id (e.g. the dataset's ``contiguous -> category id`` table);
        labels are used as category ids when omitted.

    Returns
    -------
    list of dict
        ``{"image_id", "category_id", "score", "bbox": [x, y, w, h]}`` plus ``"segmentation"`` (compressed RLE)
        when masks are given.
    """
    if not isinstance(outputs, Mapping):
        raise TypeError(f"outputs must be a dict {{image_id: predict() output}}, got {type(outputs).__name__}")
    results = []
    for image_id, output in outputs.items():
        name = f"outputs[{image_id!r}]"
        image_id = _check_id(image_id, f"image id {image_id!r}")
        if not isinstance(output, Mapping):
            raise ValueError(
                f"{name} must be a dict with boxes, labels, scores (and masks), got {type(output).__name__}"
            )
        for key in ("boxes", "labels", "scores"):
            if key not in output:
                raise ValueError(f"{name} has no {key!r}; expected the keys boxes, labels, scores (and masks)")
        boxes = np.asarray(as_numpy(output["boxes"], f"{name}['boxes']"), dtype=np.float64)
        labels = as_numpy(output["labels"], f"{name}['labels']")
        scores = np.asarray(as_numpy(output["scores"], f"{name}['scores']"), dtype=np.float64)
        count = len(labels) if labels.ndim == 1 else -1
        if boxes.size == 0 and count == 0:
            boxes = boxes.reshape(0, 4)
        if boxes.shape != (count, 4) or scores.shape != (count,) or (count and labels.dtype.kind not in "iu"):
            raise ValueError(
                f"{name} must have boxes (R, 4), integer labels (R,) and scores (R,), got shapes "
                f"{boxes.shape}, {labels.shape} ({labels.dtype}), {scores.shape}"
            )
        if not (np.isfinite(boxes).all() and np.isfinite(scores).all()):
            raise ValueError(f"{name} has non-finite boxes or scores")
        if (boxes[:, 2] < boxes[:, 0]).any() or (boxes[:, 3] < boxes[:, 1]).any():
            raise ValueError(f"{name}['boxes'] must be (x1, y1, x2, y2) with x2 >= x1 and y2 >= y1")
        masks = None
        if output.get("masks") is not None:
            masks = as_numpy(output["masks"], f"{name}['masks']")
            if masks.ndim != 3 or masks.shape[0] != count or masks.dtype.kind not in "biu":
                raise ValueError(
                    f"{name}['masks'] must be (R, H, W) boolean with R={count}, got {masks.shape} {masks.dtype}"
                )
            masks = masks.astype(bool)
        for r in range(count):
            label = int(labels[r])
            if label_to_category is None:
                category_id = label
            else:
                try:
                    category_id = int(label_to_category[label])
                except (KeyError, IndexError):
                    raise ValueError(
                        f"{name}['labels'][{r}] is {label}, which label_to_category does not map"
                    ) from None
            x1, y1, x2, y2 = (float(v) for v in boxes[r])
            result = {
                "image_id": image_id,
                "category_id": category_id,
                "score": float(scores[r]),
                "bbox": [x1, y1, x2 - x1, y2 - y1],
            }
            if masks is not None:
                result["segmentation"] = encode(masks[r])
            results.append(result)
    return results

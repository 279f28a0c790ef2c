"""COCO AP/AR: agreement with pycocotools on random data, hand-computed cases, input checking."""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import io

import numpy as np
import pytest

from segcore.metrics import coco_evaluate, predictions_to_coco
from segcore.metrics.mask_rle import encode

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

STAT_NAMES = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]


# -- random dataset ---------------------------------------------------------------------------------------
def _ellipse(h, w, cx, cy, rx, ry):
    yy, xx = np.mgrid[:h, :w]
    return ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1.0


def _tight_box(mask):
    cols = np.flatnonzero(mask.any(axis=0))
    rows = np.flatnonzero(mask.any(axis=1))
    return [float(cols[0]), float(rows[0]), float(cols[-1] - cols[0] + 1), float(rows[-1] - rows[0] + 1)]


def _uncompressed_rle(mask):
    flat = mask.T.ravel()
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    counts = np.diff(np.concatenate(([0], change, [flat.size]))).tolist()
    if flat[0]:
        counts = [0] + counts
    return {"size": list(mask.shape), "counts": counts}


def _polygon_of_ellipse(cx, cy, rx, ry, n, rng):
    angles = np.sort(rng.uniform(0, 2 * np.pi, n))
    return np.stack([cx + rx * np.cos(angles), cy + ry * np.sin(angles)], axis=1).ravel().tolist()


def make_dataset(seed: int):
    """Random COCO GT + results: several images and categories, crowds, all object sizes, ties, >100 dets."""
    from pycocotools import mask as coco_mask  # rasterises the polygon GT independently of our code

    rng = np.random.default_rng(seed)
    image_ids = [42, 3, 17, 8, 25, 11, 30]
    sizes = [(int(rng.integers(150, 200)), int(rng.integers(150, 220))) for _ in image_ids]
    # Category 9 never has ground truth (its AP is undefined and must be left out); 7 never gets detections.
    categories = [{"id": c, "name": f"c{c}"} for c in (5, 1, 2, 9, 7)]
    images = [{"id": i, "height": h, "width": w} for i, (h, w) in zip(image_ids, sizes)]
    annotations, results = [], []
    ann_id = 1
    for index, (image_id, (h, w)) in enumerate(zip(image_ids, sizes)):
        num_objects = 0 if index == 4 else int(rng.integers(3, 8))
        for obj in range(num_objects):
            kind = rng.choice(["small", "medium", "large"], p=[0.45, 0.35, 0.2])
            radius = {"small": (2, 14), "medium": (18, 45), "large": (60, 75)}[kind]
            rx, ry = rng.uniform(*radius, size=2)
            cx, cy = rng.uniform(0, w), rng.uniform(0, h)
            category = int(rng.choice([5, 1, 2, 7] if obj else [5, 1]))
            crowd = (index, obj) == (0, 1) or bool(rng.random() < 0.1)  # at least one crowd region
            form = "poly" if (not crowd and rng.random() < 0.3) else ("rle" if crowd else "compressed")
            if form == "poly":
                polygon = _polygon_of_ellipse(cx, cy, rx, ry, int(rng.integers(5, 14)), rng)
                segmentation = [polygon]
                mask = coco_mask.decode(coco_mask.merge(coco_mask.frPyObjects(segmentation, h, w))).astype(bool)
            else:
                mask = _ellipse(h, w, cx, cy, rx, ry)
                segmentation = _uncompressed_rle(mask) if form == "rle" else encode(mask)
            if not mask.any():
                continue
            # COCO's area field is not the pixel count (polygon areas); the protocol must use the field.
            area = float(mask.sum() * rng.uniform(0.85, 1.15))
            if rng.random() < 0.15:  # exactly on a range boundary: boundaries belong to both ranges
                area = float(rng.choice([32**2, 96**2]))
            box = (np.array(_tight_box(mask)) + rng.uniform(-0.4, 0.4, 4) * [1, 1, 0, 0]).tolist()
            annotations.append(
                {"id": ann_id, "image_id": image_id, "category_id": category, "segmentation": segmentation,
                 "area": area, "bbox": box, "iscrowd": int(crowd)}
            )
            ann_id += 1
            for _ in range(int(rng.integers(0, 4)) + (3 if crowd else 0)):
                shift = rng.integers(-6, 7, size=2)
                det_mask = np.roll(mask, tuple(shift), axis=(0, 1))
                if crowd:  # detections inside a crowd region: several may match it
                    det_mask = det_mask & _ellipse(h, w, cx + rng.uniform(-rx, rx) / 2, cy, rx / 3, ry / 3)
                if not det_mask.any():
                    continue
                det_category = category if rng.random() < 0.85 else int(rng.choice([5, 1, 2, 9]))
                results.append(_result(image_id, det_category, det_mask, rng))
        # False positives of every size, some in the category without ground truth.
        for _ in range(int(rng.integers(1, 5))):
            rx, ry = rng.uniform(2, 70, size=2)
            det_mask = _ellipse(h, w, rng.uniform(0, w), rng.uniform(0, h), rx, ry)
            if det_mask.any():
                results.append(_result(image_id, int(rng.choice([5, 1, 2, 9])), det_mask, rng))
    # One image/category with far more than 100 detections (the per-image, per-category cap).
    h, w = sizes[1]
    for _ in range(130):
        det_mask = _ellipse(h, w, rng.uniform(0, w), rng.uniform(0, h), *rng.uniform(3, 40, size=2))
        if det_mask.any():
            results.append(_result(image_ids[1], 5, det_mask, rng))
    gt = {"images": images, "annotations": annotations, "categories": categories}
    return gt, results


def _result(image_id, category, mask, rng):
    # Scores rounded to one decimal place for a third of the results: ties must break like COCOeval's.
    score = float(rng.random())
    if rng.random() < 0.33:
        score = round(score, 1)
    box = (np.array(_tight_box(mask)) + rng.uniform(-1.5, 1.5, 4)).clip(min=0).tolist()
    return {"image_id": image_id, "category_id": category, "score": score, "segmentation": encode(mask), "bbox": box}


def pycocotools_stats(gt, results, iou_type):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(copy.deepcopy(results))  # loadRes writes into the dicts it gets
        evaluator = COCOeval(coco_gt, coco_dt, iou_type)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return dict(zip(STAT_NAMES, evaluator.stats.tolist()))


# -- agreement with pycocotools ---------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("iou_type", ["segm", "bbox"])
@pytest.mark.parametrize("with_boxes", [True, False], ids=["bbox+segm results", "segm-only results"])
def test_matches_pycocotools_on_random_data(seed, iou_type, with_boxes):
    pytest.importorskip("pycocotools", reason="pycocotools is the reference implementation (test extra)")
    gt, results = make_dataset(seed)
    if not with_boxes:
        # Mask-only results: detection areas come from the masks, boxes (for "bbox") from the masks' extent.
        results = [{k: v for k, v in r.items() if k != "bbox"} for r in results]
    snapshot = copy.deepcopy((gt, results))
    expected = pycocotools_stats(gt, results, iou_type)
    ours = coco_evaluate(results, gt, iou_type=iou_type)
    assert list(ours) == STAT_NAMES
    np.testing.assert_allclose([ours[k] for k in STAT_NAMES], [expected[k] for k in STAT_NAMES], rtol=0, atol=1e-6)
    # The data must be rich enough to exercise every summary (none of them undefined).
    assert all(v > -1 for v in expected.values())
    assert (gt, results) == snapshot  # inputs are not modified


def test_predict_outputs_match_pycocotools():
    pytest.importorskip("pycocotools", reason="pycocotools is the reference implementation (test extra)")
    gt, results = make_dataset(3)
    from pycocotools import mask as coco_mask

    heights = {im["id"]: (im["height"], im["width"]) for im in gt["images"]}
    # Rebuild the results as segcore predict() outputs: xyxy boxes, labels, scores, (R, H, W) masks.
    outputs = {}
    for image_id, (h, w) in heights.items():
        mine = [r for r in results if r["image_id"] == image_id]
        boxes = np.array([[b[0], b[1], b[0] + b[2], b[1] + b[3]] for b in (r["bbox"] for r in mine)]).reshape(-1, 4)
        masks = np.array([coco_mask.decode(r["segmentation"]).astype(bool) for r in mine]).reshape(-1, h, w)
        labels = np.array([r["category_id"] for r in mine], dtype=np.int64)
        scores = np.array([r["score"] for r in mine])
        outputs[image_id] = {"boxes": boxes, "labels": labels, "scores": scores, "masks": masks}
    converted = predictions_to_coco(outputs)
    assert len(converted) == len(results)
    for iou_type in ("segm", "bbox"):
        expected = pycocotools_stats(gt, converted, iou_type)
        ours = coco_evaluate(outputs, gt, iou_type=iou_type)
        np.testing.assert_allclose([ours[k] for k in STAT_NAMES], [expected[k] for k in STAT_NAMES], atol=1e-6)


# -- hand-computed cases ----------------------------------------------------------------------------------
def _square(h, w, x0, y0, size):
    mask = np.zeros((h, w), dtype=bool)
    mask[y0 : y0 + size, x0 : x0 + size] = True
    return mask


def _gt_ann(ann_id, mask, category=1, **extra):
    return {"id": ann_id, "image_id": 1, "category_id": category, "segmentation": encode(mask),
            "area": float(mask.sum()), "bbox": _tight_box(mask), "iscrowd": 0, **extra}


def _det(mask, score, category=1):
    return {"image_id": 1, "category_id": category, "score": score, "segmentation": encode(mask)}


def _dataset(anns):
    return {"images": [{"id": 1, "height": 64, "width": 64}], "annotations": anns, "categories": [{"id": 1}, {"id": 2}]}


def test_perfect_detections_score_one_and_undefined_is_minus_one():
    a, b = _square(64, 64, 2, 2, 10), _square(64, 64, 30, 30, 20)  # areas 100 (small) and 400 (small)
    stats = coco_evaluate([_det(a, 0.9), _det(b, 0.8)], _dataset([_gt_ann(1, a), _gt_ann(2, b)]))
    assert stats["AP"] == pytest.approx(1.0) and stats["AR100"] == pytest.approx(1.0)
    assert stats["APs"] == pytest.approx(1.0)
    # No medium or large ground truth anywhere: undefined, reported as -1. Category 2 has none either.
    assert stats["APm"] == stats["APl"] == stats["ARm"] == stats["ARl"] == -1.0
    # One detection per image: recall 1/2 at maxDets=1.
    assert stats["AR1"] == pytest.approx(0.5)


def test_hand_computed_precision_recall_curve():
    # Two GT squares; detections by score: hit A (IoU 1), miss, hit B (IoU 1).
    # Precision/recall steps: (1, 1/2), (1/2, 1/2), (2/3, 1). Interpolated precision is 1 for recall <= .5
    # (51 points) and 2/3 for recall in (.5, 1] (50 points): AP = (51 + 50 * 2/3) / 101 at every threshold.
    a, b, miss = _square(64, 64, 0, 0, 10), _square(64, 64, 40, 40, 10), _square(64, 64, 20, 0, 8)
    stats = coco_evaluate([_det(a, 0.9), _det(miss, 0.8), _det(b, 0.7)], _dataset([_gt_ann(1, a), _gt_ann(2, b)]))
    expected = (51 + 50 * 2 / 3) / 101
    assert stats["AP"] == pytest.approx(expected, abs=1e-12)
    assert stats["AP50"] == pytest.approx(expected, abs=1e-12)
    assert stats["AR10"] == pytest.approx(1.0)


def test_iou_thresholds_partial_overlap():
    # Detection = the GT's 100 pixels + 22 more: IoU 100/122 = 0.82, a match at thresholds .50-.80
    # (7 of 10), so AP = AR = 0.7.
    gt_mask = _square(64, 64, 10, 10, 10)
    det_mask = gt_mask.copy()
    det_mask[10:21, 20:22] = True
    stats = coco_evaluate([_det(det_mask, 0.5)], _dataset([_gt_ann(1, gt_mask)]))
    assert stats["AP"] == pytest.approx(0.7) and stats["AR100"] == pytest.approx(0.7)
    assert stats["AP75"] == pytest.approx(1.0) and stats["AP50"] == pytest.approx(1.0)


def test_crowd_region_absorbs_many_detections_without_false_positives():
    crowd = _square(64, 64, 0, 0, 40)
    person = _square(64, 64, 45, 45, 12)
    anns = [_gt_ann(1, person), {**_gt_ann(2, crowd), "segmentation": _uncompressed_rle(crowd), "iscrowd": 1}]
    # Three detections fully inside the crowd region: IoU against a crowd is inter / det area = 1, so they
    # are matched to it (repeatedly) and ignored. With a normal IoU (< 0.04) they would be false positives.
    dets = [_det(_square(64, 64, x, 5, 6), 0.95 - 0.01 * i) for i, x in enumerate((2, 12, 22))]
    dets.append(_det(person, 0.5))
    stats = coco_evaluate(dets, _dataset(anns))
    assert stats["AP"] == pytest.approx(1.0) and stats["AR100"] == pytest.approx(1.0)
    # Same detections with the region not marked as crowd: three false positives ranked first.
    anns[1]["iscrowd"] = 0
    stats = coco_evaluate(dets, _dataset(anns))
    # Now 2 GTs; the crowd-square GT is unmatched, the person found at rank 4: precision 1/4, recall 1/2.
    assert stats["AP"] == pytest.approx(51 * 0.25 / 101)


def test_ignore_flag_is_honoured():
    # GT B carries "ignore": 1. Detection on B (highest score) is neither TP nor FP; A found -> AP 1.
    # Were B a regular GT, recall would stop at 1/2 and AP would be 51/101.
    a, b = _square(64, 64, 0, 0, 10), _square(64, 64, 40, 40, 10)
    dets = [_det(b, 0.9), _det(a, 0.8)]
    stats = coco_evaluate(dets, _dataset([_gt_ann(1, a), _gt_ann(2, b, ignore=1)]))
    assert stats["AP"] == pytest.approx(1.0)
    stats = coco_evaluate([_det(a, 0.8)], _dataset([_gt_ann(1, a), _gt_ann(2, b)]))
    assert stats["AP"] == pytest.approx(51 / 101)


def test_equal_iou_goes_to_the_later_ground_truth():
    # det1 overlaps both GTs with the same IoU (90/110); COCOeval's scan gives it the later one (GT2), which
    # leaves GT1 for det2 (IoU 80/120 = .667 with GT1, .43 with GT2). Thresholds .50-.65: 2 TPs, AP 1;
    # .70-.80: det2 is a FP after the TP, recall 1/2, AP 51/101; .85-.95: no match, AP 0.
    gt = {"images": [{"id": 1}], "categories": [{"id": 1}],
          "annotations": [{"id": i + 1, "image_id": 1, "category_id": 1, "bbox": box, "area": 100.0, "iscrowd": 0}
                          for i, box in enumerate(([0, 0, 10, 10], [2, 0, 10, 10]))]}
    dets = [{"image_id": 1, "category_id": 1, "score": s, "bbox": box}
            for s, box in ((0.9, [1, 0, 10, 10]), (0.8, [-2, 0, 10, 10]))]
    stats = coco_evaluate(dets, gt, iou_type="bbox")
    assert stats["AP"] == pytest.approx((4 * 1 + 3 * 51 / 101) / 10, abs=1e-12)
    if importlib.util.find_spec("pycocotools") is not None:
        assert stats["AP"] == pytest.approx(pycocotools_stats(gt, dets, "bbox")["AP"], abs=1e-12)


def test_area_range_bounds_are_inclusive():
    mask = _square(64, 64, 0, 0, 10)
    stats = coco_evaluate([_det(mask, 0.9)], _dataset([{**_gt_ann(1, mask), "area": 32.0**2}]))
    assert stats["APs"] == pytest.approx(1.0) and stats["APm"] == pytest.approx(1.0) and stats["APl"] == -1.0


def test_area_ranges_use_the_gt_area_field():
    mask = _square(64, 64, 0, 0, 10)  # 100 pixels, but annotated as medium
    stats = coco_evaluate([_det(mask, 0.9)], _dataset([{**_gt_ann(1, mask), "area": 2000.0}]))
    assert stats["APm"] == pytest.approx(1.0) and stats["APs"] == -1.0


def test_bbox_iou_type_with_hand_boxes():
    gt = {"images": [{"id": 1}], "categories": [{"id": 1}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "area": 100.0}]}
    # Box IoU: 10x7.2 overlap / (100 + 72 - 72) = 0.72 -> matched at .50 .. .70 (5 of 10 thresholds).
    det = {"image_id": 1, "category_id": 1, "score": 1.0, "bbox": [0, 2.8, 10, 7.2]}
    stats = coco_evaluate([det], gt, iou_type="bbox")
    assert stats["AP"] == pytest.approx(0.5) and stats["AR1"] == pytest.approx(0.5)


def test_no_predictions_gives_zero_ap():
    a = _square(64, 64, 0, 0, 10)
    stats = coco_evaluate([], _dataset([_gt_ann(1, a)]))
    assert stats["AP"] == 0.0 and stats["AR100"] == 0.0 and stats["APm"] == -1.0


def test_polygon_ground_truth():
    # A 10x10 square given as a polygon with corners on pixel edges rasterises to exactly those 100 pixels.
    square = _square(64, 64, 5, 5, 10)
    ann = {**_gt_ann(1, square), "segmentation": [[5, 5, 15, 5, 15, 15, 5, 15]]}
    stats = coco_evaluate([_det(square, 0.9)], _dataset([ann]))
    assert stats["AP"] == pytest.approx(1.0)


def test_accepts_segcore_tensors_in_predict_outputs():
    import segcore

    a = _square(64, 64, 0, 0, 10)
    outputs = {1: {"boxes": segcore.tensor(np.array([[0.0, 0.0, 10.0, 10.0]], dtype=np.float32)),
                   "labels": segcore.tensor(np.array([1])), "scores": segcore.tensor(np.array([0.5], dtype=np.float32)),
                   "masks": segcore.tensor(a[None])}}
    converted = predictions_to_coco(outputs)
    assert converted[0]["bbox"] == [0.0, 0.0, 10.0, 10.0] and converted[0]["segmentation"] == encode(a)
    assert coco_evaluate(outputs, _dataset([_gt_ann(1, a)]))["AP"] == pytest.approx(1.0)


def test_label_to_category_mapping():
    a = _square(64, 64, 0, 0, 10)
    outputs = {1: {"boxes": np.array([[0.0, 0, 10, 10]]), "labels": np.array([0]), "scores": [0.5], "masks": a[None]}}
    assert predictions_to_coco(outputs, label_to_category=[2])[0]["category_id"] == 2
    assert predictions_to_coco(outputs, label_to_category={0: 1})[0]["category_id"] == 1
    with pytest.raises(ValueError, match="label_to_category"):
        predictions_to_coco(outputs, label_to_category={3: 1})


# -- input checking ---------------------------------------------------------------------------------------
def test_bad_inputs_raise_with_names():
    a = _square(64, 64, 0, 0, 10)
    gt = _dataset([_gt_ann(1, a)])
    with pytest.raises(ValueError, match="iou_type.*'keypoints'"):
        coco_evaluate([], gt, iou_type="keypoints")
    with pytest.raises(ValueError, match=r"predictions\[0\]\['image_id'\] is 7"):
        coco_evaluate([{**_det(a, 0.5), "image_id": 7}], gt)
    with pytest.raises(ValueError, match=r"predictions\[0\]\['category_id'\] is 3"):
        coco_evaluate([_det(a, 0.5, category=3)], gt)
    with pytest.raises(ValueError, match=r"predictions\[0\] has no 'score'"):
        coco_evaluate([{k: v for k, v in _det(a, 0.5).items() if k != "score"}], gt)
    with pytest.raises(ValueError, match=r"predictions\[0\] has no 'segmentation'"):
        coco_evaluate([{"image_id": 1, "category_id": 1, "score": 0.5, "bbox": [0, 0, 1, 1]}], gt)
    with pytest.raises(ValueError, match=r"size \[32, 32\], expected the image size \[64, 64\]"):
        coco_evaluate([_det(np.zeros((32, 32), bool), 0.5)], gt)
    with pytest.raises(ValueError, match=r"score.*finite"):
        coco_evaluate([_det(a, float("nan"))], gt)
    with pytest.raises(ValueError, match=r"'bbox'\] must be \[x, y, width, height\]"):
        coco_evaluate([{**_det(a, 0.5), "bbox": [0, 0, -1, 2]}], gt, iou_type="bbox")
    with pytest.raises(ValueError, match=r"ground_truth must have the key 'categories'"):
        coco_evaluate([], {"images": [], "annotations": []})
    with pytest.raises(ValueError, match=r"annotations'\]\[0\] has no 'area'"):
        coco_evaluate([], _dataset([{k: v for k, v in _gt_ann(1, a).items() if k != "area"}]))
    with pytest.raises(ValueError, match=r"annotations'\]\[0\]\['segmentation'\] is not a valid"):
        coco_evaluate([], _dataset([{**_gt_ann(1, a), "segmentation": [[1, 2, 3, 4]]}]))
    with pytest.raises(TypeError, match="ground_truth must be a COCO-style dict"):
        coco_evaluate([], [gt])
    with pytest.raises(ValueError, match=r"boxes \(R, 4\)"):
        predictions_to_coco({1: {"boxes": np.zeros((2, 4)), "labels": np.array([1]), "scores": np.array([0.5])}})

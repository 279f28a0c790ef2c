"""COCO run-length encoding of binary masks, written for segcore.

A mask of shape ``(H, W)`` is read in column-major (Fortran) order and stored as the lengths of alternating
runs, starting with a run of zeros (possibly of length 0): ``{"size": [H, W], "counts": ...}``. ``counts``
is either a list of ints ("uncompressed", as in COCO crowd annotations) or a string ("compressed", as in COCO
result files): each count, minus the count two places earlier from the fourth on, is written as 5-bit
groups, least significant first, in characters ``chr(48 + group)`` with bit 0x20 meaning "more groups follow"
and bit 0x10 of the last group carrying the sign. Functions here produce the compressed form as ``str`` and
read ``str``, ``bytes`` and count lists, so RLE from COCO annotation and result files round-trips.

Polygons are rasterised exactly as the COCO toolbox does (``maskApi.c: rleFrPoly``): vertices are scaled
by 5 and rounded, edges are walked on that finer grid, and a pixel is inside when its centre lies below a
downsampled crossing of the boundary in its column. Reproducing that rule (rather than, say, a
point-in-polygon test on pixel centres) is what lets our COCO AP agree with published numbers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from numbers import Integral

import numpy as np

from ._arrays import as_numpy

__all__ = [
    "area",
    "bbox_iou",
    "counts_from_string",
    "counts_to_string",
    "decode",
    "encode",
    "mask_iou",
    "merge",
    "polygons_to_mask",
    "segmentation_to_mask",
    "to_bbox",
    "to_rle",
]

# Upsampling factor of the polygon walk in the COCO toolbox; part of the rasterisation rule, not a tunable.
_POLY_SCALE = 5.0


# -- counts <-> string ------------------------------------------------------------------------------------
def counts_to_string(counts: Sequence[int] | np.ndarray) -> str:
    """Compressed COCO string of a list of run lengths."""
    counts = [int(c) for c in np.asarray(counts, dtype=np.int64).ravel()]
    if any(c < 0 for c in counts):
        raise ValueError(f"counts must be non-negative run lengths, got {counts[:20]}")
    chars = []
    for i, value in enumerate(counts):
        # Runs two apart are similar in length (same-colour runs in neighbouring columns), so store the delta.
        x = value - counts[i - 2] if i > 2 else value
        more = True
        while more:
            group = x & 0x1F
            x >>= 5
            more = x != -1 if group & 0x10 else x != 0
            if more:
                group |= 0x20
            chars.append(chr(group + 48))
    return "".join(chars)


def counts_from_string(text: str | bytes) -> np.ndarray:
    """Run lengths (int64) of a compressed COCO counts string."""
    if isinstance(text, bytes):
        text = text.decode("ascii")
    if not isinstance(text, str):
        raise TypeError(f"counts must be a str or bytes, got {type(text).__name__}")
    counts: list[int] = []
    pos, n = 0, len(text)
    while pos < n:
        x, shift, more = 0, 0, True
        while more:
            if pos >= n:
                raise ValueError(f"counts string {text!r} ends inside a number")
            group = ord(text[pos]) - 48
            if not 0 <= group < 64:
                raise ValueError(f"counts string has character {text[pos]!r}, expected characters '0'..'o'")
            x |= (group & 0x1F) << shift
            more = bool(group & 0x20)
            pos += 1
            shift += 5
            if not more and group & 0x10:
                x -= 1 << shift
        if len(counts) > 2:
            x += counts[-2]
        if x < 0:
            raise ValueError(f"counts string {text!r} decodes to a negative run length")
        counts.append(x)
    return np.asarray(counts, dtype=np.int64)


# -- RLE dicts --------------------------------------------------------------------------------------------
def _check_size(size: object, name: str) -> tuple[int, int]:
    if (
        not isinstance(size, (Sequence, np.ndarray))
        or len(size) != 2
        or not all(isinstance(s, Integral) and not isinstance(s, bool) and s >= 0 for s in size)
    ):
        raise ValueError(f"{name} must be [height, width] with non-negative ints, got {size!r}")
    return int(size[0]), int(size[1])


def _rle_counts(rle: object, name: str = "rle") -> tuple[tuple[int, int], np.ndarray]:
    """``((H, W), counts)`` of an RLE dict with compressed or uncompressed counts, checked for consistency."""
    if not isinstance(rle, Mapping) or "size" not in rle or "counts" not in rle:
        raise ValueError(f"{name} must be a dict with 'size' and 'counts', got {rle!r:.200}")
    h, w = _check_size(rle["size"], f"{name}['size']")
    raw = rle["counts"]
    if isinstance(raw, (str, bytes)):
        counts = counts_from_string(raw)
    else:
        counts = np.asarray(raw)
        if counts.ndim != 1 or (counts.size and counts.dtype.kind not in "iu"):
            raise ValueError(f"{name}['counts'] must be a string or a flat list of ints, got {raw!r:.200}")
        counts = counts.astype(np.int64)
        if (counts < 0).any():
            raise ValueError(f"{name}['counts'] holds a negative run length: {raw!r:.200}")
    if int(counts.sum()) != h * w:
        raise ValueError(
            f"{name}['counts'] covers {int(counts.sum())} pixels, expected height*width = {h}*{w} = {h * w}"
        )
    return (h, w), counts


def _encode_counts(mask: np.ndarray) -> np.ndarray:
    flat = mask.T.ravel()  # column-major, as COCO stores masks
    if flat.size == 0:
        return np.zeros(1, dtype=np.int64)
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    edges = np.concatenate(([0], change, [flat.size]))
    counts = np.diff(edges)
    if flat[0]:
        counts = np.concatenate(([0], counts))
    return counts.astype(np.int64)


def _decode_counts(counts: np.ndarray, h: int, w: int) -> np.ndarray:
    values = (np.arange(counts.size) % 2).astype(bool)
    return np.repeat(values, counts).reshape(w, h).T


def encode(mask: object) -> dict:
    """Compressed COCO RLE ``{"size": [H, W], "counts": str}`` of a 2-D binary mask (bool or 0/1 ints)."""
    mask = as_numpy(mask, "mask")
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D (H, W), got shape {mask.shape}")
    if mask.dtype.kind not in "biu":
        raise TypeError(f"mask must be boolean or integer 0/1, got dtype {mask.dtype}")
    if mask.dtype.kind != "b" and mask.size and not np.isin(mask, (0, 1)).all():
        raise ValueError("mask must hold only 0 and 1 (or be boolean)")
    h, w = mask.shape
    return {"size": [h, w], "counts": counts_to_string(_encode_counts(mask.astype(bool)))}


def decode(rle: Mapping) -> np.ndarray:
    """Boolean ``(H, W)`` mask of an RLE dict (compressed or uncompressed counts)."""
    (h, w), counts = _rle_counts(rle)
    return _decode_counts(counts, h, w)


def area(rle: Mapping) -> int:
    """Number of foreground pixels of an RLE dict."""
    _, counts = _rle_counts(rle)
    return int(counts[1::2].sum())


def _mask_bbox(mask: np.ndarray) -> np.ndarray:
    cols = np.flatnonzero(mask.any(axis=0))
    if cols.size == 0:
        return np.zeros(4, dtype=np.float64)
    rows = np.flatnonzero(mask.any(axis=1))
    return np.array(
        [cols[0], rows[0], cols[-1] - cols[0] + 1, rows[-1] - rows[0] + 1], dtype=np.float64
    )


def to_bbox(rle: Mapping) -> np.ndarray:
    """Tight box ``[x, y, w, h]`` (float64) around the foreground of an RLE; zeros for an empty mask."""
    return _mask_bbox(decode(rle))


def merge(rles: Sequence[Mapping], intersect: bool = False) -> dict:
    """Union (or intersection, with ``intersect=True``) of RLEs of one size, as a compressed RLE."""
    if len(rles) == 0:
        raise ValueError("rles must hold at least one RLE, got an empty sequence")
    masks = [decode(r) for r in rles]
    shapes = {m.shape for m in masks}
    if len(shapes) != 1:
        raise ValueError(f"rles must all have the same size, got sizes {sorted(shapes)}")
    combined = np.logical_and.reduce(masks) if intersect else np.logical_or.reduce(masks)
    return encode(combined)


# -- polygons ---------------------------------------------------------------------------------------------
def _polygon_boundary(xy: np.ndarray, h: int, w: int) -> np.ndarray:
    """Column-major indices where the mask of one polygon toggles (see the module docstring)."""
    x = np.trunc(_POLY_SCALE * xy[0::2] + 0.5).astype(np.int64)  # C's (int) cast truncates toward zero
    y = np.trunc(_POLY_SCALE * xy[1::2] + 0.5).astype(np.int64)
    x = np.append(x, x[0])
    y = np.append(y, y[0])
    us, vs = [], []
    for j in range(len(xy) // 2):
        xs, xe, ys, ye = int(x[j]), int(x[j + 1]), int(y[j]), int(y[j + 1])
        dx, dy = abs(xe - xs), abs(ye - ys)
        # Always walk from the lower end so both directions of an edge give the same points.
        flip = (dx >= dy and xs > xe) or (dx < dy and ys > ye)
        if flip:
            xs, xe, ys, ye = xe, xs, ye, ys
        if dx >= dy:
            t = np.arange(dx + 1)
            if flip:
                t = dx - t
            # A zero-length edge gives one point whose y is never read (its x equals its neighbours').
            slope = (ye - ys) / dx if dx else 0.0
            us.append(t + xs)
            vs.append(np.trunc(ys + slope * t + 0.5).astype(np.int64))
        else:
            t = np.arange(dy + 1)
            if flip:
                t = dy - t
            slope = (xe - xs) / dy
            vs.append(t + ys)
            us.append(np.trunc(xs + slope * t + 0.5).astype(np.int64))
    u = np.concatenate(us)
    v = np.concatenate(vs)
    step = np.flatnonzero(u[1:] != u[:-1]) + 1  # points where the walk moves to another fine column
    u_cur, u_prev, v_cur, v_prev = u[step], u[step - 1], v[step], v[step - 1]
    xd = np.where(u_cur < u_prev, u_cur, u_cur - 1).astype(np.float64)
    xd = (xd + 0.5) / _POLY_SCALE - 0.5
    keep = (np.floor(xd) == xd) & (xd >= 0) & (xd <= w - 1)  # crossings at pixel-column centres only
    yd = np.where(v_cur < v_prev, v_cur, v_prev).astype(np.float64)
    yd = (yd + 0.5) / _POLY_SCALE - 0.5
    yd = np.ceil(np.clip(yd, 0, h))
    return xd[keep].astype(np.int64) * h + yd[keep].astype(np.int64)


def _polygon_mask(polygon: object, h: int, w: int, name: str) -> np.ndarray:
    xy = np.asarray(polygon, dtype=np.float64) if isinstance(polygon, (Sequence, np.ndarray)) else None
    if xy is None or xy.ndim != 1 or xy.size < 6 or xy.size % 2 or not np.isfinite(xy).all():
        raise ValueError(
            f"{name} must be a flat list [x1, y1, x2, y2, ...] of at least 3 finite points, got {polygon!r:.200}"
        )
    boundary = _polygon_boundary(xy, h, w)
    toggles = np.bincount(boundary[boundary < h * w], minlength=h * w)
    # Coinciding boundary points cancel in pairs, exactly as the toolbox's run merging does.
    inside = (np.cumsum(toggles) % 2).astype(bool)
    return inside.reshape(w, h).T


def polygons_to_mask(polygons: Sequence[Sequence[float]], height: int, width: int) -> np.ndarray:
    """Boolean ``(height, width)`` union of COCO polygons ``[[x1, y1, x2, y2, ...], ...]`` (pixel units,
    ``(0, 0)`` the top-left corner of the first pixel), rasterised with the COCO toolbox's rule."""
    h, w = _check_size([height, width], "[height, width]")
    if isinstance(polygons, (str, bytes)) or not isinstance(polygons, Sequence) or len(polygons) == 0:
        raise ValueError(f"polygons must be a non-empty list of polygons, got {polygons!r:.200}")
    mask = np.zeros((h, w), dtype=bool)
    for i, polygon in enumerate(polygons):
        mask |= _polygon_mask(polygon, h, w, f"polygons[{i}]")
    return mask


def segmentation_to_mask(segmentation: object, height: int, width: int) -> np.ndarray:
    """Boolean ``(height, width)`` mask of any COCO ``segmentation``: polygons, uncompressed or compressed RLE.

    ``height``/``width`` are the image's; an RLE of another size is an error.
    """
    h, w = _check_size([height, width], "[height, width]")
    if isinstance(segmentation, Mapping):
        size, counts = _rle_counts(segmentation, "segmentation")
        if size != (h, w):
            raise ValueError(f"segmentation has size {list(size)}, expected the image size [{h}, {w}]")
        return _decode_counts(counts, h, w)
    if isinstance(segmentation, Sequence) and not isinstance(segmentation, (str, bytes)):
        return polygons_to_mask(segmentation, h, w)
    raise ValueError(f"segmentation must be a polygon list or an RLE dict, got {segmentation!r:.200}")


def to_rle(segmentation: object, height: int, width: int) -> dict:
    """Compressed RLE of any COCO ``segmentation`` (see :func:`segmentation_to_mask`)."""
    return encode(segmentation_to_mask(segmentation, height, width))


# -- IoU --------------------------------------------------------------------------------------------------
def _check_iscrowd(iscrowd: object, n: int) -> np.ndarray:
    if iscrowd is None:
        return np.zeros(n, dtype=bool)
    flags = np.asarray(iscrowd)
    if flags.shape != (n,) or (flags.size and flags.dtype.kind not in "biu"):
        raise ValueError(f"iscrowd must be {n} booleans (one per ground truth), got {iscrowd!r:.200}")
    return flags.astype(bool)


def _check_boxes(boxes: object, name: str) -> np.ndarray:
    array = np.asarray(as_numpy(boxes, name), dtype=np.float64)
    if array.size == 0:
        array = array.reshape(0, 4)
    if array.ndim != 2 or array.shape[1] != 4 or not np.isfinite(array).all():
        raise ValueError(f"{name} must be (N, 4) finite [x, y, w, h] boxes, got shape {array.shape}")
    return array


def bbox_iou(dt: object, gt: object, iscrowd: object = None) -> np.ndarray:
    """``(D, G)`` IoU of ``[x, y, w, h]`` boxes; against a crowd box the denominator is the detection's area.

    The arithmetic follows the COCO toolbox operation for operation, so results are bit-identical.
    """
    d = _check_boxes(dt, "dt")
    g = _check_boxes(gt, "gt")
    crowd = _check_iscrowd(iscrowd, len(g))
    iw = np.minimum(d[:, None, 2] + d[:, None, 0], g[None, :, 2] + g[None, :, 0]) - np.maximum(
        d[:, None, 0], g[None, :, 0]
    )
    ih = np.minimum(d[:, None, 3] + d[:, None, 1], g[None, :, 3] + g[None, :, 1]) - np.maximum(
        d[:, None, 1], g[None, :, 1]
    )
    inter = iw * ih
    d_area = (d[:, 2] * d[:, 3])[:, None]
    union = np.where(crowd[None, :], d_area, d_area + (g[:, 2] * g[:, 3])[None, :] - inter)
    overlap = (iw > 0) & (ih > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(overlap, inter / np.where(overlap, union, 1.0), 0.0)


class _CroppedMask:
    """A mask kept as its bounding-box crop: IoU only needs the pixels inside both boxes."""

    __slots__ = ("x0", "y0", "x1", "y1", "crop", "area")

    def __init__(self, mask: np.ndarray) -> None:
        x, y, bw, bh = (int(v) for v in _mask_bbox(mask))
        self.x0, self.y0, self.x1, self.y1 = x, y, x + bw, y + bh
        self.crop = mask[y : y + bh, x : x + bw].copy()
        self.area = int(self.crop.sum())


def _cropped_mask_iou(dts: Sequence[_CroppedMask], gts: Sequence[_CroppedMask], crowd: np.ndarray) -> np.ndarray:
    out = np.zeros((len(dts), len(gts)), dtype=np.float64)
    for i, d in enumerate(dts):
        for j, g in enumerate(gts):
            x0, y0 = max(d.x0, g.x0), max(d.y0, g.y0)
            x1, y1 = min(d.x1, g.x1), min(d.y1, g.y1)
            if x0 >= x1 or y0 >= y1:
                continue
            d_part = d.crop[y0 - d.y0 : y1 - d.y0, x0 - d.x0 : x1 - d.x0]
            g_part = g.crop[y0 - g.y0 : y1 - g.y0, x0 - g.x0 : x1 - g.x0]
            inter = np.count_nonzero(d_part & g_part)
            if inter:
                union = d.area if crowd[j] else d.area + g.area - inter
                out[i, j] = inter / union
    return out


def mask_iou(dt: Sequence[Mapping], gt: Sequence[Mapping], iscrowd: object = None) -> np.ndarray:
    """``(D, G)`` IoU of RLE masks; against a crowd mask the denominator is the detection's area.

    All RLEs must have the same size.
    """
    crowd = _check_iscrowd(iscrowd, len(gt))
    dt_masks = [decode(r) for r in dt]
    gt_masks = [decode(r) for r in gt]
    shapes = {m.shape for m in dt_masks + gt_masks}
    if len(shapes) > 1:
        raise ValueError(f"dt and gt masks must all have the same size, got sizes {sorted(shapes)}")
    return _cropped_mask_iou([_CroppedMask(m) for m in dt_masks], [_CroppedMask(m) for m in gt_masks], crowd)

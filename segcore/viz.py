"""Visualisation: colour label maps, overlays of label maps and instances on images, legends, PNG files.

Everything works on NumPy ``(H, W, 3)`` uint8 images and is drawn with Pillow; PNG files are written
atomically (temporary file + ``os.replace``). matplotlib is optional and only used, when installed, by
:func:`plot_history` (training curves), which otherwise draws with Pillow.
"""

from __future__ import annotations

import colorsys
import numbers
import os
from io import BytesIO
from typing import Any, Mapping, Sequence

import numpy as np

from .io import atomic_write

__all__ = [
    "colormap",
    "colorize",
    "overlay",
    "draw_instances",
    "legend",
    "side_by_side",
    "stack",
    "denormalize",
    "save_png",
    "plot_history",
]

IGNORE_COLOUR = (224, 224, 192)  # VOC's colour for void pixels


# -- files ------------------------------------------------------------------------------------------------
def _check_image(image: Any, name: str = "image") -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        found = f"shape {image.shape}, dtype {image.dtype}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ValueError(
            f"{name} must be an (H, W, 3) uint8 RGB array, got {found} "
            "(use denormalize() for normalised (3, H, W) float images)"
        )
    return image


def _check_labels(labels: Any, shape: tuple[int, int] | None, name: str = "labels") -> np.ndarray:
    labels = labels.numpy() if hasattr(labels, "numpy") and not isinstance(labels, np.ndarray) else labels
    if not isinstance(labels, np.ndarray) or labels.ndim != 2 or labels.dtype.kind not in "iu":
        found = (
            f"shape {labels.shape}, dtype {labels.dtype}" if isinstance(labels, np.ndarray) else type(labels).__name__
        )
        raise ValueError(f"{name} must be an (H, W) integer label map, got {found}")
    if shape is not None and labels.shape != shape:
        raise ValueError(f"{name} has shape {labels.shape}, expected the image's {shape}")
    if labels.size and labels.min() < 0:
        raise ValueError(f"{name} holds negative labels (min {labels.min()})")
    return labels


def _palette(palette: Any, n: int) -> np.ndarray:
    """``palette`` as ``(>= n, 3)`` uint8, extended with the default colours where it is shorter."""
    if palette is None:
        return colormap(max(n, 1))
    array = np.asarray(palette)
    if array.ndim != 2 or array.shape[1] != 3 or array.dtype.kind not in "iu" or array.size and (
        array.min() < 0 or array.max() > 255
    ):
        raise ValueError(f"palette must be an (K, 3) array of ints in [0, 255], got shape {array.shape}")
    array = array.astype(np.uint8)
    if len(array) < n:
        array = np.concatenate([array, colormap(n)[len(array) :]])
    return array


# -- colours ----------------------------------------------------------------------------------------------
def colormap(n: int = 256) -> np.ndarray:
    """``(n, 3)`` uint8 colours for labels ``0..n-1``: the Pascal VOC colour map (label 0 black)."""
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    labels = np.arange(n, dtype=np.int64)
    out = np.zeros((n, 3), dtype=np.int64)
    for shift in range(8):
        for channel in range(3):
            out[:, channel] |= ((labels >> (3 * shift + channel)) & 1) << (7 - shift)
    return out.astype(np.uint8)


def _instance_colours(n: int) -> np.ndarray:
    """``n`` well separated bright colours (golden-ratio hue steps), for telling instances apart."""
    hues = (np.arange(n) * 0.618033988749895) % 1.0
    return np.asarray([colorsys.hsv_to_rgb(h, 0.75, 1.0) for h in hues], dtype=np.float64).reshape(n, 3) * 255


def colorize(
    labels: Any, palette: Any = None, *, ignore_index: int | None = 255, ignore_colour: Sequence[int] = IGNORE_COLOUR
) -> np.ndarray:
    """An ``(H, W, 3)`` uint8 colour image of a label map; ``ignore_index`` pixels get ``ignore_colour``."""
    labels = _check_labels(labels, None)
    top = int(labels.max()) + 1 if labels.size else 1
    colours = _palette(palette, top)
    image = colours[np.minimum(labels, len(colours) - 1)]
    if ignore_index is not None:
        image[labels == ignore_index] = np.asarray(ignore_colour, dtype=np.uint8)
    return image


def overlay(
    image: np.ndarray,
    labels: Any,
    *,
    palette: Any = None,
    alpha: float = 0.5,
    background: int | None = 0,
    ignore_index: int | None = 255,
) -> np.ndarray:
    """Blend the colours of a label map into an image.

    Pixels labelled ``background`` or ``ignore_index`` keep the image's colour, so objects stand out.
    """
    image = _check_image(image)
    labels = _check_labels(labels, image.shape[:2])
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be a number in [0, 1], got {alpha!r}")
    colours = colorize(labels, palette, ignore_index=None).astype(np.float32)
    blended = image.astype(np.float32) * (1 - alpha) + colours * alpha
    keep = np.zeros(labels.shape, dtype=bool)
    for value in (background, ignore_index):
        if value is not None:
            keep |= labels == value
    out = np.where(keep[..., None], image.astype(np.float32), blended)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _font(size: int = 11):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one fixed-size bitmap font
        return ImageFont.load_default()


def draw_instances(
    image: np.ndarray,
    masks: Any = None,
    boxes: Any = None,
    labels: Any = None,
    scores: Any = None,
    *,
    class_names: Sequence[str] | None = None,
    alpha: float = 0.45,
) -> np.ndarray:
    """Draw instances on an image: each its own colour, its mask blended in, its box outlined and captioned
    ``"name score"``.

    Parameters
    ----------
    image : (H, W, 3) uint8
    masks : (R, H, W) bool, optional
    boxes : (R, 4) float ``(x1, y1, x2, y2)``, optional
    labels : (R,) int, optional
        Class indices, shown through ``class_names`` when given.
    scores : (R,) float, optional
    """
    from PIL import Image, ImageDraw

    image = _check_image(image)
    h, w = image.shape[:2]
    arrays = {}
    for name, value in (("masks", masks), ("boxes", boxes), ("labels", labels), ("scores", scores)):
        if value is not None:
            arrays[name] = np.asarray(value.numpy() if hasattr(value, "numpy") else value)
    counts = {name: len(a) for name, a in arrays.items()}
    if len(set(counts.values())) > 1:
        raise ValueError(f"masks, boxes, labels and scores must describe the same instances, got counts {counts}")
    r = next(iter(counts.values()), 0)
    if "masks" in arrays and arrays["masks"].shape != (r, h, w):
        raise ValueError(f"masks must have shape (R, {h}, {w}), got {arrays['masks'].shape}")
    if "boxes" in arrays and arrays["boxes"].shape != (r, 4):
        raise ValueError(f"boxes must have shape (R, 4), got {arrays['boxes'].shape}")
    colours = _instance_colours(r)
    out = image.astype(np.float32)
    if "masks" in arrays:
        for i in range(r):
            m = arrays["masks"][i].astype(bool)
            out[m] = out[m] * (1 - alpha) + colours[i] * alpha
    canvas = Image.fromarray(np.clip(np.rint(out), 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    font = _font()
    for i in range(r):
        colour = tuple(int(c) for c in colours[i])
        if "boxes" in arrays:
            x1, y1, x2, y2 = (float(v) for v in arrays["boxes"][i])
            # Boxes are pixel-edge coordinates; Pillow's rectangle includes its end pixel.
            draw.rectangle([x1, y1, max(x1, x2 - 1), max(y1, y2 - 1)], outline=colour, width=1)
        caption = []
        if "labels" in arrays:
            label = int(arrays["labels"][i])
            known = class_names is not None and 0 <= label < len(class_names)
            caption.append(class_names[label] if known else str(label))
        if "scores" in arrays:
            caption.append(f"{float(arrays['scores'][i]):.2f}")
        if caption and "boxes" in arrays:
            x1, y1 = float(arrays["boxes"][i][0]), float(arrays["boxes"][i][1])
            text = " ".join(caption)
            left, top, right, bottom = draw.textbbox((x1, y1), text, font=font)
            y = max(0.0, y1 - (bottom - top) - 2)
            left, top, right, bottom = draw.textbbox((x1 + 1, y), text, font=font)
            draw.rectangle([left - 1, top - 1, right, bottom], fill=colour)
            draw.text((x1 + 1, y), text, fill=(0, 0, 0), font=font)
    return np.asarray(canvas, dtype=np.uint8).copy()


def legend(
    class_names: Sequence[str], palette: Any = None, *, width: int | None = None, swatch: int = 12
) -> np.ndarray:
    """An image listing each class with its colour swatch, one class per row (white background)."""
    from PIL import Image, ImageDraw

    if isinstance(class_names, str) or not isinstance(class_names, Sequence) or not class_names:
        raise ValueError(f"class_names must be a non-empty sequence of str, got {class_names!r}")
    colours = _palette(palette, len(class_names))
    font = _font()
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    text_width = max(probe.textbbox((0, 0), str(name), font=font)[2] for name in class_names)
    row = swatch + 4
    size = (width or (swatch + 10 + text_width + 6), row * len(class_names) + 4)
    canvas = Image.new("RGB", size, (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for i, name in enumerate(class_names):
        y = 3 + i * row
        colour = tuple(int(c) for c in colours[i])
        draw.rectangle([3, y, 3 + swatch - 1, y + swatch - 1], fill=colour, outline=(0, 0, 0))
        draw.text((swatch + 8, y), str(name), fill=(0, 0, 0), font=font)
    return np.asarray(canvas, dtype=np.uint8).copy()


# -- layout -----------------------------------------------------------------------------------------------
def side_by_side(
    panels: Sequence[np.ndarray], titles: Sequence[str] | None = None, *, pad: int = 4, scale: int = 1
) -> np.ndarray:
    """Panels placed left to right on white, each optionally enlarged ``scale`` times (nearest neighbour) and
    captioned with its title above."""
    from PIL import Image, ImageDraw

    if not panels:
        raise ValueError("panels must hold at least one image")
    if titles is not None and len(titles) != len(panels):
        raise ValueError(f"titles must have one entry per panel ({len(panels)}), got {len(titles)}")
    if isinstance(scale, bool) or not isinstance(scale, numbers.Integral) or scale < 1:
        raise ValueError(f"scale must be a positive int, got {scale!r}")
    panels = [np.repeat(np.repeat(_check_image(p, f"panels[{i}]"), scale, 0), scale, 1) for i, p in enumerate(panels)]
    title_h = 14 if titles else 0
    height = max(p.shape[0] for p in panels) + title_h + 2 * pad
    width = sum(p.shape[1] for p in panels) + pad * (len(panels) + 1)
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    font = _font()
    x = pad
    for i, panel in enumerate(panels):
        canvas.paste(Image.fromarray(panel), (x, pad + title_h))
        if titles:
            draw.text((x, pad), str(titles[i]), fill=(0, 0, 0), font=font)
        x += panel.shape[1] + pad
    return np.asarray(canvas, dtype=np.uint8).copy()


def stack(rows: Sequence[np.ndarray], *, pad: int = 0) -> np.ndarray:
    """Images placed top to bottom on white (left-aligned)."""
    if not rows:
        raise ValueError("rows must hold at least one image")
    rows = [_check_image(r, f"rows[{i}]") for i, r in enumerate(rows)]
    width = max(r.shape[1] for r in rows)
    height = sum(r.shape[0] for r in rows) + pad * (len(rows) - 1)
    out = np.full((height, width, 3), 255, dtype=np.uint8)
    y = 0
    for r in rows:
        out[y : y + r.shape[0], : r.shape[1]] = r
        y += r.shape[0] + pad
    return out


def denormalize(image: Any, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Undo :class:`segcore.data.transforms.Normalize`: ``(3, H, W)`` float -> ``(H, W, 3)`` uint8."""
    array = np.asarray(image.numpy() if hasattr(image, "numpy") else image)
    if array.ndim != 3 or array.shape[0] != 3 or array.dtype.kind != "f":
        raise ValueError(f"image must be a (3, H, W) float array, got shape {array.shape}, dtype {array.dtype}")
    mean_a = np.asarray(mean, dtype=np.float32).reshape(3, 1, 1)
    std_a = np.asarray(std, dtype=np.float32).reshape(3, 1, 1)
    out = (array * std_a + mean_a) * 255.0
    return np.clip(np.rint(out), 0, 255).astype(np.uint8).transpose(1, 2, 0).copy()


def save_png(path: str | os.PathLike, array: Any, *, palette: Any = None) -> None:
    """Save an ``(H, W, 3)`` uint8 image, or an ``(H, W)`` label map as a palette PNG, atomically.

    Label maps (values 0-255) are written as palette (``"P"``) PNGs like VOC masks, so the file holds the
    labels themselves and still shows in colour (``palette``, default :func:`colormap`; 255 in VOC's void
    colour).
    """
    from PIL import Image

    array = np.asarray(array.numpy() if hasattr(array, "numpy") and not isinstance(array, np.ndarray) else array)
    if array.ndim == 2:
        labels = _check_labels(array, None, "array")
        if labels.size and labels.max() > 255:
            raise ValueError(f"a label map saved as PNG must hold labels <= 255, got {labels.max()}")
        picture = Image.fromarray(labels.astype(np.uint8), mode="P")
        colours = _palette(palette, 256).copy()
        colours[255] = IGNORE_COLOUR
        picture.putpalette(colours[:256].reshape(-1).tolist())
    else:
        picture = Image.fromarray(_check_image(array, "array"))
    buffer = BytesIO()
    picture.save(buffer, format="PNG")
    atomic_write(path, lambda handle: handle.write(buffer.getvalue()))


# -- training curves --------------------------------------------------------------------------------------
def _series(history: Any) -> dict[str, list[tuple[int, float]]]:
    records = getattr(history, "records", history)
    if not isinstance(records, Sequence):
        raise TypeError(
            f"history must be a segcore.train.History or a list of epoch dicts, got {type(history).__name__}"
        )
    series: dict[str, list[tuple[int, float]]] = {}
    for i, record in enumerate(records):
        entry = record.to_dict() if hasattr(record, "to_dict") else record
        if not isinstance(entry, Mapping) or "epoch" not in entry:
            raise ValueError(f"history entry {i} must be a dict with an 'epoch', got {entry!r:.200}")
        values = {"loss": entry.get("loss"), **dict(entry.get("val") or {})}
        for name, value in values.items():
            if isinstance(value, numbers.Real) and np.isfinite(value):
                series.setdefault(name, []).append((int(entry["epoch"]), float(value)))
    return series


def plot_history(history: Any, path: str | os.PathLike, *, use_matplotlib: bool | None = None) -> None:
    """Save training curves (train loss; validation metrics) as a PNG, atomically.

    Uses matplotlib when it is installed (``use_matplotlib=None``) or required (``True``); otherwise draws a
    simple chart with Pillow, so curves never need an extra dependency.
    """
    series = _series(history)
    if not series:
        raise ValueError("history holds no finite loss or metric to plot")
    Figure = None
    if use_matplotlib is not False:
        try:
            # Figure rather than pyplot: no global backend switch and no window, only a file.
            from matplotlib.figure import Figure
        except ImportError:
            if use_matplotlib:
                raise ImportError(
                    "plot_history(use_matplotlib=True) needs matplotlib: pip install matplotlib"
                ) from None
    if Figure is not None:
        fig = Figure(figsize=(9, 3.5))
        axes = fig.subplots(1, 2)
        for ax, names in ((axes[0], ["loss"]), (axes[1], [n for n in series if n != "loss"])):
            for name in names:
                if name in series:
                    epochs, values = zip(*series[name])
                    ax.plot(epochs, values, marker="o", label=name)
            ax.set_xlabel("epoch")
            if ax.lines:
                ax.legend()
        axes[0].set_title("training loss")
        axes[1].set_title("validation")
        fig.tight_layout()
        buffer = BytesIO()
        fig.savefig(buffer, format="png", dpi=100)
        atomic_write(path, lambda handle: handle.write(buffer.getvalue()))
        return
    save_png(path, _pillow_chart(series))


def _pillow_chart(series: dict[str, list[tuple[int, float]]]) -> np.ndarray:
    from PIL import Image, ImageDraw

    font = _font()
    panels = []
    colours = _instance_colours(len(series))
    groups = [["loss"], [n for n in series if n != "loss"]]
    for title, names in zip(("training loss", "validation"), groups):
        names = [n for n in names if n in series]
        if not names:
            continue
        w, h, margin = 360, 240, 36
        canvas = Image.new("RGB", (w, h), (255, 255, 255))
        draw = ImageDraw.Draw(canvas)
        points = [p for n in names for p in series[n]]
        e_lo, e_hi = min(p[0] for p in points), max(p[0] for p in points)
        v_lo, v_hi = min(p[1] for p in points), max(p[1] for p in points)
        e_span, v_span = max(e_hi - e_lo, 1), (v_hi - v_lo) or 1.0
        draw.rectangle([margin, 16, w - 8, h - margin], outline=(0, 0, 0))
        draw.text((margin, 2), title, fill=(0, 0, 0), font=font)
        draw.text((2, 16), f"{v_hi:.3g}", fill=(0, 0, 0), font=font)
        draw.text((2, h - margin - 10), f"{v_lo:.3g}", fill=(0, 0, 0), font=font)
        draw.text((margin, h - margin + 4), f"epoch {e_lo}", fill=(0, 0, 0), font=font)
        draw.text((w - 60, h - margin + 4), f"{e_hi}", fill=(0, 0, 0), font=font)

        def xy(epoch: int, value: float) -> tuple[float, float]:
            x = margin + (epoch - e_lo) / e_span * (w - 8 - margin)
            y = h - margin - (value - v_lo) / v_span * (h - margin - 16)
            return x, y

        for k, name in enumerate(names):
            colour = tuple(int(c) for c in colours[list(series).index(name)])
            coords = [xy(e, v) for e, v in series[name]]
            if len(coords) > 1:
                draw.line(coords, fill=colour, width=2)
            for x, y in coords:
                draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=colour)
            draw.text((margin + 4, 18 + 12 * k), name, fill=colour, font=font)
        panels.append(np.asarray(canvas, dtype=np.uint8))
    return side_by_side(panels, pad=2)

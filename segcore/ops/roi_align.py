"""RoIAlign (Mask R-CNN) with ``torchvision.ops.roi_align`` semantics, differentiable with respect to the input."""

from __future__ import annotations

from typing import Sequence

from ..autograd import Function, Tensor
from ..nn.module import Module
from ._utils import check_bool, check_input_map, check_int, check_rois, output_pair, positive_scale

__all__ = ["roi_align", "RoIAlign"]


class RoIAlignFunction(Function):
    @staticmethod
    def forward(ctx, x, rois, *, spatial_scale, output_size, sampling_ratio, aligned):
        ctx.input_shape = x.shape
        ctx.params = dict(
            spatial_scale=spatial_scale, output_size=output_size, sampling_ratio=sampling_ratio, aligned=aligned
        )
        ctx.save_for_backward(rois)
        return ctx.kernel("roi_align")(ctx.xp, x, rois, **ctx.params)

    @staticmethod
    def backward(ctx, grad):
        (rois,) = ctx.saved
        gx = None
        if ctx.needs_input_grad[0]:
            gx = ctx.kernel("roi_align_backward")(ctx.xp, grad, rois, ctx.input_shape, **ctx.params)
        # Boxes get no gradient, as in torchvision.
        return gx, None


def roi_align(
    input: Tensor,
    boxes: Tensor | Sequence[Tensor],
    output_size: int | tuple[int, int],
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    aligned: bool = False,
) -> Tensor:
    """Region of Interest Align (Mask R-CNN), as ``torchvision.ops.roi_align``.

    Parameters
    ----------
    input:
        ``(N, C, H, W)`` feature maps.
    boxes:
        ``(K, 5)`` Tensor of ``(batch_index, x1, y1, x2, y2)``, or a list of ``(L_i, 4)`` Tensors, the
        ``i``-th holding the boxes of image ``i``. Same dtype and backend as ``input``; coordinates finite;
        batch indices integers in ``[0, N)``. Boxes receive no gradient.
    output_size:
        ``(Ph, Pw)`` bins (or one int for both).
    spatial_scale:
        Factor from box coordinates to feature-map coordinates (e.g. ``1/16``).
    sampling_ratio:
        Samples per bin and axis; ``<= 0`` uses ``ceil(roi_size / output_size)`` per RoI and axis.
    aligned:
        Shift boxes by -0.5 pixel (Detectron2's alignment). If ``False`` (legacy), RoIs are at least 1x1.

    Returns
    -------
    Tensor
        ``(K, C, Ph, Pw)``: each bin is the mean of its bilinear samples; samples outside
        ``[-1, H] x [-1, W]`` count as 0. The gradient with respect to ``input`` is deterministic (the
        reference kernel sums overlapping RoIs in a fixed order; torchvision's CUDA kernel uses atomics).
    """
    op = "roi_align"
    check_input_map(op, input)
    rois = check_rois(op, input, boxes)
    return RoIAlignFunction.apply(
        input,
        rois,
        spatial_scale=positive_scale(op, spatial_scale),
        output_size=output_pair(op, output_size),
        sampling_ratio=check_int(op, sampling_ratio, "sampling_ratio"),
        aligned=check_bool(op, aligned, "aligned"),
    )


class RoIAlign(Module):
    """Module form of :func:`roi_align`, as ``torchvision.ops.RoIAlign``."""

    def __init__(
        self, output_size: int | tuple[int, int], spatial_scale: float, sampling_ratio: int, aligned: bool = False
    ) -> None:
        super().__init__()
        op = "RoIAlign"
        output_pair(op, output_size)
        positive_scale(op, spatial_scale)
        check_int(op, sampling_ratio, "sampling_ratio")
        check_bool(op, aligned, "aligned")
        self.output_size = output_size
        self.spatial_scale = spatial_scale
        self.sampling_ratio = sampling_ratio
        self.aligned = aligned

    def forward(self, input: Tensor, rois: Tensor | Sequence[Tensor]) -> Tensor:
        return roi_align(input, rois, self.output_size, self.spatial_scale, self.sampling_ratio, self.aligned)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(output_size={self.output_size}, spatial_scale={self.spatial_scale}, "
            f"sampling_ratio={self.sampling_ratio}, aligned={self.aligned})"
        )

"""RoIPool (Fast R-CNN) with ``torchvision.ops.roi_pool`` semantics, differentiable with respect to the input."""

from __future__ import annotations

from typing import Sequence

from ..autograd import Function, Tensor
from ..nn.module import Module
from ._utils import check_input_map, check_rois, output_pair, positive_scale

__all__ = ["roi_pool", "RoIPool"]


class RoIPoolFunction(Function):
    @staticmethod
    def forward(ctx, x, rois, *, spatial_scale, output_size):
        out, argmax = ctx.kernel("roi_pool")(ctx.xp, x, rois, spatial_scale=spatial_scale, output_size=output_size)
        ctx.input_shape = x.shape
        ctx.save_for_backward(rois, argmax)
        return out

    @staticmethod
    def backward(ctx, grad):
        rois, argmax = ctx.saved
        gx = None
        if ctx.needs_input_grad[0]:
            gx = ctx.kernel("roi_pool_backward")(ctx.xp, grad, rois, argmax, ctx.input_shape)
        return gx, None


def roi_pool(
    input: Tensor,
    boxes: Tensor | Sequence[Tensor],
    output_size: int | tuple[int, int],
    spatial_scale: float = 1.0,
) -> Tensor:
    """Region of Interest max pooling (Fast R-CNN), as ``torchvision.ops.roi_pool``.

    Box corners are rounded (``round(coord * spatial_scale)``, halves away from zero) to pixels, the RoI
    includes both corner pixels and is at least 1x1, bin ``p`` covers ``[floor(p * s), ceil((p + 1) * s))``
    of the RoI (``s = roi_size / output_size``) clamped to the map; each output is its bin's maximum, 0 for an
    empty bin. The gradient goes to the (first, row-major) maximum of each bin.

    Parameters
    ----------
    input:
        ``(N, C, H, W)`` feature maps.
    boxes:
        ``(K, 5)`` Tensor of ``(batch_index, x1, y1, x2, y2)`` or a list of ``(L_i, 4)`` Tensors, one per
        image; same dtype and backend as ``input``.
    output_size:
        ``(Ph, Pw)`` bins (or one int for both).
    spatial_scale:
        Factor from box coordinates to feature-map coordinates.

    Returns
    -------
    Tensor
        ``(K, C, Ph, Pw)``.
    """
    op = "roi_pool"
    check_input_map(op, input)
    rois = check_rois(op, input, boxes)
    return RoIPoolFunction.apply(
        input, rois, spatial_scale=positive_scale(op, spatial_scale), output_size=output_pair(op, output_size)
    )


class RoIPool(Module):
    """Module form of :func:`roi_pool`, as ``torchvision.ops.RoIPool``."""

    def __init__(self, output_size: int | tuple[int, int], spatial_scale: float) -> None:
        super().__init__()
        output_pair("RoIPool", output_size)
        positive_scale("RoIPool", spatial_scale)
        self.output_size = output_size
        self.spatial_scale = spatial_scale

    def forward(self, input: Tensor, rois: Tensor | Sequence[Tensor]) -> Tensor:
        return roi_pool(input, rois, self.output_size, self.spatial_scale)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(output_size={self.output_size}, spatial_scale={self.spatial_scale})"

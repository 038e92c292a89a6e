"""Array ops of detection with torchvision's (and mmcv's / mmdetection's) meaning, jit-safe with
static shapes: `boxes` (IoU, point-distance boxes, the delta coder), `nms` (greedy, class-wise
and multi-class NMS), `roi_align` (single- and multi-level; separable for small maps),
`anchors` (the anchor grid), `assign` (max-IoU assigner, random sampler), `masks` (the mask
head's targets; its masks pasted onto images and encoded as RLE, on the host) and `corner_pool`
(CornerNet's and CenterNet's directional max pools, NHWC), `top_k` (lax.top_k, by sorting
inside `portable_top_k()` for SavedModels). Boxes are
x1y1x2y2 in pixels; widths are x2 - x1 (no +1), as mmcv v2 and torchvision compute them."""

from hrnet_jax.ops.anchors import anchor_grid, base_anchors, valid_anchors
from hrnet_jax.ops.assign import max_iou_assign, random_sample
from hrnet_jax.ops.boxes import (aligned_iou, box_iou, clip_boxes, decode_deltas, distance_boxes,
                                 encode_deltas)
from hrnet_jax.ops.corner_pool import (bottom_pool, column_max, left_pool, right_pool, row_max,
                                       top_pool)
from hrnet_jax.ops.masks import encode_rle, mask_targets, paste_masks
from hrnet_jax.ops.nms import class_wise_nms, greedy_nms, multiclass_nms
from hrnet_jax.ops.roi_align import (multilevel_roi_align, roi_align, roi_levels,
                                     separable_roi_align)
from hrnet_jax.ops.top_k import portable_top_k, top_k

__all__ = ['aligned_iou', 'anchor_grid', 'base_anchors', 'bottom_pool', 'box_iou',
           'class_wise_nms', 'clip_boxes', 'column_max', 'decode_deltas', 'distance_boxes',
           'encode_deltas', 'encode_rle', 'greedy_nms', 'left_pool', 'mask_targets',
           'max_iou_assign', 'multiclass_nms', 'multilevel_roi_align', 'paste_masks',
           'portable_top_k', 'random_sample', 'right_pool', 'roi_align', 'roi_levels', 'row_max',
           'separable_roi_align', 'top_k', 'top_pool', 'valid_anchors']

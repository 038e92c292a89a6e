"""Array ops of detection with torchvision's (and mmcv's) meaning, jit-safe with static shapes:
`boxes` (IoU, point-distance boxes) and `nms` (greedy and class-wise NMS). Boxes are x1y1x2y2
in pixels; widths are x2 - x1 (no +1), as mmcv v2 and torchvision compute them."""

from hrnet_jax.ops.boxes import aligned_iou, box_iou, distance_boxes
from hrnet_jax.ops.nms import class_wise_nms, greedy_nms

__all__ = ['aligned_iou', 'box_iou', 'class_wise_nms', 'distance_boxes', 'greedy_nms']

"""Dense optical flow behind a small interface, and moving points with it.

The paper's tracker follows FlowTrack, which used FlowNet 2.0; that network is not available
here, so the default is OpenCV's DIS optical flow (`cv2.DISOpticalFlow`, CPU). Any callable
`(previous RGB frame, current RGB frame) -> (H, W, 2)` flow in pixels (x, y) fits.
"""

from __future__ import annotations

from typing import Callable

import cv2
import numpy as np

Flow = Callable[[np.ndarray, np.ndarray], np.ndarray]

PRESETS = {'ultrafast': cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
           'fast': cv2.DISOPTICAL_FLOW_PRESET_FAST,
           'medium': cv2.DISOPTICAL_FLOW_PRESET_MEDIUM}


class DISFlow:
  """OpenCV's DIS optical flow on the grey frames, previous -> current."""

  def __init__(self, preset: str = 'medium'):
    if preset not in PRESETS:
      raise ValueError(f'DIS preset {preset!r}: expected one of {sorted(PRESETS)}')
    self.preset = preset
    self._dis = cv2.DISOpticalFlow_create(PRESETS[preset])

  def __call__(self, previous: np.ndarray, current: np.ndarray) -> np.ndarray:
    grey = lambda im: cv2.cvtColor(np.ascontiguousarray(im), cv2.COLOR_RGB2GRAY)
    return self._dis.calc(grey(previous), grey(current), None)


def move_points(points: np.ndarray, flow: np.ndarray) -> np.ndarray:
  """Points (..., 2) x y moved by the flow bilinearly sampled at them (clamped to the frame)."""
  h, w = flow.shape[:2]
  x = np.clip(points[..., 0], 0, w - 1)
  y = np.clip(points[..., 1], 0, h - 1)
  x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
  x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
  fx, fy = (x - x0)[..., None], (y - y0)[..., None]
  sample = ((1 - fy) * ((1 - fx) * flow[y0, x0] + fx * flow[y0, x1])
            + fy * ((1 - fx) * flow[y1, x0] + fx * flow[y1, x1]))
  return points + sample

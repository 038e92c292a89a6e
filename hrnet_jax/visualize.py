"""Drawing helpers shared by the tasks' `draw` methods: legends and text panels with OpenCV."""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

_FONT = cv2.FONT_HERSHEY_SIMPLEX


def legend_panel(entries: Sequence[tuple[str, Sequence[int]]], height: int,
                 width: int = 220) -> np.ndarray:
  """A white HxW panel listing (text, RGB colour) rows with a colour swatch each; rows that do not
  fit are summarized as '+ N more'."""
  panel = np.full((height, width, 3), 255, np.uint8)
  row = 20
  fit = max(0, (height - 8) // row)
  shown = entries if len(entries) <= fit else entries[:max(0, fit - 1)]
  for i, (text, color) in enumerate(shown):
    y = 6 + i * row
    cv2.rectangle(panel, (6, y), (24, y + 14), tuple(int(c) for c in color), thickness=-1)
    cv2.rectangle(panel, (6, y), (24, y + 14), (0, 0, 0), thickness=1)
    cv2.putText(panel, text, (30, y + 12), _FONT, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
  if len(shown) < len(entries):
    cv2.putText(panel, f'+ {len(entries) - len(shown)} more', (30, 6 + len(shown) * row + 12),
                _FONT, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
  return panel


def text_panel(lines: Sequence[str], width: int, line_height: int = 20) -> np.ndarray:
  """A white strip as wide as the picture holding `lines` of text."""
  panel = np.full((8 + line_height * len(lines), width, 3), 255, np.uint8)
  for i, text in enumerate(lines):
    cv2.putText(panel, text, (6, 4 + line_height * (i + 1) - 6), _FONT, 0.5, (0, 0, 0), 1,
                cv2.LINE_AA)
  return panel


def beside(picture: np.ndarray, panel: np.ndarray) -> np.ndarray:
  return np.concatenate([picture, panel[:picture.shape[0]]], axis=1)


def below(picture: np.ndarray, panel: np.ndarray) -> np.ndarray:
  return np.concatenate([picture, panel[:, :picture.shape[1]]], axis=0)


def color_of(k: int) -> tuple[int, int, int]:
  """A fixed mid-bright RGB colour for index k (a class, an instance, a track id)."""
  rng = np.random.default_rng(k + 11)
  return tuple(int(v) for v in rng.integers(40, 220, 3))

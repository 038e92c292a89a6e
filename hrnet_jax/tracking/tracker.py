"""The online pose tracker of the paper's PoseTrack result, after FlowTrack (SimpleBaseline).

Per frame: (1) person boxes: the detector's (score >= `detection_score`) and the previous
frame's people moved by optical flow (box = the moved kept joints' extent + 15%), each kept
unless a detection overlaps it by IoU > `box_nms_iou` (the detector's boxes have had their own
NMS, so two people crossing keep both boxes); (2) a pose per box (the caller's estimator, e.g.
the pose model with flip test), then OKS NMS; (3) ids: every live track's last pose, moved by
flow to this frame (and, with `unmoved_too`, where it was last seen), is compared with each
pose by OKS over the joints kept in both; pairs are taken greedily from the most similar, above
`min_similarity`; a pose left over starts a new id when it has `min_joints` kept joints (else
it is dropped); a track not seen for `memory` frames ends. Ids are unique within a frame.

The papers leave several thresholds unstated; `TrackerSettings` holds each with the value
chosen and why. Everything runs on the host, per video.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from hrnet_jax.data.sources.posetrack import joint_box
from hrnet_jax.tracking.flow import Flow, move_points

# (image RGB (H, W, 3), boxes (N, 4) x1 y1 x2 y2) -> joints (N, 17, 2), joint scores (N, 17).
Estimator = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclasses.dataclass(frozen=True)
class TrackerSettings:
  detection_score: float = 0.5  # detector boxes kept: FlowTrack's (and the issue's) 0.5
  box_nms_iou: float = 0.7  # a propagated box overlapping a detection by more is the same
  # person. Not published (FlowTrack); on the demo videos with one person's detection removed in
  # every second frame, 0.5 lost two person-frames and an id to crossings, 0.7 one and one
  box_enlarge: float = 1.15  # propagated boxes: the moved joints' extent + 15% (the paper)
  joint_score: float = 0.4  # a joint is kept above this: propagated, compared, counted and
  # written (FlowTrack drops joints below 0.4 for MOTA)
  oks_nms: float = 0.7  # poses more similar than this to a better one are duplicates (one
  # person estimated from a detected and a propagated box)
  min_similarity: float = 0.3  # a pose continues a track only above this OKS (MMPose's 0.3)
  min_joints: int = 3  # a new id needs this many kept joints (MMPose's rule)
  memory: int = 5  # frames a lost track stays matchable (FlowTrack's multi-frame queue)
  unmoved_too: bool = True  # also compare with the track's pose where it was last seen and
  # take the better OKS: where one person passes in front of another, the flow at the one
  # behind follows the one in front and moves its pose away (seen on the demo videos; ours,
  # not FlowTrack's)


@dataclasses.dataclass
class TrackedPose:
  track_id: int
  joints: np.ndarray  # (17, 2)
  scores: np.ndarray  # (17,)
  box: np.ndarray  # (4,) x1 y1 x2 y2, the box it was estimated in


@dataclasses.dataclass
class _Track:
  track_id: int
  joints: np.ndarray  # the last pose, moved by flow to the current frame
  scores: np.ndarray
  seen: np.ndarray  # the last pose where it was estimated
  age: int = 0  # frames since it was last matched


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """IoU of boxes (N, 4) and (M, 4), x1 y1 x2 y2 -> (N, M)."""
  lt = np.maximum(a[:, None, :2], b[None, :, :2])
  rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
  inter = np.prod(np.clip(rb - lt, 0, None), axis=-1)
  area = lambda x: np.prod(np.clip(x[:, 2:] - x[:, :2], 0, None), axis=-1)
  union = area(a)[:, None] + area(b)[None, :] - inter
  return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def _box(joints: np.ndarray, kept: np.ndarray, enlarge: float) -> np.ndarray | None:
  """x1 y1 x2 y2 of the kept joints' extent, enlarged (None: it spans no area)."""
  box = joint_box(joints, kept, enlarge)
  return None if box is None else np.asarray([box[0], box[1], box[0] + box[2], box[1] + box[3]])


def _area(joints: np.ndarray, kept: np.ndarray) -> float:
  box = joint_box(joints, kept, 1.0)
  return 0.0 if box is None else box[2] * box[3]


class PoseTracker:
  """One video at a time: `step(frame, detections)` per frame in order, `reset()` between
  videos. `estimate` gives poses in boxes; `flow` moves points between frames."""

  def __init__(self, estimate: Estimator, flow: Flow,
               settings: TrackerSettings = TrackerSettings()):
    from hrnet_jax.data.sources.coco import SIGMAS
    self.estimate, self.flow, self.settings = estimate, flow, settings
    self.sigmas = SIGMAS
    self.reset()

  def reset(self) -> None:
    self.tracks: list[_Track] = []
    self.previous: list[TrackedPose] = []
    self.last_frame: np.ndarray | None = None
    self.next_id = 0

  def _propagated_boxes(self, flow: np.ndarray | None) -> np.ndarray:
    """The previous frame's people, their kept joints moved by the flow: (M, 4) boxes."""
    s = self.settings
    boxes = []
    for pose in self.previous:
      moved = move_points(pose.joints, flow) if flow is not None else pose.joints
      box = _box(moved, pose.scores > s.joint_score, s.box_enlarge)
      if box is not None:
        boxes.append(box)
    return np.asarray(boxes, np.float64).reshape(-1, 4)

  def step(self, frame: np.ndarray, detections: np.ndarray) -> list[TrackedPose]:
    """`detections` (N, 5): x1 y1 x2 y2 score. Returns the frame's tracked poses."""
    from hrnet_jax.tasks.pose import oks_iou, oks_nms
    s = self.settings
    detections = np.asarray(detections, np.float64).reshape(-1, 5)
    flow = self.flow(self.last_frame, frame) if self.last_frame is not None else None
    self.last_frame = frame
    # 1. Boxes: the detections, and each propagated box that no detection already covers.
    detections = detections[detections[:, 4] >= s.detection_score]
    moved = self._propagated_boxes(flow)
    if len(moved) and len(detections):
      moved = moved[box_iou(moved, detections[:, :4]).max(1) <= s.box_nms_iou]
    boxes = np.concatenate([detections[:, :4], moved])
    # 2. Poses, then OKS NMS.
    poses = []
    if len(boxes):
      joints, scores = self.estimate(frame, boxes)
      joints, scores = np.asarray(joints, np.float64), np.asarray(scores, np.float64)
      kept = scores > s.joint_score
      pose_score = np.asarray([sc[k].mean() if k.any() else 0.0 for sc, k in zip(scores, kept)])
      areas = np.asarray([_area(j, k) for j, k in zip(joints, kept)])
      kpts = np.concatenate([joints, scores[..., None]], -1)
      for i in oks_nms(kpts, pose_score, areas, s.oks_nms, self.sigmas, s.joint_score):
        poses.append((joints[i], scores[i], boxes[i]))
    # 3. Ids: live tracks moved to this frame, greedy by OKS.
    for track in self.tracks:
      if flow is not None:
        track.joints = move_points(track.joints, flow)
      track.age += 1
    pairs = []
    for p, (joints, scores, _) in enumerate(poses):
      a = np.concatenate([joints, scores[:, None]], -1)
      for t, track in enumerate(self.tracks):
        sim = 0.0
        for where in ((track.joints, track.seen) if s.unmoved_too else (track.joints,)):
          b = np.concatenate([where, track.scores[:, None]], -1)[None]
          area = (_area(joints, scores > s.joint_score)
                  + _area(where, track.scores > s.joint_score)) / 2
          sim = max(sim, float(oks_iou(a, b, area, np.asarray([area]), self.sigmas,
                                       s.joint_score)[0]))
        if sim > s.min_similarity:
          pairs.append((sim, p, t))
    pairs.sort(key=lambda x: (-x[0], x[1], x[2]))
    owner: dict[int, int] = {}
    used: set[int] = set()
    for _, p, t in pairs:
      if p not in owner and t not in used:
        owner[p] = t
        used.add(t)
    out = []
    for p, (joints, scores, box) in enumerate(poses):
      if p in owner:
        track = self.tracks[owner[p]]
      elif (scores > s.joint_score).sum() >= s.min_joints:
        track = _Track(self.next_id, joints, scores, joints)
        self.next_id += 1
        self.tracks.append(track)
      else:
        continue
      track.joints, track.seen, track.scores, track.age = joints, joints, scores, 0
      out.append(TrackedPose(track.track_id, joints, scores, box))
    self.tracks = [t for t in self.tracks if t.age <= s.memory]
    self.previous = out
    return out

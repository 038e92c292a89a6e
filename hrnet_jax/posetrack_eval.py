"""The PoseTrack evaluation on folders of per-video JSON files, run as the official one is:

  python -m hrnet_jax.posetrack_eval --gt DIR --pred DIR [--json OUT] [--notrack]

Every ground-truth file `<video>.json` in --gt (PoseTrack2017 or 2018 layout, either in each
file) needs the prediction file of the same name in --pred, with the same frames in the same
order. Prints the AP table and, unless --notrack, the MOTA table (the rules:
hrnet_jax.tracking.posetrack_metrics); --json writes every number per joint.
"""

from __future__ import annotations

import json
import os
import pathlib
import sys

from hrnet_jax.data.sources.posetrack import Video, read_video
from hrnet_jax.data.sources.reader import DataError
from hrnet_jax.tracking import posetrack_metrics


def read_pairs(gt_dir: str | os.PathLike, pred_dir: str | os.PathLike
               ) -> list[tuple[Video, Video]]:
  """The (ground truth, prediction) videos, in file-name order."""
  gt_dir, pred_dir = pathlib.Path(gt_dir), pathlib.Path(pred_dir)
  for d, flag in ((gt_dir, '--gt'), (pred_dir, '--pred')):
    if not d.is_dir():
      raise DataError(f'{flag} {d}: not a directory')
  files = sorted(gt_dir.glob('*.json'))
  if not files:
    raise DataError(f'--gt {gt_dir}: no .json files (one per video expected)')
  missing = [f.name for f in files if not (pred_dir / f.name).is_file()]
  if missing:
    raise DataError(f'--pred {pred_dir}: no prediction for {len(missing)} of {len(files)} videos '
                    f'(first: {missing[0]})')
  return [(read_video(f), read_video(pred_dir / f.name)) for f in files]


def write_json(result: dict, path: str | os.PathLike) -> pathlib.Path:
  """The numbers per joint (posetrack_metrics.to_json), written whole or not at all."""
  path = pathlib.Path(path)
  if path.is_dir():
    raise DataError(f'--json {path}: is a directory; expected a file name')
  tmp = path.with_name(f'.{path.name}.tmp')
  tmp.write_text(json.dumps(posetrack_metrics.to_json(result), indent=1))
  os.replace(tmp, path)
  return path


def main() -> None:
  from absl import flags

  from hrnet_jax import cli
  flags.DEFINE_string('gt', None, 'Folder of ground-truth video files (2017 or 2018 layout).')
  flags.DEFINE_string('pred', None, 'Folder of prediction files, named as the ground truth.')
  flags.DEFINE_string('json', None, 'Write every number per joint to this file.')
  flags.DEFINE_bool('track', True, 'Also the tracking metrics (MOTA): every predicted person '
                    'needs a track_id (--notrack: AP only).')
  flags.mark_flags_as_required(['gt', 'pred'])

  def run(argv: list[str]) -> None:
    if len(argv) > 1:
      raise DataError(f'unexpected arguments {argv[1:]}')
    f = flags.FLAGS
    pairs = read_pairs(f.gt, f.pred)
    result = posetrack_metrics.evaluate(pairs, track=f.track)
    print(f'{result["videos"]} videos, {result["frames"]} frames with labelled people')
    print(posetrack_metrics.tables(result))
    if f.json:
      print(f'wrote {write_json(result, f.json)}')

  cli.run(run)


if __name__ == '__main__':
  sys.exit(main())

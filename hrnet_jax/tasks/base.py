"""The written contract between a task and the code that runs it (the trainer, the evaluator,
eval.py and predict.py), with the parts every task shares.

A task turns `config` into: a model, data sources and transforms, a loss, what the jitted eval
step outputs, a host-side metric, and (for predict.py) samples of a raw image, a JSON-ready
prediction and a picture. Methods marked *required* raise NotImplementedError here; the others
have working defaults. Nothing calling a task probes it with hasattr: everything it may call is
declared below.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import io
import os
import pathlib
from typing import Any, Callable, ClassVar, Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from hrnet_jax.data import keypoints, sources
from hrnet_jax.models import zoo
from hrnet_jax.tasks import heatmaps as hm

Array = jax.Array
# apply_fn(normalized NHWC images, **inputs) -> the model's outputs, in eval mode, variables
# bound; `inputs` are what a model takes besides the images (two-stage detectors: image_hw).
ApplyFn = Callable[..., Any]


def remat_policy(value: Any) -> str:
  """`config.model.remat`: a name of backbone.REMAT_POLICIES; True and False, the values of
  configs written before the policies, mean 'full' and 'none'."""
  if isinstance(value, bool):
    return 'full' if value else 'none'
  return str(value)


def at_least_float32(x: Array) -> Array:
  """bfloat16 -> float32 for losses and metrics; float32 and float64 stay as they are."""
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def coco_eval(annotation_file: str | os.PathLike, results: list[dict], iou_type: str,
              stat_names: Sequence[str], image_ids: Iterable[int] | None = None
              ) -> dict[str, float]:
  """pycocotools COCOeval's summary numbers, named `stat_names` in its order, of COCO-format
  `results` against `annotation_file` (over `image_ids` when given); all zero without results.
  Its printing is captured."""
  from pycocotools.coco import COCO
  from pycocotools.cocoeval import COCOeval
  out = {k: 0.0 for k in stat_names}
  if not results:
    return out
  with contextlib.redirect_stdout(io.StringIO()):
    gt = COCO(str(annotation_file))
    dt = gt.loadRes(copy.deepcopy(results))  # loadRes adds keys to the dicts it is given
    ev = COCOeval(gt, dt, iou_type)
    if image_ids is not None:
      ev.params.imgIds = sorted(int(i) for i in image_ids)
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
  out.update({k: float(v) for k, v in zip(stat_names, ev.stats)})
  return out


class Metric:
  """Accumulates the eval step's outputs on the host, batch after batch, into scores.

  `update` receives each global batch's outputs as numpy arrays, including `index` (the sample's
  position in the source) and `valid` (0 for the padding that fills the last batch)."""

  def update(self, outputs: dict[str, np.ndarray]) -> None:
    raise NotImplementedError

  def result(self) -> dict[str, Any]:
    """The scores: floats (and arrays such as per-class IoU); the task's metric_name among
    them."""
    raise NotImplementedError

  def report(self) -> str:
    """The full table eval.py prints."""
    raise NotImplementedError

  def summary(self) -> str:
    """One line for the training log."""
    raise NotImplementedError

  def write(self, out_dir: pathlib.Path) -> pathlib.Path | None:
    """Writes the split's predictions file (e.g. COCO results JSON); None when there is none."""
    return None


class Task:
  """Base of every task. Subclasses set `metric_name` (and `metric_mode` when lower is better)
  and implement the required methods; `config` is the whole recipe (ml_collections)."""

  metric_name: str = ''  # the result() key that picks the best checkpoint
  metric_mode: ClassVar[str] = 'max'  # 'min' when lower is better (errors such as NME)
  task_name: ClassVar[str] = ''  # the `config.task` value; also the dataset table's task

  def __init__(self, config: Any):
    self.config = config

  # --- The model --------------------------------------------------------------------------------

  def head_kwargs(self) -> dict[str, Any]:
    """*Required.* The head size the data fixes, e.g. {'num_classes': 19}."""
    raise NotImplementedError

  @functools.cached_property
  def model_kwargs(self) -> dict[str, Any]:
    """`config.model.overrides` that are set (None means the arch's default), and the head
    size: everything `create_model` and the checkpoint loaders pass to the zoo."""
    overrides = self.config.model.get('overrides') or {}
    set_ones = {k: (tuple(v) if isinstance(v, list) else v) for k, v in dict(overrides).items()
                if v is not None}
    return dict(set_ones, **self.head_kwargs())

  def test_kwargs(self) -> dict[str, Any]:
    """Model settings taken from `config.eval` (a test protocol the model runs itself, e.g. the
    detections that mask heads read): they change no variable, so checkpoints do not record
    them."""
    return {}

  def create_model(self, dtype: Any = jnp.float32) -> zoo.HRNetModel:
    """The zoo model of `config.model.arch` computing in `dtype` (float64 also keeps float64
    parameters, for numerical checks)."""
    kwargs = dict(self.model_kwargs, **self.test_kwargs())
    if jnp.dtype(dtype) == jnp.float64:
      kwargs['param_dtype'] = jnp.float64
    return zoo.create_model(self.config.model.arch, dtype=dtype,
                            remat=remat_policy(self.config.model.get('remat', 'conv')),
                            scan=bool(self.config.model.get('scan', True)), **kwargs)

  # --- Data -------------------------------------------------------------------------------------

  def source(self, split: str) -> sources.Source:
    """A split of `config.data`: the reader the dataset table names for `config.data.name`."""
    return sources.open_source(self.config.data, split, self.task_name)

  def batch_groups(self, source: sources.Source, train: bool) -> np.ndarray | None:
    """Per sample of `source`, an int group: batches then never mix groups (so each group may
    have its own padded shape, as detection's canvases). None (the default): one group."""
    del source, train
    return None

  def train_transform(self) -> Callable[[dict, np.random.Generator], dict]:
    """*Required.* sample, rng -> the training example (uint8 `image` and the loss targets)."""
    raise NotImplementedError

  def eval_transform(self) -> Callable[[dict], dict]:
    """*Required.* sample -> the evaluation example (uint8 `image` and what eval_outputs reads);
    deterministic."""
    raise NotImplementedError

  # --- Training ---------------------------------------------------------------------------------

  def model_inputs(self, batch: dict[str, Array]) -> dict[str, Any]:
    """What the model takes in training besides the images, from the batch (keyword arguments
    of its `__call__`). Default: nothing; two-stage detectors take the ground truth, because
    they draw their training samples between their two stages."""
    del batch
    return {}

  def augment(self, images: Array, batch: dict[str, Array]) -> Array:
    """Inside the jitted training step, before normalization: the batch's images (uint8, or
    floats in [0, 255]) with noise the transform drew the numbers of (CenterNet's colour noise,
    which leaves uint8). Default: unchanged."""
    del batch
    return images

  def loss(self, outputs: Any, batch: dict[str, Array]) -> tuple[Array, dict[str, Array]]:
    """*Required.* (scalar loss, extra scalars to log) of the model's outputs (cast to at least
    float32 by the trainer) on a training batch."""
    raise NotImplementedError

  # --- Evaluation -------------------------------------------------------------------------------

  def eval_outputs(self, apply_fn: ApplyFn, images: Array, batch: dict[str, Array]) -> dict:
    """*Required.* Inside jit: the normalized batch through the eval protocol -> small arrays
    for the metric (a confusion matrix, decoded keypoints, top-5 ids)."""
    raise NotImplementedError

  def new_metric(self, source: sources.Source) -> Metric:
    """*Required.* An empty metric for an evaluation split (its source holds the truth)."""
    raise NotImplementedError

  def protocol(self) -> str:
    """One line naming the evaluation protocol, printed by eval.py."""
    return ''

  def write_predictions(self, source: sources.Source, outputs: dict[str, np.ndarray],
                        out_dir: pathlib.Path) -> None:
    """Per eval batch, with --predictions: files for the batch (segmentation: colour PNGs)."""
    del source, outputs, out_dir

  # --- predict.py -------------------------------------------------------------------------------

  # Keys of `prediction` that hold image-sized arrays, written as `<name>_<key>.png`.
  prediction_arrays: tuple[str, ...] = ()

  def image_samples(self, image: np.ndarray, boxes: np.ndarray | None = None,
                    box_scores: Sequence[float] | None = None) -> list[dict]:
    """A raw RGB image (and optional [x, y, w, h] boxes, with a detector's score per box) ->
    source-like samples for eval_transform. Default: the whole image, one sample; boxes are not
    used."""
    del boxes, box_scores
    return [{'image': image}]

  def prediction(self, samples: list[dict], outputs: dict[str, np.ndarray]) -> dict:
    """The eval step's outputs for `samples` -> a JSON-ready result (numpy arrays are written
    as PNG files by predict.py)."""
    del samples, outputs
    return {}

  def draw(self, image: np.ndarray, prediction: dict) -> np.ndarray:
    """A picture of `prediction` over `image` (RGB uint8). Default: the image unchanged."""
    del prediction
    return image

  # --- Export (hrnet_jax.export) -----------------------------------------------------------------

  def serving_outputs(self, outputs: Any, input_hw: tuple[int, int],
                      postprocess: bool) -> dict[str, Array]:
    """*Required for export.* The network's outputs on a batch of `input_hw` images -> the named
    outputs of an exported graph: the raw ones, or with `postprocess` the task's post-processing
    that is pure array math (no flip test or multi-scale: the exported graph is the network)."""
    raise NotImplementedError(f'{type(self).__name__} has no export outputs')


HEATMAP_STRIDE = 4  # the V1 (pose) and V2 (face) heads output at 1/4 of the input


class HeatmapTask(Task):
  """Pose and facial landmarks: Gaussian heatmaps at 1/4 of a (h, w) = `config.data.input_size`
  crop, the joints MSE loss, the flip test, and decoding to heatmap coordinates in jit.

  Subclasses set `flip_pairs` (0-based point pairs swapped by a mirror) and `num_points`."""

  flip_pairs: Sequence[tuple[int, int]] = ()
  num_points: int = 0
  decode_first_inner: int = 2  # the first heatmap index that gets the quarter-pixel step

  def __init__(self, config: Any):
    super().__init__(config)
    d = config.data
    self.input_wh = (int(d.input_size[1]), int(d.input_size[0]))
    self.heatmap_wh = (int(d.heatmap_size[1]), int(d.heatmap_size[0]))

  def head_kwargs(self) -> dict[str, Any]:
    return {'num_joints': self.num_points}

  @functools.cached_property
  def flip_perm(self) -> np.ndarray:
    return keypoints.flip_permutation(self.num_points, self.flip_pairs)

  def loss(self, outputs: Array, batch: dict[str, Array]) -> tuple[Array, dict[str, Array]]:
    weight = batch['target_weight'] if self.config.loss.use_target_weight else None
    return hm.joints_mse_loss(at_least_float32(outputs), batch['target'], weight), {}

  def heatmaps(self, apply_fn: ApplyFn, images: Array) -> Array:
    """Float32 heatmaps of a normalized batch, flip-averaged when `config.eval.flip`."""
    e = self.config.eval
    return hm.flip_test_heatmaps(apply_fn, images, self.flip_perm if e.flip else None,
                                 e.shift_heatmap)

  def serving_outputs(self, outputs: Array, input_hw: tuple[int, int],
                      postprocess: bool) -> dict[str, Array]:
    """`heatmaps` (B, ceil(H/4), ceil(W/4), K); post-processed: `keypoints` (B, K, 2) as (x, y)
    in input pixels (decoded heatmap coordinates times the heads' stride of 4: heatmap pixel
    (i, j) lies at input pixel (4i, 4j), any-size padding or not) and `scores` (B, K), the
    heatmap peaks."""
    del input_hw
    if not postprocess:
      return {'heatmaps': outputs}
    coords, scores = hm.decode_heatmaps(at_least_float32(outputs), self.decode_first_inner)
    return {'keypoints': coords * HEATMAP_STRIDE, 'scores': scores}

  def eval_outputs(self, apply_fn: ApplyFn, images: Array, batch: dict[str, Array]) -> dict:
    """Decoded coordinates (heatmap pixels), peak scores, and the crop to map them back."""
    coords, scores = hm.decode_heatmaps(self.heatmaps(apply_fn, images),
                                        self.decode_first_inner)
    return {'coords': coords, 'scores': scores, 'center': batch['center'],
            'scale': batch['scale']}


"""What every recipe shares: `base_config(task, arch)` holds every key the trainer, the evaluator
and the model read, at its default; a recipe file sets only what makes it that recipe.

Recipes take an argument in the big_vision way, `--config configs/seg_cityscapes.py:ARG`, where
ARG is a comma-separated list of `key=value` or bare switches:
  arch=seg_w18     another zoo variant of the recipe's task
  demo             the recipe on its embedded demo data, sized to learn in minutes on a CPU
  runlocal         a tiny model and 6 steps: a smoke test (used by the tests); on the demo data
                   where the recipe has a demo, else on --config.data.root
"""

from __future__ import annotations

import ast

import ml_collections
from ml_collections import config_dict

from hrnet_jax.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from hrnet_jax.errors import ConfigError

# The tiny model of `runlocal` (and of the tests): an 8-wide HRNet, one block per branch.
TINY_MODEL = dict(width=8, num_modules=(1, 1, 1), num_blocks=1, stage1_blocks=1,
                  stage1_planes=16)


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
  """'arch=seg_w18,runlocal' -> {'arch': 'seg_w18', 'runlocal': True, ...the other defaults}.
  A switch not given is False; a key not among `defaults` is an error naming the valid ones."""
  out = ml_collections.ConfigDict(defaults)
  for item in filter(None, (s.strip() for s in (arg or '').split(','))):
    key, sep, value = item.partition('=')
    if key not in defaults:
      raise ConfigError(f'config argument {item!r}: expected one of {sorted(defaults)} (as '
                       '`key=value` or a bare switch, comma-separated)')
    if not sep:
      out[key] = True
      continue
    try:
      out[key] = ast.literal_eval(value)
    except (ValueError, SyntaxError):
      out[key] = value
  return out


def model_overrides() -> ml_collections.ConfigDict:
  """Every zoo override a user may set from the command line, unset (None: the arch's default),
  so that e.g. `--config.model.overrides.align_corners=True` parses."""
  p = config_dict.placeholder
  return ml_collections.ConfigDict({
      # The shape of the variant (small test models):
      'width': p(int), 'num_modules': p(tuple), 'num_blocks': p(int), 'stage1_blocks': p(int),
      'stage1_planes': p(int),
      # Settings of the task's official release:
      'upsample': p(str),  # fusion upsampling: 'nearest' or 'bilinear'
      'align_corners': p(bool), 'bn_momentum': p(float),
      # OCR only:
      'ocr_mid_channels': p(int), 'ocr_key_channels': p(int), 'ocr_dropout': p(float),
      # Detection (det, fcos): the pyramid, the FCOS head, frozen backbone BN, input order:
      'out_channels': p(int), 'num_levels': p(int), 'neck_stride': p(int),
      'stacked_convs': p(int), 'gn_groups': p(int), 'centerness_on_reg': p(bool),
      'norm_eval': p(bool), 'input_bgr': p(bool),
  })


def base_config(task: str, arch: str) -> ml_collections.ConfigDict:
  """The keys every recipe has, at their defaults."""
  c = ml_collections.ConfigDict()
  c.task = task
  c.seed = 0
  c.dtype = 'float32'  # or 'bfloat16' (float32 params, BN statistics and loss)
  c.init_from = ''  # a pretrained backbone: an official .pth, a converted dir, or a workdir

  c.model = ml_collections.ConfigDict()
  c.model.arch = arch
  c.model.overrides = model_overrides()
  # What the backward pass keeps of each block: 'conv' (conv outputs; BN/ReLU recomputed: less
  # memory and faster than 'none'), 'none' (all XLA chooses), 'full' (block inputs; ~1.3x compute).
  c.model.remat = 'conv'
  # Runs of identical modules as one scanned body with stacked variables: compiles 2-5x faster.
  # False: one module per copy (the layout of checkpoints saved before the scanned layout).
  c.model.scan = True

  c.data = ml_collections.ConfigDict()
  c.data.name = ''
  c.data.root = ''  # empty: the embedded demo's (generated on first use) for a *_demo name
  c.data.train_split = 'train'
  c.data.eval_split = 'val'
  c.data.num_workers = 8  # processes running the transforms; 0: threads in this process
  c.data.device_prefetch = 2  # global batches kept on the devices ahead of the step
  c.data.benchmark = 0  # > 0: train.py times this many batches of the input alone and stops
  c.data.mean = IMAGENET_MEAN
  c.data.std = IMAGENET_STD

  c.loss = ml_collections.ConfigDict()

  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.name = 'sgd'  # or 'adam'
  c.optimizer.lr = 0.01
  c.optimizer.momentum = 0.9  # sgd
  c.optimizer.nesterov = False  # sgd
  c.optimizer.b1 = 0.9  # adam
  c.optimizer.b2 = 0.999  # adam
  c.optimizer.weight_decay = 0.0  # coupled, as in PyTorch: added to the gradient
  c.optimizer.schedule = 'constant'  # 'poly', 'step' or 'constant'
  c.optimizer.power = 0.9  # poly
  c.optimizer.boundaries = ()  # step: epochs (fractions allowed) where lr is multiplied ...
  c.optimizer.gamma = 0.1  # ... by gamma
  c.optimizer.warmup_steps = 0  # warmup from warmup_init * lr ...
  c.optimizer.warmup_init = 0.0
  c.optimizer.warmup_mode = 'linear'  # ... rising to lr, or 'constant' at warmup_init * lr
  c.optimizer.grad_clip_norm = 0.0  # > 0: the gradients' global norm is clipped to it
  c.optimizer.bias_lr_mult = 1.0  # conv/dense biases: learning rate ...
  c.optimizer.bias_decay_mult = 1.0  # ... and weight decay multipliers (mmdetection's recipes)

  c.batch_size = 16  # global, over all devices and hosts
  c.num_epochs = 1
  c.total_steps = 0  # > 0 overrides num_epochs
  c.grad_accum_steps = 1  # > 1: the batch runs as that many micro-batches per update

  c.eval = ml_collections.ConfigDict()
  c.eval.every_steps = 1000  # and at the end; 0 = never while training (use eval.py)
  c.eval.batch_size = 0  # 0: one sample per device
  c.eval.flip = False

  c.checkpoint = ml_collections.ConfigDict()
  c.checkpoint.every_steps = 1000
  c.checkpoint.keep = 3  # the newest ones ...
  c.checkpoint.keep_best = 1  # ... and the best by the task's metric
  c.checkpoint.async_save = True
  c.checkpoint.preemption_check_every = 10  # steps between multi-host SIGTERM / Ctrl-C agreements

  # Persistent XLA compilation cache: 'auto' ($HRNET_JAX_CACHE/xla or ~/.cache/hrnet_jax/xla),
  # a directory, or 'off'. A restart or resume then compiles nothing it compiled before.
  c.compile_cache = 'auto'

  c.mesh = ml_collections.ConfigDict()
  c.mesh.data = -1  # devices on the data axis; -1 = all
  c.mesh.shard_params = False  # shard params and optimizer state over 'data' (ZeRO/FSDP)

  # Multi-process: empty = detect (TPU pod slices, SLURM, Open MPI, JAX_COORDINATOR_ADDRESS).
  c.distributed = ml_collections.ConfigDict()
  c.distributed.coordinator_address = ''  # host:port of process 0
  c.distributed.num_processes = 1
  c.distributed.process_id = 0

  c.log_every_steps = 100
  return c


def runlocal(c: ml_collections.ConfigDict, steps: int = 6, batch_size: int = 4
             ) -> ml_collections.ConfigDict:
  """The tiny model, `steps` steps of `batch_size`, no worker processes, evaluation, checkpoint
  and log at the end. The recipe shrinks its own image sizes."""
  c.model.overrides.update(TINY_MODEL)
  c.data.num_workers = 0
  c.batch_size = batch_size
  c.num_epochs = 0
  c.total_steps = steps
  c.optimizer.boundaries = ()
  c.eval.every_steps = steps
  c.eval.batch_size = batch_size
  c.checkpoint.every_steps = steps
  c.log_every_steps = steps
  return c


# mmdetection's normalization of its COCO detectors, in RGB order.
COCO_DETECTION_MEAN = (123.675, 116.28, 103.53)
COCO_DETECTION_STD = (58.395, 57.12, 57.375)


def coco_detection_data(c: ml_collections.ConfigDict) -> None:
  """COCO detection as mmdetection's recipes read it: 1333x800 keeping aspect, flipped."""
  c.data.name = 'coco_detection'  # coco_detection | det_demo
  c.data.root = ''  # holds annotations/instances_{train,val}2017.json and images/{train,val}2017/
  c.data.train_split = 'train2017'
  c.data.eval_split = 'val2017'
  c.data.mean, c.data.std = COCO_DETECTION_MEAN, COCO_DETECTION_STD
  # (long, short) sides an image is resized to, keeping its aspect; training draws one of them.
  c.data.train_scales = ((1333, 800),)
  c.data.eval_scale = (1333, 800)
  # Canvases (h, w) the resized images are padded into (the first that holds one): one program
  # per canvas; a batch holds images of one canvas.
  c.data.buckets = ((800, 1344), (1344, 800))
  c.data.flip = True
  c.data.max_boxes = 100  # ground-truth boxes per image (COCO train2017 has at most 93)
  c.data.masks = False  # the training split's instance masks too (Mask R-CNN recipes)
  c.data.semantic = False  # and its COCO-stuff label maps (HTC's semantic branch)


def detection_demo_data(c: ml_collections.ConfigDict) -> None:
  """The embedded shapes-and-people scenes at 256x192 and their 400-step schedule (batch 8)."""
  c.data.name = 'det_demo'
  c.data.train_split, c.data.eval_split = 'train', 'val'
  c.data.train_scales = ((256, 192),)
  c.data.eval_scale = (256, 192)
  c.data.buckets = ((192, 256), (256, 192))
  c.data.max_boxes = 16
  c.data.num_workers = 2
  c.optimizer.lr = 0.02
  c.optimizer.warmup_steps = 50
  c.optimizer.warmup_mode = 'linear'
  c.optimizer.warmup_init = 0.1
  c.optimizer.boundaries = (8,)  # epochs: step 320 of 400 at 320 images, batch 8
  c.batch_size = 8
  c.num_epochs, c.total_steps = 0, 400
  c.eval.size_divisor = 0
  c.eval.max_pairs = 1000
  c.eval.every_steps = c.checkpoint.every_steps = 200
  c.eval.batch_size = 16
  c.log_every_steps = 25

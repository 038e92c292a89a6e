"""Export a trained or converted model for serving: ONNX, StableHLO (jax.export), TF SavedModel.

  python -m hrnet_jax.export --config CONFIG --checkpoint PATH --format onnx|stablehlo|savedmodel
      --out FILE_OR_DIR [--size H W] [--batch N | --dynamic-batch] [--dynamic-size]
      [--with-preprocess] [--with-postprocess] [--verify] [--overwrite]

PATH is anything eval.py takes (a workdir, a step directory, a converted directory, an official
.pth). The graph is the network in float32 with the checkpoint's weights inside, on NHWC images
of one size (default: the recipe's input or crop size). Its input `images` is normalized float32,
or uint8 RGB with --with-preprocess (the recipe's mean/std applied inside); its outputs are named
by the task (`Task.serving_outputs`): the raw network outputs, or with --with-postprocess the
task's post-processing that is pure array math (segmentation labels at the input size, pose and
face keypoints in input pixels, top-5 classes).

- onnx: jax2onnx (the maintained JAX-to-ONNX converter; jax2tf + tf2onnx cannot work any more:
  jax2tf only emits XlaCallModule ops, which tf2onnx cannot read), opset 17, for onnxruntime or
  TensorRT.
- stablehlo: `jax.export` serialized; `jax.export.deserialize(data).call(images)` runs it with
  JAX alone (no flax, no hrnet_jax).
- savedmodel: jax2tf, weights as TF variables, signature `serving_default` for TF Serving.

The batch is fixed (--batch, default 1) or symbolic (--dynamic-batch). Height and width are fixed,
or with --dynamic-size (StableHLO, SavedModel) any multiples of 32 for nearest-fusion models
(pose, cls): bilinear resizes (seg, face) are interpolation matrices of fixed sizes. --verify runs
the artifact (onnxruntime, jax.export, TensorFlow) on random input next to the JAX model, prints
the errors, and fails (nothing written) above 1e-4. The exporters are optional dependencies:
`pip install 'hrnet-jax[export]'`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import io
import logging
import os
import pathlib
import shutil
import sys
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from hrnet_jax import ops
from hrnet_jax.errors import UserError

FORMATS = ('onnx', 'stablehlo', 'savedmodel')
ONNX_OPSET = 18
VERIFY_TOLERANCE = 1e-4
EXTRA = "pip install 'hrnet-jax[export]' (or: pip install -e '.[export]')"
_SAVEDMODEL_FILE = 'saved_model.pb'


class ExportError(UserError):
  """An export that cannot be made or failed its check; the message says which and why."""


@dataclasses.dataclass(frozen=True)
class Serving:
  """What is exported: `apply(variables, images) -> {name: array}` and its input."""
  apply: Callable[[Any, jax.Array], dict[str, jax.Array]]
  variables: dict[str, Any]
  input_hw: tuple[int, int]
  input_dtype: Any  # uint8 (with preprocessing) or float32
  batch: int | None  # None: symbolic
  dynamic_size: bool = False  # height and width symbolic multiples of 32

  def fn(self, images: jax.Array) -> dict[str, jax.Array]:
    """The graph with the weights closed over (constants of the exported program)."""
    return self.apply(self.variables, images)

  def input_spec(self) -> jax.ShapeDtypeStruct:
    h, w = ('32*h', '32*w') if self.dynamic_size else self.input_hw
    b = 'batch' if self.batch is None else self.batch
    if self.batch is None or self.dynamic_size:
      return jax.ShapeDtypeStruct(jax.export.symbolic_shape(f'{b}, {h}, {w}, 3'),
                                  self.input_dtype)
    return jax.ShapeDtypeStruct((b, h, w, 3), self.input_dtype)

  @functools.cached_property
  def output_names(self) -> list[str]:
    """The outputs' names in the exported order (traced once, abstractly)."""
    shapes = jax.eval_shape(self.fn, jax.ShapeDtypeStruct((1, *self.input_hw, 3),
                                                          self.input_dtype))
    return sorted(shapes)


def _require(module: str) -> Any:
  try:
    return __import__(module, fromlist=['_'])
  except ImportError:
    raise ExportError(f'this export needs {module.split(".")[0]}, which is not installed: '
                      f'{EXTRA}') from None


def plain_model_config(config: Any) -> Any:
  """The recipe with the model unscanned and without remat: every layer a plain op, which is what
  converters and serving runtimes handle best (ONNX has no cheap form of a scanned group)."""
  config = config.copy_and_resolve_references()
  with config.unlocked():
    config.model.scan = False
    config.model.remat = 'none'
  return config


def unstacked_variables(variables: dict[str, Any], model: Any) -> dict[str, Any]:
  """Checkpoint variables (scanned groups stacked or not) in the layout of `model`."""
  from hrnet_jax.convert import mapping
  target = traverse_util.flatten_dict(jax.eval_shape(
      model.init, jax.random.key(0), jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)))
  placed = mapping.restack(traverse_util.flatten_dict(variables), target)
  missing = sorted('/'.join(k) for k in target if k not in placed)
  if missing:
    raise ExportError(f'the checkpoint lacks {len(missing)} variables of the model, e.g. '
                      f'{missing[0]}')
  return traverse_util.unflatten_dict({k: np.asarray(placed[k]) for k in target})


def serving(config: Any, checkpoint_path: str | os.PathLike, input_hw: tuple[int, int], *,
            batch: int | None = 1, preprocess: bool = False, postprocess: bool = False,
            dynamic_size: bool = False) -> tuple[Serving, str]:
  """The exportable function of a recipe and checkpoint, and what checkpoint was read.
  `dynamic_size`: height and width any multiples of 32 (nearest-fusion models only)."""
  from hrnet_jax.data import transforms
  from hrnet_jax.tasks import get_task
  from hrnet_jax.train import checkpoint
  task = get_task(config)
  if dynamic_size:
    from hrnet_jax.models import zoo
    settings = zoo.model_config(config.model.arch, **task.model_kwargs)
    if (settings['upsample'] != 'nearest' or task.task_name == 'detection'
        or (postprocess and task.task_name == 'segmentation')):
      raise ExportError(f'--dynamic-size: {config.model.arch} resizes by bilinear interpolation '
                        'matrices of fixed sizes; export one --size per input size instead')
  variables, where = checkpoint.load_model_variables(checkpoint_path, task)
  plain = get_task(plain_model_config(config))
  model = plain.create_model()
  variables = unstacked_variables(variables, model)
  mean, std = tuple(config.data.mean), tuple(config.data.std)
  hw = (int(input_hw[0]), int(input_hw[1]))

  def apply(variables, images):
    x = transforms.normalize(images, mean, std) if preprocess else images
    return plain.serving_outputs(model.apply(variables, x, train=False), images.shape[1:3],
                                 postprocess)

  dtype = jnp.uint8 if preprocess else jnp.float32
  return Serving(apply, variables, hw, dtype, batch, dynamic_size), where


def default_size(config: Any) -> tuple[int, int]:
  """The recipe's network input: `data.input_size` (pose, face, cls), `data.crop_size` (seg) or
  the first of `data.buckets` (detection: the landscape canvas)."""
  for key in ('input_size', 'crop_size'):
    if config.data.get(key):
      return tuple(int(v) for v in config.data[key])
  if config.data.get('buckets'):
    return tuple(int(v) for v in config.data.buckets[0])
  raise ExportError('the recipe has no config.data.input_size or crop_size: give --size H W')


# --- Writers ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Spec:
  shape: tuple[int | str, ...]
  dtype: Any


def write_onnx(s: Serving, path: pathlib.Path) -> None:
  jax2onnx = _require('jax2onnx')
  onnx = _require('onnx')
  names = s.output_names
  fn = lambda images: tuple(s.fn(images)[k] for k in names)
  for name in ('jax2onnx', 'onnx_ir'):  # per-op warnings about plugins this model never uses
    logging.getLogger(name).setLevel(logging.ERROR)
  # jax2onnx names a symbolic dimension by a string in the shape (its own symbolic form).
  spec = _Spec(('batch' if s.batch is None else s.batch, *s.input_hw, 3), np.dtype(s.input_dtype))
  with contextlib.redirect_stdout(io.StringIO()):  # some releases print debugging lines
    model = jax2onnx.to_onnx(fn, [spec], opset=ONNX_OPSET, model_name='hrnet',
                             input_names=['images'], output_names=names)
  onnx.save(model, str(path))


def write_stablehlo(s: Serving, path: pathlib.Path) -> None:
  exported = jax.export.export(jax.jit(s.fn))(s.input_spec())
  path.write_bytes(exported.serialize())


def write_savedmodel(s: Serving, path: pathlib.Path) -> None:
  tf = _require('tensorflow')
  from jax.experimental import jax2tf
  leaves, tree = jax.tree_util.tree_flatten(s.variables)
  module = tf.Module()
  module.weights = [tf.Variable(v, trainable=False) for v in leaves]
  batch = 'b' if s.batch is None else str(s.batch)
  h, w = ('32*h', '32*w') if s.dynamic_size else s.input_hw
  converted = jax2tf.convert(lambda w, x: s.apply(jax.tree_util.tree_unflatten(tree, w), x),
                             polymorphic_shapes=[None, f'({batch}, {h}, {w}, 3)'],
                             with_gradient=False)
  hw = [None, None] if s.dynamic_size else list(s.input_hw)
  spec = tf.TensorSpec([s.batch, *hw, 3], tf.as_dtype(np.dtype(s.input_dtype)), name='images')

  @tf.function(input_signature=[spec], autograph=False)
  def serve(images):
    return converted(module.weights, images)

  module.serve = serve
  with ops.portable_top_k():  # traced here: TensorFlow cannot read lax.top_k's composite op
    tf.saved_model.save(module, str(path), signatures={'serving_default': serve})


WRITERS = {'onnx': write_onnx, 'stablehlo': write_stablehlo, 'savedmodel': write_savedmodel}


# --- Runners (for --verify and the latency table) ------------------------------------------------


def load_runner(fmt: str, path: str | os.PathLike,
                threads: int | None = None) -> Callable[[np.ndarray], dict[str, np.ndarray]]:
  """images -> {name: numpy array} of an exported artifact, in its own runtime."""
  path = str(path)
  if fmt == 'onnx':
    ort = _require('onnxruntime')
    options = ort.SessionOptions()
    if threads:
      options.intra_op_num_threads = threads
    session = ort.InferenceSession(path, options, providers=['CPUExecutionProvider'])
    names = [o.name for o in session.get_outputs()]
    return lambda x: dict(zip(names, session.run(names, {'images': x})))
  if fmt == 'stablehlo':
    exported = jax.export.deserialize(bytearray(pathlib.Path(path).read_bytes()))
    call = jax.jit(exported.call)
    return lambda x: {k: np.asarray(v) for k, v in call(x).items()}
  if fmt == 'savedmodel':
    tf = _require('tensorflow')
    signature = tf.saved_model.load(path).signatures['serving_default']
    return lambda x: {k: v.numpy() for k, v in signature(images=tf.constant(x)).items()}
  raise ExportError(f'--format {fmt!r}: expected one of {FORMATS}')


def random_input(s: Serving, batch: int, seed: int = 0,
                 hw: tuple[int, int] | None = None) -> np.ndarray:
  """Images for checks: uint8 noise with preprocessing, else normalized-like float32 noise."""
  rng = np.random.default_rng(seed)
  shape = (batch, *(hw or s.input_hw), 3)
  if s.input_dtype == jnp.uint8:
    return rng.integers(0, 256, shape, dtype=np.uint8)
  return rng.standard_normal(shape, dtype=np.float32)


def compare(expected: dict[str, np.ndarray], found: dict[str, np.ndarray]) -> dict[str, float]:
  """Per output: float outputs the max abs difference over the max abs value; integer outputs
  (labels, class ids) the share of elements that differ."""
  if sorted(expected) != sorted(found):
    raise ExportError(f'the artifact has outputs {sorted(found)}, expected {sorted(expected)}')
  errors = {}
  for name, e in expected.items():
    e, f = np.asarray(e), np.asarray(found[name])
    if e.shape != f.shape:
      raise ExportError(f'output {name}: shape {f.shape}, expected {e.shape}')
    if np.issubdtype(e.dtype, np.integer):
      errors[name] = float(np.mean(e != f))
    else:
      errors[name] = float(np.max(np.abs(e.astype(np.float64) - f)) /
                           max(float(np.max(np.abs(e))), 1e-12))
  return errors


def verify(s: Serving, fmt: str, path: pathlib.Path) -> dict[str, float]:
  """Errors of the artifact against the JAX function on random input (per output, the worst):
  at batch 3 when the batch is symbolic (not the traced size), and with symbolic sizes also at
  a second size."""
  batch = 3 if s.batch is None else s.batch
  sizes = [s.input_hw]
  if s.dynamic_size:
    sizes.append((s.input_hw[0] + 32, s.input_hw[1] + 64))
  run, fn, errors = load_runner(fmt, path), jax.jit(s.fn), {}
  for k, hw in enumerate(sizes):
    x = random_input(s, batch, seed=1 + k, hw=hw)
    found = compare({n: np.asarray(v) for n, v in fn(x).items()}, run(x))
    errors = {n: max(v, errors.get(n, 0.0)) for n, v in found.items()}
  return errors


# --- The command ---------------------------------------------------------------------------------


def _refuse_existing(out: pathlib.Path, fmt: str, overwrite: bool) -> None:
  """An existing --out is replaced only with --overwrite, and only if it is what an export of
  this format writes (a regular file; a SavedModel directory)."""
  if not os.path.lexists(out):
    return
  if out.is_symlink():
    raise ExportError(f'--out {out} is a symbolic link; not replacing it')
  if fmt == 'savedmodel':
    if not (out.is_dir() and (out / _SAVEDMODEL_FILE).is_file()):
      raise ExportError(f'--out {out} exists and is not a SavedModel directory; not replacing it')
  elif not out.is_file():
    raise ExportError(f'--out {out} exists and is not a file; not replacing it')
  if not overwrite:
    raise ExportError(f'--out {out} exists; pass --overwrite to replace it')


def export(config: Any, checkpoint_path: str | os.PathLike, fmt: str, out: str | os.PathLike, *,
           size: tuple[int, int] | None = None, batch: int | None = 1, preprocess: bool = False,
           postprocess: bool = False, dynamic_size: bool = False, check: bool = False,
           overwrite: bool = False, log: Callable[[str], None] = print) -> dict[str, Any]:
  """Writes the artifact to `out` (through a temporary sibling, so a failed export or check
  leaves an existing `out` untouched); returns what was done (sizes, times, errors)."""
  from hrnet_jax.convert.files import create_file, new_sibling, swap_in
  if fmt not in FORMATS:
    raise ExportError(f'--format {fmt!r}: expected one of {FORMATS}')
  if batch is not None and batch < 1:
    raise ExportError(f'--batch {batch}: expected a positive batch size')
  out = pathlib.Path(out)
  _refuse_existing(out, fmt, overwrite)
  hw = tuple(size) if size else default_size(config)
  if len(hw) != 2 or min(hw) < 1:
    raise ExportError(f'--size {hw}: expected two positive numbers, H W')
  if dynamic_size and fmt == 'onnx':
    raise ExportError('--dynamic-size: only for stablehlo and savedmodel (the ONNX converter '
                      'takes a symbolic batch, not symbolic multiples of 32)')
  if dynamic_size and (hw[0] % 32 or hw[1] % 32):
    raise ExportError(f'--dynamic-size: --size {hw[0]} {hw[1]} (the size --verify runs) must be '
                      'multiples of 32')
  if fmt == 'onnx' and config.task == 'detection':
    from hrnet_jax.tasks.detection import framework_class
    framework = framework_class(config.model.arch)
    if not framework.onnx_export:
      raise ExportError(f'--format onnx: {config.model.arch} does not convert to ONNX here (the '
                        'converter does not finish on its corner pooling); use stablehlo or '
                        'savedmodel')
    if postprocess and not framework.onnx_postprocess:
      raise ExportError(f'--with-postprocess: {config.model.arch}\'s detection post-processing '
                        '(per-image NMS) does not convert to ONNX here; export the raw outputs, '
                        'or use stablehlo or savedmodel')
  s, where = serving(config, checkpoint_path, hw, batch=batch, preprocess=preprocess,
                     postprocess=postprocess, dynamic_size=dynamic_size)
  size = '(32*h)x(32*w)' if dynamic_size else f'{hw[0]}x{hw[1]}'
  log(f'exporting {where} as {fmt}: images {"batch" if batch is None else batch}x{size}x3 '
      f'{np.dtype(s.input_dtype).name} -> {", ".join(s.output_names)}')
  out.parent.mkdir(parents=True, exist_ok=True)
  tmp = new_sibling(out, 'tmp', os.mkdir if fmt == 'savedmodel' else create_file)
  report: dict[str, Any] = {'format': fmt, 'out': str(out), 'input_hw': list(hw), 'batch': batch}
  try:
    if fmt == 'savedmodel':
      tmp.rmdir()  # tf writes the directory itself
    start = time.time()
    WRITERS[fmt](s, tmp)
    report['export_s'] = round(time.time() - start, 1)
    report['bytes'] = (sum(f.stat().st_size for f in tmp.rglob('*') if f.is_file())
                       if tmp.is_dir() else tmp.stat().st_size)
    if check:
      errors = verify(s, fmt, tmp)
      report['errors'] = errors
      log('verify (max relative error; integer outputs: share differing): ' +
          ', '.join(f'{k} {v:.2e}' for k, v in errors.items()))
      bad = {k: v for k, v in errors.items() if not v <= VERIFY_TOLERANCE}
      if bad:
        raise ExportError(f'--verify failed: {bad} above {VERIFY_TOLERANCE}; {out} not written')
    if fmt == 'savedmodel':
      swap_in(tmp, out)
    else:
      os.replace(tmp, out)
  finally:
    if os.path.lexists(tmp):
      shutil.rmtree(tmp) if tmp.is_dir() else os.remove(tmp)
  log(f'wrote {out} ({report["bytes"] / 2**20:.1f} MiB) in {report["export_s"]} s')
  return report


_HYPHENATED = ('--dynamic-batch', '--dynamic-size', '--with-preprocess', '--with-postprocess')


def _absl_argv(argv: list[str]) -> list[str]:
  """The documented spellings for absl: `--size H W` -> `--size=H,W`, `--dynamic-batch` ->
  `--dynamic_batch` (and the other hyphenated flags)."""
  out, i = [], 0
  while i < len(argv):
    a = argv[i]
    if (a == '--size' and i + 2 < len(argv) and argv[i + 1].isdigit()
        and argv[i + 2].isdigit()):
      out.append(f'--size={argv[i + 1]},{argv[i + 2]}')
      i += 3
      continue
    flag = a.split('=', 1)[0]
    if flag in _HYPHENATED or flag in tuple('--no' + f[2:] for f in _HYPHENATED):
      a = flag.replace('-', '_').replace('__', '--', 1) + a[len(flag):]
    out.append(a)
    i += 1
  return out


def main() -> None:
  from absl import flags

  from hrnet_jax import cli
  cli.define_config_flag()
  flags.DEFINE_string('checkpoint', None, 'Checkpoint to export (as eval.py takes).')
  flags.DEFINE_enum('format', None, list(FORMATS), 'Artifact format.')
  flags.DEFINE_string('out', None, 'Output file (onnx, stablehlo) or directory (savedmodel).')
  flags.DEFINE_list('size', None, 'Input height and width: --size H W (default: the recipe\'s).')
  flags.DEFINE_integer('batch', 1, 'Fixed batch size of the graph.')
  flags.DEFINE_bool('dynamic_batch', False, 'A symbolic batch dimension instead of --batch.')
  flags.DEFINE_bool('dynamic_size', False, 'Height and width any multiples of 32 (stablehlo, '
                    'savedmodel; nearest-fusion models: pose, cls).')
  flags.DEFINE_bool('with_preprocess', False, 'Take uint8 RGB images; normalize inside.')
  flags.DEFINE_bool('with_postprocess', False, 'Add the task\'s array post-processing.')
  flags.DEFINE_bool('verify', False, 'Check the artifact against JAX; fail above 1e-4.')
  flags.DEFINE_bool('overwrite', False, 'Replace an existing artifact of the same format.')
  flags.mark_flags_as_required(['config', 'checkpoint', 'format', 'out'])

  def run(argv: list[str]) -> None:
    if len(argv) > 1:
      raise UserError(f'unexpected arguments {argv[1:]}')
    f = flags.FLAGS
    size = None
    if f.size:
      try:
        size = tuple(int(v) for v in f.size)
      except ValueError:
        raise UserError(f'--size {",".join(f.size)}: expected two integers, H W') from None
    cli.enable_compile_cache(f.config.get('compile_cache', 'auto'))
    export(f.config, f.checkpoint, f.format, f.out, size=size,
           batch=None if f.dynamic_batch else f.batch, preprocess=f.with_preprocess,
           postprocess=f.with_postprocess, dynamic_size=f.dynamic_size, check=f.verify,
           overwrite=f.overwrite)

  sys.argv = _absl_argv(sys.argv)
  cli.run(run)


if __name__ == '__main__':
  main()

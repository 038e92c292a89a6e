"""Shared fixtures and helpers.

Tiers: `make test` runs the fast tier (`-m "not slow"`), `make test-all` everything (CI). A test
is marked slow when it launches processes, trains 60+ steps, runs a converted checkpoint end to
end, builds a TFDS dataset, exports through a converter, or runs the benchmark.

Compiled programs are shared through JAX's persistent compilation cache, kept between runs (in
$HRNET_JAX_CACHE or ~/.cache/hrnet_jax), and the trainer tests all run one tiny recipe
(`configs/<family>.py:runlocal`) so that they compile the same programs.
"""

import os
import pathlib

import jax
import numpy as np
import pytest

from hrnet_jax.data import demos

os.environ.setdefault('JAX_COMPILATION_CACHE_DIR', str(demos.cache_dir() / 'xla-tests'))
jax.config.update('jax_compilation_cache_dir', os.environ['JAX_COMPILATION_CACHE_DIR'])
jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.2)

DATA = pathlib.Path(__file__).parent / 'data'
# The tiny model of the `runlocal` recipes, for tests that build models directly.
from configs.common import TINY_MODEL as TINY  # noqa: E402,F401 (for the tests)

# A tiny two-stage detector (tests against the PyTorch reference: any size exercises every
# tensor).
TWO_STAGE_TINY = dict(width=4, num_modules=(1, 1, 1), num_blocks=1, stage1_blocks=1,
                      stage1_planes=8, out_channels=16, fc_channels=32, num_classes=3,
                      test_proposals=300)


def recipe(name: str, root=None, arg: str = 'runlocal'):
  """configs/<name>.py:<arg> with the data root set (the `runlocal` tiny recipe by default)."""
  import importlib
  c = importlib.import_module(f'configs.{name}').get_config(arg)
  if root is not None:
    c.data.root = str(root)
  return c


def fresh_step(config, total_steps: int = 10):
  """(fresh state, jitted step) of a config, built by the trainer's own seams on all devices."""
  from hrnet_jax.tasks import get_task
  from hrnet_jax.train import optim, parallel
  from hrnet_jax.train.loop import create_train_state, make_train_step, shardings_of
  task, mesh = get_task(config), parallel.make_mesh()
  schedule = optim.make_schedule(config.optimizer, total_steps)
  tx = optim.make_optimizer(config.optimizer, schedule)
  state, _ = create_train_state(config, task, mesh, tx, log=lambda _: None)
  return state, make_train_step(config, task, mesh, tx, schedule, shardings_of(state))


def random_variables(model, x, seed: int = 0) -> dict:
  """Variables of `model` for input `x` without compiling its init (a compile of the full
  initializer costs more than the forward it feeds): shapes by `jax.eval_shape`, values from
  numpy: kernels N(0, 1/fan_in), biases and BN offsets N(0, 0.1^2), BN scales and running
  variances around 1, running means N(0, 0.1^2)."""
  rng = np.random.default_rng(seed)
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), x))

  def fill(path, s):
    name = str(getattr(path[-1], 'key', path[-1]))
    noise = rng.standard_normal(s.shape)
    if name == 'kernel':
      value = noise / np.sqrt(max(1, int(np.prod(s.shape[:-1]))))
    elif name in ('scale', 'var'):
      value = 1.0 + 0.1 * np.abs(noise) if name == 'var' else 1.0 + 0.1 * noise
    else:
      value = 0.1 * noise
    return np.asarray(value, s.dtype)

  return jax.tree_util.tree_map_with_path(fill, shapes)


def fit_two_stage(model, task, x, image_hw, targets, tx, steps, batch=None) -> list[dict]:
  """`steps` optimizer steps of a two-stage detector on one batch (its RoIs drawn anew each
  step), from `random_variables`; per step the loss and the task's logged terms (floats)."""
  import optax
  variables = random_variables(model, x)

  @jax.jit
  def step(params, opt_state, stats, i):
    def loss_fn(p):
      out, upd = model.apply({'params': p, 'batch_stats': stats}, x, train=True,
                             image_hw=image_hw, targets=targets,
                             rngs={'sample': jax.random.key(i)}, mutable=['batch_stats'])
      loss, extra = task.loss(out, batch or {})
      return loss, (dict(extra, loss=loss), upd['batch_stats'])
    (_, (log, stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state)
    return optax.apply_updates(params, updates), opt_state, stats, log

  params, stats = variables['params'], variables['batch_stats']
  opt_state = tx.init(params)
  logs = []
  for i in range(steps):
    params, opt_state, stats, log = step(params, opt_state, stats, i)
    logs.append({k: float(v) for k, v in log.items()})
  return logs


def scaled_state_dict(arch, seed=0, **overrides):
  """Random weights of the release's keys and shapes, scaled so that activations stay O(1)
  (weights N(0, 1 / fan_in), BN statistics near identity): proposals and scores spread out."""
  from hrnet_jax.convert import mapping
  rng = np.random.default_rng(seed)
  out = {}
  for key, shape in mapping.torch_keys_and_shapes(arch, **overrides):
    if key.endswith('num_batches_tracked'):
      out[key] = np.zeros((), np.int64)
    elif key.endswith('running_var') or (len(shape) == 1 and key.endswith('weight')):
      out[key] = rng.uniform(0.5, 1.5, shape).astype(np.float32)
    elif len(shape) == 1:
      out[key] = rng.normal(0, 0.1, shape).astype(np.float32)
    else:
      out[key] = rng.normal(0, 1 / np.sqrt(np.prod(shape[1:])), shape).astype(np.float32)
  return out


def write_random_checkpoint(config, path, bn_offset: float = 0.0):
  """A converted-checkpoint directory of the config's model with random weights (N(0, 0.1);
  BN statistics |N(0, 0.1)| + `bn_offset`), for runs whose numbers need not be trained."""
  from hrnet_jax import convert
  from hrnet_jax.models import zoo
  from hrnet_jax.tasks import get_task
  task = get_task(config)
  rng = np.random.default_rng(0)
  shapes = zoo.init_shapes(config.model.arch, **task.model_kwargs)
  variables = jax.tree_util.tree_map(
      lambda s: (0.1 * rng.standard_normal(s.shape)).astype(s.dtype), shapes)
  variables['batch_stats'] = jax.tree_util.tree_map(lambda v: np.abs(v) + bn_offset,
                                                    variables['batch_stats'])
  convert.write_variables(variables, path, {'arch': config.model.arch,
                                            'overrides': task.model_kwargs})
  return variables


@pytest.fixture
def x64():
  """float64 inside the test (equivalence checks below float32 noise)."""
  with jax.enable_x64(True):
    yield


# --- Demo data, written once per session ---------------------------------------------------


@pytest.fixture(scope='session')
def seg_root(tmp_path_factory):
  return demos.write_seg_demo(tmp_path_factory.mktemp('seg') / 'demo', num_train=16,
                                  num_val=4, size_hw=(64, 128))


@pytest.fixture(scope='session')
def pose_root(tmp_path_factory):
  return demos.write_pose_demo(tmp_path_factory.mktemp('pose') / 'demo', num_train=24,
                                   num_val=12, size_hw=(96, 128))


@pytest.fixture(scope='session')
def face_root(tmp_path_factory):
  return demos.write_face_demo(tmp_path_factory.mktemp('face') / 'demo', num_train=32,
                                   num_valid=16)


@pytest.fixture(scope='session')
def cls_root(tmp_path_factory):
  return demos.write_cls_demo(tmp_path_factory.mktemp('cls') / 'demo', num_train=24,
                                  num_val=6)


@pytest.fixture(scope='session')
def det_demo_root(tmp_path_factory):
  return demos.write_det_demo(tmp_path_factory.mktemp('det') / 'demo', num_train=24,
                                  num_val=8)


# --- Reading results back ------------------------------------------------------------------


def read_scalars(workdir, tag):
  """(step, value) of one TensorBoard scalar, read back from the event files."""
  from tensorboardX.proto import event_pb2
  values = []
  for f in sorted((pathlib.Path(workdir) / 'tensorboard').glob('events.out.tfevents.*')):
    data = f.read_bytes()
    pos = 0
    while pos < len(data):
      n = int.from_bytes(data[pos:pos + 8], 'little')
      event = event_pb2.Event.FromString(data[pos + 12:pos + 12 + n])
      pos += 12 + n + 4
      for v in event.summary.value:
        if v.tag == tag:
          values.append((event.step, v.simple_value))
  return values


def flat(tree) -> dict:
  """{'path': numpy array} of a pytree."""
  return {jax.tree_util.keystr(k): np.asarray(v)
          for k, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def relative_error(a, b) -> float:
  """max |a - b| / max |b|: the bound the parity tests hold."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


# --- Optional frameworks ------------------------------------------------------------------


@pytest.fixture
def tensorflow():
  """TensorFlow (TFDS builds), skipping without it. torchvision is imported first when present:
  importing it after TensorFlow crashes the process (a segfault in triton's import)."""
  try:
    import torchvision  # noqa: F401
  except ImportError:
    pass
  return pytest.importorskip('tensorflow')


# --- PyTorch references (optional: tests that need them skip without torch) ----------------


def nchw_to_nhwc(t) -> np.ndarray:
  a = t.detach().numpy()
  return a.transpose(0, 2, 3, 1) if a.ndim == 4 else a


def randomize_torch_bn(model, seed: int = 1) -> None:
  """Non-trivial BN affine parameters and running statistics, so eval mode is a real test."""
  torch = pytest.importorskip('torch')
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for m in model.modules():
      if isinstance(m, torch.nn.BatchNorm2d):
        m.weight.uniform_(0.5, 1.5, generator=g)
        m.bias.normal_(0.0, 0.1, generator=g)
        m.running_mean.normal_(0.0, 0.1, generator=g)
        m.running_var.uniform_(0.5, 1.5, generator=g)


def read_reference_layout(name: str) -> list[tuple[str, tuple[int, ...]]]:
  """`name [d0, d1, ...]` per line, as dumped from the official models."""
  out = []
  for line in (DATA / name).read_text().splitlines():
    key, shape = line.split(' ', 1)
    dims = shape.strip('[]').replace(' ', '')
    out.append((key, tuple(int(d) for d in dims.split(',')) if dims else ()))
  return out

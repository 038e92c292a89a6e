"""hrnet_jax.export: every task's small model to ONNX (run by onnxruntime), StableHLO (reloaded
in a process without flax) and SavedModel (run by TensorFlow), checked against the JAX model."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import recipe, write_random_checkpoint
from hrnet_jax import export
from hrnet_jax.models import zoo
from hrnet_jax.tasks import get_task

# Two modules in stage 3 and two blocks per branch: scanned groups that the export unstacks.
SHAPE = dict(num_modules=(1, 2, 1), num_blocks=2)
RECIPES = {'pose': 'pose_coco', 'seg': 'seg_cityscapes', 'face': 'face_wflw',
           'cls': 'cls_imagenet', 'seg_ocr': 'seg_cityscapes_ocr', 'det': 'det_coco_fcos',
           'centernet': 'det_coco_centernet'}


def tiny(name: str, path):
  """(recipe, checkpoint dir) of a tiny model with random weights (BN statistics not 0/1)."""
  c = recipe(name)
  c.model.overrides.update(SHAPE)
  write_random_checkpoint(c, path, bn_offset=0.5)
  return c, path


@pytest.fixture(scope='module')
def models(tmp_path_factory):
  root = tmp_path_factory.mktemp('models')
  return {task: tiny(name, root / task) for task, name in RECIPES.items()}


@pytest.mark.slow
def test_stablehlo_of_every_task_matches_the_model_through_its_own_path(models, tmp_path):
  """Raw outputs (OCR: both heads) and post-processed ones, with a symbolic batch."""
  for task, post in (('pose', True), ('seg', True), ('face', False), ('cls', True),
                     ('seg_ocr', False), ('det', True), ('det', False), ('centernet', True),
                     ('centernet', False)):
    c, ckpt = models[task]
    out = tmp_path / f'{task}_{post}.stablehlo'
    report = export.export(c, ckpt, 'stablehlo', out, batch=None, preprocess=True,
                           postprocess=post, check=True, log=lambda _: None)
    assert max(report['errors'].values()) <= export.VERIFY_TOLERANCE
    names = sorted(report['errors'])
    expected = {'pose': ['keypoints', 'scores'], 'seg': ['labels'], 'face': ['heatmaps'],
                'cls': ['top_ids', 'top_probs'], 'seg_ocr': ['aux_logits', 'logits'],
                'det': (['boxes', 'labels', 'scores', 'valid'] if post else
                        ['centerness', 'distances', 'logits']),
                'centernet': (['centres', 'pairs'] if post else
                              sorted(f'{b}_{k}' for b in ('tl', 'br', 'ct')
                                     for k in ('heat', 'tag', 'regr') if (b, k) != ('ct', 'tag')))
                }[task]
    assert names == expected, task


def test_the_exported_graph_is_the_checkpoint_model(models, tmp_path):
  """Independent of the export path: the network applied by the evaluator's own model (scanned,
  as trained) on normalized images gives the exported raw output; the post-processing gives the
  heatmap argmax scaled to input pixels."""
  from hrnet_jax.data import transforms
  from hrnet_jax.train import checkpoint
  c, ckpt = models['pose']
  s, _ = export.serving(c, ckpt, (128, 96), batch=2, preprocess=True, postprocess=True)
  task = get_task(c)
  variables, _ = checkpoint.load_model_variables(ckpt, task)
  x = export.random_input(s, 2)
  heatmaps = np.asarray(task.create_model().apply(
      variables, transforms.normalize(x, c.data.mean, c.data.std), train=False))
  out = jax.jit(s.fn)(x)
  flat = heatmaps.reshape(2, -1, heatmaps.shape[-1])
  np.testing.assert_allclose(out['scores'], flat.max(axis=1), rtol=1e-5)
  peak = flat.argmax(axis=1)
  found = flat.max(axis=1) > 0  # a map without a positive peak decodes to (0, 0)
  rows = np.where(found, peak // heatmaps.shape[2], 0)
  cols = np.where(found, peak % heatmaps.shape[2], 0)
  assert found.any() and not found.all()
  # Within a quarter heatmap pixel (the sub-pixel step) of the peak, times the stride of 4.
  assert np.all(np.abs(np.asarray(out['keypoints'])[..., 0] - 4 * cols) <= 1.0)
  assert np.all(np.abs(np.asarray(out['keypoints'])[..., 1] - 4 * rows) <= 1.0)
  raw, _ = export.serving(c, ckpt, (128, 96), batch=2)
  np.testing.assert_allclose(jax.jit(raw.fn)(transforms.normalize(x, c.data.mean, c.data.std))
                             ['heatmaps'], heatmaps, rtol=1e-5, atol=1e-6)


def test_stablehlo_reloads_in_a_process_without_flax(models, tmp_path):
  c, ckpt = models['seg']
  out = tmp_path / 'seg.stablehlo'
  export.export(c, ckpt, 'stablehlo', out, size=(72, 100), batch=None, log=lambda _: None)
  s, _ = export.serving(c, ckpt, (72, 100), batch=None)
  x = export.random_input(s, 3)
  np.save(tmp_path / 'x.npy', x)
  code = f"""
import sys
sys.modules['flax'] = None  # any import of flax (or of hrnet_jax, which needs it) fails
import jax, numpy as np
call = jax.export.deserialize(bytearray(open({str(out)!r}, 'rb').read())).call
np.save({str(tmp_path / 'y.npy')!r}, np.asarray(call(np.load({str(tmp_path / 'x.npy')!r}))['logits']))
assert not any(m.startswith(('flax', 'hrnet_jax')) for m in sys.modules if sys.modules[m])
"""
  done = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                        cwd=tmp_path)
  assert done.returncode == 0, done.stderr[-2000:]
  np.testing.assert_allclose(np.load(tmp_path / 'y.npy'), jax.jit(s.fn)(x)['logits'],
                             rtol=1e-5, atol=1e-5)


def test_bad_requests_fail_in_one_line_and_keep_what_exists(models, tmp_path, monkeypatch):
  c, ckpt = models['cls']
  mine = tmp_path / 'mine.onnx'
  mine.write_text('not ours to lose')
  with pytest.raises(export.ExportError, match='exists; pass --overwrite'):
    export.export(c, ckpt, 'onnx', mine)
  (tmp_path / 'dir').mkdir()
  with pytest.raises(export.ExportError, match='not a SavedModel directory'):
    export.export(c, ckpt, 'savedmodel', tmp_path / 'dir', overwrite=True)
  with pytest.raises(export.ExportError, match='--format'):
    export.export(c, ckpt, 'tflite', tmp_path / 'x')
  monkeypatch.setitem(sys.modules, 'jax2onnx', None)
  with pytest.raises(export.ExportError, match=r"needs jax2onnx.*hrnet-jax\[export\]"):
    export.export(c, ckpt, 'onnx', tmp_path / 'new.onnx', log=lambda _: None)
  assert mine.read_text() == 'not ours to lose'
  assert sorted(p.name for p in tmp_path.iterdir()) == ['dir', 'mine.onnx']  # no temporaries
  det, det_ckpt = models['det']
  with pytest.raises(export.ExportError, match='detection post-processing .* ONNX'):
    export.export(det, det_ckpt, 'onnx', tmp_path / 'det.onnx', postprocess=True)
  with pytest.raises(export.ExportError, match='--dynamic-size: fcos_w18_small_v1'):
    export.export(det, det_ckpt, 'stablehlo', tmp_path / 'det.stablehlo', dynamic_size=True)


@pytest.mark.slow
def test_a_failed_verification_writes_nothing(models, tmp_path, monkeypatch):
  c, ckpt = models['cls']
  out = tmp_path / 'cls.stablehlo'
  out.write_bytes(b'previous export')
  monkeypatch.setattr(export, 'compare', lambda e, f: {'logits': 0.5})
  with pytest.raises(export.ExportError, match='--verify failed'):
    export.export(c, ckpt, 'stablehlo', out, check=True, overwrite=True, log=lambda _: None)
  assert out.read_bytes() == b'previous export'
  assert [p.name for p in tmp_path.iterdir()] == ['cls.stablehlo']


def test_compare_by_hand():
  e = {'a': np.array([1.0, -4.0]), 'ids': np.array([1, 2, 3, 4])}
  f = {'a': np.array([1.0, -3.0]), 'ids': np.array([1, 2, 0, 4])}
  assert export.compare(e, f) == {'a': 0.25, 'ids': 0.25}


@pytest.mark.slow
@pytest.mark.parametrize('task', ['pose', 'seg', 'face', 'cls', 'seg_ocr', 'det'])
def test_onnx_of_every_task_runs_in_onnxruntime_at_another_batch(models, tmp_path, task):
  """Symbolic batch, verified at batch 3 (traced symbolically); pose and cls post-processed."""
  pytest.importorskip('onnxruntime')
  c, ckpt = models[task]
  out = tmp_path / f'{task}.onnx'
  report = export.export(c, ckpt, 'onnx', out, batch=None, preprocess=True,
                         postprocess=task in ('pose', 'cls'), check=True, log=lambda _: None)
  assert max(report['errors'].values()) <= export.VERIFY_TOLERANCE
  import onnx
  graph = onnx.load(str(out)).graph
  assert [i.name for i in graph.input] == ['images']
  assert graph.input[0].type.tensor_type.shape.dim[0].dim_param  # symbolic batch
  assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
  s, _ = export.serving(c, ckpt, export.default_size(c), batch=None, preprocess=True,
                        postprocess=task in ('pose', 'cls'))
  x = export.random_input(s, 5, seed=7)
  errors = export.compare({k: np.asarray(v) for k, v in jax.jit(s.fn)(x).items()},
                          export.load_runner('onnx', out)(x))
  assert max(errors.values()) <= export.VERIFY_TOLERANCE


@pytest.mark.slow
def test_savedmodel_serving_signature_runs_in_tensorflow(models, tmp_path, tensorflow):
  c, ckpt = models['seg']
  out = tmp_path / 'seg_savedmodel'
  report = export.export(c, ckpt, 'savedmodel', out, batch=None, preprocess=True,
                         postprocess=True, check=True, log=lambda _: None)
  assert report['errors']['labels'] <= export.VERIFY_TOLERANCE
  signature = tensorflow.saved_model.load(str(out)).signatures['serving_default']
  assert signature.structured_input_signature[1]['images'].dtype == tensorflow.uint8
  assert list(signature.structured_outputs) == ['labels']
  # Replacing its own earlier export is allowed with --overwrite.
  export.export(c, ckpt, 'savedmodel', out, overwrite=True, log=lambda _: None)
  assert (out / 'saved_model.pb').is_file()


@pytest.mark.slow
@pytest.mark.parametrize('task', ['cls', 'det'])
def test_savedmodel_carries_a_top_k(models, tmp_path, tensorflow, task):
  """Post-processing with lax.top_k (the classifier's top 5, FCOS's per-level candidates and
  NMS) in a SavedModel: traced with the sort-based top_k that TensorFlow can read, verified."""
  c, ckpt = models[task]
  report = export.export(c, ckpt, 'savedmodel', tmp_path / 'm', batch=None, preprocess=True,
                         postprocess=True, check=True, log=lambda _: None)
  assert max(report['errors'].values()) <= export.VERIFY_TOLERANCE


def test_portable_top_k_equals_lax_top_k_with_ties():
  """The sort inside `portable_top_k()` gives lax.top_k's values and indices, the lower index
  first among equal values, along the last axis of a batch."""
  from hrnet_jax import ops
  x = np.random.default_rng(0).integers(0, 6, (3, 40)).astype(np.float32)  # many ties
  want = jax.lax.top_k(x, 7)
  with ops.portable_top_k():
    got = jax.jit(lambda v: ops.top_k(v, 7))(x)
  for g, w in zip(got, want):
    np.testing.assert_array_equal(np.asarray(g), np.asarray(w))
  text = jax.jit(lambda v: ops.top_k(v, 7)).lower(x).as_text()
  with ops.portable_top_k():
    portable = jax.jit(lambda v: ops.top_k(v, 7)).lower(x).as_text()
  assert 'top_k' in text and 'top_k' not in portable and 'sort' in portable


@pytest.mark.slow
def test_the_command(models, tmp_path):
  """`--size H W`, hyphenated flags, --verify printed; an existing file: one line, exit 2."""
  c, ckpt = models['pose']
  env = dict(os.environ, PYTHONPATH=os.getcwd())
  out = tmp_path / 'pose.onnx'
  args = [sys.executable, '-m', 'hrnet_jax.export', '--config', 'configs/pose_coco.py:runlocal',
          *[f'--config.model.overrides.{k}={",".join(map(str, v)) if isinstance(v, tuple) else v}'
            for k, v in SHAPE.items()],
          '--checkpoint', str(ckpt), '--format', 'onnx', '--out', str(out), '--size', '100', '70',
          '--dynamic-batch', '--with-preprocess', '--with-postprocess', '--verify']
  done = subprocess.run(args, capture_output=True, text=True, env=env)
  assert done.returncode == 0, done.stderr[-3000:]
  assert 'verify (max relative error' in done.stdout and 'keypoints' in done.stdout
  assert 'images batchx100x70x3 uint8' in done.stdout
  import onnxruntime
  session = onnxruntime.InferenceSession(str(out))
  y = session.run(None, {'images': np.zeros((2, 100, 70, 3), np.uint8)})
  assert [a.shape for a in y] == [(2, 17, 2), (2, 17)]  # any size: 100x70 pads inside
  done = subprocess.run(args, capture_output=True, text=True, env=env)
  assert done.returncode == 2
  assert done.stderr.strip() == f'error: --out {out} exists; pass --overwrite to replace it'


@pytest.mark.slow
@pytest.mark.parametrize('arch', ['seg_w48', 'seg_ocr_w48', 'pose_w48', 'cls_w64', 'face_w18',
                                  'det_w40'])
def test_full_size_archs_lower_through_jax_export(arch):
  """The large models trace and lower for export (weights abstract, so no memory or time)."""
  model = zoo.create_model(arch, scan=False, remat='none')
  hw = (256, 192) if arch.startswith('pose') else (224, 224) if arch.startswith('cls') else (
      256, 256)
  x = jax.ShapeDtypeStruct(jax.export.symbolic_shape(f'b, {hw[0]}, {hw[1]}, 3'), np.float32)
  variables = zoo.init_shapes(arch, scan=False)
  exported = jax.export.export(jax.jit(lambda v, x: model.apply(v, x)))(variables, x)
  assert 'stablehlo.convolution' in exported.mlir_module()
  assert json.dumps(str(exported.out_avals))  # symbolic batch in every output
  assert all(str(a.shape[0]) == 'b' for a in exported.out_avals)


@pytest.mark.slow
def test_dynamic_size_for_nearest_fusion_models(models, tmp_path):
  """Pose (nearest fusion): one StableHLO artifact for any multiple-of-32 size, checked at two
  sizes; segmentation (bilinear matrices of fixed sizes) is refused in one line."""
  c, ckpt = models['pose']
  out = tmp_path / 'pose.stablehlo'
  report = export.export(c, ckpt, 'stablehlo', out, size=(128, 96), batch=None, preprocess=True,
                         postprocess=True, dynamic_size=True, check=True, log=lambda _: None)
  assert max(report['errors'].values()) <= export.VERIFY_TOLERANCE
  run = export.load_runner('stablehlo', out)
  assert run(np.zeros((2, 64, 224, 3), np.uint8))['keypoints'].shape == (2, 17, 2)
  c, ckpt = models['seg']
  with pytest.raises(export.ExportError, match='bilinear interpolation matrices'):
    export.export(c, ckpt, 'stablehlo', tmp_path / 'seg.stablehlo', dynamic_size=True)


@pytest.mark.slow
def test_a_full_size_model_exports_to_onnx(tmp_path):
  """HRNetV2-W48 (65.9M parameters, the largest segmentation model) end to end through the
  ONNX converter and onnxruntime, at a small input to keep the check short."""
  pytest.importorskip('onnxruntime')
  c = recipe('seg_cityscapes', arg='')  # the full recipe: seg_w48
  write_random_checkpoint(c, tmp_path / 'w48', bn_offset=0.5)
  report = export.export(c, tmp_path / 'w48', 'onnx', tmp_path / 'w48.onnx', size=(128, 256),
                         batch=None, check=True, log=lambda _: None)
  assert report['errors']['logits'] <= export.VERIFY_TOLERANCE
  assert report['bytes'] > 4 * 65e6  # the weights are inside


@pytest.mark.slow
def test_the_two_stage_detectors_loops_convert_to_onnx():
  """What a two-stage detector adds to a graph, through ONNX into onnxruntime: RoIAlign's
  adaptive sampling loop (multi-level), the RPN's batched NMS, and the batched class-wise
  post-processing (the whole demo detector converts in about three minutes, which is beyond
  this tier's budget; docs/deploy.md)."""
  pytest.importorskip('onnxruntime')
  import contextlib
  import io
  import jax2onnx
  import jax.numpy as jnp
  import onnxruntime
  from hrnet_jax import ops

  def through_onnx(fn, *args):
    specs = [jax.ShapeDtypeStruct(a.shape, a.dtype) for a in args]
    with contextlib.redirect_stdout(io.StringIO()):
      model = jax2onnx.to_onnx(fn, specs, opset=export.ONNX_OPSET)
    session = onnxruntime.InferenceSession(model.SerializeToString())
    names = [i.name for i in session.get_inputs()]
    return session.run(None, dict(zip(names, args)))

  rng = np.random.default_rng(0)
  levels = [rng.normal(size=(2, 16 // 2**i, 24 // 2**i, 8)).astype(np.float32) for i in range(2)]
  xy = rng.uniform(0, 80, (2, 30, 2))
  boxes = np.concatenate([xy, xy + rng.uniform(1, 60, (2, 30, 2))], -1).astype(np.float32)
  pool = lambda a, b, x: ops.multilevel_roi_align([a, b], x.reshape(-1, 4),
                                                  jnp.repeat(jnp.arange(2), 30), (4, 8), 7)
  got = through_onnx(pool, *levels, boxes)[0]
  np.testing.assert_allclose(got, np.asarray(pool(*levels, boxes)), atol=1e-5)
  separable = lambda a, x: ops.separable_roi_align(a, x, 14, 0.25, 0, True, pool=2)  # HTC's
  np.testing.assert_allclose(through_onnx(separable, levels[0], boxes)[0],
                             np.asarray(separable(levels[0], boxes)), atol=1e-5)
  nms = lambda x: ops.greedy_nms(x, jnp.ones(x.shape[:2], bool), 0.5).astype(jnp.int32)
  np.testing.assert_array_equal(through_onnx(nms, boxes)[0], np.asarray(nms(boxes)))
  scores = rng.uniform(0, 1, (2, 30, 3)).astype(np.float32)
  post = lambda x, s: tuple(ops.multiclass_nms(x, s, s > 0.3, 0.5, 10, 50)[k]
                            for k in ('boxes', 'scores', 'labels', 'valid'))
  for g, w in zip(through_onnx(post, boxes, scores), post(boxes, scores)):
    np.testing.assert_allclose(np.asarray(g, np.float64), np.asarray(w, np.float64), atol=1e-5)

  # The mask heads (HTC's chain: the second head adds conv_res of the first's features), the
  # transposed conv as a matmul, each box's class map picked, the mean of the sigmoids.
  from hrnet_jax.models import rcnn
  heads = [rcnn.MaskHead(3, 8, with_conv_res=s > 0) for s in range(2)]
  feats = rng.normal(size=(6, 14, 14, 8)).astype(np.float32)
  labels = np.asarray([0, 2, 1, 1, 0, 2], np.int32)
  params = [h.init(jax.random.key(s), feats, None if s == 0 else feats)
            for s, h in enumerate(heads)]

  def masks(x, label):
    probs, previous = 0.0, None
    for h, p in zip(heads, params):
      logits, previous = h.apply(p, x, previous)
      probs = probs + jax.nn.sigmoid(
          jnp.take_along_axis(logits, label[:, None, None, None], axis=-1)[..., 0])
    return probs / 2

  got = through_onnx(masks, feats, labels)[0]
  assert got.shape == (6, 28, 28)
  np.testing.assert_allclose(got, np.asarray(masks(feats, labels)), atol=1e-5)


def test_centernet_to_onnx_is_refused_in_one_line(tmp_path):
  """jax2onnx does not finish on the corner pooling network: a clear refusal, nothing written."""
  c = recipe('det_coco_centernet')
  with pytest.raises(export.ExportError, match='centernet_w18_small_v1 does not convert to ONNX '
                                               'here.*use stablehlo or savedmodel'):
    export.export(c, tmp_path / 'no_checkpoint', 'onnx', tmp_path / 'm.onnx')
  assert not (tmp_path / 'm.onnx').exists()

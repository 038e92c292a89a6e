"""Conversion: official layouts, bit-exact round trips, arch inference, the CLI, bad inputs."""

import errno
import os
import pathlib
import shutil
import stat

import jax
import numpy as np
import pytest
from flax import traverse_util

from conftest import read_reference_layout
from hrnet_jax import convert
from hrnet_jax.convert import __main__ as cli
from hrnet_jax.convert import mapping
from hrnet_jax.models import zoo

REFERENCE = {'seg_w18': 'torch_keys_seg_w18.txt', 'pose_w32': 'torch_keys_pose_w32.txt',
             'cls_w18': 'torch_keys_cls_w18.txt', 'face_w18': 'torch_keys_face.txt',
             'seg_ocr_w48': 'torch_keys_ocr.txt'}


_PATTERN = (np.arange(9973) / 997 - 5).astype(np.float32)  # 9973 distinct values


def fake_state_dict(arch: str, **overrides) -> dict[str, np.ndarray]:
  """Every tensor of the official layout, filled with values that differ along every axis
  (catches transposes): the running index over the whole state_dict, modulo the prime 9973."""
  out, offset = {}, 0
  for key, shape in mapping.torch_keys_and_shapes(arch, **overrides):
    if key.endswith('num_batches_tracked'):
      out[key] = np.array(7, np.int64)
      continue
    size = int(np.prod(shape))
    out[key] = np.resize(np.roll(_PATTERN, -(offset % 9973)), size).reshape(shape)
    offset += size
  return out


def zero_variables(arch: str, **overrides):
  return jax.tree_util.tree_map(lambda s: np.zeros(s.shape, s.dtype),
                                zoo.init_shapes(arch, **overrides))


@pytest.mark.parametrize('arch', sorted(REFERENCE))
def test_export_matches_official_layout(arch):
  """Names, shapes and order of an export equal the official state_dict dump."""
  state = convert.flax_to_torch(zero_variables(arch), arch)
  assert [(k, v.shape) for k, v in state.items()] == read_reference_layout(REFERENCE[arch])
  assert state['bn1.num_batches_tracked'].dtype == np.int64


# The fast tier round-trips the smallest variant of every task; test-all every variant.
SMALLEST = {f'{task}_w18_small_v1' for task in zoo.TASKS}


@pytest.mark.parametrize('arch', [a if a in SMALLEST else pytest.param(a, marks=pytest.mark.slow)
                                  for a in zoo.list_models()])
def test_round_trip_is_bit_identical(arch):
  state = fake_state_dict(arch)
  variables = convert.torch_to_flax(state, arch)
  back = convert.flax_to_torch(variables, arch)
  assert list(back) == list(state)
  for key, value in state.items():
    if not key.endswith('num_batches_tracked'):
      assert back[key].dtype == value.dtype and np.array_equal(back[key], value), key


def test_conv_and_linear_layouts():
  state = fake_state_dict('cls_w18_small_v1')
  v = convert.torch_to_flax(state, 'cls_w18_small_v1')
  np.testing.assert_array_equal(v['params']['backbone']['conv1']['kernel'],
                                state['conv1.weight'].transpose(2, 3, 1, 0))  # OIHW -> HWIO
  np.testing.assert_array_equal(v['params']['head']['classifier']['kernel'],
                                state['classifier.weight'].T)
  np.testing.assert_array_equal(v['batch_stats']['backbone']['bn1']['var'],
                                state['bn1.running_var'])


# The mask heads are the same for every backbone: their other variants run in test-all.
MASK_TASKS = ('mask_rcnn', 'cascade_mask_rcnn', 'htc')


@pytest.mark.parametrize('arch', [
    pytest.param(a, marks=pytest.mark.slow) if a.startswith(MASK_TASKS) and a not in SMALLEST
    else a for a in zoo.list_models()])
def test_infer_arch_from_shapes(arch):
  shapes = {k: jax.ShapeDtypeStruct(s, np.float32)
            for k, s in mapping.torch_keys_and_shapes(arch, **_head(arch, 7))}
  inferred, overrides = mapping.infer_arch(convert.normalize_state_dict(shapes))
  assert inferred == arch
  task, _ = zoo.split_arch(arch)
  head = {'det': {}, 'pose': {'num_joints': 7}, 'face': {'num_joints': 7}}
  assert overrides == head.get(task, {'num_classes': 7})


def _head(arch, n):
  task, _ = zoo.split_arch(arch)
  return {} if task == 'det' else {'num_classes': n}


def test_wrappers_and_prefixes_are_stripped_and_reported():
  state = fake_state_dict('seg_w18_small_v1')
  wrapped = {'epoch': 12, 'state_dict': {'model.' + k: v for k, v in state.items()}}
  wrapped['state_dict']['model.loss.criterion.weight'] = np.ones(19, np.float32)
  report = convert.Report()
  v = convert.torch_to_flax(wrapped, report=report)
  assert report.arch == 'seg_w18_small_v1' and report.overrides == {'num_classes': 19}
  assert any('epoch' in s for s in report.ignored)
  assert 'loss.criterion.weight' in report.ignored
  dp = {'module.' + k: v for k, v in state.items()}
  same = convert.torch_to_flax(dp, 'seg_w18_small_v1')
  assert jax.tree_util.tree_all(jax.tree_util.tree_map(np.array_equal, v, same))


def test_detection_keeps_mmdet_prefixes_and_ignores_detector_heads():
  state = fake_state_dict('det_w18_small_v1')
  assert all(k.startswith(('backbone.', 'neck.')) for k in state)
  # mmdetection v2's HRFPN: ConvModules keep their conv as `.conv`.
  assert 'neck.reduction_conv.conv.weight' in state and 'neck.fpn_convs.4.conv.bias' in state
  report = convert.Report()
  convert.torch_to_flax({**state, 'rpn_head.rpn_cls.weight': np.zeros((3, 256, 1, 1))},
                        'det_w18_small_v1', report=report)
  assert report.ignored == ['rpn_head.rpn_cls.weight']


# FCOS-HRNetV2p: the whole mmdetection detector (backbone.*, neck.*, bbox_head.*) converts.


def random_variables(arch: str, seed: int = 0, **overrides):
  """Random values in the exact shapes of an arch's variables (no forward pass)."""
  rng = np.random.default_rng(seed)
  return jax.tree_util.tree_map(lambda s: rng.standard_normal(s.shape).astype(s.dtype),
                                zoo.init_shapes(arch, **overrides))


@pytest.mark.parametrize('arch', ['fcos_w18', 'fcos_w32'])
def test_fcos_round_trips_are_exact(arch):
  variables = random_variables(arch)
  state = convert.flax_to_torch(variables, arch)
  back = convert.torch_to_flax(state, arch)
  flat, flat_back = (traverse_util.flatten_dict(v) for v in (variables, back))
  assert set(flat) == set(flat_back)
  for path, value in flat.items():
    assert flat_back[path].shape == value.shape and np.array_equal(flat_back[path], value), path
  fake = fake_state_dict(arch)
  again = convert.flax_to_torch(convert.torch_to_flax(fake, arch), arch)
  assert list(again) == list(fake)
  for key, value in fake.items():
    if not key.endswith('num_batches_tracked'):  # a PyTorch-only counter: written as 0
      assert again[key].shape == value.shape and np.array_equal(again[key], value), key


def test_fcos_keys_follow_mmdetection_layout():
  """Keys, shapes and order of mmdetection v2's FCOS-HRNetV2p-W32 state_dict, by hand:
  SingleStageDetector registers backbone, neck, bbox_head; FCOSHead (an AnchorFreeHead)
  cls_convs, reg_convs, conv_cls, conv_reg, then conv_centerness, scales; a GN ConvModule its
  `conv` then `gn`; mmcv's Scale a 0-d `scale`."""
  layout = mapping.torch_keys_and_shapes('fcos_w32')
  shapes = dict(layout)
  assert len(shapes) == len(layout)
  expected = {
      'backbone.conv1.weight': (64, 3, 3, 3),
      'backbone.stage4.2.fuse_layers.0.3.0.weight': (32, 256, 1, 1),  # upsample: conv, BN
      'backbone.stage4.2.fuse_layers.0.3.1.num_batches_tracked': (),
      'backbone.stage4.2.fuse_layers.3.0.2.0.weight': (256, 32, 3, 3),  # 3rd stride-2 step
      'neck.reduction_conv.conv.weight': (256, 480, 1, 1),
      'neck.fpn_convs.4.conv.weight': (256, 256, 3, 3),
      'bbox_head.cls_convs.0.conv.weight': (256, 256, 3, 3),
      'bbox_head.cls_convs.0.gn.weight': (256,),
      'bbox_head.reg_convs.3.gn.bias': (256,),
      'bbox_head.conv_cls.weight': (80, 256, 3, 3),
      'bbox_head.conv_cls.bias': (80,),
      'bbox_head.conv_reg.weight': (4, 256, 3, 3),
      'bbox_head.conv_centerness.weight': (1, 256, 3, 3),
      'bbox_head.scales.3.scale': (),
  }
  for key, shape in expected.items():
    assert shapes.get(key) == shape, key
  assert 'bbox_head.cls_convs.0.conv.bias' not in shapes  # no bias before GN
  assert not any(k.startswith('bbox_head.scales.') and not k.endswith('.scale') for k in shapes)
  keys = [k for k, _ in layout]
  tops = [k.split('.')[0] for k in keys]
  assert tops == sorted(tops, key=['backbone', 'neck', 'bbox_head'].index)
  head = list(dict.fromkeys(k.split('.')[1] for k in keys if k.startswith('bbox_head.')))
  assert head == ['cls_convs', 'reg_convs', 'conv_cls', 'conv_reg', 'conv_centerness', 'scales']
  assert keys[keys.index('bbox_head.cls_convs.1.conv.weight'):][:3] == [
      'bbox_head.cls_convs.1.conv.weight', 'bbox_head.cls_convs.1.gn.weight',
      'bbox_head.cls_convs.1.gn.bias']
  assert [k for k in keys if 'scales' in k] == [f'bbox_head.scales.{i}.scale' for i in range(5)]
  variables = convert.torch_to_flax(fake_state_dict('fcos_w32'), 'fcos_w32')
  scale = variables['params']['head']['bbox_head']['scales.3']['scale']
  assert scale.shape == () and scale.dtype == np.float32


def _mmdet_checkpoint(arch: str, **overrides) -> dict:
  """What mmdetection's save_checkpoint writes (optimizer aside): the model under 'state_dict',
  the run's facts under 'meta'."""
  return {'state_dict': fake_state_dict(arch, **overrides),
          'meta': {'mmdet_version': '2.28.2', 'epoch': 12, 'CLASSES': ('a', 'b', 'c')}}


def test_fcos_infer_arch_from_mmdet_checkpoint():
  coco = convert.normalize_state_dict(_mmdet_checkpoint('fcos_w32'))
  assert mapping.infer_arch(coco) == ('fcos_w32', {})  # the release's head: nothing to override
  three = convert.normalize_state_dict(_mmdet_checkpoint('fcos_w18', num_classes=3))
  assert mapping.infer_arch(three) == ('fcos_w18', {'num_classes': 3})
  tiny = {'out_channels': 64, 'num_classes': 5, 'stacked_convs': 2, 'num_levels': 4}
  state = convert.normalize_state_dict(_mmdet_checkpoint('fcos_w18_small_v1', **tiny))
  assert mapping.infer_arch(state) == ('fcos_w18_small_v1', tiny)
  report = convert.Report()
  convert.torch_to_flax(_mmdet_checkpoint('fcos_w18', num_classes=3), report=report)
  assert report.arch == 'fcos_w18' and report.overrides == {'num_classes': 3}
  assert report.ignored == ["meta (outside 'state_dict')"]
  # A head size given by the caller still takes the other inferred head settings.
  v = convert.torch_to_flax(_mmdet_checkpoint('fcos_w18_small_v1', **tiny), num_classes=5)
  assert v['params']['head']['bbox_head']['conv_cls']['kernel'].shape == (3, 3, 64, 5)


def test_fcos_legacy_predictor_names_are_renamed():
  """Checkpoints of mmdetection v1 / early v2 call the predictors fcos_cls, fcos_reg and
  fcos_centerness (v2's AnchorFreeHead renames them on load, and so does the converter)."""
  state = fake_state_dict('fcos_w18_small_v1', num_classes=3)
  legacy = {k.replace('bbox_head.conv_', 'bbox_head.fcos_'): v for k, v in state.items()}
  assert 'bbox_head.fcos_centerness.weight' in legacy
  v = convert.torch_to_flax({'state_dict': legacy, 'meta': {}})
  same = convert.torch_to_flax(state, 'fcos_w18_small_v1', num_classes=3)
  assert jax.tree_util.tree_all(jax.tree_util.tree_map(np.array_equal, v, same))


def test_fcos_converts_every_key_and_det_still_ignores_the_head():
  state = fake_state_dict('fcos_w18_small_v1')
  with pytest.raises(convert.ConversionError, match=r'1 unexpected') as e:
    convert.torch_to_flax({**state, 'bbox_head.conv_extra.weight': np.zeros(3, np.float32)})
  assert 'bbox_head.conv_extra.weight' in str(e.value)
  missing = {k: v for k, v in state.items() if k != 'bbox_head.scales.2.scale'}
  with pytest.raises(convert.ConversionError, match=r'bbox_head\.scales\.2\.scale \[\]'):
    convert.torch_to_flax(missing, 'fcos_w18_small_v1')
  # The same checkpoint read as `det` (backbone and pyramid only) ignores the FCOS head.
  report = convert.Report()
  v = convert.torch_to_flax(state, 'det_w18_small_v1', neck_stride=2, report=report)
  assert sorted(report.ignored) == sorted(k for k in state if k.startswith('bbox_head.'))
  assert set(v['params']['head']) == {'reduction_conv.conv', *(f'fpn_convs.{i}.conv'
                                                              for i in range(5))}


def test_mismatch_lists_every_problem():
  state = fake_state_dict('seg_w18_small_v2')
  del state['conv1.weight']
  state['extra.weight'] = np.zeros(3, np.float32)
  with pytest.raises(convert.ConversionError) as e:
    convert.torch_to_flax(state, 'seg_w18')
  msg = str(e.value)
  assert 'conv1.weight [64, 3, 3, 3]' in msg  # missing, with its expected shape
  assert 'extra.weight' in msg  # unexpected
  assert 'stage3.3.branches.0.0.conv1.weight [18, 18, 3, 3]' in e.value.missing  # not in small-v2
  assert '806 missing, 1 unexpected, 0 mis-shaped' in msg
  assert len(e.value.missing) == 806 and len(msg.splitlines()) < 15  # short; every one kept
  assert msg.startswith('the checkpoint looks like seg_w18_small_v2, not seg_w18')
  v1 = fake_state_dict('seg_w18_small_v1')
  with pytest.raises(convert.ConversionError, match='looks like seg_w18_small_v1') as e:
    convert.torch_to_flax(v1, 'seg_w18_small_v2')
  assert any(m.endswith('expected [18, 256, 3, 3], found [16, 128, 3, 3]')
             for m in e.value.misshaped)


def test_flax_to_torch_rejects_wrong_variables():
  v = zero_variables('pose_w18_small_v1')
  with pytest.raises(convert.ConversionError, match='mis-shaped'):
    convert.flax_to_torch(v, 'pose_w18_small_v1', num_joints=16)


# ---------------------------------------------------------------------------------------------
# The command line, on real files.

torch = pytest.importorskip('torch')


@pytest.fixture(scope='module')
def pth(tmp_path_factory):
  """An official-style face checkpoint (DataParallel prefix) of a small variant."""
  from conftest import randomize_torch_bn
  from hrnet_jax.convert import torch_hrnet
  torch.manual_seed(0)
  model = torch_hrnet.build('face_w18_small_v1', num_joints=29)
  randomize_torch_bn(model)
  path = tmp_path_factory.mktemp('ckpt') / 'HR18-COFW.pth'
  torch.save({'module.' + k: v for k, v in model.state_dict().items()}, path)
  return path


def run_cli(*args: str) -> int:
  return cli.main([str(a) for a in args])


def test_cli_import_export_round_trip(pth, tmp_path, capsys):
  out = tmp_path / 'cofw'
  assert run_cli(pth, out, '--verify') == 0  # arch and 29 landmarks inferred from shapes
  text = capsys.readouterr().out
  assert 'face_w18_small_v1' in text and 'bit-identical' in text
  variables, meta = convert.read_variables(out)
  assert meta['arch'] == 'face_w18_small_v1' and meta['overrides'] == {'num_joints': 29}
  for dst in (tmp_path / 'back.pth', tmp_path / 'back.safetensors'):
    assert run_cli(out, dst, '--verify') == 0
    original = convert.normalize_state_dict(torch.load(pth))
    again = convert.read_torch_file(dst)
    assert 'head.1.num_batches_tracked' in again
    for k, v in original.items():
      assert np.array_equal(np.asarray(again[k]), v.numpy()), k
  assert run_cli(tmp_path / 'back.safetensors', tmp_path / 'from_st', '--arch',
                 'face_w18_small_v1') == 0


def _snapshot(path: pathlib.Path):
  if not path.exists():
    return None
  if path.is_file():
    return path.read_bytes()
  return {str(p.relative_to(path)): p.read_bytes() for p in path.rglob('*') if p.is_file()}


@pytest.mark.parametrize('case', ['other_variant', 'truncated', 'not_a_checkpoint',
                                  'missing_file'])
@pytest.mark.parametrize('existing', [False, True])
def test_cli_bad_input_leaves_destination_untouched(pth, tmp_path, capsys, case, existing):
  src = tmp_path / 'bad.pth'
  if case == 'other_variant':
    src.write_bytes(pth.read_bytes())
    args = ['--arch', 'face_w18']
  elif case == 'truncated':
    src.write_bytes(pth.read_bytes()[:len(pth.read_bytes()) // 2])
    args = []
  elif case == 'not_a_checkpoint':
    src.write_text('name,x,y\nimg1.jpg,3,4\n')
    args = []
  else:
    src = tmp_path / 'nope.pth'
    args = []
  dst = tmp_path / 'dst'
  if existing:
    assert run_cli(pth, dst) == 0
  before = _snapshot(dst)
  assert run_cli(src, dst, '--overwrite', *args) == 2
  err = capsys.readouterr().err
  assert err.startswith('error: ')
  if case == 'other_variant':
    assert err.startswith('error: the checkpoint looks like face_w18_small_v1, not face_w18: ')
    assert 'mis-shaped (first 5 of' in err and len(err.splitlines()) < 20
  else:
    assert str(src) in err
  assert _snapshot(dst) == before
  assert sorted(os.listdir(tmp_path)) == sorted(['bad.pth'] * (case != 'missing_file') +
                                                ['dst'] * existing)


def test_cli_refuses_to_overwrite_and_unknown_direction(pth, tmp_path, capsys):
  dst = tmp_path / 'dst'
  assert run_cli(pth, dst) == 0
  assert run_cli(pth, dst) == 2
  assert 'exists' in capsys.readouterr().err
  assert run_cli(tmp_path / 'a', tmp_path / 'b') == 2
  assert 'one of SRC and DST' in capsys.readouterr().err


def test_cli_fcos_mmdet_checkpoint_round_trip(tmp_path, capsys):
  """An mmdetection FCOS checkpoint ({'state_dict', 'meta'}) imports with its head inferred and
  exports back to the same tensors (as a plain state_dict, which mmdetection loads too)."""
  from conftest import randomize_torch_bn
  from hrnet_jax.convert import torch_hrnet
  head = {'out_channels': 64, 'num_classes': 3}
  torch.manual_seed(0)
  model = torch_hrnet.build('fcos_w18_small_v1', **head)
  randomize_torch_bn(model)
  src = tmp_path / 'fcos_hrnetv2p_w18_small.pth'
  torch.save({'state_dict': model.state_dict(),
              'meta': {'mmdet_version': '2.28.2', 'CLASSES': ('a', 'b', 'c')}}, src)
  assert run_cli(src, tmp_path / 'ckpt', '--verify') == 0  # forward vs PyTorch (BGR input)
  out = capsys.readouterr().out
  assert 'fcos_w18_small_v1' in out and 'verify: forward vs PyTorch' in out
  _, meta = convert.read_variables(tmp_path / 'ckpt')
  assert meta['arch'] == 'fcos_w18_small_v1' and meta['overrides'] == head
  assert run_cli(tmp_path / 'ckpt', tmp_path / 'back.pth') == 0
  back = convert.read_torch_file(tmp_path / 'back.pth')
  original = model.state_dict()
  assert list(back) == list(original)
  for k, v in original.items():
    assert back[k].shape == v.shape and torch.equal(back[k], v), k


# ---------------------------------------------------------------------------------------------
# Where the CLI writes: --overwrite, permissions, unwritable destinations, failures mid-write.


@pytest.fixture(scope='module')
def ckpt(pth, tmp_path_factory):
  """The orbax checkpoint the CLI makes of `pth` (copy it before writing over it)."""
  path = tmp_path_factory.mktemp('orbax') / 'cofw'
  assert run_cli(pth, path) == 0
  return path


def _tree(root: pathlib.Path) -> dict:
  """Everything under root: files' bytes, directories, symbolic links' targets (not followed)."""
  out = {}
  for dirpath, dirs, names in os.walk(root):
    for name in dirs + names:
      p = pathlib.Path(dirpath, name)
      out[str(p.relative_to(root))] = (('link', os.readlink(p)) if p.is_symlink() else
                                       'dir' if p.is_dir() else p.read_bytes())
  return out


def _one_line_error(capsys) -> str:
  err = capsys.readouterr().err
  assert err.startswith('error: ') and err.count('\n') == 1, err
  return err


@pytest.mark.parametrize('case', ['user_folder', 'checkpoint_and_user_file', 'partial_checkpoint',
                                  'symlink_to_checkpoint', 'file', 'export_onto_directory',
                                  'export_onto_symlink'])
def test_cli_overwrite_refuses_what_the_converter_did_not_write(pth, ckpt, tmp_path, capsys,
                                                                case):
  """--overwrite once deleted a user's folder at DST; now anything but its own output stays."""
  src, dst = pth, tmp_path / 'out'
  if case == 'user_folder':
    (dst / 'sub').mkdir(parents=True)
    (dst / 'notes.txt').write_text('mine')
    (dst / 'sub' / 'data.bin').write_bytes(b'\x00\x01')
  elif case == 'checkpoint_and_user_file':
    shutil.copytree(ckpt, dst)
    (dst / 'notes.txt').write_text('mine')
  elif case == 'partial_checkpoint':  # the converter always writes both entries
    (dst / 'variables').mkdir(parents=True)
  elif case == 'symlink_to_checkpoint':
    shutil.copytree(ckpt, tmp_path / 'real')
    dst.symlink_to('real', target_is_directory=True)
  elif case == 'file':
    dst.write_text('mine')
  elif case == 'export_onto_directory':
    src, dst = ckpt, tmp_path / 'out.pth'
    dst.mkdir()
    (dst / 'notes.txt').write_text('mine')
  else:
    src, dst = ckpt, tmp_path / 'out.pth'
    (tmp_path / 'real.pth').write_bytes(b'mine')
    dst.symlink_to('real.pth')
  before = _tree(tmp_path)
  assert run_cli(src, dst, '--overwrite') == 2
  err = _one_line_error(capsys)
  assert f'error: {dst} exists and ' in err and 'not replacing it' in err
  assert _tree(tmp_path) == before  # no temporary siblings left either


def test_cli_overwrite_replaces_converter_output(pth, ckpt, tmp_path, capsys):
  """What --overwrite may replace: the converter's own checkpoint, an empty directory, a file."""
  dst = tmp_path / 'out'
  shutil.copytree(ckpt, dst)
  (dst / convert.files.META_FILE).write_text('{"arch": "stale"}')
  assert run_cli(pth, dst, '--overwrite') == 0
  assert sorted(os.listdir(dst)) == sorted([convert.files.META_FILE, 'variables'])
  assert convert.read_variables(dst)[1]['arch'] == 'face_w18_small_v1'
  (tmp_path / 'empty').mkdir()
  assert run_cli(pth, tmp_path / 'empty', '--overwrite') == 0
  (tmp_path / 'out.pth').write_bytes(b'stale')
  assert run_cli(ckpt, tmp_path / 'out.pth', '--overwrite') == 0
  assert 'head.1.num_batches_tracked' in convert.read_torch_file(tmp_path / 'out.pth')
  assert sorted(os.listdir(tmp_path)) == ['empty', 'out', 'out.pth']
  assert capsys.readouterr().err == ''


def test_cli_output_permissions_follow_umask(pth, ckpt, tmp_path):
  """The result had tempfile's private 0700; it must look like any file the user creates."""
  old = os.umask(0o027)
  try:
    assert run_cli(pth, tmp_path / 'out') == 0
    assert run_cli(ckpt, tmp_path / 'out.pth') == 0
    assert run_cli(ckpt, tmp_path / 'out.safetensors') == 0
  finally:
    os.umask(old)
  modes = {p: stat.S_IMODE(p.stat().st_mode) for p in
           [tmp_path / 'out', *(tmp_path / 'out').rglob('*'), tmp_path / 'out.pth',
            tmp_path / 'out.safetensors']}
  assert modes == {p: 0o750 if p.is_dir() else 0o640 for p in modes}
  assert modes[tmp_path / 'out' / convert.files.META_FILE] == 0o640


@pytest.mark.parametrize('parent', ['regular_file', 'read_only_dir'])
@pytest.mark.parametrize('direction', ['import', 'export'])
def test_cli_unwritable_destination_is_a_one_line_error(pth, ckpt, tmp_path, capsys, monkeypatch,
                                                        parent, direction):
  """An unwritable DST ended in a traceback; it is an `error: cannot write DST: ...`, status 2."""
  where = tmp_path / 'parent'
  if parent == 'regular_file':
    where.write_text('not a directory')
  else:
    where.mkdir(mode=0o555)
    if os.geteuid() == 0:  # root writes into read-only directories: refuse as the OS would
      for name in ('mkdir', 'open'):

        def refuse(path, *args, _real=getattr(os, name), **kwargs):
          if pathlib.Path(path).parent == where:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
          return _real(path, *args, **kwargs)

        monkeypatch.setattr(os, name, refuse)
  src, dst = (pth, where / 'out') if direction == 'import' else (ckpt, where / 'out.pth')
  try:
    assert run_cli(src, dst) == 2
  finally:
    where.chmod(0o755)
  assert _one_line_error(capsys).startswith(f'error: cannot write {dst}: ')


@pytest.mark.parametrize('failure', ['disk_full', 'reload_check'])
@pytest.mark.parametrize('direction', ['import', 'export'])
def test_cli_failed_overwrite_keeps_old_destination(pth, ckpt, tmp_path, capsys, monkeypatch,
                                                    failure, direction):
  """A write or --verify failure after the old DST was deleted lost it; now it survives."""
  import orbax.checkpoint as ocp
  import safetensors.numpy
  if direction == 'import':
    src, dst = pth, tmp_path / 'out'
    shutil.copytree(ckpt, dst)
  else:
    src, dst = ckpt, tmp_path / 'out.safetensors'
    dst.write_bytes(b'old')
  before = _tree(tmp_path)

  def disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

  def differs(*args, **kwargs):
    raise convert.ConversionError('reloaded tensors differ')

  if failure == 'disk_full':
    if direction == 'import':
      monkeypatch.setattr(ocp.StandardCheckpointer, 'save', disk_full)
    else:
      monkeypatch.setattr(safetensors.numpy, 'save_file', disk_full)
  else:
    reader = 'read_variables' if direction == 'import' else 'read_torch_file'
    monkeypatch.setattr(convert.files, reader, differs)
  args = ['--verify'] if failure == 'reload_check' else []
  assert run_cli(src, dst, '--overwrite', *args) == 2
  err = _one_line_error(capsys)
  if failure == 'disk_full':
    assert err == f'error: cannot write {dst}: {os.strerror(errno.ENOSPC)}\n'
  else:
    assert err == 'error: reloaded tensors differ\n'
  assert _tree(tmp_path) == before

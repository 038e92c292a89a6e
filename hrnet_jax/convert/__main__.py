"""python -m hrnet_jax.convert SRC DST [--arch ARCH] [--num-classes N] [--verify]

SRC a .pth/.pth.tar/.pt/.safetensors file and DST a directory: import to an orbax checkpoint.
SRC an orbax checkpoint directory and DST a .pth/.safetensors file: export to PyTorch.
Nothing is written unless the whole checkpoint converts (and verifies, with --verify).
--overwrite replaces only what the converter wrote: a directory holding just hrnet_jax_meta.json
and variables/ (or an empty one), or a regular .pth/.safetensors file; anything else is refused.
"""

from __future__ import annotations

import argparse
import os
import sys

from hrnet_jax.convert import core, files, verify


def _parse(argv: list[str] | None) -> argparse.Namespace:
  p = argparse.ArgumentParser(prog='python -m hrnet_jax.convert', description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('src', help='source checkpoint (file or orbax directory)')
  p.add_argument('dst', help='destination (orbax directory or file)')
  p.add_argument('--arch', help='e.g. seg_w48, pose_w32; inferred from tensor shapes if omitted')
  p.add_argument('--num-classes', type=int, help='classes / joints of the head (default: '
                 'from the checkpoint)')
  p.add_argument('--verify', action='store_true', help='check a round trip bit for bit and '
                 'the forward pass against the PyTorch reference (needs torch)')
  p.add_argument('--overwrite', action='store_true', help='replace an existing destination '
                 'that this converter wrote (nothing else)')
  p.add_argument('--trust-pickle', action='store_true', help='load .pth files that hold '
                 'Python objects besides tensors (only for files you trust)')
  return p.parse_args(argv)


def _check_forward(state, variables, arch: str, overrides: dict) -> None:
  errors = verify.forward_errors(state, variables, arch, **overrides)
  worst = max(errors)
  print(f'verify: forward vs PyTorch reference, relative error per output: '
        f'{", ".join(f"{e:.2e}" for e in errors)}')
  if not worst <= verify.TOLERANCE:
    raise core.ConversionError(f'forward check failed: relative error {worst:.3e} > '
                               f'{verify.TOLERANCE:g}')


def _import(args: argparse.Namespace, overrides: dict) -> None:
  report = core.Report()
  source = files.read_torch_file(args.src, trust_pickle=args.trust_pickle)
  variables = core.torch_to_flax(source, args.arch, report=report, **overrides)
  print(report.summary())
  state = core.flax_to_torch(variables, report.arch, **report.overrides)
  if args.verify:
    verify.check_same_tensors(state, source, 'torch -> flax -> torch')
    _check_forward(state, variables, report.arch, report.overrides)
  meta = {'arch': report.arch, 'overrides': report.overrides,
          'source': os.path.basename(args.src)}

  def reload(tmp) -> None:  # before the swap: a failed check leaves an existing DST as it was
    written, _ = files.read_variables(tmp)
    verify.check_same_tensors(state, core.flax_to_torch(written, report.arch,
                                                        **report.overrides), str(args.dst))

  files.write_variables(variables, args.dst, meta, overwrite=args.overwrite,
                        check=reload if args.verify else None)
  if args.verify:
    print('verify: reloaded checkpoint is bit-identical')
  print(f'wrote {args.dst}')


def _export(args: argparse.Namespace, overrides: dict) -> None:
  variables, meta = files.read_variables(args.src)
  arch = args.arch or meta['arch']
  overrides = {**meta.get('overrides', {}), **overrides}
  state = core.flax_to_torch(variables, arch, **overrides)
  print(f'{arch} {overrides}: {len(state)} tensors')
  if args.verify:
    _check_forward(state, variables, arch, overrides)

  def reload(tmp) -> None:  # before the swap: a failed check leaves an existing DST as it was
    verify.check_same_tensors(state, files.read_torch_file(tmp), str(args.dst))

  files.write_torch_file(state, args.dst, overwrite=args.overwrite,
                         check=reload if args.verify else None)
  if args.verify:
    print('verify: reloaded file is bit-identical')
  print(f'wrote {args.dst}')


def main(argv: list[str] | None = None) -> int:
  args = _parse(argv)
  overrides = {'num_classes': args.num_classes} if args.num_classes else {}
  try:
    if files.is_torch_file(args.src) and not files.is_torch_file(args.dst):
      _import(args, overrides)
    elif files.is_torch_file(args.dst) and not files.is_torch_file(args.src):
      _export(args, overrides)
    else:
      raise core.ConversionError(
          'one of SRC and DST must be a PyTorch or safetensors file (.pth, .pth.tar, .pt, .bin, '
          f'.safetensors) and the other an orbax directory; got {args.src!r} -> {args.dst!r}')
  except (core.ConversionError, ValueError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  return 0


if __name__ == '__main__':
  sys.exit(main())

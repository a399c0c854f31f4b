"""Starts our RetinaNet from TensorFlow checkpoints of Model Garden or tensorflow/tpu.

Two layouts, read with `tf.train.load_checkpoint` alone (neither tf-models-official nor
the tensorflow/tpu code is needed):

* "modelgarden": TF2 object-based checkpoints of `official.vision` (tf-models-official), as
  its trainer writes them (`tf.train.Checkpoint(model=...)`, keys
  `model/_backbone/...`, `model/_decoder/...`, `model/_head/...`) or as its backbone-only
  checkpoints hold them (`backbone/...`). ResNet blocks are keyed by attribute
  (`layer_with_weights-2/_conv1/kernel`); the NAS-FPN decoder only by position, see
  `nasfpn_tf.modelgarden_layer_order`.
* "tpu": TF1 name-based checkpoints of tensorflow/tpu `models/official/detection`
  (`resnet50/conv2d_3/kernel`, `fpn_cells/cell_0/sub_policy2/op_after_combine7/conv/kernel`,
  `retinanet/class_net/class-0-3/gamma`).

The mapping is one list of (our variable, checkpoint key) pairs per part; every pair is
checked (present, same shape) before anything is assigned, so a failed import leaves the
model as it was. Errors are one line naming the variable. What Model Garden builds
differently is refused rather than approximated: its NAS-FPN at filters != 256 resamples
every cell input to 256 channels (55.9 M decoder parameters at 7@384, ours 66.5 M), and it
only builds the published cell.

Numerics: at filters = 256 our model computes Model Garden's function (tests compare every
level). tensorflow/tpu's ResNet pads strided convolutions explicitly (`fixed_padding`) where
ours and Model Garden's pad 'same', and its batch norm uses epsilon 1e-4 (set
`task.model.norm.epsilon: 1.0e-4`): its weights load exactly, its outputs differ slightly.

  from nasfpn_tf import checkpoint_import
  report = checkpoint_import.load_checkpoint(model, "ckpt-28080", modules="backbone")
  print(report.summary())
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np
import tensorflow as tf

from nasfpn_tf.architecture_spec import parse_spec
from nasfpn_tf.levels import key_level, level_key
from nasfpn_tf.modelgarden_layer_order import modelgarden_nasfpn_units
from nasfpn_tf.modeling.backbones.resnet import RESNET_SPECS

SOURCES = ("modelgarden", "tpu")
# What `init_checkpoint_modules` selects (Model Garden's values).
MODULES = {"backbone": ("backbone",), "backbone_decoder": ("backbone", "decoder"),
           "all": ("backbone", "decoder", "head")}
_PARTS = ("backbone", "decoder", "head")
_MG_SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"
# Where Model Garden's object graph puts each part: a trainer checkpoint
# (`Checkpoint(model=...)`), then `Checkpoint(backbone=..., decoder=..., head=...)`.
_MG_ROOTS = ("model/_{part}/", "{part}/", "model/{part}/")
_BN = ("gamma", "beta", "moving_mean", "moving_variance")
# Model Garden resamples every NAS-FPN cell input to this width (its resampler's default).
MODELGARDEN_NASFPN_FILTERS = 256


class CheckpointImportError(ValueError):
  """A checkpoint that cannot fill the model; the message names the variable."""


@dataclasses.dataclass
class ImportReport:
  """What an import filled and what it left.

  Attributes:
    source: "modelgarden" or "tpu".
    modules: the `init_checkpoint_modules` value.
    filled: number of our variables assigned from the checkpoint.
    left: part -> number of our variables not selected by `modules` (kept as initialised).
    unused: checkpoint keys no variable of ours read (optimizer slots, EMA, other parts).
  """
  source: str
  modules: str
  filled: int
  left: dict
  unused: list

  def summary(self) -> str:
    left = ", ".join(f"{part} {n}" for part, n in self.left.items() if n) or "none"
    return (f"{self.source} checkpoint, modules={self.modules}: {self.filled} variables "
            f"filled; left as initialised: {left}; {len(self.unused)} checkpoint variables "
            "unused" + (f" (e.g. {', '.join(self.unused[:3])})" if self.unused else ""))


# ----------------------------------------------------------------------------- our layers

def _conv(layer, key: str) -> list:
  """(variable, key) pairs of a conv: kernel, and bias where it has one."""
  pairs = [(layer.kernel, f"{key}/kernel")]
  if layer.use_bias:
    pairs.append((layer.bias, f"{key}/bias"))
  return pairs


def _bn(layer, key: str) -> list:
  return [(getattr(layer, name), f"{key}/{name}") for name in _BN]


def _resnet_blocks(backbone):
  """(name prefix, has projection, number of convs) of every block of our ResNet, in order."""
  depth = int(backbone.name.replace("resnet", ""))
  kind, blocks = RESNET_SPECS[depth]
  convs = 2 if kind == "basic" else 3
  for stage, count in enumerate(blocks, start=2):
    for b in range(count):
      yield f"c{stage}_block{b}", b == 0, convs


# ----------------------------------------------------------------------------- Model Garden

def _modelgarden_backbone(backbone, root: str) -> list:
  """Model Garden's ResNet (stem 'v0'): layer_with_weights 0/1 the stem conv/BN, then one
  per block with attributes _shortcut/_norm0 (projection), _conv1/_norm1, ..."""
  layer = backbone.get_layer
  pairs = _conv(layer("stem_conv"), f"{root}layer_with_weights-0")
  pairs += _bn(layer("stem_bn"), f"{root}layer_with_weights-1")
  for i, (name, project, convs) in enumerate(_resnet_blocks(backbone)):
    key = f"{root}layer_with_weights-{i + 2}"
    if project:
      pairs += _conv(layer(f"{name}_proj"), f"{key}/_shortcut")
      pairs += _bn(layer(f"{name}_proj_bn"), f"{key}/_norm0")
    for c in range(1, convs + 1):
      pairs += _conv(layer(f"{name}_conv{c}"), f"{key}/_conv{c}")
      pairs += _bn(layer(f"{name}_bn{c}"), f"{key}/_norm{c}")
  return pairs


def _check_modelgarden_decoder(decoder) -> None:
  name = type(decoder).__name__
  if name != "NasFpn":
    raise CheckpointImportError(
        f"decoder: importing a Model Garden decoder is supported for NAS-FPN, not {name}; "
        "use init_checkpoint_modules=backbone")
  if decoder.filters != MODELGARDEN_NASFPN_FILTERS:
    raise CheckpointImportError(
        f"decoder (filters={decoder.filters}): Model Garden's NAS-FPN at filters != 256 "
        "resamples every cell input with a 1x1 conv + BN to 256 channels, a layout ours does "
        "not have (ours keeps every input at `filters`, as tensorflow/tpu); use "
        "init_checkpoint_modules=backbone")
  if decoder.spec.cells != parse_spec("nasfpn", decoder.min_level, decoder.max_level).cells:
    raise CheckpointImportError(
        "decoder: Model Garden builds only the published NAS-FPN cell; this model's spec "
        f"is '{decoder.spec.to_string()}'")


def _modelgarden_decoder(decoder, backbone, root: str) -> list:
  _check_modelgarden_decoder(decoder)
  levels = [l for l in decoder.levels if level_key(l) in backbone.output]
  projected = [l for l in levels if decoder.input_resamplers[level_key(l)].project]
  # Units name levels by int (Model Garden's graph); our sublayers are keyed "P3"...
  units = modelgarden_nasfpn_units(decoder.spec, decoder.num_repeats, projected, levels)
  pairs = []
  for i, unit in enumerate(units):
    if unit[0] == "input":
      layer = decoder.input_resamplers[level_key(unit[1])]
    else:
      layer = decoder.cells[unit[1]][unit[2]][0]
    key = f"{root}layer_with_weights-{i}"
    pairs += _conv(layer.conv, key) if unit[-1] == "conv" else _bn(layer.norm, key)
  return pairs


def _head_pairs(head, conv_key, norm_key, classifier: str, box_regressor: str) -> list:
  """The head, given how a source names its convs (`conv_key(branch, i)`) and norms
  (`norm_key(branch, i, level_index, level)`)."""
  pairs = []
  for branch, convs, norms, predictor, key in (
      ("class", head.class_convs, head.class_norms, head.classifier, classifier),
      ("box", head.box_convs, head.box_norms, head.box_regressor, box_regressor)):
    for i, conv in enumerate(convs):
      pairs += _conv(conv, conv_key(branch, i))
      for j, lvl in enumerate(head.levels):
        pairs += _bn(norms[lvl][i], norm_key(branch, i, j, key_level(lvl)))
    pairs += _conv(predictor, key)
  return pairs


def _modelgarden_head(head, root: str) -> list:
  short = {"class": "cls", "box": "box"}
  return _head_pairs(
      head, lambda b, i: f"{root}_{short[b]}_convs/{i}",
      lambda b, i, j, lvl: f"{root}_{short[b]}_norms/{j}/{i}",
      f"{root}_classifier", f"{root}_box_regressor")


def _modelgarden_root(part: str, keys: set) -> Optional[str]:
  for pattern in _MG_ROOTS:
    root = pattern.format(part=part)
    if any(k.startswith(root) for k in keys):
      return root
  return None


def _modelgarden_pairs(model, part: str, keys: set) -> list:
  root = _modelgarden_root(part, keys)
  if root is None:
    raise CheckpointImportError(
        f"{part}: the checkpoint has no Model Garden {part} (looked for keys starting with "
        f"{', '.join(p.format(part=part) for p in _MG_ROOTS)})")
  if part == "backbone":
    pairs = _modelgarden_backbone(model.backbone, root)
  elif part == "decoder":
    pairs = _modelgarden_decoder(model.decoder, model.backbone, root)
  else:
    pairs = _modelgarden_head(model.head, root)
  return [(v, k + _MG_SUFFIX) for v, k in pairs]


# ----------------------------------------------------------------------------- tensorflow/tpu

def _tpu_backbone(backbone) -> list:
  """tensorflow/tpu `resnet.py`: scope `resnet{depth}`, tf.layers auto-names in creation
  order (stem, then per block: projection, conv1, conv2[, conv3]), convs and BNs apart."""
  layer, scope = backbone.get_layer, backbone.name
  convs, norms = ["stem_conv"], ["stem_bn"]
  for name, project, count in _resnet_blocks(backbone):
    if project:
      convs.append(f"{name}_proj")
      norms.append(f"{name}_proj_bn")
    convs += [f"{name}_conv{c}" for c in range(1, count + 1)]
    norms += [f"{name}_bn{c}" for c in range(1, count + 1)]
  auto = lambda base, i: f"{scope}/{base}" + (f"_{i}" if i else "")
  pairs = []
  for i, name in enumerate(convs):
    pairs += _conv(layer(name), auto("conv2d", i))
  for i, name in enumerate(norms):
    pairs += _bn(layer(name), auto("batch_normalization", i))
  return pairs


def _tpu_decoder(decoder) -> list:
  """tensorflow/tpu `nasfpn.py`: `resample_l{level}` / `resample_p{level}` scopes for the
  inputs, `fpn_cells/cell_{r}/sub_policy{k}/op_after_combine{5 + k}/{conv,bn}` per cell."""
  name = type(decoder).__name__
  if name != "NasFpn":
    raise CheckpointImportError(f"decoder: importing a tensorflow/tpu decoder is supported "
                                f"for NAS-FPN, not {name}; use init_checkpoint_modules=backbone")
  pairs = []
  for resampler in decoder.input_resamplers.values():
    if resampler.project:
      level = resampler.target_level
      scope = f"resample_{'l' if resampler.source_level == level else 'p'}{level}"
      pairs += _conv(resampler.conv, f"{scope}/conv2d") + _bn(resampler.norm, f"{scope}/bn")
  n = decoder.spec.num_inputs
  for r, repeat in enumerate(decoder.cells):
    for k, (cell, _) in enumerate(repeat):
      scope = f"fpn_cells/cell_{r}/sub_policy{k}/op_after_combine{n + k}"
      pairs += _conv(cell.conv, f"{scope}/conv") + _bn(cell.norm, f"{scope}/bn")
  return pairs


def _tpu_pairs(model, part: str, keys: set) -> list:
  del keys
  if part == "backbone":
    return _tpu_backbone(model.backbone)
  if part == "decoder":
    return _tpu_decoder(model.decoder)
  return _head_pairs(
      model.head, lambda b, i: f"retinanet/{b}_net/{b}-{i}",
      lambda b, i, j, lvl: f"retinanet/{b}_net/{b}-{i}-{lvl}",
      "retinanet/class_net/class-predict", "retinanet/box_net/box-predict")


# ----------------------------------------------------------------------------- entry points

def detect_source(keys) -> str:
  """"modelgarden" for an object-based checkpoint, else "tpu"."""
  return "modelgarden" if any(k.endswith(_MG_SUFFIX) for k in keys) else "tpu"


def variable_pairs(model, prefix: str, source: Optional[str] = None,
                   modules: str = "all") -> tuple[list, dict, str, dict]:
  """Checked (our variable, checkpoint key) pairs for the parts `modules` selects.

  Returns:
    (pairs, left, source, shapes): `left` counts our variables per unselected part,
    `shapes` is the checkpoint's key -> shape map.

  Raises:
    CheckpointImportError: unreadable checkpoint, unknown source or modules, a layout that
      cannot be mapped, a missing key or a shape mismatch (one line, naming the variable).
  """
  if modules not in MODULES:
    raise CheckpointImportError(
        f"init_checkpoint_modules '{modules}' is not one of {list(MODULES)}")
  try:
    reader = tf.train.load_checkpoint(prefix)
  except (tf.errors.OpError, ValueError) as e:
    raise CheckpointImportError(
        f"{prefix}: not a readable TensorFlow checkpoint ({str(e).splitlines()[0]})") from None
  shapes = reader.get_variable_to_shape_map()
  keys = set(shapes)
  source = source or detect_source(keys)
  if source not in SOURCES:
    raise CheckpointImportError(f"source '{source}' is not one of {list(SOURCES)}")
  build = _modelgarden_pairs if source == "modelgarden" else _tpu_pairs
  pairs, left = [], {}
  for part in _PARTS:
    if part in MODULES[modules]:
      pairs += build(model, part, keys)
    else:
      left[part] = len(getattr(model, part).weights)
  for var, key in pairs:
    if key not in shapes:
      raise CheckpointImportError(f"{key}: not in {prefix} (wanted for {var.path}, shape "
                                  f"{tuple(var.shape)}; {source} layout)")
    if tuple(shapes[key]) != tuple(var.shape):
      raise CheckpointImportError(f"{key}: shape {tuple(shapes[key])} in the checkpoint, "
                                  f"{tuple(var.shape)} in the model ({var.path})")
  return pairs, left, source, shapes


def load_checkpoint(model, prefix: str, source: Optional[str] = None,
                    modules: str = "all") -> ImportReport:
  """Fills `model`'s selected parts from a Model Garden or tensorflow/tpu checkpoint.

  Args:
    model: a built `RetinaNetModel` (ResNet backbone; NAS-FPN decoder unless
      `modules="backbone"`).
    prefix: checkpoint prefix (`.../ckpt-28080`) or a folder with a `checkpoint` file.
    source: "modelgarden" or "tpu"; None detects it from the keys.
    modules: "backbone", "backbone_decoder" or "all".

  Returns:
    An `ImportReport`; nothing is assigned unless every selected variable was found with
    its shape.
  """
  pairs, left, source, shapes = variable_pairs(model, prefix, source, modules)
  reader = tf.train.load_checkpoint(prefix)
  for var, key in pairs:
    var.assign(np.asarray(reader.get_tensor(key), dtype=var.dtype))
  used = {key for _, key in pairs}
  unused = sorted(k for k in shapes if k not in used and k != "_CHECKPOINTABLE_OBJECT_GRAPH")
  return ImportReport(source, modules, len(pairs), left, unused)


_KERAS_FILES = (".keras", ".h5")
# A key every tensorflow/tpu checkpoint of each part holds some variable under.
_TPU_ROOTS = {"backbone": "resnet", "decoder": "fpn_cells/", "head": "retinanet/"}


def preflight(path: str, modules: str = "all") -> None:
  """Cheap checks before a run writes anything: the file or checkpoint is readable and
  holds every part `modules` selects. Shapes are checked when the model exists
  (`load_checkpoint`)."""
  if path.endswith(_KERAS_FILES):
    if not tf.io.gfile.exists(path):
      raise CheckpointImportError(f"{path}: no such file")
    return
  try:
    keys = set(tf.train.load_checkpoint(path).get_variable_to_shape_map())
  except (tf.errors.OpError, ValueError) as e:
    raise CheckpointImportError(
        f"{path}: not a readable TensorFlow checkpoint ({str(e).splitlines()[0]})") from None
  source = detect_source(keys)
  for part in MODULES.get(modules, ()):
    found = (_modelgarden_root(part, keys) is not None if source == "modelgarden"
             else any(k.startswith(_TPU_ROOTS[part]) for k in keys))
    if not found:
      raise CheckpointImportError(
          f"{path}: this {source} checkpoint holds no {part}, but init_checkpoint_modules="
          f"{modules} asks for it (a backbone-only checkpoint needs modules=backbone)")


def initialize(model, path: str, modules: str = "all", verbose: int = 1) -> Optional[ImportReport]:
  """Starts `model` from `task.init_checkpoint`.

  Args:
    model: the built model.
    path: a `.keras` / `.weights.h5` file of this model (loaded whole), or a Model Garden /
      tensorflow/tpu checkpoint prefix.
    modules: `task.init_checkpoint_modules` (TensorFlow checkpoints only).
    verbose: print the import summary.

  Returns:
    The `ImportReport` of a TensorFlow checkpoint, None for a Keras file.
  """
  preflight(path, modules)
  if path.endswith(_KERAS_FILES):
    model.load_weights(path)
    return None
  report = load_checkpoint(model, path, modules=modules)
  if verbose:
    print(f"init_checkpoint {path}: {report.summary()}")
  return report

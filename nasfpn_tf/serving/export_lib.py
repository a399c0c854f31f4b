"""Exports a trained RetinaNet as a SavedModel (serving) or TFLite files (devices).

Layout written under `export_dir`:
  saved_model/              signatures serving_default (uint8 images), serve_encoded
                            (JPEG/PNG bytes), serve_raw (head outputs); label map and
                            config copied into saved_model/assets.extra/
  model_float32.tflite      ... one file per TFLite variant (TFLITE_VARIANTS)
  label_map.json            {"category id": "name"}
  config.yaml               the experiment config of the exported model

Every artifact is written under a temporary name in `export_dir` and renamed into place
(`file_io`, any filesystem), so an interrupted or failed export never leaves a half-written
model behind; what a killed export left under a temporary name is removed by the next one.

Example:
  export_from_model_dir("runs/default", "runs/default/export")              # SavedModel
  export_from_model_dir("runs/default", "runs/default/export", "tflite",
                        variants=["float32", "full_int8"], num_calibration_images=100)
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import warnings
from typing import Any, Iterator, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from nasfpn_tf import file_io, precision
from nasfpn_tf.configs.experiment import ExperimentConfig
from nasfpn_tf.configs.loading import load_config, override, save_yaml, to_dict
from nasfpn_tf.serving.detection_module import (BOX_REGRESSOR_NAME, FLAT_OUTPUTS_NAME,
                                                FLOAT_NAMES, TFLITE_SIGNATURES,
                                                DetectionModule, tflite_functions)
from nasfpn_tf.serving.stderr_filter import filtered_stderr

MODEL_FILE = "model.keras"
CHECKPOINT_FILE = "checkpoint.weights.h5"
CONFIG_FILE = "config.yaml"
LABEL_MAP_FILE = "label_map.json"
SAVED_MODEL_DIR = "saved_model"
TFLITE_VARIANTS = ("float32", "float16", "dynamic_int8", "full_int8")
EXPORT_FORMATS = ("saved_model", "tflite")


class ExportError(RuntimeError):
  """An export that cannot be produced; `failures` maps what failed to a one-line reason,
  `written` what was produced all the same (variant -> path)."""

  def __init__(self, failures: dict[str, str], written: Optional[dict[str, str]] = None):
    self.failures = dict(failures)
    self.written = dict(written or {})
    super().__init__("; ".join(f"{k}: {v}" for k, v in self.failures.items()))


def one_line(error: BaseException, limit: int = 300) -> str:
  """An exception as one line (converter errors span pages), at most `limit` characters."""
  text = " ".join(str(error).split()) or type(error).__name__
  return text if len(text) <= limit else text[:limit - 3] + "..."


# ---------------------------------------------------------------------------------------------
# Loading the trained model and its config.


def _import_registered_classes() -> None:
  # model.keras names nasfpn_tf classes; importing the factory registers all of them.
  import nasfpn_tf.modeling.factory  # noqa: F401


def load_trained_model(path: str) -> tuple[keras.Model, Optional[ExperimentConfig]]:
  """Loads a trained model from a model dir or a `.keras` file.

  Args:
    path: MODEL_DIR (uses MODEL_DIR/model.keras, else the checkpoint + MODEL_DIR/config.yaml)
      or the path of a `.keras` file (config.yaml next to it is read when present).

  Returns:
    (model, the config found beside it or None).

  Raises:
    ExportError: nothing loadable at `path`.
  """
  _import_registered_classes()
  model_dir = os.path.dirname(path) if path.endswith(".keras") else path
  config_path = os.path.join(model_dir, CONFIG_FILE)
  config = load_config(config_path) if file_io.exists(config_path) else None
  keras_path = path if path.endswith(".keras") else os.path.join(path, MODEL_FILE)
  if file_io.exists(keras_path):
    # compile=False: the optimizer is not needed to export, and its schedule need not load.
    return keras.models.load_model(keras_path, compile=False), config
  checkpoint = os.path.join(model_dir, CHECKPOINT_FILE)
  if file_io.exists(checkpoint) and config is not None:
    from nasfpn_tf.modeling.factory import build_model
    model = build_model(config.task.model)
    model.load_weights(checkpoint)
    return model, config
  raise ExportError({"model": f"{path} holds neither {MODEL_FILE} nor {CHECKPOINT_FILE} + "
                     f"{CONFIG_FILE}: train first (python run.py --model_dir=...)"})


def resolve_config(model, given: Optional[ExperimentConfig],
                   beside: Optional[ExperimentConfig]) -> Optional[ExperimentConfig]:
  """The config to export with: `given` (its data sections) with the trained model's section.

  The model section always describes the network actually exported: when `given` disagrees
  with the config saved beside the model, the saved one wins (with a warning). Neither input
  is modified.
  """
  if given is None:
    return beside
  if beside is not None and to_dict(given.task.model) != to_dict(beside.task.model):
    logging.warning("The given config's task.model differs from the one saved with the "
                    "model; exporting with the saved one.")
    return dataclasses.replace(given, task=dataclasses.replace(given.task,
                                                               model=beside.task.model))
  if list(given.task.model.input_size) != list(model.input_size):
    logging.warning("The given config's input_size %s is not the model's %s.",
                    given.task.model.input_size, model.input_size)
  return given


def load_export_config(model_dir: str, config_file: str = "",
                       params_override: Sequence[str] = ()) -> Optional[ExperimentConfig]:
  """Config for the export tools: `config_file` + overrides, else the model dir's + overrides."""
  if config_file:
    return load_config(config_file, list(params_override))
  path = os.path.join(model_dir if not model_dir.endswith(".keras")
                      else os.path.dirname(model_dir), CONFIG_FILE)
  if not file_io.exists(path):
    return None
  config = load_config(path)
  for text in params_override:
    config = override(config, text)
  return config


def label_map(config: Optional[ExperimentConfig], num_classes: int) -> dict[int, str]:
  """Category id -> name of the validation data (generic names when it cannot be read)."""
  generic = {i: f"class_{i}" for i in range(num_classes)}
  if config is None:
    return generic
  try:
    return _category_names(config.task.validation_data)
  except Exception as e:  # noqa: BLE001 - any data problem only costs the names
    logging.warning("Label map: cannot read the validation data's categories (%s); "
                    "writing generic names.", one_line(e))
    return generic


def _category_names(data) -> dict[int, str]:
  from nasfpn_tf.data.input_pipeline import coco_paths, raw_dataset
  annotation_file, _ = coco_paths(data)
  if annotation_file:
    with open(annotation_file) as f:
      return {int(c["id"]): str(c["name"]) for c in json.load(f)["categories"]}
  return dict(raw_dataset(data)[1].category_names)


def representative_images(config: Optional[ExperimentConfig], num_images: int) -> np.ndarray:
  """Preprocessed validation images from the configured input pipeline, for calibration.

  Returns:
    float32 [n, H, W, 3] in 0..255, n <= num_images.

  Raises:
    ValueError: no config or no images.
  """
  if config is None:
    raise ValueError("no config to find validation data in (pass --config_file)")
  from nasfpn_tf.data.input_pipeline import build_dataset
  dataset, _ = build_dataset(config.task.validation_data, config.task.model)
  images = [x.numpy() for x, _ in dataset.unbatch().take(num_images)]
  if not images:
    raise ValueError("the validation data holds no images")
  return np.stack(images).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Metadata.


def _prepare_export_dir(export_dir: str) -> None:
  """Creates `export_dir` and removes what a killed export left in it."""
  file_io.makedirs(export_dir)
  for path in file_io.clean_stale_temp_files(export_dir):
    logging.info("Removed %s, left by a killed export", path)


def write_metadata(directory: str, config: Optional[ExperimentConfig],
                   labels: dict[int, str]) -> None:
  """Writes label_map.json and config.yaml (when there is a config) into `directory`."""
  file_io.write_json(os.path.join(directory, LABEL_MAP_FILE),
                     {str(k): v for k, v in sorted(labels.items())})
  if config is not None:
    save_yaml(config, os.path.join(directory, CONFIG_FILE))


# ---------------------------------------------------------------------------------------------
# SavedModel.


def _write_saved_model(signatures: dict, path: str, model=None) -> None:
  """Writes tf.functions under the given signature names (the first is serving_default).

  With `model`, its backbone, decoder and head are tracked, as Keras' `model.export` tracks
  the model: the loaded SavedModel lists the network's weights as `.variables`. Not the
  model itself: a trained one also holds its optimizer, whose slots do not belong in a
  serving file. Tracking walks the layers' attribute graph, so it also keeps every dict of
  sublayers string-keyed ("P3"..): TensorFlow refuses a non-string key there.
  """
  archive = keras.export.ExportArchive()
  if model is not None:
    for part in (model.backbone, model.decoder, model.head):
      archive.track(part)
  for name, (fn, spec) in signatures.items():
    archive.add_endpoint(name, fn, spec)
  archive.write_out(path, verbose=False)


def write_saved_model(model, path: str, batch_size: Optional[int] = None) -> str:
  """The serving SavedModel alone (no label map or config), written atomically to `path`.

  What `model.export(path, format="tf_saved_model")` writes for a RetinaNetModel: the
  `DetectionModule` signatures (serving_default: uint8 images of any size, serve_encoded,
  serve_raw), NMS in the graph.
  """
  return file_io.atomic_save(
      lambda staged: _write_saved_model(DetectionModule(model, batch_size).signatures(),
                                        staged, model), path)


def export_saved_model(model, export_dir: str, config: Optional[ExperimentConfig] = None,
                       batch_size: Optional[int] = None,
                       labels: Optional[dict[int, str]] = None) -> str:
  """Writes EXPORT_DIR/saved_model (+ label map and config beside it), atomically.

  Args:
    model: a trained RetinaNetModel.
    export_dir: output folder (created).
    config: written as config.yaml; its validation data give the label map.
    batch_size: static batch size of the signatures (None: any).
    labels: category id -> name (default: read from `config`).

  Returns:
    The SavedModel's path.
  """
  model = precision.float32_copy(model)  # exports compute in float32 (see precision.py)
  _prepare_export_dir(export_dir)
  labels = labels if labels is not None else label_map(config, model.num_classes)

  def write(staged: str) -> None:
    _write_saved_model(DetectionModule(model, batch_size).signatures(), staged, model)
    # A copy of the metadata inside, so the SavedModel folder is complete on its own.
    extra = os.path.join(staged, "assets.extra")
    file_io.makedirs(extra)
    write_metadata(extra, config, labels)

  target = file_io.atomic_save(write, os.path.join(export_dir, SAVED_MODEL_DIR))
  write_metadata(export_dir, config, labels)
  return target


# ---------------------------------------------------------------------------------------------
# TFLite.


def tflite_path(export_dir: str, variant: str) -> str:
  return os.path.join(export_dir, f"model_{variant}.tflite")


def _converter(saved_model: str, signature_keys: Sequence[str] = TFLITE_SIGNATURES
               ) -> tf.lite.TFLiteConverter:
  return tf.lite.TFLiteConverter.from_saved_model(saved_model,
                                                  signature_keys=list(signature_keys))


def to_pixels(images: np.ndarray) -> np.ndarray:
  """Preprocessed float images -> the uint8 pixels the full-int8 file takes (rounded)."""
  return np.clip(np.round(images), 0, 255).astype(np.uint8)


def _calibration_samples(images: np.ndarray, signature_keys: Sequence[str]):
  """Representative dataset: (signature key, inputs) pairs, or plain input lists when there
  is one signature (what the quantization debugger takes then)."""

  def samples() -> Iterator:
    for image in images:
      if len(signature_keys) == 1:
        yield [image[None]]
        continue
      for key in signature_keys:
        yield key, {"images": image[None]}
  return samples


def _int8_converter(saved_model: str, pixels: np.ndarray,
                    signature_keys: Sequence[str]) -> tf.lite.TFLiteConverter:
  converter = _converter(saved_model, signature_keys)
  converter.optimizations = [tf.lite.Optimize.DEFAULT]
  converter.representative_dataset = _calibration_samples(pixels, signature_keys)
  # Int8 kernels for the network; builtins stay allowed for the float post-processing.
  converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8,
                                         tf.lite.OpsSet.TFLITE_BUILTINS]
  return converter


def _tensors(data: bytes) -> list[tuple[str, bool]]:
  """(name, is int8 or uint8) of every tensor of every subgraph of a TFLite flatbuffer (an
  interpreter lists only its first subgraph's)."""
  from tensorflow.lite.python import schema_py_generated as schema
  model = schema.Model.GetRootAs(data, 0)
  integer = (schema.TensorType.INT8, schema.TensorType.UINT8)
  return [(sub.Tensors(t).Name().decode(), sub.Tensors(t).Type() in integer)
          for sub in (model.Subgraphs(g) for g in range(model.SubgraphsLength()))
          for t in range(sub.TensorsLength())]


def _float_tensor_names(saved_model: str, pixels: np.ndarray,
                        signature_keys: Sequence[str]) -> list[str]:
  """Names, as the quantizer sees them, of the tensors full_int8 keeps in float: those under
  detection_module.FLOAT_NAMES, in every signature."""
  # The denylist matches names exactly, and names depend on the conversion (with two
  # signatures they are made unique across subgraphs): they are read from a calibration-only
  # conversion set up as the quantizer's (one image: names do not depend on the data).
  converter = _int8_converter(saved_model, pixels[:1], signature_keys)
  converter._experimental_calibrate_only = True  # noqa: SLF001 - as the debugger calibrates
  names = [name for name, _ in _tensors(converter.convert())]
  found = []
  for scope in FLOAT_NAMES:
    in_scope = [n for n in names if scope in n]
    if not in_scope:
      raise ValueError(f"no '{scope}' tensors found to keep in float")
    found += in_scope
  return sorted(set(found))


def quantized_float_tensors(data: bytes, scopes: Sequence[str] = FLOAT_NAMES) -> list[str]:
  """Tensors of a TFLite flatbuffer that should be float (a name containing one of `scopes`;
  default: what full_int8 keeps float, detection_module.FLOAT_NAMES) but are int8."""
  return [name for name, integer in _tensors(data)
          if integer and any(scope in name for scope in scopes)]


def int8_debugger(saved_model: str, pixels: np.ndarray,
                  signature_keys: Sequence[str] = TFLITE_SIGNATURES
                  ) -> "tf.lite.experimental.QuantizationDebugger":
  """TFLite's quantization debugger with FLOAT_NAMES denylisted, for per-layer errors
  (bench/int8_layer_error.py). Its denylist works with one signature only: `_full_int8`,
  which writes two, does not quantize through it."""
  converter = _int8_converter(saved_model, pixels, signature_keys)
  options = tf.lite.experimental.QuantizationDebugOptions(
      denylisted_nodes=_float_tensor_names(saved_model, pixels, signature_keys))
  return tf.lite.experimental.QuantizationDebugger(
      converter=converter, debug_dataset=_calibration_samples(pixels, signature_keys),
      debug_options=options)


# Tensors full_int8 must keep float (the export fails otherwise): the box predictor and the
# concatenation of the levels' outputs.
BOX_PATH_NAMES = (BOX_REGRESSOR_NAME, FLAT_OUTPUTS_NAME + "/concat")


def _without_float_stats(calibrated: bytes) -> tuple[bytes, list[str]]:
  """A calibrated flatbuffer with the calibration ranges of FLOAT_NAMES tensors removed, and
  those tensors' names."""
  from tensorflow.lite.tools import flatbuffer_utils
  model = flatbuffer_utils.convert_bytearray_to_object(calibrated)
  names = set()
  for sub in model.subgraphs:
    for tensor in sub.tensors:
      name = tensor.name.decode()
      if any(scope in name for scope in FLOAT_NAMES):
        tensor.quantization = None
        names.add(name)
  return bytes(flatbuffer_utils.convert_object_to_bytearray(model)), sorted(names)


def _full_int8(saved_model: str, pixels: np.ndarray) -> bytes:
  """Int8 network calibrated on `pixels` (uint8 input); what FLOAT_NAMES names left float32.

  Three parts are kept in float:
  * the post-processing: boxes shifted by class id (up to 2 * num_classes) would get an int8
    step of many pixels, and the anchors and decoded boxes would lose precision too;
  * the flattening of the per-level head outputs: a concatenation's int8 inputs and output
    share one scale, and no one scale fits both P3's box deltas and P7's;
  * the box predictor (one 3x3 conv per level, 4 * anchors channels): its five calls share
    their weights, and the quantizer gives them one output scale too (P3's deltas clipped:
    RMSE 5-11 int8 steps, bench/int8_layer_error.py). In float it costs a few % of the
    multiply-adds; its input, the box tower, stays int8.
  How: the quantization debugger's denylist (the documented way) does nothing in a file of
  two signatures (every denylisted tensor of both came out int8, decoded boxes in steps of
  6.7 pixels). So the model is calibrated, those tensors' ranges are removed and they are
  denylisted, and TFLite's MLIR quantizer (what the debugger calls) quantizes the rest. It
  still quantizes some of them (logged): the class scores (sigmoid, steps of 1/256), the
  last slice of the detection boxes (steps of ~1 pixel) and, in the `raw` signature, the
  per-level reshapes of the head outputs (one shared scale, so raw's max |diff| overstates
  serving_default's error). What the box path must keep float is checked (BOX_PATH_NAMES).
  """
  from tensorflow.lite.python import convert
  converter = _int8_converter(saved_model, pixels, TFLITE_SIGNATURES)
  converter.experimental_mlir_quantizer = True
  converter._experimental_calibrate_only = True  # noqa: SLF001 - as the debugger calibrates
  calibrated, names = _without_float_stats(converter.convert())
  data = convert.mlir_quantize(calibrated, disable_per_channel=False, fully_quantize=False,
                               denylisted_nodes=names)
  leaked = quantized_float_tensors(data, BOX_PATH_NAMES)
  if leaked:
    raise ValueError(f"{len(leaked)} box-path tensors meant to stay float were quantized to "
                     f"int8 (first: {leaked[0][:120]})")
  rest = quantized_float_tensors(data)
  if rest:
    logging.info("full_int8: %d post-processing tensors are int8 all the same (class scores "
                 "and logits), e.g. %s", len(rest), rest[0][:80])
  return data


def convert_tflite(saved_model: str, variant: str,
                   calibration: Optional[np.ndarray] = None) -> bytes:
  """Converts a SavedModel of `tflite_functions` into one variant's flatbuffer.

  Args:
    saved_model: written from `tflite_functions(model)`, with uint8 input for full_int8.
    variant: one of TFLITE_VARIANTS.
    calibration: full_int8 only: preprocessed float32 [n, H, W, 3] images.
  """
  if variant not in TFLITE_VARIANTS:
    raise ValueError(f"unknown TFLite variant '{variant}' (choose from {TFLITE_VARIANTS})")
  # The converter's C++ code logs a harmless "NodeDef mentions attribute Truncate" error per
  # conversion (see stderr_filter); the calibrator itself uses the deprecated
  # tf.lite.Interpreter, whose warning is noise too.
  with filtered_stderr(), warnings.catch_warnings():
    warnings.simplefilter("ignore", UserWarning)
    if variant == "full_int8":
      if calibration is None or not len(calibration):
        raise ValueError("full_int8 needs calibration images")
      return _full_int8(saved_model, to_pixels(calibration))
    converter = _converter(saved_model)
    if variant != "float32":
      converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if variant == "float16":
      converter.target_spec.supported_types = [tf.float16]
    return converter.convert()


def _calibration_or_reason(config, num_images: int) -> tuple[Optional[np.ndarray], str]:
  try:
    return representative_images(config, num_images), ""
  except Exception as e:  # noqa: BLE001 - reported as the variant's one-line reason
    return None, f"no calibration data from task.validation_data: {one_line(e)}"


def _staged_saved_model(model, staging: str, variant: str, cache: dict) -> str:
  """The TFLite-signature SavedModel a variant converts from (uint8 input for full_int8)."""
  dtype = tf.uint8 if variant == "full_int8" else tf.float32
  if dtype not in cache:
    cache[dtype] = os.path.join(staging, f"tflite_saved_model_{dtype.name}")
    _write_saved_model(tflite_functions(model, dtype), cache[dtype])
  return cache[dtype]


def write_tflite(model, path: str, variant: str = "float32",
                 calibration: Optional[np.ndarray] = None) -> str:
  """One TFLite file alone (no label map or config), written atomically to `path`.

  What `model.export(path, format="litert")` writes for a RetinaNetModel: the file
  `export_tflite` writes for `variant` (signatures serving_default with the padded NMS and
  raw, fixed [1, H, W, 3] input, TFLite builtin ops only).

  Args:
    model: a RetinaNetModel.
    path: the .tflite file.
    variant: one of TFLITE_VARIANTS.
    calibration: full_int8 only: preprocessed float32 [n, H, W, 3] images.
  """
  if variant not in TFLITE_VARIANTS:
    raise ValueError(f"unknown TFLite variant '{variant}' (choose from {TFLITE_VARIANTS})")
  if variant == "full_int8" and (calibration is None or not len(calibration)):
    raise ValueError("full_int8 needs calibration images")
  model = precision.float32_copy(model)  # exports compute in float32 (see precision.py)
  with tempfile.TemporaryDirectory() as staging:  # local: the converter reads it back
    saved_model = _staged_saved_model(model, staging, variant, {})
    data = convert_tflite(saved_model, variant, calibration)
  return file_io.write_bytes(path, data)


def export_tflite(model, export_dir: str, variants: Sequence[str] = TFLITE_VARIANTS,
                  config: Optional[ExperimentConfig] = None, num_calibration_images: int = 100,
                  calibration: Optional[np.ndarray] = None,
                  labels: Optional[dict[int, str]] = None) -> dict[str, str]:
  """Writes one EXPORT_DIR/model_<variant>.tflite per variant (+ label map and config).

  Each file holds two signatures with a fixed [1, H, W, 3] input at the model's input size:
  `serving_default` (detections in model-input pixels, padded NMS included) and `raw`
  (head outputs). The full_int8 file takes uint8 pixels, the others float32.

  Args:
    model: a trained RetinaNetModel.
    export_dir: output folder (created).
    variants: any of TFLITE_VARIANTS.
    config: written as config.yaml; its validation data give the label map and calibration.
    num_calibration_images: validation images to calibrate full_int8 on.
    calibration: preprocessed float32 [n, H, W, 3] images to use instead of the config's.
    labels: category id -> name (default: read from `config`).

  Returns:
    variant -> path of its file.

  Raises:
    ExportError: some variants could not be produced (the others are written); no partial
      file is left for the failed ones.
  """
  unknown = [v for v in variants if v not in TFLITE_VARIANTS]
  if unknown:
    raise ExportError({v: f"unknown variant (choose from {', '.join(TFLITE_VARIANTS)})"
                       for v in unknown})
  _prepare_export_dir(export_dir)
  model = precision.float32_copy(model)  # exports compute in float32 (see precision.py)
  failures: dict[str, str] = {}
  if "full_int8" in variants and calibration is None:
    calibration, reason = _calibration_or_reason(config, num_calibration_images)
    if reason:
      failures["full_int8"] = reason
  written: dict[str, str] = {}
  # The SavedModels converted from, under a temp name the next export cleans if this is killed.
  staging = file_io.temp_path(os.path.join(export_dir, "tflite_staging"))
  try:
    saved_models: dict = {}
    for variant in [v for v in variants if v not in failures]:
      try:
        saved_model = _staged_saved_model(model, staging, variant, saved_models)
        data = convert_tflite(saved_model, variant, calibration)
        file_io.write_bytes(tflite_path(export_dir, variant), data)
      except Exception as e:  # noqa: BLE001 - one line per failed variant, others go on
        failures[variant] = one_line(e)
        continue
      written[variant] = tflite_path(export_dir, variant)
  finally:
    file_io.remove(staging)
  labels = labels if labels is not None else label_map(config, model.num_classes)
  write_metadata(export_dir, config, labels)
  if failures:
    raise ExportError(failures, written)
  return written


def make_interpreter(path: Optional[str] = None, num_threads: Optional[int] = None,
                     model_content: Optional[bytes] = None):
  """A TFLite interpreter (file or bytes): LiteRT's, else TensorFlow's deprecated one."""
  try:
    from ai_edge_litert.interpreter import Interpreter
  except ImportError:
    Interpreter = tf.lite.Interpreter  # noqa: N806
  return Interpreter(model_path=path, model_content=model_content, num_threads=num_threads)


class TFLiteDetector:
  """Runs an exported TFLite file on preprocessed images; outputs are mapped by name.

  Args:
    path: a model_<variant>.tflite file.
    num_threads: CPU threads (None: the interpreter's default).
  """

  def __init__(self, path: str, num_threads: Optional[int] = None):
    self.path = path
    self.interpreter = make_interpreter(path, num_threads)
    self._runners = {k: self.interpreter.get_signature_runner(k) for k in TFLITE_SIGNATURES}
    details = self._runners["serving_default"].get_input_details()["images"]
    self.input_dtype = np.dtype(details["dtype"])
    self.input_shape = tuple(int(d) for d in details["shape"])

  def _input(self, image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    h, w = self.input_shape[1:3]
    # Checked here: a wrong shape reaches the interpreter as an XNNPACK reshape failure.
    if image.shape not in ((h, w, 3), (1, h, w, 3)) or not (
        np.issubdtype(image.dtype, np.floating) or image.dtype == np.uint8):
      raise ValueError(
          f"{os.path.basename(self.path)} takes one preprocessed image of shape ({h}, {w}, 3) "
          f"or (1, {h}, {w}, 3), float pixels 0..255 (or uint8); got shape {image.shape}, "
          f"dtype {image.dtype}")
    image = image.astype(np.float32).reshape(self.input_shape)
    if not np.isfinite(image).all():
      raise ValueError(f"{self.path}: image holds NaN or infinite values")
    if self.input_dtype == np.uint8:
      # The full-int8 file takes pixels as they are stored: rounding is the only change.
      return to_pixels(image)
    return image.astype(self.input_dtype)

  def detect(self, image: np.ndarray) -> dict[str, np.ndarray]:
    """Preprocessed float [H, W, 3] (or [1, H, W, 3]) -> detections, batch of 1."""
    return dict(self._runners["serving_default"](images=self._input(image)))

  def raw(self, image: np.ndarray) -> dict[str, np.ndarray]:
    """Preprocessed float image -> {"cls_outputs", "box_outputs"}, batch of 1."""
    return dict(self._runners["raw"](images=self._input(image)))


# ---------------------------------------------------------------------------------------------
# Entry point used by run.py.


def export_from_model_dir(model_dir: str, export_dir: str, export_format: str = "saved_model",
                          config: Optional[ExperimentConfig] = None, **options: Any) -> str:
  """Loads the trained model of `model_dir` and writes the export.

  Args:
    model_dir: MODEL_DIR of a training run, or a `.keras` file.
    export_dir: output folder.
    export_format: "saved_model" or "tflite".
    config: experiment config (default: MODEL_DIR/config.yaml); gives the label map,
      the calibration data and the config.yaml written beside the export.
    **options: saved_model: batch_size; tflite: variants, num_calibration_images.

  Returns:
    The SavedModel path (saved_model) or `export_dir` (tflite).

  Raises:
    ExportError: nothing to export, or TFLite variants that could not be produced.
  """
  _check_export_options(export_format, options)  # before the load: a typo fails fast
  model, beside = load_trained_model(model_dir)
  return export_model(model, export_dir, export_format,
                      resolve_config(model, config, beside), **options)


def _check_export_options(export_format: str, options: dict) -> None:
  allowed = {"saved_model": {"batch_size"},
             "tflite": {"variants", "num_calibration_images"}}
  if export_format not in allowed:
    raise ValueError(f"export_format '{export_format}' is not one of {EXPORT_FORMATS}")
  extra = set(options) - allowed[export_format]
  if extra:
    raise TypeError(f"unknown options for {export_format}: {sorted(extra)}")


def export_model(model, export_dir: str, export_format: str = "saved_model",
                 config: Optional[ExperimentConfig] = None, **options: Any) -> str:
  """Writes the export of an already loaded model (see `export_from_model_dir`)."""
  _check_export_options(export_format, options)
  if export_format == "saved_model":
    return export_saved_model(model, export_dir, config, **options)
  export_tflite(model, export_dir, config=config, **options)
  return export_dir

"""Typed experiment config: `task` (model, data, losses), `trainer`, `runtime`.

The section and key names follow TensorFlow Model Garden's RetinaNet config so
that users can find their way. Defaults are Model Garden's COCO RetinaNet
defaults; the YAML files in `configs/` change only what they must. Every class
validates its own values in `__post_init__`, naming the key on failure.
"""

from __future__ import annotations

import dataclasses
from dataclasses import field
from typing import Any, Optional, Union

from nasfpn_tf.configs.errors import ConfigError
from nasfpn_tf.configs.search_config import SearchConfig


def _check(cond: bool, key: str, msg: str) -> None:
  if not cond:
    raise ConfigError(key, msg)


def _check_choice(value: Any, key: str, choices: tuple) -> None:
  _check(value in choices, key, f"'{value}' is not one of {list(choices)}")


# Widths for which keras.applications publishes MobileNetV2 ImageNet weights.
MOBILENET_V2_IMAGENET_WIDTHS = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)


@dataclasses.dataclass
class BackboneConfig:
  # "resnet" (ours, `depth`) or "mobilenet_v2" (keras.applications.MobileNetV2).
  type: str = "resnet"
  # ResNet only.
  depth: int = 50
  # Local Keras weights file (`.weights.h5`) for the backbone; nothing is downloaded.
  # mobilenet_v2 also takes "imagenet": Keras downloads its ImageNet weights.
  weights_path: str = ""
  # Scales every width; 1.0 is the standard network (MobileNetV2's `alpha`). Small values
  # make CPU runs fast.
  width_multiplier: float = 1.0

  def __post_init__(self):
    _check_choice(self.type, "type", ("resnet", "mobilenet_v2"))
    _check_choice(self.depth, "depth", (10, 18, 34, 50, 101))
    _check(self.width_multiplier > 0, "width_multiplier", "must be > 0")
    if self.weights_path == "imagenet":
      _check(self.type == "mobilenet_v2", "weights_path",
             "'imagenet' (a Keras download) exists for mobilenet_v2 only; give resnet a local file")
      _check(self.width_multiplier in MOBILENET_V2_IMAGENET_WIDTHS, "width_multiplier",
             f"{self.width_multiplier}: MobileNetV2 ImageNet weights exist for "
             f"{list(MOBILENET_V2_IMAGENET_WIDTHS)} only")


@dataclasses.dataclass
class DecoderConfig:
  type: str = "fpn"
  filters: int = 256
  # NAS-FPN only: a shipped spec name ("nasfpn", "fpn", "panet"), a compact string,
  # a spec file path, or an inline list of cell records.
  spec: Any = "nasfpn"
  num_repeats: int = 7
  # Global-pooling merge op: "max" (TF reference) or "avg" (mmdetection).
  global_pool_type: str = "max"
  use_dropblock: bool = False
  dropblock_size: int = 3
  dropblock_keep_prob: float = 0.9
  # NAS-FPN only: depthwise-separable 3x3 convs in the merging cells (NAS-FPNLite).
  use_separable_conv: bool = False
  # nasfpn_supernet only (one-shot search): merging cells per repeat of the supernet.
  num_cells: int = 7

  def __post_init__(self):
    _check_choice(self.type, "type", ("fpn", "nasfpn", "nasfpn_supernet"))
    _check(self.num_cells >= 1, "num_cells", "must be >= 1")
    _check(not self.use_separable_conv or self.type == "nasfpn", "use_separable_conv",
           f"is a NAS-FPN option; decoder type is '{self.type}'")
    _check(self.filters > 0, "filters", "must be > 0")
    _check(self.num_repeats >= 1, "num_repeats", "must be >= 1")
    _check_choice(self.global_pool_type, "global_pool_type", ("max", "avg"))
    _check(0 < self.dropblock_keep_prob <= 1, "dropblock_keep_prob",
           "must be in (0, 1]")


@dataclasses.dataclass
class HeadConfig:
  num_convs: int = 4
  filters: int = 256
  prior_probability: float = 0.01
  # Depthwise-separable 3x3 convs in the class/box subnets and predictors (NAS-FPNLite).
  use_separable_conv: bool = False

  def __post_init__(self):
    _check(self.num_convs >= 0, "num_convs", "must be >= 0")
    _check(self.filters > 0, "filters", "must be > 0")
    _check(0 < self.prior_probability < 1, "prior_probability", "must be in (0, 1)")


@dataclasses.dataclass
class AnchorConfig:
  num_scales: int = 3
  aspect_ratios: list = field(default_factory=lambda: [0.5, 1.0, 2.0])
  anchor_size: float = 4.0

  def __post_init__(self):
    _check(self.num_scales >= 1, "num_scales", "must be >= 1")
    _check(len(self.aspect_ratios) >= 1 and all(a > 0 for a in self.aspect_ratios),
           "aspect_ratios", "must be a non-empty list of positive numbers")
    _check(self.anchor_size > 0, "anchor_size", "must be > 0")


@dataclasses.dataclass
class MatcherConfig:
  # IoU >= positive_threshold: positive; < negative_threshold: background; between: ignored.
  # Model Garden's 0.5 / 0.5 (no ignored band); the RetinaNet paper uses 0.5 / 0.4.
  positive_threshold: float = 0.5
  negative_threshold: float = 0.5

  def __post_init__(self):
    _check(0 < self.negative_threshold <= self.positive_threshold <= 1,
           "matcher", "need 0 < negative_threshold <= positive_threshold <= 1, got "
           f"{self.negative_threshold}, {self.positive_threshold}")


@dataclasses.dataclass
class DetectionConfig:
  pre_nms_top_k: int = 5000
  score_threshold: float = 0.05
  iou_threshold: float = 0.5
  max_detections: int = 100

  def __post_init__(self):
    _check(self.pre_nms_top_k >= 1, "pre_nms_top_k", "must be >= 1")
    _check(0 <= self.score_threshold < 1, "score_threshold", "must be in [0, 1)")
    _check(0 < self.iou_threshold <= 1, "iou_threshold", "must be in (0, 1]")
    _check(self.max_detections >= 1, "max_detections", "must be >= 1")


@dataclasses.dataclass
class NormConfig:
  momentum: float = 0.99
  epsilon: float = 1e-3
  # Synchronise batch statistics across replicas; None = on when there is more than one replica.
  sync: Optional[bool] = None


@dataclasses.dataclass
class ModelConfig:
  num_classes: int = 91
  input_size: list = field(default_factory=lambda: [640, 640])
  min_level: int = 3
  max_level: int = 7
  backbone: BackboneConfig = field(default_factory=BackboneConfig)
  decoder: DecoderConfig = field(default_factory=DecoderConfig)
  head: HeadConfig = field(default_factory=HeadConfig)
  anchor: AnchorConfig = field(default_factory=AnchorConfig)
  matcher: MatcherConfig = field(default_factory=MatcherConfig)
  detection: DetectionConfig = field(default_factory=DetectionConfig)
  norm: NormConfig = field(default_factory=NormConfig)

  def __post_init__(self):
    _check(self.num_classes >= 2, "num_classes", "must be >= 2 (largest category id + 1)")
    _check(isinstance(self.input_size, (list, tuple)) and len(self.input_size) == 2,
           "input_size", f"must be [height, width], got {self.input_size}")
    stride = 2 ** self.max_level
    for i, s in enumerate(self.input_size):
      _check(isinstance(s, int) and s > 0 and s % stride == 0, f"input_size[{i}]",
             f"{s} must be a positive multiple of 2**max_level = {stride}")
    _check(3 <= self.min_level <= self.max_level, "min_level",
           f"need 3 <= min_level <= max_level, got {self.min_level}, {self.max_level}")
    if self.decoder.type == "nasfpn":
      self._check_decoder_spec()

  def _check_decoder_spec(self) -> None:
    # Parsed here, not only when the model is built, so that a bad spec stops the run before
    # anything is written and names the cell (see architecture_spec.validate).
    from nasfpn_tf.architecture_spec import SpecError, parse_spec  # local: keeps import light
    try:
      spec = parse_spec(self.decoder.spec, self.min_level, self.max_level)
    except SpecError as e:
      raise ConfigError("decoder.spec", str(e)) from None
    _check((spec.min_level, spec.max_level) == (self.min_level, self.max_level), "decoder.spec",
           f"covers P{spec.min_level}..P{spec.max_level} but the model uses "
           f"P{self.min_level}..P{self.max_level} (min_level, max_level)")


@dataclasses.dataclass
class DataConfig:
  # "embedded": the generated shapes set (COCO format, made on first use);
  # "coco": annotation json + image folder; "tfds": tfds.load(tfds_name);
  # "tfrecord": files written by `run.py --mode=make_tfrecords`.
  source: str = "embedded"
  annotation_file: str = ""
  image_dir: str = ""
  tfds_name: str = "coco/2017"
  tfds_split: str = "train"
  tfds_data_dir: str = ""
  tfds_download: bool = False
  tfrecord_pattern: str = ""
  # Embedded set: where it is written, how many images, which seed, which split.
  embedded_dir: str = "~/.cache/nasfpn_tf/shapes"
  embedded_split: str = "train"
  embedded_num_images: int = 600
  embedded_image_size: int = 256
  embedded_seed: int = 0
  global_batch_size: int = 8
  is_training: bool = True
  shuffle_buffer_size: int = 1000
  aug_rand_hflip: bool = True
  aug_scale_min: float = 0.8
  aug_scale_max: float = 1.2
  max_num_instances: int = 100
  # Reproducible input: one seeded image order (the same every pass) and order-preserving
  # parallel maps. Random augmentation is not covered (stateful ops in a parallel map).
  deterministic: bool = False
  cache: bool = False
  # Images whose annotations are malformed are logged and skipped ("skip") or stop the run ("error").
  on_bad_annotation: str = "skip"

  def __post_init__(self):
    _check_choice(self.source, "source", ("embedded", "coco", "tfds", "tfrecord"))
    # "holdout": a third stream for scoring search trials, so the search never sees "val".
    _check_choice(self.embedded_split, "embedded_split", ("train", "val", "holdout"))
    _check(self.global_batch_size >= 1, "global_batch_size", "must be >= 1")
    _check(0 < self.aug_scale_min <= self.aug_scale_max, "aug_scale_min",
           f"need 0 < aug_scale_min <= aug_scale_max, got {self.aug_scale_min}, {self.aug_scale_max}")
    _check(self.max_num_instances >= 1, "max_num_instances", "must be >= 1")
    _check_choice(self.on_bad_annotation, "on_bad_annotation", ("skip", "error"))
    self._check_paths()

  def _check_paths(self) -> None:
    """Each source reads its own keys; a path set for another source would be ignored."""
    paths = {"annotation_file": self.annotation_file, "image_dir": self.image_dir,
             "tfrecord_pattern": self.tfrecord_pattern}
    needed = {"coco": ("annotation_file", "image_dir"), "tfrecord": ("tfrecord_pattern",)}
    read = needed.get(self.source, ())
    for key in read:
      _check(bool(paths[key]), key, f"source '{self.source}' needs {' and '.join(read)}")
    for key, value in paths.items():
      _check(not value or key in read, key,
             f"'{value}' would be ignored: source is '{self.source}' (set source: coco for "
             "annotation_file/image_dir, source: tfrecord for tfrecord_pattern)")


def _validation_data() -> DataConfig:
  return DataConfig(is_training=False, embedded_split="val", tfds_split="validation",
                    embedded_num_images=100, aug_rand_hflip=False, aug_scale_min=1.0,
                    aug_scale_max=1.0)


@dataclasses.dataclass
class LossConfig:
  focal_loss_alpha: float = 0.25
  focal_loss_gamma: float = 1.5
  huber_loss_delta: float = 0.1
  box_loss_weight: float = 50.0
  # Weight decay as Model Garden applies it: (l2_weight_decay / 2) * the sum of squared conv
  # kernels is added to the loss (gradient l2_weight_decay * w, through SGD's momentum, so
  # about 10x stronger per step than a decoupled decay of the same value at momentum 0.9).
  # Biases and batch norm are not decayed. With trainer.optimizer.type=adamw it is AdamW's
  # decoupled decay rate instead.
  l2_weight_decay: float = 1e-4

  def __post_init__(self):
    _check(0 <= self.focal_loss_alpha <= 1, "focal_loss_alpha", "must be in [0, 1]")
    _check(self.focal_loss_gamma >= 0, "focal_loss_gamma", "must be >= 0")
    _check(self.huber_loss_delta > 0, "huber_loss_delta", "must be > 0")
    _check(self.l2_weight_decay >= 0, "l2_weight_decay", "must be >= 0")


@dataclasses.dataclass
class TaskConfig:
  model: ModelConfig = field(default_factory=ModelConfig)
  train_data: DataConfig = field(default_factory=DataConfig)
  validation_data: DataConfig = field(default_factory=_validation_data)
  losses: LossConfig = field(default_factory=LossConfig)
  # What to start from: a `.keras` / `.weights.h5` file of this model (loaded whole), or a
  # TensorFlow checkpoint prefix from Model Garden or tensorflow/tpu (nasfpn_tf.checkpoint_import).
  init_checkpoint: str = ""
  # Parts a TensorFlow checkpoint fills (Model Garden's values): backbone, backbone_decoder, all.
  init_checkpoint_modules: str = "all"

  def __post_init__(self):
    _check_choice(self.init_checkpoint_modules, "init_checkpoint_modules",
                  ("backbone", "backbone_decoder", "all"))
    _check(self.init_checkpoint_modules == "all"
           or not self.init_checkpoint.endswith((".keras", ".h5")), "init_checkpoint_modules",
           f"'{self.init_checkpoint_modules}' needs a TensorFlow checkpoint; a Keras file "
           "loads whole (all): convert with run.py --mode=import_checkpoint instead")


@dataclasses.dataclass
class OptimizerConfig:
  type: str = "sgd"
  momentum: float = 0.9
  # SGD's momentum update as one TensorFlow kernel per variable (optimization.FusedSGD);
  # false: Keras' own SGD (same arithmetic; bench/op_profile.py --compare_optimizers).
  fused: bool = True
  clipnorm: Optional[float] = None

  def __post_init__(self):
    _check_choice(self.type, "type", ("sgd", "adam", "adamw"))


@dataclasses.dataclass
class LearningRateConfig:
  # "stepwise": base_lr scaled by `decay_factor` at each boundary; "cosine": cosine to 0.
  type: str = "stepwise"
  # Learning rate for a global batch of `base_batch_size`; scaled linearly with the real batch.
  base_lr: float = 0.08
  base_batch_size: int = 64
  warmup_steps: int = 500
  warmup_lr: float = 0.0067
  boundaries: list = field(default_factory=lambda: [15000, 20000])
  decay_factor: float = 0.1

  def __post_init__(self):
    _check_choice(self.type, "type", ("stepwise", "cosine", "constant"))
    _check(self.base_lr > 0, "base_lr", "must be > 0")
    _check(self.base_batch_size >= 1, "base_batch_size",
           f"must be >= 1, got {self.base_batch_size}")
    _check(self.warmup_steps >= 0, "warmup_steps", f"must be >= 0, got {self.warmup_steps}")
    _check(self.decay_factor > 0, "decay_factor", f"must be > 0, got {self.decay_factor}")
    _check(list(self.boundaries) == sorted(self.boundaries), "boundaries",
           "must be increasing")


@dataclasses.dataclass
class TrainerConfig:
  train_steps: int = 22500
  # Steps between evaluations (one Keras "epoch" each).
  validation_interval: int = 1000
  validation_steps: int = -1
  checkpoint_interval: int = 1000
  # Steps between the backups that let a killed run resume mid-epoch.
  backup_interval: int = 100
  optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
  learning_rate: LearningRateConfig = field(default_factory=LearningRateConfig)

  def __post_init__(self):
    for key in ("train_steps", "validation_interval", "checkpoint_interval", "backup_interval"):
      value = getattr(self, key)
      _check(value >= 1, key, f"must be >= 1, got {value}")
    _check(self.validation_steps == -1 or self.validation_steps >= 1, "validation_steps",
           f"must be >= 1, or -1 for the whole split, got {self.validation_steps}")


@dataclasses.dataclass
class RuntimeConfig:
  strategy: str = "default"
  tpu: str = ""
  # Logical CPU devices to create for `mirrored` when no GPU exists (tests, laptops).
  num_cpu_devices: int = 0
  # auto: bfloat16 on TPUs, GPUs with compute capability >= 8.0 and CPUs with AVX-512 BF16
  # or AMX; float32 elsewhere (nasfpn_tf/precision.py). Or float32, float16, bfloat16.
  mixed_precision_dtype: str = "auto"
  jit_compile: bool = False
  steps_per_execution: int = 1
  seed: int = 0

  def __post_init__(self):
    _check_choice(self.strategy, "strategy", ("default", "mirrored", "multi_worker", "tpu"))
    _check_choice(self.mixed_precision_dtype, "mixed_precision_dtype",
                  ("auto", "float32", "float16", "bfloat16"))
    _check(self.steps_per_execution >= 1, "steps_per_execution", "must be >= 1")


@dataclasses.dataclass
class ExperimentConfig:
  task: TaskConfig = field(default_factory=TaskConfig)
  trainer: TrainerConfig = field(default_factory=TrainerConfig)
  runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
  # Used by `run.py --mode=search` only: the task/trainer sections are the proxy task.
  search: SearchConfig = field(default_factory=SearchConfig)


ConfigNode = Union[ExperimentConfig, TaskConfig, ModelConfig, DataConfig]

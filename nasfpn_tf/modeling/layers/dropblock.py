"""DropBlock (Ghiasi, Lin, Le 2018): drops contiguous square regions of a feature map.

The paper uses it (block 3x3) after the merging cells' batch norm for the large
NAS-FPN models trained on long schedules. Identity at inference.
"""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="nasfpn_tf")
class DropBlock(keras.layers.Layer):
  """Args:
    keep_prob: fraction of activations kept on average (1.0 disables).
    block_size: side of the dropped squares.
    seed: optional seed for the masks.
  """

  def __init__(self, keep_prob: float = 0.9, block_size: int = 3, seed=None, **kwargs):
    super().__init__(**kwargs)
    if not 0 < keep_prob <= 1:
      raise ValueError(f"keep_prob {keep_prob} must be in (0, 1]")
    if block_size < 1:
      raise ValueError(f"block_size {block_size} must be >= 1")
    self.keep_prob, self.block_size, self.seed = keep_prob, block_size, seed
    self.seed_generator = keras.random.SeedGenerator(seed)

  def call(self, x, training=None):
    if not training or self.keep_prob == 1.0:
      return x
    shape = ops.shape(x)
    height = ops.cast(shape[1], "float32")
    width = ops.cast(shape[2], "float32")
    block = self.block_size
    # Seed rate so that the expected dropped fraction is 1 - keep_prob once
    # every seed grows into a block (Ghiasi et al., eq. 1).
    valid = ops.maximum((height - block + 1) * (width - block + 1), 1.0)
    gamma = (1.0 - self.keep_prob) / (block ** 2) * height * width / valid
    noise = keras.random.uniform(shape, seed=self.seed_generator, dtype="float32")
    seeds = ops.cast(noise < gamma, "float32")
    dropped = ops.max_pool(seeds, pool_size=block, strides=1, padding="same")
    mask = 1.0 - dropped
    scale = ops.cast(ops.size(mask), "float32") / ops.maximum(ops.sum(mask), 1.0)
    return x * ops.cast(mask * scale, x.dtype)

  def compute_output_shape(self, input_shape):
    return input_shape

  def get_config(self) -> dict:
    return {**super().get_config(), "keep_prob": self.keep_prob, "block_size": self.block_size,
            "seed": self.seed}

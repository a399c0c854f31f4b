"""DropBlock (Ghiasi, Lin, Le, NeurIPS 2018): drops contiguous square regions of a feature map.

The NAS-FPN paper uses it (block 3x3) after the merging cells' batch norm for the
large models trained on long schedules. Identity at inference.
"""

from __future__ import annotations

from typing import Optional

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="nasfpn_tf")
class DropBlock(keras.layers.Layer):
  """Structured dropout on NHWC maps.

  Seeds are drawn only where a whole block fits inside the map (the DropBlock
  paper's sampling region), each seed grows into a `block_size` square, and the
  kept activations are rescaled so the mean is preserved.

  Args:
    keep_prob: fraction of activations kept on average (1.0 disables).
    block_size: side of the dropped squares (clipped to the map size when static).
    seed: optional int seed for the masks.

  Call arguments:
    x: [B, H, W, C].
    training: drop only when True.

  Returns:
    A tensor shaped and typed like `x`.

  Example:
    y = DropBlock(keep_prob=0.9, block_size=3)(x, training=True)
  """

  def __init__(self, keep_prob: float = 0.9, block_size: int = 3, seed: Optional[int] = None,
               **kwargs):
    super().__init__(**kwargs)
    if not 0 < keep_prob <= 1:
      raise ValueError(f"keep_prob {keep_prob} must be in (0, 1]")
    if block_size < 1:
      raise ValueError(f"block_size {block_size} must be >= 1")
    self.keep_prob, self.block_size, self.seed = keep_prob, block_size, seed
    # Random state (not a weight), as keras.layers.Dropout keeps it.
    self.seed_generator = keras.random.SeedGenerator(seed)

  def build(self, input_shape):
    # No weights; an explicit build keeps .keras reloads free of "unbuilt state" warnings.
    self.built = True

  def call(self, x, training=None):
    if not training or self.keep_prob == 1.0:
      return x
    shape = ops.shape(x)
    block = self.block_size
    static_hw = [d for d in x.shape[1:3] if d is not None]
    if static_hw:
      block = max(1, min([block] + static_hw))
    height, width = shape[1], shape[2]
    h = ops.cast(height, "float32")
    w = ops.cast(width, "float32")
    # Seed rate so that the expected dropped fraction is 1 - keep_prob once every
    # seed has grown into a block (DropBlock paper, eq. 1).
    valid_area = ops.maximum((h - block + 1.0) * (w - block + 1.0), 1.0)
    gamma = (1.0 - self.keep_prob) / float(block ** 2) * h * w / valid_area
    # 'same' max pooling with stride 1 spreads a seed at (i, j) over rows
    # i - block//2 .. i + (block-1)//2 (likewise columns): seeds must sit where that fits.
    rows = ops.arange(height)
    cols = ops.arange(width)
    valid_rows = ops.logical_and(rows >= block // 2, rows < height - (block - 1) // 2)
    valid_cols = ops.logical_and(cols >= block // 2, cols < width - (block - 1) // 2)
    valid = ops.logical_and(valid_rows[:, None], valid_cols[None, :])[None, :, :, None]
    noise = keras.random.uniform(shape, seed=self.seed_generator, dtype="float32")
    seeds = ops.cast(ops.logical_and(noise < gamma, valid), "float32")
    dropped = ops.max_pool(seeds, pool_size=block, strides=1, padding="same")
    mask = 1.0 - dropped
    scale = ops.cast(ops.size(mask), "float32") / ops.maximum(ops.sum(mask), 1.0)
    return x * ops.cast(mask * scale, x.dtype)

  def compute_output_shape(self, input_shape):
    return tuple(input_shape)

  def get_config(self) -> dict:
    return {**super().get_config(), "keep_prob": self.keep_prob, "block_size": self.block_size,
            "seed": self.seed}

import numpy as np
import pytest

from nasfpn_tf.modeling.layers.dropblock import DropBlock
from nasfpn_tf.modeling.layers.merging_cell import MergingCell
from tests.layer_harness import check_layer


def test_cell_harness_both_ops():
  rng = np.random.default_rng(0)
  for op in ("sum", "global_pool"):
    kwargs = dict(input_levels=[3, 5], target_level=4, op=op, filters=8,
                  global_pool_type="max", use_dropblock=False, dropblock_keep_prob=0.9,
                  dropblock_size=3, norm_momentum=0.99, norm_epsilon=1e-3, use_sync_bn=False)
    inputs = [rng.normal(size=(2, 16, 16, 8)).astype(np.float32),
              rng.normal(size=(2, 4, 4, 8)).astype(np.float32)]
    layer = check_layer(MergingCell, kwargs, inputs)
    assert layer(inputs).shape == (2, 8, 8, 8)


def test_cell_values_by_hand():
  # Identity-like conv and fresh BN (inference: x / sqrt(1 + eps)): the output is
  # ReLU(merge) run through a 3x3 conv whose only nonzero tap is the centre.
  cell = MergingCell([4, 4], 4, op="sum", filters=2)
  a = np.full((1, 4, 4, 2), 1.5, np.float32)
  b = np.full((1, 4, 4, 2), -3.0, np.float32)
  c = np.full((1, 4, 4, 2), 2.0, np.float32)
  cell([a, b])
  kernel = np.zeros((3, 3, 2, 2), np.float32)
  kernel[1, 1] = np.eye(2)
  cell.conv.set_weights([kernel, np.zeros(2, np.float32)])
  out = np.asarray(cell([a, b], training=False))
  np.testing.assert_allclose(out, 0.0, atol=1e-6)  # relu(1.5 - 3) = 0
  cell3 = MergingCell([4, 4, 4], 4, op="sum", filters=2)
  cell3([a, b, c])
  cell3.conv.set_weights([kernel, np.zeros(2, np.float32)])
  out3 = np.asarray(cell3([a, b, c], training=False))
  np.testing.assert_allclose(out3, 0.5 / np.sqrt(1 + 1e-3), rtol=1e-5)  # extra input summed in


def test_cell_projects_other_widths():
  cell = MergingCell([3, 4], 4, op="sum", filters=4)
  out = cell([np.zeros((1, 8, 8, 6), np.float32), np.zeros((1, 4, 4, 4), np.float32)])
  assert out.shape == (1, 4, 4, 4)
  assert cell.resamplers[0].project and not cell.resamplers[1].project


def test_bad_arguments():
  with pytest.raises(ValueError, match="at least 2"):
    MergingCell([3], 3)
  with pytest.raises(ValueError, match="op 'prod'"):
    MergingCell([3, 4], 3, op="prod")


def test_dropblock_drops_blocks_in_training_only():
  x = np.ones((4, 16, 16, 3), np.float32)
  layer = check_layer(DropBlock, dict(keep_prob=0.8, block_size=3, seed=1), x)
  np.testing.assert_array_equal(np.asarray(layer(x, training=False)), x)
  out = np.asarray(layer(x, training=True))
  dropped = (out == 0).mean()
  assert 0.1 < dropped < 0.3, dropped
  # Kept activations are rescaled so the mean is preserved.
  np.testing.assert_allclose(out.mean(), 1.0, rtol=1e-4)

import numpy as np
import pytest

from nasfpn_tf.modeling.layers.dropblock import DropBlock
from nasfpn_tf.modeling.layers.merging_cell import MergingCell
from tests.layer_harness import check_layer

EPS = 1e-3
BN = 1 / np.sqrt(1 + EPS)  # a fresh BN in inference mode: x / sqrt(1 + eps)


def _sigmoid(x):
  return 1 / (1 + np.exp(-np.asarray(x, np.float64)))


def _identity_conv(cell, channels):
  """Makes the cell's 3x3 conv an identity (centre tap only, zero bias)."""
  kernel = np.zeros((3, 3, channels, channels), np.float32)
  kernel[1, 1] = np.eye(channels)
  cell.conv.set_weights([kernel, np.zeros(channels, np.float32)])


@pytest.mark.parametrize("op, pool", [("sum", "max"), ("global_pool", "avg")])
def test_cell_harness(op, pool):
  rng = np.random.default_rng(0)
  kwargs = dict(input_levels=[3, 5], target_level=4, op=op, filters=8,
                global_pool_type=pool, use_dropblock=op == "sum", dropblock_keep_prob=0.9,
                dropblock_size=3, norm_momentum=0.99, norm_epsilon=EPS, use_sync_bn=False,
                kernel_initializer=None)
  inputs = [rng.normal(size=(2, 16, 16, 8)).astype(np.float32),
            rng.normal(size=(2, 4, 4, 8)).astype(np.float32)]
  layer = check_layer(MergingCell, kwargs, inputs)
  assert layer(inputs).shape == (2, 8, 8, 8)
  assert layer.conv.kernel.shape == (3, 3, 8, 8) and layer.conv.use_bias
  assert (layer.dropblock is not None) == (op == "sum")


def test_cell_harness_with_projection_and_an_extra_addend():
  rng = np.random.default_rng(1)
  inputs = [rng.normal(size=(1, 8, 8, 6)).astype(np.float32),
            rng.normal(size=(1, 4, 4, 4)).astype(np.float32),
            rng.normal(size=(1, 4, 4, 4)).astype(np.float32)]
  layer = check_layer(MergingCell, dict(input_levels=[3, 4, 4], target_level=4, op="global_pool",
                                        filters=4, kernel_initializer="glorot_uniform"), inputs)
  assert [r.project for r in layer.resamplers] == [True, False, False]


def test_sum_cell_values_by_hand():
  # Output = BN(conv3x3(ReLU(a + b [+ c]))) with an identity conv.
  a = np.full((1, 4, 4, 2), 1.5, np.float32)
  b = np.full((1, 4, 4, 2), -3.0, np.float32)
  c = np.full((1, 4, 4, 2), 2.0, np.float32)
  cell = MergingCell([4, 4], 4, op="sum", filters=2, norm_epsilon=EPS)
  cell([a, b])
  _identity_conv(cell, 2)
  np.testing.assert_allclose(np.asarray(cell([a, b], training=False)), 0.0, atol=1e-6)  # ReLU
  cell3 = MergingCell([4, 4, 4], 4, op="sum", filters=2, norm_epsilon=EPS)
  cell3([a, b, c])
  _identity_conv(cell3, 2)
  # The extra (unconsumed) input is summed in before the ReLU: 1.5 - 3 + 2 = 0.5.
  np.testing.assert_allclose(np.asarray(cell3([a, b, c], training=False)), 0.5 * BN, rtol=1e-5)


@pytest.mark.parametrize("pool", ["max", "avg"])
def test_global_pool_cell_values_by_hand(pool):
  # Inputs from P4 (2x2) and P5 (1x1), output at P4: the P5 input is upsampled and,
  # being the coarser one, gates the P4 input although it comes second.
  fine = np.array([1.0, 2.0, 3.0, 4.0], np.float32).reshape(1, 2, 2, 1)
  coarse = np.array([[[[-1.0]]]], np.float32)
  cell = MergingCell([4, 5], 4, op="global_pool", filters=1, global_pool_type=pool,
                     norm_epsilon=EPS)
  cell([fine, coarse])
  _identity_conv(cell, 1)
  out = np.asarray(cell([fine, coarse], training=False))
  # max and avg of the constant upsampled map are both -1.
  expected = np.maximum(-1.0 + fine * _sigmoid(-1.0), 0.0) * BN
  np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-7)
  assert out[0, 1, 1, 0] > 0 and (out.ravel()[:3] == 0).all()
  # Same map resampled down instead: P3 (4x4) and P4 (2x2) -> P4, gate = the P4 input.
  p3 = np.arange(16, dtype=np.float32).reshape(1, 4, 4, 1) - 8
  p4 = np.array([0.5, -1.0, 2.0, 0.0], np.float32).reshape(1, 2, 2, 1)
  cell2 = MergingCell([3, 4], 4, op="global_pool", filters=1, global_pool_type=pool,
                      norm_epsilon=EPS)
  cell2([p3, p4])
  _identity_conv(cell2, 1)
  pooled_p3 = np.array([[-3.0, -1.0], [5.0, 7.0]]).reshape(1, 2, 2, 1)  # 2x2 max-pool of p3
  gate = _sigmoid(p4.max() if pool == "max" else p4.mean())
  expected2 = np.maximum(p4 + pooled_p3 * gate, 0.0) * BN
  np.testing.assert_allclose(np.asarray(cell2([p3, p4], training=False)), expected2, rtol=1e-5)


def test_cell_projects_other_widths():
  cell = MergingCell([3, 4], 4, op="sum", filters=4)
  out = cell([np.zeros((1, 8, 8, 6), np.float32), np.zeros((1, 4, 4, 4), np.float32)])
  assert out.shape == (1, 4, 4, 4)
  assert cell.resamplers[0].project and not cell.resamplers[1].project
  assert cell.compute_output_shape([(1, 8, 8, 6), (1, 4, 4, 4)]) == (1, 4, 4, 4)


def test_bad_arguments():
  with pytest.raises(ValueError, match="at least 2"):
    MergingCell([3], 3)
  with pytest.raises(ValueError, match="op 'prod'"):
    MergingCell([3, 4], 3, op="prod")
  with pytest.raises(ValueError, match="global_pool_type 'min'"):
    MergingCell([3, 4], 3, global_pool_type="min")
  with pytest.raises(ValueError, match="got 3 inputs for input_levels"):
    MergingCell([3, 4], 3)([np.zeros((1, 4, 4, 2), np.float32)] * 3)


# --- DropBlock ----------------------------------------------------------------------------------

def test_dropblock_harness_and_training_only():
  x = np.ones((4, 16, 16, 3), np.float32)
  layer = check_layer(DropBlock, dict(keep_prob=0.8, block_size=3, seed=1), x)
  np.testing.assert_array_equal(np.asarray(layer(x, training=False)), x)
  np.testing.assert_array_equal(np.asarray(layer(x)), x)  # inference by default
  out = np.asarray(layer(x, training=True))
  dropped = (out == 0).mean()
  assert 0.1 < dropped < 0.3, dropped
  # Kept activations are rescaled so the mean is preserved.
  np.testing.assert_allclose(out.mean(), 1.0, rtol=1e-4)


def test_dropblock_drops_whole_blocks_inside_the_map():
  x = np.ones((8, 12, 12, 2), np.float32)
  out = np.asarray(DropBlock(keep_prob=0.9, block_size=3, seed=2)(x, training=True))
  zero = out == 0
  assert zero.any()
  for n, i, j, c in zip(*np.nonzero(zero)):
    # Every dropped pixel lies in some 3x3 all-dropped square that fits inside the map.
    assert any(zero[n, r:r + 3, s:s + 3, c].all() and r + 3 <= 12 and s + 3 <= 12
               for r in range(max(0, i - 2), min(i, 9) + 1)
               for s in range(max(0, j - 2), min(j, 9) + 1))


def test_dropblock_small_maps_and_arguments():
  # A 1x1 map (P7 of a small image) clips the block to 1 and still runs.
  x = np.ones((64, 1, 1, 4), np.float32)
  out = np.asarray(DropBlock(keep_prob=0.5, block_size=3, seed=0)(x, training=True))
  assert 0 < (out == 0).mean() < 1
  np.testing.assert_array_equal(np.asarray(DropBlock(keep_prob=1.0)(x, training=True)), x)
  with pytest.raises(ValueError, match="keep_prob 0"):
    DropBlock(keep_prob=0)
  with pytest.raises(ValueError, match="block_size 0"):
    DropBlock(block_size=0)

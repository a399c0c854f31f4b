import numpy as np
import tensorflow as tf

from nasfpn_tf.ops.target_assigner import BACKGROUND, IGNORE, TargetAssigner

ANCHORS = np.array([[0, 0, 10, 10],     # IoU with gt0 = 100/120 -> positive
                    [0, 0, 10, 20],     # IoU with gt0 = 120/200 = 0.6 -> positive
                    [0, 5, 10, 15],     # IoU with gt0 = 70/150 = 0.47 -> ignored
                    [20, 20, 30, 30],   # far from gt0/gt1 -> background
                    [50, 50, 60, 60]],  # gt1's only overlap (IoU 0.06) -> force-matched
                   np.float32)


def test_thresholds_and_force_match():
  assigner = TargetAssigner(ANCHORS, positive_threshold=0.5, negative_threshold=0.4)
  boxes = tf.constant([[0, 0, 10, 12], [50, 50, 52, 53]], tf.float32)
  cls, box = assigner(boxes, tf.constant([3, 7]))
  np.testing.assert_array_equal(cls.numpy(), [3, 3, IGNORE, BACKGROUND, 7])
  # Encoded target of anchor 0 against gt0: centre x moves by 1 / 10, width log(12 / 10).
  np.testing.assert_allclose(box.numpy()[0], [0, 0.1, 0, np.log(1.2)], atol=1e-6)
  np.testing.assert_array_equal(box.numpy()[3], 0)


def test_defaults_are_model_gardens_without_an_ignored_band():
  from nasfpn_tf.configs.experiment import MatcherConfig
  assert (MatcherConfig().positive_threshold, MatcherConfig().negative_threshold) == (0.5, 0.5)
  cls, _ = TargetAssigner(ANCHORS)(tf.constant([[0, 0, 10, 12], [50, 50, 52, 53]], tf.float32),
                                   tf.constant([3, 7]))
  np.testing.assert_array_equal(cls.numpy(), [3, 3, BACKGROUND, BACKGROUND, 7])   # 0.47: negative


def test_no_boxes_is_all_background():
  assigner = TargetAssigner(ANCHORS)
  cls, box = assigner(tf.zeros([0, 4]), tf.zeros([0], tf.int32))
  np.testing.assert_array_equal(cls.numpy(), [BACKGROUND] * 5)
  assert box.shape == (5, 4)


def test_runs_inside_tf_data():
  assigner = TargetAssigner(ANCHORS)
  ds = tf.data.Dataset.from_tensors((tf.constant([[0, 0, 10, 12.0]]), tf.constant([2])))
  cls, _ = next(iter(ds.map(assigner)))
  assert cls.numpy()[0] == 2


def test_every_box_keeps_an_anchor():
  rng = np.random.default_rng(1)
  from nasfpn_tf.ops.anchor import AnchorGenerator
  anchors = AnchorGenerator(3, 7).flat((128, 128))
  corners = rng.uniform(0, 100, (20, 2))
  boxes = np.concatenate([corners, corners + rng.uniform(3, 28, (20, 2))], 1).astype(np.float32)
  classes = np.arange(20, dtype=np.int32) + 1
  cls, _ = TargetAssigner(anchors)(tf.constant(boxes), tf.constant(classes))
  assert set(np.unique(cls.numpy())) >= set(classes.tolist())

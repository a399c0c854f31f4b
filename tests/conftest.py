import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest


@pytest.fixture(autouse=True)
def _float32_policy_between_tests():
  """Training sets Keras' global dtype policy (bfloat16 under `auto` on CPUs with AMX):
  a test that builds a model directly must not inherit the previous test's."""
  yield
  import keras
  keras.mixed_precision.set_global_policy("float32")

"""export/parity.py on the small trained model and its exports."""

from __future__ import annotations

import json

import pytest

from nasfpn_tf.serving import export_lib
from serving_helpers import parity_module

pytestmark = pytest.mark.slow


def test_parity_report(trained, export_dir):
  parity = parity_module()
  report = parity.run_parity(trained.model_dir, num_images=8, export_dir=export_dir,
                             repeats=2, config=trained.config)
  rows = {r["format"]: r for r in report["rows"]}
  expected = ["keras", "keras (padded NMS)", "saved_model"] + \
      [f"tflite {v}" for v in export_lib.TFLITE_VARIANTS]
  assert list(rows) == expected
  assert report["num_images"] == 8
  sm = rows["saved_model"]["raw_max_abs_diff"]
  assert max(sm.values()) < 1e-4
  assert max(rows["tflite float32"]["raw_max_abs_diff"].values()) < 1e-4
  # Quantized files differ, but stay in the neighbourhood of the float logits.
  assert max(rows["tflite full_int8"]["raw_max_abs_diff"].values()) < 2.0
  assert rows["saved_model"]["metrics"]["AP"] == pytest.approx(rows["keras"]["metrics"]["AP"],
                                                               abs=1e-6)
  for row in report["rows"][2:]:
    assert row["size_mb"] > 0 and row["latency_ms"] > 0
  table = parity.format_table(report["rows"])
  assert len(table.splitlines()) == 2 + len(expected)
  json.dumps(report)  # parity.json must be writable as is

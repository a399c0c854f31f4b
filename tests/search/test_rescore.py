"""Re-scoring under ASHA: several seeds per architecture, ranked by their mean."""

import json
import os

import pytest
import yaml

from nasfpn_tf.architecture_spec import parse_spec
from nasfpn_tf.configs.loading import load_config
from nasfpn_tf.search.rescore import architecture_row, children_dir, seeded_config
from tests.search.test_oneshot import CONFIG, tiny_overrides


def test_an_architecture_is_scored_by_the_mean_of_its_seeds():
  row = architecture_row("P3:sum:0,1:out", [
      {"seed": 1, "AP": 0.30, "evaluations": 1, "finished": False, "error": None},
      {"seed": 0, "AP": 0.10, "evaluations": 2, "finished": True, "error": None}])
  assert row["AP"] == pytest.approx(0.20)
  assert row["AP_per_seed"] == [0.10, 0.30]   # in seed order
  # ASHA stopped seed 1 after one evaluation: the row says so.
  assert row["evaluations"] == 1 and row["finished"] is False
  crashed = architecture_row("x", [
      {"seed": 0, "AP": 0.4, "evaluations": 2, "finished": True, "error": None},
      {"seed": 1, "AP": None, "evaluations": 0, "finished": False, "error": "OOM"}])
  assert crashed["AP"] == pytest.approx(0.4) and crashed["error"] == "OOM"


def test_each_seed_offset_moves_the_seed_and_has_its_own_folder():
  config = load_config(CONFIG, "runtime.seed=5")
  assert seeded_config(config, 0) is config
  assert seeded_config(config, 2).runtime.seed == 7
  assert children_dir("r", 0).endswith("children")
  assert children_dir("r", 1) != children_dir("r", 2) != children_dir("r", 0)


@pytest.mark.slow
def test_rescoring_with_two_seeds_trains_two_children_and_scores_their_mean(tmp_path):
  pytest.importorskip("ray.tune")
  from nasfpn_tf.search.proxy_task import spec_digest
  from nasfpn_tf.search.rescore import rescore

  # grace = every evaluation: ASHA stops nothing, so every child stores its AP.
  config = load_config(CONFIG, tiny_overrides(tmp_path / "shapes") + ",runtime.seed=3,"
                       "search.oneshot.rescore_seeds=2,search.oneshot.rescore_grace_evals=2")
  specs = [parse_spec("nasfpn", 3, 7)]
  directory = str(tmp_path / "rescore")
  rows = rescore(config, specs, directory)
  assert len(rows) == 1 and all(r["finished"] and r["error"] is None for r in rows)
  for row in rows:
    stored = []
    for offset, seed in ((0, 3), (1, 4)):
      child = os.path.join(children_dir(directory, offset),
                           f"child_{spec_digest(parse_spec(row['spec'], 3, 7))}")
      with open(os.path.join(child, "proxy_reward.json")) as f:
        stored.append(json.load(f)["metrics"]["AP"])
      with open(os.path.join(child, "config.yaml")) as f:
        assert yaml.safe_load(f)["runtime"]["seed"] == seed   # trained with the moved seed
    assert row["AP_per_seed"] == pytest.approx(stored)
    assert row["AP"] == pytest.approx(sum(stored) / 2)
  # Finished: a rerun reads the table and trains nothing.
  assert rescore(config, specs, directory) == rows

"""validate_proxy's report: rewritten after every stage, so an interrupted run still reports."""

import json

import pytest

from nasfpn_tf.configs.experiment import ExperimentConfig
from nasfpn_tf.configs.loading import override
from nasfpn_tf.search import proxy_validation

# Made-up rewards of three architectures: the one-shot reward ranks them as full training does.
ONESHOT = {"nasfpn": 0.10, "sampled_0": 0.05, "sampled_1": 0.08}
FULL = {"nasfpn": 0.70, "sampled_0": 0.50, "sampled_1": 0.60}


class Killed(Exception):
  pass


def _config():
  return override(ExperimentConfig(), {"search": {"validation": {
      "architectures": ["nasfpn"], "num_sampled": 2, "seeds": 2,
      "rewards": ["oneshot", "full"]}}})


def test_each_finished_stage_is_in_the_report_before_the_next_one_ends(tmp_path, monkeypatch):
  calls = []

  def oneshot(config, archs, seed, directory):
    calls.append(("oneshot", seed))
    return {a: ONESHOT[a] + 0.001 * seed for a in archs}

  def child(config, archs, seed, directory):
    calls.append(("full", seed))
    if seed == 1:
      raise Killed  # the run dies in its last stage
    return dict(FULL)

  monkeypatch.setattr(proxy_validation, "_oneshot_scores", oneshot)
  monkeypatch.setattr(proxy_validation, "_child_scores", child)
  monkeypatch.setattr(proxy_validation, "_full_config", lambda config: config)
  with pytest.raises(Killed):
    proxy_validation.validate_proxy(_config(), str(tmp_path))

  assert calls == [("oneshot", 0), ("full", 0), ("oneshot", 1), ("full", 1)]
  report = json.loads((tmp_path / proxy_validation.REPORT_FILE).read_text())
  assert report["done"] == ["oneshot_seed0", "full_seed0", "oneshot_seed1"]
  assert report["scores"]["oneshot"]["nasfpn"] == pytest.approx([0.10, 0.101])
  assert report["scores"]["full"]["sampled_1"] == [0.60]
  summary = report["summary"]
  assert summary["oneshot"]["spread"]["sampled_0"] == pytest.approx(0.001)
  assert summary["full"]["spread"] == {}  # one seed: no spread yet
  corr = summary["oneshot"]["vs_full"]
  assert corr["n"] == 3 and corr["kendall_tau"] == pytest.approx(1.0)
  assert corr["spearman_rho"] == pytest.approx(1.0)
  assert (tmp_path / proxy_validation.PLOT_FILE).stat().st_size > 10_000

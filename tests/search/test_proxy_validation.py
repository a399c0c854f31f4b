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


def _config(architectures=("nasfpn",)):
  return override(ExperimentConfig(), {"search": {"validation": {
      "architectures": list(architectures), "num_sampled": 2, "seeds": 2,
      "rewards": ["oneshot", "full"]}}})


def test_each_finished_stage_is_in_the_report_before_the_next_one_ends(tmp_path, monkeypatch):
  calls = []

  def oneshot(config, archs, seed, directory):
    calls.append(("oneshot", seed))
    return {a: ONESHOT[a] + 0.001 * seed for a in archs}

  def child(config, archs, seed, directory, search):
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


def test_the_bench_tables_rank_by_full_ap_and_show_every_seed(tmp_path, monkeypatch):
  import os
  from tests.run_helpers import load_script
  bench = load_script("proxy_validation_table", os.path.join(
      os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
      "bench", "proxy_validation_table.py"))
  monkeypatch.setattr(proxy_validation, "_oneshot_scores",
                      lambda config, archs, seed, directory: dict(ONESHOT, fpn=None))
  monkeypatch.setattr(proxy_validation, "_child_scores",
                      lambda config, archs, seed, directory, search: {
                          a: dict(FULL, fpn=0.72)[a] + 0.01 * seed for a in archs})
  monkeypatch.setattr(proxy_validation, "_full_config", lambda config: config)
  report = proxy_validation.validate_proxy(_config(["nasfpn", "fpn"]), str(tmp_path))

  rows = bench.architecture_table(report).splitlines()[2:]
  assert [r.split(" | ")[0] for r in rows] == ["| fpn", "| nasfpn", "| sampled_1", "| sampled_0"]
  assert rows[0].startswith("| fpn | n/a |")  # 5 cells: no path in the supernet
  assert rows[1] == "| nasfpn | 0.100 / 0.100 (mean 0.100) | 0.700 / 0.710 (mean 0.705) |"
  oneshot, full = bench.reward_table(report).splitlines()[2:]
  # three architectures with a one-shot path, ranked as full training ranks them
  # the better half of 3 is 2 architectures: too few for a tau
  assert oneshot == "| oneshot | 0.000 | 3 | 1.00 | 1.00 | 3 | - (2) | 1.00 (3) | 1.00 / 1.00 |"
  assert full.startswith("| full | 0.010 | 4 |")
  assert full.endswith("| seed vs seed: 1.00 |")


def test_the_summary_says_how_far_each_seed_and_full_training_itself_agree():
  # Worked by hand. Full training's two seeds swap a and b: 5 of 6 pairs agree, tau 4/6.
  # Its mean ranks a (0.66) > b (0.65) > c > d; the proxy's seed 0 ranks them the other
  # way round (tau -1), its seed 1 the same way (tau 1).
  scores = {"proxy": {"a": [0.1, 0.4], "b": [0.2, 0.3], "c": [0.3, 0.2], "d": [0.4, 0.1]},
            "full": {"a": [0.70, 0.62], "b": [0.60, 0.70], "c": [0.5, 0.5], "d": [0.4, 0.4]}}
  summary = proxy_validation.summarise(scores)
  assert summary["full"]["seed_to_seed_tau"] == [pytest.approx(4 / 6)]
  assert summary["proxy"]["vs_full_by_seed"] == [pytest.approx(-1.0), pytest.approx(1.0)]
  assert summary["proxy"]["spread"]["a"] == pytest.approx(0.3)


@pytest.mark.slow
def test_children_of_a_stage_train_at_once_on_ray_and_are_not_trained_again(tmp_path):
  pytest.importorskip("ray.tune")
  from nasfpn_tf.configs.loading import load_config
  from nasfpn_tf.search.proxy_task import spec_digest
  from nasfpn_tf.search.proxy_validation import validate_proxy, validation_architectures
  from tests.search.test_oneshot import CONFIG, tiny_overrides

  config = load_config(CONFIG, tiny_overrides(tmp_path / "shapes") + (
      ",search.validation.architectures=[nasfpn,fpn],search.validation.num_sampled=0,"
      "search.validation.seeds=1,search.validation.rewards=[proxy],"
      "search.validation.max_concurrent=2,search.validation.report=''"))
  model_dir = tmp_path / "pv"
  model_dir.mkdir()   # run.py makes it (and locks it)
  report = validate_proxy(config, str(model_dir))
  children = {name: model_dir / "proxy_seed0" / f"child_{spec_digest(spec)}"
              for name, spec in validation_architectures(config).items()}
  stored = {name: json.loads((d / "proxy_reward.json").read_text())["metrics"]["AP"]
            for name, d in children.items()}
  assert report["done"] == ["proxy_seed0"]
  assert report["scores"]["proxy"] == {name: [pytest.approx(ap)] for name, ap in stored.items()}
  assert (model_dir / "proxy_seed0" / "ray" / "children").is_dir()   # Ray ran them
  # At once: each child began (wrote its config.yaml) before the other one finished.
  began = {n: (d / "config.yaml").stat().st_mtime for n, d in children.items()}
  ended = {n: (d / "proxy_reward.json").stat().st_mtime for n, d in children.items()}
  assert began["nasfpn"] < ended["fpn"] and began["fpn"] < ended["nasfpn"]
  again = validate_proxy(config, str(model_dir))
  assert again["scores"] == report["scores"]
  assert {n: (d / "proxy_reward.json").stat().st_mtime for n, d in children.items()} == ended

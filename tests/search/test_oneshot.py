"""One-shot search: the supernet shares real weights, trains, scores paths repeatably."""

import json
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf
import yaml

from nasfpn_tf.architecture_spec import parse_spec
from nasfpn_tf.configs.loading import load_config
from nasfpn_tf.modeling.decoders.nasfpn import NasFpn
from nasfpn_tf.modeling.decoders.nasfpn_supernet import NasFpnSupernet, slot_name
from nasfpn_tf.search.search_space import SearchSpace

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(REPO, "configs", "search_shapes_oneshot.yaml")
SAMPLED = "P3:sum:3,1 P6:gp:4,5 P7:sum:3,6:out P5:sum:6,0:out P3:sum:7,4:out P6:gp:0,1:out P4:gp:6,4:out"


def tiny_overrides(data_dir, steps=6, trials=8, rescore=0):
  """The shipped one-shot config shrunk to seconds: 128 px, 16 filters, 8-image batches."""
  parts = [
      "task.model.input_size=[128,128]", "task.model.backbone.width_multiplier=0.25",
      "task.model.decoder.filters=16", "task.model.head.filters=16",
      "task.model.detection.pre_nms_top_k=200",
      "trainer.train_steps=4", "trainer.validation_interval=2", "trainer.checkpoint_interval=2",
      "trainer.backup_interval=2", "trainer.learning_rate.warmup_steps=1",
      f"search.max_trials={trials}", "search.batch_size=4", "search.ray_num_cpus=2",
      f"search.oneshot.supernet_steps={steps}", "search.oneshot.calibration_batches=2",
      f"search.oneshot.rescore_top_k={rescore}",
      # The checks below compare float32 arithmetic (recalibrated statistics, inherited
      # weights); `auto` would train in bfloat16 on AMX CPUs (tests/test_precision.py).
      "runtime.mixed_precision_dtype=float32"]
  for split, n in (("train_data", 32), ("validation_data", 16)):
    parts += [f"task.{split}.embedded_dir={data_dir}", f"task.{split}.embedded_num_images={n}",
              f"task.{split}.embedded_image_size=128", f"task.{split}.global_batch_size=8"]
  return ",".join(parts)


def _nested(overrides: str) -> dict:
  """`a.b=v,...` (as tiny_overrides writes them) as a nested mapping for a YAML file."""
  from nasfpn_tf.configs.loading import parse_override
  return parse_override(overrides)


def random_features(seed=0):
  rng = np.random.default_rng(seed)
  return {"P3": tf.constant(rng.normal(size=(2, 16, 16, 12)), tf.float32),
          "P4": tf.constant(rng.normal(size=(2, 8, 8, 20)), tf.float32),
          "P5": tf.constant(rng.normal(size=(2, 4, 4, 24)), tf.float32)}


def randomise(layer, seed=0):
  """Non-trivial weights everywhere, batch-norm statistics included (not 0 / 1)."""
  rng = np.random.default_rng(seed)
  for w in layer.weights:
    value = rng.normal(scale=0.3, size=w.shape)
    if "variance" in w.path:
      value = np.abs(value) + 0.5
    w.assign(value.astype(np.float32))


@pytest.mark.parametrize("spec", ["nasfpn", SAMPLED])
def test_inherited_weights_give_the_standalone_nasfpn_the_same_outputs(spec):
  features = random_features()
  shapes = {k: v.shape for k, v in features.items()}
  supernet = NasFpnSupernet(num_cells=7, filters=8, num_repeats=2)
  supernet.build(shapes)
  randomise(supernet)
  supernet.set_architecture(spec)
  standalone = NasFpn(spec, filters=8, num_repeats=2)
  standalone.build(shapes)
  supernet.inherit_weights(standalone)
  for training in (False, True):
    want = standalone(features, training=training)
    got = supernet(features, training=training)
    for level in ("P3", "P4", "P5", "P6", "P7"):
      np.testing.assert_allclose(got[level], want[level], rtol=1e-5, atol=1e-5)
  # One conv + BN slot per (repeat, cell, output level).
  assert len(supernet.slot_convs) == len(supernet.slot_norms) == 2 * 7 * 5


def test_supernet_config_round_trip_keeps_the_selected_path():
  supernet = NasFpnSupernet(num_cells=7, filters=8, num_repeats=1, architecture=SAMPLED)
  config = supernet.get_config()
  again = NasFpnSupernet.from_config(config)
  assert again.architecture == parse_spec(SAMPLED)
  assert {k: v for k, v in again.get_config().items() if k != "name"} == \
      {k: v for k, v in config.items() if k != "name"}


def test_inherit_refuses_a_nasfpn_of_another_spec():
  features = random_features()
  supernet = NasFpnSupernet(num_cells=7, filters=8, num_repeats=1, architecture=SAMPLED)
  supernet.build({k: v.shape for k, v in features.items()})
  other = NasFpn("nasfpn", filters=8, num_repeats=1)
  other.build({k: v.shape for k, v in features.items()})
  with pytest.raises(ValueError, match="spec"):
    supernet.inherit_weights(other)


@pytest.fixture(scope="module")
def trained_supernet(tmp_path_factory):
  """One supernet for the module: 60 steps on 8 repeated images at a high learning rate
  (10 epochs of 6 steps, checkpoint and backup at the end only), so that its loss visibly
  falls; the other tests check its paths and score them. (Training it once instead of once
  per test: tracing the supernet's steps, not the steps themselves, is most of the cost.)"""
  from nasfpn_tf.search.oneshot import supernet_config
  from nasfpn_tf.trainer import train
  root = tmp_path_factory.mktemp("oneshot")
  overrides = tiny_overrides(root / "shapes", steps=60) + (
      ",task.train_data.embedded_num_images=8,trainer.learning_rate.base_lr=0.64,"
      "trainer.validation_interval=6,trainer.checkpoint_interval=60,trainer.backup_interval=60")
  config = load_config(CONFIG, overrides)
  result = train(supernet_config(config), str(root / "supernet"), verbose=0)
  return config, result, root


@pytest.fixture(scope="module")
def oneshot_reward(trained_supernet):
  """The reward of the trained supernet, built once (its cached features and traces)."""
  from nasfpn_tf.search.oneshot import make_oneshot_reward
  config, result, _ = trained_supernet
  return make_oneshot_reward(config, result.model)


def test_supernet_trains_a_different_path_every_step_and_resumably(trained_supernet):
  _, result, root = trained_supernet
  model = result.model
  assert type(model).__name__ == "SupernetModel"
  assert int(model.optimizer.iterations.numpy()) == 60
  paths = {model.sample_path(step).to_string() for step in range(60)}
  assert len(paths) == 60
  # The path of a step depends only on (seed, step): a resumed run trains the same paths.
  assert model.sample_path(5) == model.sample_path(5)
  # Every path of the search space uses only slots that exist.
  space = SearchSpace()
  spec = space.actions_to_spec(space.sample_uniform(np.random.default_rng(3)))
  assert len(model.decoder.path_norms(spec)) == 7
  assert os.path.exists(root / "supernet" / "model.keras")


def test_supernet_loss_falls_on_one_repeated_batch(trained_supernet):
  _, result, _ = trained_supernet
  loss = result.history["loss"]   # mean of each 6-step epoch, every step on another path
  assert len(loss) == 10 and np.mean(loss[-3:]) < 0.9 * np.mean(loss[:3]), loss


def test_scoring_a_path_twice_gives_the_same_ap(oneshot_reward):
  reward = oneshot_reward
  spec = parse_spec("nasfpn")
  first = reward.evaluate(spec)
  reward.evaluate(parse_spec(SAMPLED))   # another path in between changes the BN slots
  second = reward.evaluate(spec)
  assert first == second
  assert 0.0 <= first["AP"] <= 1.0 and set(first) >= {"AP", "AP50"}
  assert reward(spec) == first["AP"] and spec.to_string() in reward.cache


def test_journaled_and_repeated_architectures_are_not_scored_again(trained_supernet, tmp_path):
  from nasfpn_tf.search import run_search
  from nasfpn_tf.search.oneshot import make_oneshot_reward, reuse_journaled_rewards
  config, result, _ = trained_supernet
  model = result.model
  # A journal of scores this supernet would not give: a reused score is the journal's.
  stored = iter([0.5, 0.25, 0.125, 0.0625])
  journaled = run_search(lambda spec: next(stored), 4, str(tmp_path / "search"),
                         algorithm="random", progress_bar=False, tensorboard=False)
  reward = make_oneshot_reward(config, model)
  calls = []
  evaluate = reward.evaluate

  def counting(spec):
    calls.append(spec.to_string())
    return evaluate(spec)

  reward.evaluate = counting
  assert reuse_journaled_rewards(reward, str(tmp_path / "search")) == 4
  assert [reward(t.spec) for t in journaled] == [0.5, 0.25, 0.125, 0.0625]
  assert calls == []
  spec = parse_spec(SAMPLED)
  first = reward(spec)
  assert reward(spec) == first and 0.0 <= first <= 1.0
  assert calls == [spec.to_string()]


def test_recalibration_sets_the_paths_statistics_to_the_batch_mean(trained_supernet,
                                                                 oneshot_reward):
  config, result, _ = trained_supernet
  model, reward = result.model, oneshot_reward
  spec = parse_spec(SAMPLED)
  reward.recalibrate(spec)
  # Expected: the mean over calibration batches of the first cell's pre-BN batch means.
  decoder = model.decoder
  cell = spec.cells[0]
  name = slot_name(0, 0, cell.level)
  from nasfpn_tf.modeling.layers.resample import resample_to_level
  means = []
  for feats in reward._calibration:
    levels = spec.pool_levels()
    x = [resample_to_level(feats[i], levels[i], cell.level) for i in cell.inputs]
    from nasfpn_tf.modeling.layers.merging_cell import combine_inputs
    merged = combine_inputs(x, [levels[i] for i in cell.inputs], cell.op)
    pre_bn = decoder.slot_convs[name](keras.ops.relu(merged))
    means.append(np.mean(np.asarray(pre_bn), axis=(0, 1, 2)))
  np.testing.assert_allclose(decoder.slot_norms[name].moving_mean, np.mean(means, 0),
                             rtol=1e-4, atol=1e-5)
  assert decoder.slot_norms[name].momentum == config.task.model.norm.momentum


def _run_search(model_dir, overrides):
  return subprocess.Popen(
      [sys.executable, os.path.join(REPO, "run.py"), "--mode=search", f"--config_file={CONFIG}",
       f"--model_dir={model_dir}", f"--params_override={overrides}"],
      cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
def test_oneshot_search_survives_kill_9_and_finishes_with_asha_rescoring(tmp_path):
  overrides = tiny_overrides(tmp_path / "shapes", steps=2, trials=12, rescore=2)
  search_dir = tmp_path / "run" / "search"
  journal = search_dir / "trials.jsonl"
  proc = _run_search(tmp_path / "run", overrides)
  deadline = time.time() + 600
  while time.time() < deadline and proc.poll() is None:
    if journal.exists() and len(journal.read_text().splitlines()) >= 5:
      break
    time.sleep(0.5)
  assert proc.poll() is None, proc.stdout.read()[-3000:]
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  supernet_file = search_dir / "supernet" / "model.keras"
  mtime = supernet_file.stat().st_mtime
  before = len(journal.read_text().splitlines())
  proc = _run_search(tmp_path / "run", overrides)
  out, _ = proc.communicate(timeout=900)
  assert proc.returncode == 0, out[-3000:]
  assert supernet_file.stat().st_mtime == mtime   # not trained again
  records = [json.loads(l) for l in journal.read_text().splitlines()]
  # Killed inside the controller stage (5 or more of the 12 trials journaled, not all).
  assert len(records) == 12 and 5 <= before < 12
  assert len({r["proposal"] for r in records}) == 12   # none lost, none repeated
  summary = json.loads((search_dir / "summary.json").read_text())
  rows = summary["stages"]["rescore"]["rows"]
  assert len(rows) == 2 and all(r["evaluations"] >= 1 for r in rows)
  # The child ASHA let run to the end stored its reward (a rerun does not train it again).
  finished = [r for r in rows if r["finished"]]
  assert finished and all(r["evaluations"] == 2 for r in finished)
  assert len(list((search_dir / "rescore" / "children").glob("*/proxy_reward.json"))) == \
      len(finished)
  best = parse_spec(str(search_dir / "best_1.yaml"))
  assert best.to_string() == rows[0]["spec"]
  assert "winner:" in out
  assert not list(search_dir.rglob("*.tmp-*"))


def test_rank_correlations_and_spread_are_those_of_scipy_on_known_values():
  from nasfpn_tf.search.proxy_validation import rank_correlations, summarise
  full = {"a": 0.1, "b": 0.2, "c": 0.3, "d": 0.4}
  same_order = {"a": 1.0, "b": 2.0, "c": 3.0, "d": 4.0}
  assert rank_correlations(same_order, full)["kendall_tau"] == pytest.approx(1.0)
  reversed_ = {"a": 4.0, "b": 3.0, "c": 2.0, "d": 1.0}
  assert rank_correlations(reversed_, full)["spearman_rho"] == pytest.approx(-1.0)
  # One swapped pair of 4: tau = (5 - 1) / 6.
  swapped = {"a": 2.0, "b": 1.0, "c": 3.0, "d": 4.0}
  assert rank_correlations(swapped, full)["kendall_tau"] == pytest.approx(4 / 6)
  summary = summarise({"full": {"a": [0.1, 0.3], "b": [0.5, 0.5]},
                       "proxy": {"a": [0.2, 0.5], "b": [0.4, None]}})
  assert summary["full"]["spread"] == {"a": pytest.approx(0.2), "b": 0.0}
  assert summary["proxy"]["mean"] == {"a": pytest.approx(0.35), "b": 0.4}
  assert summary["proxy"]["vs_full"]["n"] == 2 and summary["proxy"]["vs_full"]["kendall_tau"] is None


def test_correlation_warning_flags_a_weak_proxy(tmp_path):
  from nasfpn_tf.search.proxy_validation import correlation_warning, validation_line
  path = tmp_path / "proxy_validation.json"
  for tau, warns in ((0.1, True), (0.6, False)):
    path.write_text(json.dumps({"summary": {"oneshot": {"vs_full": {
        "n": 10, "kendall_tau": tau, "spearman_rho": tau}}}}))
    message = correlation_warning(str(path))
    assert (message is not None and "correlates poorly" in message) == warns
  assert "not been validated" in correlation_warning("")
  # Good overall, misordered at the top: the case the embedded set measured.
  path.write_text(json.dumps({"summary": {"oneshot": {
      "vs_full": {"n": 10, "kendall_tau": 0.64, "spearman_rho": 0.78},
      "vs_full_top_half": {"n": 5, "kendall_tau": -0.2, "spearman_rho": -0.3}}}}))
  assert "not the best ones (tau -0.20 < 0.3 on the best 5" in correlation_warning(str(path))
  path.write_text(json.dumps({"summary": {"oneshot": {
      "vs_full": {"n": 10, "kendall_tau": 0.64, "spearman_rho": 0.78},
      "vs_full_top_half": {"n": 5, "kendall_tau": 0.4, "spearman_rho": 0.5}}}}))
  assert validation_line(str(path)) == (
      f"the oneshot reward is validated: Kendall tau 0.64 on 10, 0.40 on the best 5 ({path})")


def test_the_top_half_is_the_best_half_by_full_ap_of_what_both_score():
  from nasfpn_tf.search.proxy_validation import summarise
  # g has no one-shot path, so the half is of a-f: a, b, c, which the reward orders the
  # wrong way round (tau -1); over all six it agrees on 12 of 15 pairs, tau (12 - 3) / 15.
  full = {"a": 0.9, "b": 0.8, "c": 0.7, "d": 0.6, "e": 0.5, "f": 0.4, "g": 0.95}
  oneshot = {"a": 0.3, "b": 0.4, "c": 0.5, "d": 0.2, "e": 0.1, "f": 0.05, "g": None}
  summary = summarise({"full": {a: [v] for a, v in full.items()},
                       "oneshot": {a: [v] for a, v in oneshot.items()}})
  assert summary["oneshot"]["vs_full"]["kendall_tau"] == pytest.approx(0.6)
  top = summary["oneshot"]["vs_full_top_half"]
  assert top["n"] == 3 and top["kendall_tau"] == pytest.approx(-1.0)
  # A reward that scores g too, in full training's order but for g (last, where full
  # training puts it first): over all 7, 6 of 21 pairs disagree; on the 6 the one-shot
  # reward also scores, none do.
  proxy = {"a": 0.6, "b": 0.5, "c": 0.4, "d": 0.3, "e": 0.2, "f": 0.1, "g": 0.0}
  summary = summarise({"full": {a: [v] for a, v in full.items()},
                       "oneshot": {a: [v] for a, v in oneshot.items()},
                       "proxy": {a: [v] for a, v in proxy.items()}})
  assert summary["proxy"]["vs_full"]["kendall_tau"] == pytest.approx((15 - 6) / 21)
  common = summary["proxy"]["vs_full_common"]
  assert common["n"] == 6 and common["kendall_tau"] == pytest.approx(1.0)


@pytest.mark.slow
def test_validate_proxy_on_a_tiny_set_writes_tau_rho_and_the_scatter(tmp_path):
  # Only the plumbing is tested: the "full" budget is 2 steps and one evaluation, the
  # supernets train 2 steps, and everything is scored on one batch of 8 held-out images.
  # 3 architectures x 2 seeds: the fewest with a spread per architecture and a 7-cell-only
  # reward (fpn has 5 cells) beside one that scores them all.
  small = (",task.validation_data.embedded_num_images=8,trainer.train_steps=2,"
           "trainer.validation_interval=2,trainer.checkpoint_interval=2,"
           "trainer.backup_interval=2")
  full = tmp_path / "full.yaml"
  full.write_text(f"base: {CONFIG}\n" +
                  yaml.safe_dump(_nested(tiny_overrides(tmp_path / "shapes") + small)))
  overrides = tiny_overrides(tmp_path / "shapes", steps=2) + small + (
      ",search.validation.architectures=[nasfpn,fpn],search.validation.num_sampled=1,"
      "search.validation.seeds=2,search.validation.rewards=[oneshot,full],"
      f"search.validation.full_config={full}")
  proc = subprocess.run(
      [sys.executable, os.path.join(REPO, "run.py"), "--mode=validate_proxy",
       f"--config_file={CONFIG}", f"--model_dir={tmp_path / 'pv'}",
       f"--params_override={overrides}"],
      cwd=REPO, capture_output=True, text=True, timeout=1200)
  assert proc.returncode == 0, proc.stderr[-3000:]
  report = json.loads((tmp_path / "pv" / "proxy_validation.json").read_text())
  assert set(report["architectures"]) == {"nasfpn", "fpn", "sampled_0"}
  assert report["done"] == ["oneshot_seed0", "full_seed0", "oneshot_seed1", "full_seed1"]
  oneshot = report["scores"]["oneshot"]
  assert oneshot["fpn"] == [None, None]   # 5 cells: no path in a 7-cell supernet
  assert all(len(v) == 2 and all(0 <= x <= 1 for x in v)
             for k, v in oneshot.items() if k != "fpn")
  assert all(len(v) == 2 for v in report["scores"]["full"].values())
  corr = report["summary"]["oneshot"]["vs_full"]
  assert corr["n"] == 2 and set(corr) == {"n", "kendall_tau", "spearman_rho"}
  assert (tmp_path / "pv" / "proxy_validation.png").stat().st_size > 10_000


def test_auto_precision_trains_the_supernet_in_float32_and_an_explicit_choice_is_kept():
  from nasfpn_tf.search.oneshot import supernet_config
  auto = load_config(CONFIG)
  assert auto.runtime.mixed_precision_dtype == "auto"
  supernet = supernet_config(auto)
  assert supernet.runtime.mixed_precision_dtype == "float32"
  assert supernet.task.model.decoder.type == "nasfpn_supernet"
  assert supernet_config(load_config(CONFIG, ["runtime.mixed_precision_dtype=bfloat16"])
                         ).runtime.mixed_precision_dtype == "bfloat16"

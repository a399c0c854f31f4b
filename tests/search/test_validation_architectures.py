"""`search.validation.architectures`: names, spec strings and {label: spec} items."""

import pytest

from nasfpn_tf.architecture_spec import parse_spec
from nasfpn_tf.configs.errors import ConfigError
from nasfpn_tf.configs.experiment import ExperimentConfig
from nasfpn_tf.configs.loading import override
from nasfpn_tf.search.proxy_validation import validation_architectures

WINNER = "P4:sum:1,2 P4:sum:2,1 P4:sum:3,1:out P3:sum:2,1:out P5:gp:2,2:out P7:sum:1,8:out P6:gp:1,0:out"


def test_a_labelled_spec_keeps_its_label_beside_names_and_samples():
  config = override(ExperimentConfig(), {"search": {"validation": {
      "architectures": ["fpn", {"winner_1": WINNER}], "num_sampled": 2}}})
  archs = validation_architectures(config)
  assert list(archs) == ["fpn", "winner_1", "sampled_0", "sampled_1"]
  assert archs["winner_1"] == parse_spec(WINNER)
  assert archs["winner_1"].to_string() == WINNER
  assert archs["fpn"] == parse_spec("fpn")


def test_a_mapping_with_two_labels_is_refused_naming_the_key():
  with pytest.raises(ConfigError, match="search.validation.architectures"):
    override(ExperimentConfig(), {"search": {"validation": {
        "architectures": [{"a": "fpn", "b": "nasfpn"}]}}})

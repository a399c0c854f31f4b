"""What `run.py --mode=describe` and `--mode=draw` tell a person: names, table, titles."""

import os
import subprocess
import sys

from nasfpn_tf.configs.loading import load_config, save_yaml
from nasfpn_tf.modeling.complexity import decoder_summary, format_description

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _model(override: str):
  return load_config(params_override=override).task.model


def test_decoder_summary_names_spec_repeats_and_width(tmp_path):
  spec_file = tmp_path / "best_1.yaml"
  spec_file.write_text("cells: [[3, sum, [0, 1], true], [4, sum, [1, 5], true], "
                       "[5, sum, [2, 6], true], [6, sum, [3, 7], true], [7, sum, [4, 8], true]]\n")
  nasfpn = "task.model.decoder.type=nasfpn"
  assert (decoder_summary(_model(f"{nasfpn},task.model.decoder.num_repeats=3,"
                                 "task.model.decoder.filters=64"))
          == "NAS-FPN, spec nasfpn, 3 repeats x 64 filters, P3-P7")
  assert (decoder_summary(_model(f"{nasfpn},task.model.decoder.spec=panet,"
                                 "task.model.decoder.num_repeats=1"))
          .startswith("NAS-FPN, spec panet, 1 repeat x "))
  assert "spec best_1.yaml," in decoder_summary(
      _model(f"{nasfpn},task.model.decoder.spec={spec_file}"))
  # A compact string of the published cell is still recognised; other strings are "custom".
  published = ("'P4:gp:1,3 P4:sum:1,5 P3:sum:0,6:out P4:sum:6,7:out P5:gp:7,8:out "
               "P7:gp:6,9:out P6:gp:9,10:out'")
  assert "spec custom (= nasfpn)," in decoder_summary(
      _model(f"{nasfpn},task.model.decoder.spec={published}"))
  assert "spec custom," in decoder_summary(_model(
      f"{nasfpn},task.model.decoder.spec='P3:sum:0,1:out P4:sum:1,2:out P5:sum:2,3:out "
      "P6:sum:3,4:out P7:sum:4,0:out'"))
  assert (decoder_summary(_model("task.model.decoder.type=fpn,task.model.decoder.filters=32"))
          == "FPN, 32 filters, P3-P7")


def test_format_description_is_a_table_with_thousands_and_giga():
  description = {
      "params_backbone": 2799968, "params_backbone_all": 2804832, "params_decoder": 803136,
      "params_decoder_all": 806080, "params_head": 202202, "params_head_all": 204762,
      "params_total": 3805306, "params_total_all": 3815674, "macs": 1119307213,
      "input_size": [256, 192], "backbone": "ResNet-18 x0.5 width",
      "decoder": "NAS-FPN, spec nasfpn, 3 repeats x 64 filters, P3-P7",
      "head": "2 convs x 64 filters, 6 classes"}
  lines = format_description(description).splitlines()
  assert lines[0] == "backbone: ResNet-18 x0.5 width"
  assert lines[1] == "decoder:  NAS-FPN, spec nasfpn, 3 repeats x 64 filters, P3-P7"
  assert "input:    256 x 192" in lines
  header = next(i for i, line in enumerate(lines) if line.startswith("part"))
  assert lines[header].split("  ")[0] == "part" and lines[header].endswith("with BN statistics")
  rows = {line.split()[0]: line.split()[1:] for line in lines[header + 2:header + 8]
          if line and not line.startswith("-")}
  assert rows == {"backbone": ["2,799,968", "2,804,832"], "decoder": ["803,136", "806,080"],
                  "head": ["202,202", "204,762"], "total": ["3,805,306", "3,815,674"]}
  assert lines[-1].startswith("multiply-adds: 1.12 G (one 256 x 192 image")


def test_draw_titles_the_spec_and_writes_into_the_model_dir(tmp_path):
  # --model_dir without --config_file: the folder's config.yaml says what to draw.
  save_yaml(load_config(params_override="task.model.decoder.type=nasfpn,"
                        "task.model.decoder.spec=panet,task.model.decoder.num_repeats=2,"
                        "task.model.decoder.filters=48"), str(tmp_path / "config.yaml"))
  cmd = [sys.executable, os.path.join(ROOT, "run.py"), "--mode=draw", f"--model_dir={tmp_path}"]
  proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=str(tmp_path))
  assert proc.returncode == 0, proc.stderr[-2000:]
  path = tmp_path / "architecture.png"
  assert proc.stdout.strip().splitlines()[-1] == (
      f"NAS-FPN, spec panet, 2 repeats x 48 filters, P3-P7 (one repeat drawn): {path}")
  assert path.stat().st_size > 20_000
  assert sorted(p.name for p in tmp_path.iterdir()) == ["architecture.png", "config.yaml"]

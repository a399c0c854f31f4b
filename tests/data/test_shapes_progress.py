"""Generating the embedded dataset takes minutes: it must say where it writes and how far it is."""

from nasfpn_tf.data import shapes_dataset


def test_generation_prints_where_and_a_progress_bar(tmp_path, capsys):
  annotation_file, image_dir = shapes_dataset.ensure_shapes_dataset(
      str(tmp_path), "val", 3, image_size=64, seed=5)
  out = capsys.readouterr().out
  assert f"3 val images of 64 px into {image_dir}" in out
  # The bar's last state counts every image; the json path comes last.
  assert "3/3" in out.replace("\r", "\n")
  assert out.rstrip().endswith(f"Wrote {annotation_file}")
  # Already there: nothing is generated, nothing printed.
  shapes_dataset.ensure_shapes_dataset(str(tmp_path), "val", 3, image_size=64, seed=5)
  assert capsys.readouterr().out == ""


def test_generation_can_be_quiet(tmp_path, capsys):
  shapes_dataset.generate_shapes_dataset(str(tmp_path), "val", 2, image_size=64, progress=False)
  assert capsys.readouterr().out == ""

import os

import numpy as np
from PIL import Image

from nasfpn_tf.architecture_spec import parse_spec
from nasfpn_tf.visualize import draw_architecture, draw_detections


def test_draw_architecture_writes_a_picture(tmp_path):
  path = draw_architecture("nasfpn", str(tmp_path / "arch.png"), title="NAS-FPN")
  assert path == str(tmp_path / "arch.png")
  assert os.path.getsize(path) > 20_000  # a real drawing, not an empty canvas
  with Image.open(path) as picture:
    assert picture.format == "PNG"
    image = np.asarray(picture.convert("RGB"))
  assert image.shape[0] > 300 and image.shape[1] > 600
  # Both op colours are present (sum blue, global pooling orange) and no temp file is left.
  colours = image.reshape(-1, 3).astype(int)
  assert (np.abs(colours - [76, 114, 176]).sum(1) < 30).sum() > 100
  assert (np.abs(colours - [221, 132, 82]).sum(1) < 30).sum() > 1000
  assert [p.name for p in tmp_path.iterdir()] == ["arch.png"]


def test_draw_architecture_any_spec_and_overwrite(tmp_path):
  # A sum-only spec shows the global-pooling colour in the legend only (a few hundred
  # pixels; the published cell has thousands); the picture grows with the cell count.
  path = str(tmp_path / "sub" / "spec.png")
  draw_architecture(parse_spec("P3:sum:0,1:out P4:sum:1,2:out P5:sum:2,0:out", 3, 5), path)
  small = Image.open(path).size
  image = np.asarray(Image.open(path).convert("RGB")).reshape(-1, 3).astype(int)
  assert 0 < (np.abs(image - [221, 132, 82]).sum(1) < 30).sum() < 500
  draw_architecture(parse_spec("panet"), path)  # overwrites in place
  assert Image.open(path).size[0] > small[0]
  assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["spec.png"]


def _rows_with(image, colour, min_pixels=8, tolerance=12):
  """Rows holding at least `min_pixels` pixels of `colour` (RGB, within `tolerance` per channel)."""
  near = (np.abs(image.astype(int) - colour) <= tolerance).all(axis=-1)
  return set(np.nonzero(near.sum(axis=1) >= min_pixels)[0].tolist())


def test_draw_detections_legend_and_labels_that_do_not_overlap(tmp_path):
  image = np.zeros((128, 128, 3), np.uint8)
  # Two predictions with the same top-left corner (their labels would land on each other),
  # one under the threshold (not drawn), and one ground-truth box.
  det = {"detection_boxes": np.array([[10, 10, 100, 110], [10, 10, 80, 60], [0, 0, 5, 5]],
                                     np.float32),
         "detection_scores": np.array([0.9, 0.8, 0.1]), "detection_classes": np.array([2, 3, 1]),
         "num_detections": 3}
  path = draw_detections(image, det, str(tmp_path / "det.png"), {2: "circle", 3: "ring"},
                         ground_truth=[[12, 12, 98, 108]], title="image id 7")
  drawn = np.asarray(Image.open(path).convert("RGB"))
  # tab10 colours of classes 2 (green), 3 (red) and 1 (orange, below the threshold).
  green, red, orange = [44, 160, 44], [214, 39, 40], [255, 127, 14]
  panel_bottom = max(_rows_with(drawn, [0, 0, 0], min_pixels=100))
  # Label backgrounds: the class colour at alpha 0.85 over the black image.
  green_labels = _rows_with(drawn[:panel_bottom], np.multiply(green, 0.85).round())
  red_labels = _rows_with(drawn[:panel_bottom], np.multiply(red, 0.85).round())
  assert green_labels and red_labels
  assert not green_labels & red_labels, "the two labels overlap"
  assert not _rows_with(drawn, orange, min_pixels=3), "a box under min_score was drawn"
  # The legend under the panel: a line in each predicted class colour, nothing for class 1.
  legend = drawn[panel_bottom + 1:]
  assert _rows_with(legend, green, min_pixels=10) and _rows_with(legend, red, min_pixels=10)
  # ... and dark text (the threshold and the "ground truth" entry).
  assert (legend.sum(axis=-1) < 150).sum() > 300

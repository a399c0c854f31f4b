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


def test_draw_detections(tmp_path):
  image = np.zeros((64, 96, 3), np.uint8)
  det = {"detection_boxes": np.array([[10, 10, 40, 50], [0, 0, 5, 5]], np.float32),
         "detection_scores": np.array([0.9, 0.1]), "detection_classes": np.array([2, 1]),
         "num_detections": 2}
  path = draw_detections(image, det, str(tmp_path / "det.png"), {2: "circle"},
                         ground_truth=[[12, 12, 38, 48]])
  drawn = np.asarray(Image.open(path).convert("RGB"))
  assert drawn.std() > 5

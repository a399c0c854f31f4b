import numpy as np
from PIL import Image

from nasfpn_tf.visualize import draw_architecture, draw_detections


def test_draw_architecture_writes_a_picture(tmp_path):
  path = draw_architecture("nasfpn", str(tmp_path / "arch.png"), title="NAS-FPN")
  image = np.asarray(Image.open(path).convert("RGB"))
  assert image.shape[0] > 200 and image.shape[1] > 400
  # Both op colours are present (sum blue, global pooling orange) and no temp file is left.
  colours = image.reshape(-1, 3)
  assert (np.abs(colours - [76, 114, 176]).sum(1) < 30).sum() > 100
  assert (np.abs(colours - [221, 132, 82]).sum(1) < 30).sum() > 100
  assert [p.name for p in tmp_path.iterdir()] == ["arch.png"]


def test_draw_detections(tmp_path):
  image = np.zeros((64, 96, 3), np.uint8)
  det = {"detection_boxes": np.array([[10, 10, 40, 50], [0, 0, 5, 5]], np.float32),
         "detection_scores": np.array([0.9, 0.1]), "detection_classes": np.array([2, 1]),
         "num_detections": 2}
  path = draw_detections(image, det, str(tmp_path / "det.png"), {2: "circle"},
                         ground_truth=[[12, 12, 38, 48]])
  drawn = np.asarray(Image.open(path).convert("RGB"))
  assert drawn.std() > 5

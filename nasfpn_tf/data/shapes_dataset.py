"""The embedded default dataset: coloured shapes on textured backgrounds, in COCO format.

A small but real detection task that needs no download: five shape classes at COCO's three
size ranges (small < 32^2 px, medium, large > 96^2 px on a 256 image), partial occlusion,
gradient/texture/noise backgrounds and unannotated clutter (lines, small blobs). Everything is
generated offline and deterministically from a seed, and is written as an ordinary COCO
annotation json plus an image folder, so it goes through the same reader as COCO itself.

Layout under `root`, with tag = "{split}_seed{seed}_{image_size}px":
  annotations/instances_{tag}_{num_images}.json
  {tag}/000001.jpg, {tag}/000002.jpg, ...
Image k depends only on (split, seed, image_size, k), so sets that differ in those never share
a folder, and sets that differ only in num_images share identical images. Each size has its
own json, so runs of different sizes (a search's 1,000 images beside the default's 1,500) never
rewrite the json another run is reading.

Images are JPEG at quality 95 without chroma subsampling: the per-pixel noise makes PNG
files 4x larger and 30x slower to write, for no visible gain. There are no masks, so each
annotation's "area" is its box area (w * h) and COCO's small/medium/large buckets follow box size.

Example:
  annotation_file, image_dir = ensure_shapes_dataset("~/.cache/nasfpn_tf/shapes", "train", 600)
"""

import io
import json
import os
import zlib

from absl import logging
import numpy as np
from PIL import Image
from PIL import ImageDraw

from nasfpn_tf import file_io

# Category ids are 1..5 in this order (0 stays free for "background", as in COCO).
CLASS_NAMES = ("circle", "rectangle", "triangle", "ring", "star")

# Object sizes for a 256 image (scaled for other sizes): the diameter of the circle around the
# shape, drawn from three bands with these probabilities, so that COCO's small (box area
# < 32^2), medium and large (> 96^2) ranges are all well populated. Rotated polygons have boxes
# smaller than this diameter, hence the large band reaching above 96.
_SIZE_BANDS = ((12.0, 36.0), (36.0, 100.0), (100.0, 136.0))
_SIZE_BAND_PROBS = (0.35, 0.35, 0.3)
_REFERENCE_IMAGE_SIZE = 256
_MIN_OBJECTS, _MAX_OBJECTS = 1, 8
# Fraction of an object's own pixels that must stay visible after later objects are drawn.
_MIN_VISIBLE_FRACTION = 0.7
_PLACEMENT_TRIES = 30
# Minimum RGB distance between an object's colour and the background under it.
_MIN_COLOUR_CONTRAST = 110.0
_FORMAT_VERSION = 1


def _split_seed(seed: int, split: str) -> list[int]:
  """Seed entropy for one split: distinct splits draw from unrelated random streams.

  Args:
    seed: the user-facing dataset seed.
    split: split name, e.g. "train" or "val".

  Returns:
    A list of ints to feed numpy's SeedSequence (crc32 is stable across runs, unlike hash()).
  """
  return [int(seed), zlib.crc32(split.encode("utf-8"))]


def _image_rng(seed: int, split: str, index: int) -> np.random.Generator:
  # One generator per image, so image k is the same whatever num_images is.
  return np.random.default_rng(_split_seed(seed, split) + [int(index)])


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
  """A float [size, size, 3] background: linear gradient + blotchy texture (+ faint stripes).

  Args:
    rng: random generator for this image.
    size: image side in pixels.

  Returns:
    float32 array in 0..255.
  """
  start, end = rng.uniform(30, 225, size=(2, 3))
  angle = rng.uniform(0, 2 * np.pi)
  yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / max(size - 1, 1)
  ramp = (np.cos(angle) * xx + np.sin(angle) * yy)
  ramp = (ramp - ramp.min()) / max(float(ramp.max() - ramp.min()), 1e-6)
  image = start + (end - start) * ramp[..., None]
  # Blotchy texture: a tiny random grid upsampled smoothly.
  cells = int(rng.integers(3, 9))
  grid = rng.uniform(-1, 1, size=(cells, cells, 3)) * rng.uniform(10, 35)
  grid_image = Image.fromarray(((grid + 64) * 2).clip(0, 255).astype(np.uint8))
  texture = np.asarray(grid_image.resize((size, size), Image.BICUBIC), np.float32) / 2 - 64
  image = image + texture
  if rng.random() < 0.5:
    # Faint stripes, so that not every background is smooth.
    period = rng.uniform(6, 24)
    stripes = np.sin(2 * np.pi * (xx if rng.random() < 0.5 else yy) * size / period)
    image = image + stripes[..., None] * rng.uniform(4, 12)
  return np.clip(image, 0, 255).astype(np.float32)


def _draw_clutter(rng: np.random.Generator, canvas: Image.Image, size: int) -> None:
  """Draws unannotated distractors (lines and blobs smaller than any object).

  Args:
    rng: random generator for this image.
    canvas: RGB image drawn on in place.
    size: image side in pixels.
  """
  draw = ImageDraw.Draw(canvas)
  scale = size / _REFERENCE_IMAGE_SIZE
  for _ in range(int(rng.integers(1, 6))):
    colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
    if rng.random() < 0.5:
      points = [tuple(float(v) for v in rng.uniform(0, size, size=2)) for _ in range(2)]
      draw.line(points, fill=colour, width=int(rng.integers(1, 3)))
    else:
      # Blobs stay below the smallest object size, so a detector can tell them apart.
      radius = rng.uniform(1.5, 4.5) * scale
      cy, cx = rng.uniform(0, size, size=2)
      draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=colour)


def _polygon(cx: float, cy: float, radii: np.ndarray, angles: np.ndarray) -> list:
  return [(cx + r * np.cos(a), cy + r * np.sin(a)) for r, a in zip(radii, angles)]


def _shape_mask(rng: np.random.Generator, class_index: int, size: int) -> np.ndarray | None:
  """Draws one shape of a random size, aspect, rotation and position into a boolean mask.

  Args:
    rng: random generator for this image.
    class_index: 0-based index into CLASS_NAMES.
    size: image side in pixels.

  Returns:
    bool [size, size] mask of the shape's pixels, or None if it came out too thin.
  """
  scale = size / _REFERENCE_IMAGE_SIZE
  low, high = _SIZE_BANDS[rng.choice(len(_SIZE_BANDS), p=_SIZE_BAND_PROBS)]
  extent = rng.uniform(low, high) * scale
  half = extent / 2
  cx, cy = rng.uniform(half, size - half, size=2)
  mask_image = Image.new("L", (size, size), 0)
  draw = ImageDraw.Draw(mask_image)
  name = CLASS_NAMES[class_index]
  if name == "circle":
    draw.ellipse([cx - half, cy - half, cx + half, cy + half], fill=255)
  elif name == "ring":
    inner = half * rng.uniform(0.45, 0.65)
    draw.ellipse([cx - half, cy - half, cx + half, cy + half], fill=255)
    draw.ellipse([cx - inner, cy - inner, cx + inner, cy + inner], fill=0)
  elif name == "rectangle":
    aspect = rng.uniform(0.45, 1.0)
    corner = np.arctan(aspect)
    angles = np.array([corner, np.pi - corner, np.pi + corner, -corner]) + rng.uniform(0, np.pi)
    draw.polygon(_polygon(cx, cy, np.full(4, half), angles), fill=255)
  elif name == "triangle":
    # Near-equilateral, so a triangle never degenerates into a sliver.
    angles = np.arange(3) * 2 * np.pi / 3 + rng.uniform(-0.25, 0.25, size=3)
    angles = angles + rng.uniform(0, 2 * np.pi)
    draw.polygon(_polygon(cx, cy, np.full(3, half), angles), fill=255)
  else:  # star
    angles = np.arange(10) * np.pi / 5 + rng.uniform(0, 2 * np.pi)
    radii = np.where(np.arange(10) % 2 == 0, half, half * rng.uniform(0.38, 0.5))
    draw.polygon(_polygon(cx, cy, radii, angles), fill=255)
  mask = np.asarray(mask_image) > 127
  return mask if mask.sum() >= 16 else None


def _contrasting_colour(rng: np.random.Generator, references: list[np.ndarray]) -> np.ndarray:
  """A random colour far enough (RGB distance) from every reference colour.

  Args:
    rng: random generator for this image.
    references: float [3] colours to stand out from: the mean background under the object
      and the colours of the objects it overlaps.

  Returns:
    float [3] colour.
  """
  for _ in range(50):
    colour = rng.uniform(0, 255, size=3)
    if all(np.linalg.norm(colour - r) >= _MIN_COLOUR_CONTRAST for r in references):
      return colour
  # Fall back to the RGB cube corner opposite the background: far from it by construction.
  return np.where(references[0] < 128, 255.0, 0.0)


def _place_objects(rng: np.random.Generator, pixels: np.ndarray) -> list[dict]:
  """Paints 1-8 objects onto `pixels` (in place), keeping every one mostly visible.

  Later objects are drawn on top; a candidate that would hide more than
  1 - _MIN_VISIBLE_FRACTION of an earlier object is redrawn elsewhere.

  Args:
    rng: random generator for this image.
    pixels: float [size, size, 3] image, modified in place.

  Returns:
    One dict per object: category_id, bbox [x, y, w, h] of its visible pixels, area.
  """
  size = pixels.shape[0]
  owner = np.full((size, size), -1, np.int32)
  full_areas, categories, colours = [], [], []
  for _ in range(int(rng.integers(_MIN_OBJECTS, _MAX_OBJECTS + 1))):
    class_index = int(rng.integers(len(CLASS_NAMES)))
    for _ in range(_PLACEMENT_TRIES):
      mask = _shape_mask(rng, class_index, size)
      if mask is None:
        continue
      covered = np.bincount(owner[mask] + 1, minlength=len(full_areas) + 1)[1:]
      visible = np.bincount(owner.ravel() + 1, minlength=len(full_areas) + 1)[1:] - covered
      if all(v >= _MIN_VISIBLE_FRACTION * a for v, a in zip(visible, full_areas)):
        break
    else:
      continue  # No room left for this object: the image simply gets fewer objects.
    under = owner[mask]
    background = pixels[mask][under < 0]
    references = [background.mean(axis=0) if len(background) else pixels[mask].mean(axis=0)]
    references += [colours[j] for j in np.unique(under[under >= 0])]
    colour = _contrasting_colour(rng, references)
    k = len(full_areas)
    owner[mask] = k
    full_areas.append(int(mask.sum()))
    categories.append(class_index + 1)
    colours.append(colour)
    # A slight linear shading across the object, so objects are not perfectly flat.
    shade = rng.uniform(-20, 20) * np.linspace(-1, 1, size, dtype=np.float32)
    pixels[mask] = np.clip(colour + shade[np.nonzero(mask)[1], None], 0, 255)
  return [_visible_annotation(owner == k, category) for k, category in enumerate(categories)]


def _visible_annotation(visible: np.ndarray, category_id: int) -> dict:
  # bbox in pixel-edge coordinates: a single pixel at column 3 spans x 3..4.
  rows = np.nonzero(visible.any(axis=1))[0]
  cols = np.nonzero(visible.any(axis=0))[0]
  x, y = float(cols[0]), float(rows[0])
  w, h = float(cols[-1] + 1 - cols[0]), float(rows[-1] + 1 - rows[0])
  return {"category_id": category_id, "bbox": [x, y, w, h], "area": w * h}


def render_image(seed: int, split: str, index: int, image_size: int = 256
                 ) -> tuple[np.ndarray, list[dict]]:
  """Renders one image of the dataset and its annotations.

  Args:
    seed: dataset seed.
    split: split name; different splits give different images for the same seed.
    index: 0-based image index within the split.
    image_size: side of the square image in pixels.

  Returns:
    (uint8 [image_size, image_size, 3] image, list of dicts with category_id, bbox, area).
  """
  rng = _image_rng(seed, split, index)
  canvas = Image.fromarray(_background(rng, image_size).astype(np.uint8))
  _draw_clutter(rng, canvas, image_size)
  pixels = np.asarray(canvas, np.float32).copy()
  objects = _place_objects(rng, pixels)
  # Sensor-like noise over everything, objects included.
  pixels += rng.normal(0, rng.uniform(1, 6), size=pixels.shape)
  return np.clip(np.round(pixels), 0, 255).astype(np.uint8), objects


def _jpeg_bytes(pixels: np.ndarray) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(pixels).save(buffer, format="JPEG", quality=95, subsampling=0)
  return buffer.getvalue()


def _paths(root: str, split: str, image_size: int, seed: int,
           num_images: int) -> tuple[str, str]:
  # Everything that changes image content is in the folder's name: regenerating one variant
  # can never overwrite the images another variant's json points at; the json also names
  # the count, so two sizes of one variant do not take turns rewriting it.
  root = os.path.expanduser(root)
  tag = f"{split}_seed{int(seed)}_{int(image_size)}px"
  return (os.path.join(root, "annotations", f"instances_{tag}_{int(num_images)}.json"),
          os.path.join(root, tag))


def _generation_params(split: str, num_images: int, image_size: int, seed: int) -> dict:
  return {"generator": "nasfpn_tf.shapes", "format_version": _FORMAT_VERSION, "split": split,
          "num_images": int(num_images), "image_size": int(image_size), "seed": int(seed)}


def generate_shapes_dataset(root: str, split: str, num_images: int, image_size: int = 256,
                            seed: int = 0, progress: bool = True) -> tuple[str, str]:
  """Generates (or regenerates) one split of the shapes dataset in COCO format.

  Images are written first and the annotation json last (temp name + rename), so a
  killed generation leaves no json and `ensure_shapes_dataset` starts over.

  Args:
    root: dataset folder (created if needed); "~" is expanded.
    split: split name, e.g. "train" or "val". The split name is mixed into the seed, so
      splits never share images.
    num_images: number of images, >= 1.
    image_size: side of the square images in pixels (objects scale with it).
    seed: dataset seed; the same (seed, split, image_size) always gives identical files.
    progress: print where the images go and a progress bar (1,500 images take minutes).

  Returns:
    (annotation_file, image_dir).
  """
  if num_images < 1 or image_size < 32:
    raise ValueError(f"need num_images >= 1 and image_size >= 32, got {num_images}, {image_size}")
  annotation_file, image_dir = _paths(root, split, image_size, seed, num_images)
  file_io.makedirs(os.path.dirname(annotation_file))
  file_io.makedirs(image_dir)
  images, annotations = [], []
  bar = None
  if progress:
    import keras  # local: the rest of this module needs only numpy and PIL
    print(f"Generating the shapes dataset, once: {num_images:,} {split} images of "
          f"{image_size} px into {image_dir}", flush=True)
    bar = keras.utils.Progbar(num_images, unit_name="image")
  for index in range(num_images):
    pixels, objects = render_image(seed, split, index, image_size)
    image_id = index + 1
    file_name = f"{image_id:06d}.jpg"
    # Temp name, then rename: readers (or a concurrent generator) never see half a file.
    file_io.write_bytes(os.path.join(image_dir, file_name), _jpeg_bytes(pixels))
    images.append({"id": image_id, "file_name": file_name, "height": image_size,
                   "width": image_size})
    for obj in objects:
      annotations.append({"id": len(annotations) + 1, "image_id": image_id, "iscrowd": 0, **obj})
    if bar is not None:
      bar.update(index + 1)
  coco = {
      "info": _generation_params(split, num_images, image_size, seed),
      "images": images,
      "annotations": annotations,
      "categories": [{"id": i + 1, "name": n, "supercategory": "shape"}
                     for i, n in enumerate(CLASS_NAMES)],
  }
  file_io.write_json(annotation_file, coco, indent=None)
  if progress:
    print(f"Wrote {annotation_file}", flush=True)
  logging.info("Wrote %d %s images (%d objects) of the shapes dataset to %s", num_images, split,
               len(annotations), image_dir)
  return annotation_file, image_dir


def _is_complete(annotation_file: str, image_dir: str, params: dict) -> bool:
  """Whether a previous generation with the same parameters finished."""
  try:
    with open(annotation_file) as f:
      coco = json.load(f)
  except (OSError, ValueError):
    return False
  if not isinstance(coco, dict) or coco.get("info") != params:
    return False
  return all(os.path.exists(os.path.join(image_dir, im["file_name"]))
             for im in coco.get("images", []))


def ensure_shapes_dataset(root: str, split: str, num_images: int, image_size: int = 256,
                          seed: int = 0, progress: bool = True) -> tuple[str, str]:
  """Returns the paths of the shapes dataset, generating it only if missing or different.

  Args:
    root: dataset folder; "~" is expanded.
    split: split name, e.g. "train" or "val".
    num_images: number of images.
    image_size: side of the square images in pixels.
    seed: dataset seed.
    progress: when generating, print where and a progress bar.

  Returns:
    (annotation_file, image_dir).
  """
  annotation_file, image_dir = _paths(root, split, image_size, seed, num_images)
  params = _generation_params(split, num_images, image_size, seed)
  if _is_complete(annotation_file, image_dir, params):
    return annotation_file, image_dir
  logging.info("Shapes dataset %s missing, incomplete or of another size: generating it",
               annotation_file)
  return generate_shapes_dataset(root, split, num_images, image_size, seed, progress)

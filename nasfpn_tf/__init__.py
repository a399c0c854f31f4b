"""nasfpn_tf: NAS-FPN RetinaNet (Ghiasi et al., CVPR 2019) and its architecture search on Keras 3."""

import os

# TensorFlow's oneDNN build serves tensors from its own pool (the 'mklcpu' allocator), which
# grows in doubling regions and never gives memory back: an R-50 NAS-FPN 7@256 at 640 x 640
# holds 3.5 GiB after building and one training-mode call, 0.95 GiB with oneDNN on the system
# allocator (README, "Performance"). Read when TensorFlow creates its CPU allocator (its first
# op), so it takes effect even after `import tensorflow`; a value the user set wins.
os.environ.setdefault("TF_ONEDNN_USE_SYSTEM_ALLOCATOR", "1")

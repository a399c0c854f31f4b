"""nasfpn_tf: NAS-FPN RetinaNet (Ghiasi et al., CVPR 2019) and its architecture search on Keras 3."""

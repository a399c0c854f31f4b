"""Architectures shipped with the package, as cell records over levels P3..P7.

Pool indices 0..4 are the input levels P3..P7; cell k creates index 5 + k.
Records are [level, op, [input1, input2], is_output].
"""

# The published NAS-FPN cell (paper Fig. 6; Model Garden and tensorflow/tpu encode it identically).
NASFPN = (
    [4, "global_pool", [1, 3], False],   # 5
    [4, "sum", [1, 5], False],           # 6
    [3, "sum", [0, 6], True],            # 7 -> P3
    [4, "sum", [6, 7], True],            # 8 -> P4
    [5, "global_pool", [7, 8], True],    # 9 -> P5 (+ unconsumed P5 input)
    [7, "global_pool", [6, 9], True],    # 10 -> P7 (+ unconsumed P7 input)
    [6, "global_pool", [9, 10], True],   # 11 -> P6
)

# Top-down FPN as merging cells: each level sums the level above (upsampled) with
# its own input. P7 has nothing above it, so its cell adds the pooled P6 output.
FPN = (
    [6, "sum", [4, 3], True],   # 5 -> P6 = P7 up + P6
    [5, "sum", [5, 2], True],   # 6 -> P5
    [4, "sum", [6, 1], True],   # 7 -> P4
    [3, "sum", [7, 0], True],   # 8 -> P3
    [7, "sum", [4, 5], True],   # 9 -> P7 = P7 + P6' down
)

# PANet-like: the top-down pass, then a bottom-up pass that produces the outputs.
PANET = (
    [6, "sum", [4, 3], False],  # 5
    [5, "sum", [5, 2], False],  # 6
    [4, "sum", [6, 1], False],  # 7
    [3, "sum", [7, 0], True],   # 8 -> P3
    [4, "sum", [8, 7], True],   # 9 -> P4
    [5, "sum", [9, 6], True],   # 10 -> P5
    [6, "sum", [10, 5], True],  # 11 -> P6
    [7, "sum", [11, 4], True],  # 12 -> P7
)

NAMED_SPECS = {"nasfpn": NASFPN, "fpn": FPN, "panet": PANET}

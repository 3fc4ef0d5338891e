"""Default hyperparameters, in one torch-free place so the CLI can show them without loading torch.

Chosen by measurement on MVTec bottle with 2 CPU cores (docs/decisions.md, "Choosing the defaults"):
EfficientNet-Lite0 stages 2+3 at 384 px meet the pixel-level targets that 256 and 320 px miss, and a
1 % coreset scores within 0.0002 of a 10 % one while training 5x faster.
SoftPatch values are the official ones.
"""

BACKBONE_NAMES = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "mobilenetv2_100")
BACKBONE = "efficientnet_lite0"
LAYERS = (2, 3)
INPUT_SIZE = 384
CORESET_RATIO = 0.01
#: How backbone layers weigh in a patch distance (engine/config.py FeatureConfig.layer_weighting).
LAYER_WEIGHTINGS = ("channels", "equal")
LAYER_WEIGHTING = "channels"
#: How a patch's 3x3 neighbourhood average treats cells past the feature map's edge (FeatureConfig.edge):
#: "zeros" counts them as zero, as the official code's zero-padded unfold does; "inside" averages only the
#: cells within the map, as artifacts trained before this setting do.
EDGES = ("zeros", "inside")
EDGE = "zeros"
#: SoftPatch outlier scores: local outlier factor, nearest other image, Gaussian (softpatch.py).
WEIGHT_METHODS = ("lof", "nearest", "gaussian")
WEIGHT_METHOD = "lof"
LOF_K = 6
FILTER_FRACTION = 0.15
#: Image score: mean of this fraction of an image's highest patch scores (0: the single highest patch).
SCORE_TOP_FRACTION = 0.0
#: What the configuration search may choose from (`ivadas train --profile`): "quality" every input size;
#: "fast" sizes up to FAST_MAX_INPUT_SIZE, the largest whose full predict path on a 900x900 PNG stays within
#: 30 ms on 2 cores (docs/decisions.md, "Serving speed": 27.4 ms at 384 px with Lite0, 34.3 at 448, Lite1).
PROFILES = ("quality", "fast")
PROFILE = "quality"
FAST_MAX_INPUT_SIZE = 384
#: False alarms the threshold is set for: the share of good parts it may flag.
TARGET_FALSE_ALARM_RATE = 0.01

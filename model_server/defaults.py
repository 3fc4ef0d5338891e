"""Default hyperparameters, in one torch-free place so the CLI can show them without loading torch.

Chosen by measurement on every data set at hand, from good images alone where a class decides (docs/model.md,
"How a class is configured"; the figures in docs/benchmarks.md and docs/decisions.md): EfficientNet-Lite2
stages 2+3 ranks first or level on all of them; 384 px, or less where the images are smaller; a memory bank
grown from 1 % of the patches while the good images' highest scores still fall (training/bank_growth.py).
SoftPatch values are the official ones.
"""

BACKBONE_NAMES = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "mobilenetv2_100")
BACKBONE = "efficientnet_lite2"
LAYERS = (2, 3)
#: Input sizes (canvas long side) a class may get; the default is INPUT_SIZE, or the largest size within
#: MAX_UPSAMPLE x the class's native long side where that is smaller (enlarging adds no detail, only cost).
SIZES = (256, 320, 384, 448, 512)
INPUT_SIZE = 384
MAX_UPSAMPLE = 1.25
#: The memory bank starts at this share of the training patches and doubles while the held-out good images'
#: highest scores fall, up to MAX_CORESET_RATIO (training/bank_growth.py); `--coreset-ratio` fixes it.
CORESET_RATIO = 0.01
MAX_CORESET_RATIO = 0.08
#: How backbone layers weigh in a patch distance (engine/config.py FeatureConfig.layer_weighting).
LAYER_WEIGHTINGS = ("channels", "equal")
LAYER_WEIGHTING = "channels"
#: How a patch's 3x3 neighbourhood average treats cells past the feature map's edge (FeatureConfig.edge):
#: "zeros" counts them as zero, as the official code's zero-padded unfold does; "inside" averages only the
#: cells within the map, as artifacts trained before this setting do.
EDGES = ("zeros", "inside")
EDGE = "zeros"
#: How a patch's neighbourhood becomes its feature (FeatureConfig.aggregation).
AGGREGATIONS = ("pool", "unfold")
AGGREGATION = "pool"
#: SoftPatch outlier scores: local outlier factor, nearest other image, Gaussian (softpatch.py).
WEIGHT_METHODS = ("lof", "nearest", "gaussian")
WEIGHT_METHOD = "lof"
LOF_K = 6
FILTER_FRACTION = 0.15
#: Image score (ModelConfig.image_score): "map", the highest value of the smoothed anomaly map, so an image
#: is flagged exactly when some pixel of its map is above the threshold; "patch", the highest patch score
#: (the official code's, and every artifact's before this setting).
IMAGE_SCORES = ("map", "patch")
IMAGE_SCORE = "map"
#: Image score: mean of this fraction of the highest values (0: the single highest one).
SCORE_TOP_FRACTION = 0.0
#: `ivadas train --profile`: "quality" is the defaults above; "fast" keeps the predict path of the smallest
#: backbone, FAST_BACKBONE at sizes up to FAST_MAX_INPUT_SIZE with a fixed CORESET_RATIO bank (about 30 ms
#: per 900x900 PNG on 2 cores, docs/benchmarks.md), and bounds the search's sizes alike.
PROFILES = ("quality", "fast")
PROFILE = "quality"
FAST_BACKBONE = "efficientnet_lite0"
FAST_MAX_INPUT_SIZE = 384
#: False alarms the threshold is set for: the share of good parts it may flag.
TARGET_FALSE_ALARM_RATE = 0.01

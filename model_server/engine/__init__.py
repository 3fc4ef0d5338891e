"""What serving needs and nothing else: feature configuration, image decoding within limits, backbones, patch
features, the memory bank and its nearest-neighbour search, anomaly maps and heatmaps, the class model, the
artifact and the predictor. No training, data sets or reports (those are in `model_server.training`)."""

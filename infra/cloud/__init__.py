"""Training and re-scoring past one machine: SageMaker training jobs per class merged into one registered
version (`ivadas train --on sagemaker`), and Batch Transform over the inbox (`ivadas rescore`)."""

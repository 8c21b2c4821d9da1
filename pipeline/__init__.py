"""mnist-pipeline: Keras models trained on MNIST-like data, as DVC stages, Hydra configs and
MLflow runs. README.md's "Layout" section says where each thing lives."""

"""Training, configs, evaluation and run directories (TensorFlow/Keras)."""

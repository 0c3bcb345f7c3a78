"""Training data: local folders and tensorflow-datasets as (waveform, label) pairs, the
tf.data pipelines and waveform augmentation."""

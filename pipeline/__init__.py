"""The stages of the toolkit: audio I/O, data, features, augmentation, training,
evaluation, export and transcription."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up chatter out of CLI output

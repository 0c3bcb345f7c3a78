"""The stages of the toolkit: audio I/O, data, features, augmentation, training,
evaluation, export and transcription."""

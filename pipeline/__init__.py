"""The stages of the toolkit, one sub-package per dependency level:

runtime/    exported models, detector, audio, transcription: no TensorFlow
data/       data sources, tf.data pipelines, augmentation
train/      configs, training, evaluation, run directories
export/     TFLite export
synthetic/  TTS training clips
"""

"""What an app or a batch job imports: exported models, the detector, audio decoding and
transcription. Needs numpy, soundfile, soxr and ai-edge-litert only (matplotlib for plots,
sounddevice for a microphone); nothing here imports TensorFlow, Keras or librosa."""

from pipeline.runtime.detector import CommandDetector, Detection
from pipeline.runtime.errors import AudioError, ModelError
from pipeline.runtime.model import ClipModel, StreamingModel
from pipeline.runtime.params import FrontEnd
from pipeline.runtime.recognizer import open_model

__all__ = [
    "AudioError",
    "ClipModel",
    "CommandDetector",
    "Detection",
    "FrontEnd",
    "ModelError",
    "StreamingModel",
    "open_model",
]

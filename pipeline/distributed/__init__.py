"""Beyond one machine, on Ray: batch transcription in a Ray Data actor pool (transcribe.py)
and data-parallel training with Ray Train (train.py). Needs the [distributed] extra; nothing
in pipeline.runtime imports this package."""

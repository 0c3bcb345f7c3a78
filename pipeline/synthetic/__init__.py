"""Synthetic training speech from offline TTS engines (subprocesses; no Python TTS)."""

"""Recordings -> segments -> syllable spectrograms.

The names most used are importable from here (lazily: importing :mod:`vocalatent.audio`
loads nothing heavy):

    from vocalatent.audio import SegmentParams, segment_file, tune_segmentation
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "SegmentParams": "segment", "SegmentReport": "segment", "segment_file": "segment",
    "segment_signal": "segment", "amplitude_trace": "segment",
    "SpectrogramParams": "spectrogram", "syllable_spectrograms": "spectrogram",
    "segment_paths": "pipeline", "build_store": "pipeline",
    "read_annotation": "annotations", "read_multi_annotation": "annotations",
    "annotations_for": "annotations", "write_segments": "annotations",
    "evaluate_segmentation": "evaluate", "boundary_scores": "evaluate",
    "tune_segmentation": "tune", "write_pipeline_toml": "tune",
    "plot_segmentation": "figures",
    "load_audio": "io", "audio_info": "io", "find_audio": "io",
    "synthetic_song": "synthetic", "synthetic_bout": "synthetic",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)

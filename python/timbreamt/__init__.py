"""timbreamt: timbre-agnostic multi-instrument music transcription.

The runtime (``timbreamt.transcribe``) needs numpy + onnxruntime only; training needs the ``[train]``
extra (torch). ``timbreamt.notes`` and ``timbreamt.cluster`` are numpy-only and also run in Pyodide.
"""
__version__ = "0.1.0"


def transcribe(*args, **kwargs):
    """See :func:`timbreamt.transcribe.transcribe`."""
    from .transcribe import transcribe as _transcribe

    return _transcribe(*args, **kwargs)

"""numpy-only core: constants, the model contract, windows, the post-processing pipeline (notes,
clustering), the transcription type, MIDI/CSV rendering and the browser job. The only part shipped to
Pyodide; it imports nothing outside the standard library and numpy (tests/test_layout.py)."""

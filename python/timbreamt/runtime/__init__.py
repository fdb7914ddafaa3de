"""The runtime: audio reading, the onnxruntime session, the transcriber and output files. Never imports
torch or scipy (tests/test_layout.py)."""

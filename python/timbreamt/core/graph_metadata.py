"""Read an ONNX graph's metadata_props without the onnx package (stdlib only; runs in Pyodide, which
has no onnx package: the worker reads each graph's decoding defaults with it).

ModelProto field 14 is ``repeated StringStringEntryProto metadata_props`` (key = 1, value = 2). Only
that level is walked. (Graph surgery, which needs more, is done with the onnx package at bundle time:
tools/bundle.py.)
"""
from __future__ import annotations


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated protobuf varint")
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7


def _spans(buf: bytes):
    """(field, wire type, start, end, value) of each top-level field of a message: value is the int
    of a varint, else the field's bytes (the payload of a length-delimited field)."""
    pos = 0
    while pos < len(buf):
        start = pos
        key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 2:
            length, pos = _varint(buf, pos)
            value = buf[pos:pos + length]
            pos += length
        elif wire == 1:
            value, pos = buf[pos:pos + 8], pos + 8
        elif wire == 5:
            value, pos = buf[pos:pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        if pos > len(buf):
            raise ValueError("truncated protobuf message")
        yield field, wire, start, pos, value


def _fields(buf: bytes):
    """(field, value) of each top-level field of a message (see _spans)."""
    for field, _, _, _, value in _spans(buf):
        yield field, value


def read_metadata(model_bytes) -> dict[str, str]:
    """metadata_props of a serialized ONNX ModelProto as a dict."""
    buf = bytes(model_bytes)
    out = {}
    for field, value in _fields(buf):
        if field == 14 and isinstance(value, (bytes, bytearray)):
            entry = dict(_fields(bytes(value)))
            out[bytes(entry.get(1, b"")).decode()] = bytes(entry.get(2, b"")).decode()
    return out

"""Read an ONNX graph's metadata_props, and turn an optional input into a required one, without the
onnx package (stdlib only; runs in Pyodide).

ModelProto field 14 is ``repeated StringStringEntryProto metadata_props`` (key = 1, value = 2); field 7
is the GraphProto, whose field 5 is ``repeated TensorProto initializer`` (a TensorProto's name: field 8).
Only those levels are walked; every other field is copied byte for byte.
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


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def without_initializer(model_bytes, name: str) -> bytes:
    """The serialized model with the initializer ``name`` removed: a graph input that had it as its
    default becomes a required input. Why: onnxruntime-web lists only required inputs and refuses
    to feed any other, so a windowed browser runtime needs our optional ``crop`` input required.
    ValueError if the graph has no such initializer."""
    buf = bytes(model_bytes)
    out = bytearray()
    found = False
    for field, wire, start, end, graph in _spans(buf):
        if field == 7 and wire == 2:
            kept = bytearray()
            for f, w, s, e, tensor in _spans(graph):
                if f == 5 and w == 2 and dict(_fields(tensor)).get(8, b"") == name.encode():
                    found = True
                    continue
                kept += graph[s:e]
            out += _encode_varint((7 << 3) | 2) + _encode_varint(len(kept)) + kept
        else:
            out += buf[start:end]
    if not found:
        raise ValueError(f"the graph has no initializer {name!r}")
    return bytes(out)

"""safetensors with numpy alone (Debian has no safetensors package): read and write the
format twotower's src/train/safetensors.c writes (twotower has no reader of its own; the
tests and tools read its files with this one). u64 little-endian header length N, N bytes
of JSON {name: {dtype, shape, data_offsets}, "__metadata__": {str: str}}, then the raw
little-endian tensor bytes, offsets relative to the end of the header. The reader refuses
anything malformed with a SafetensorsError naming the file."""
import json
import os
import struct

import numpy as np

DTYPES = {"F32": "<f4", "F64": "<f8", "I32": "<i4", "I64": "<i8",
          "F16": "<f2", "I16": "<i2", "I8": "i1", "U8": "u1", "BOOL": "?"}
MAX_HEADER = 100 * 1024 * 1024  # the limit the reference implementation sets


class SafetensorsError(ValueError):
    pass


def read_header(path):
    """(header dict without __metadata__, metadata dict, data start offset, file size)."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise SafetensorsError(f"{path}: too short for a safetensors file")
        (n,) = struct.unpack("<Q", raw)
        if n < 2 or n > MAX_HEADER or n > size - 8:
            raise SafetensorsError(f"{path}: header length {n} impossible for {size} bytes")
        try:
            header = json.loads(f.read(n).decode("utf-8"), object_pairs_hook=_no_duplicates)
        except (UnicodeDecodeError, json.JSONDecodeError, ValueError) as e:
            raise SafetensorsError(f"{path}: bad header: {e}") from e
    if not isinstance(header, dict):
        raise SafetensorsError(f"{path}: header is not a JSON object")
    meta = header.pop("__metadata__", {}) or {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise SafetensorsError(f"{path}: __metadata__ must map strings to strings")
    return header, meta, 8 + n, size


def _no_duplicates(pairs):
    d = {}
    for k, v in pairs:
        if k in d:
            raise ValueError(f"key {k!r} appears twice")
        d[k] = v
    return d


def _is_count(v):
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def load(path):
    """(dict name -> numpy array, metadata dict). Every entry is checked against the
    file: known dtype, shape product times element size = byte span, inside the data."""
    header, meta, start, size = read_header(path)
    out = {}
    with open(path, "rb") as f:
        for name, e in header.items():
            if not isinstance(e, dict) or not {"dtype", "shape", "data_offsets"} <= e.keys():
                raise SafetensorsError(f"{path}: tensor {name!r} lacks dtype, shape or "
                                       "data_offsets")
            dt = DTYPES.get(e["dtype"]) if isinstance(e["dtype"], str) else None
            if dt is None:
                raise SafetensorsError(f"{path}: tensor {name!r} has dtype {e['dtype']!r}")
            shape, offs = e["shape"], e["data_offsets"]
            if (not isinstance(shape, list) or not all(_is_count(d) for d in shape)
                    or not isinstance(offs, list) or len(offs) != 2
                    or not all(_is_count(v) for v in offs)):
                raise SafetensorsError(f"{path}: tensor {name!r} has a bad shape or "
                                       "data_offsets")
            shape = tuple(shape)
            b, en = offs
            count = 1
            for d in shape:  # Python integers: no overflow to hide a bad shape
                count *= d
            if en < b or start + en > size or count * np.dtype(dt).itemsize != en - b:
                raise SafetensorsError(f"{path}: tensor {name!r} shape {shape} does not fit "
                                       f"offsets [{b}, {en})")
            f.seek(start + b)
            out[name] = np.frombuffer(f.read(en - b), dtype=dt).reshape(shape).copy()
    return out, meta


def save(path, tensors, metadata=None):
    """Writes tensors (dict name -> array, in insertion order) like st_write does:
    contiguous offsets, header padded with spaces to a multiple of 8."""
    names = {np.dtype(v): k for k, v in DTYPES.items()}
    header, arrays, off = {}, [], 0
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    for name, a in tensors.items():
        a = np.asarray(a)  # not ascontiguousarray: it makes a scalar 1-D
        if not a.flags.c_contiguous:
            a = a.copy(order="C")
        a = a.astype(a.dtype.newbyteorder("<"), copy=False)
        dt = names.get(a.dtype)
        if dt is None:
            raise SafetensorsError(f"{name}: dtype {a.dtype} has no safetensors name here")
        header[name] = {"dtype": dt, "shape": list(a.shape),
                        "data_offsets": [off, off + a.nbytes]}
        off += a.nbytes
        arrays.append(a)
    h = json.dumps(header, separators=(",", ":")).encode("utf-8")
    h += b" " * (-len(h) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for a in arrays:
            f.write(a.tobytes())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)

"""safetensors with numpy alone (Debian has no safetensors package): read and write the
format twotower's src/train/safetensors.c writes. u64 little-endian header length N,
N bytes of JSON {name: {dtype, shape, data_offsets}, "__metadata__": {str: str}},
then the raw little-endian tensor bytes, offsets relative to the end of the header."""
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
            header = json.loads(f.read(n).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise SafetensorsError(f"{path}: header is not JSON: {e}") from e
    if not isinstance(header, dict):
        raise SafetensorsError(f"{path}: header is not a JSON object")
    meta = header.pop("__metadata__", {}) or {}
    return header, meta, 8 + n, size


def load(path):
    """(dict name -> numpy array, metadata dict). Every entry is checked against the
    file: known dtype, shape product times element size = byte span, inside the data."""
    header, meta, start, size = read_header(path)
    out = {}
    with open(path, "rb") as f:
        for name, e in header.items():
            dt = DTYPES.get(e.get("dtype"))
            if dt is None:
                raise SafetensorsError(f"{path}: tensor {name!r} has dtype {e.get('dtype')!r}")
            shape = tuple(int(d) for d in e["shape"])
            b, en = (int(v) for v in e["data_offsets"])
            count = int(np.prod(shape, dtype=np.int64))
            if b < 0 or en < b or start + en > size or count * np.dtype(dt).itemsize != en - b:
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
        a = np.ascontiguousarray(a)
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

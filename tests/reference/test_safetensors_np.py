"""The safetensors files twotower writes, read by tools/reference/safetensors_np.py (and
by the `safetensors` package where it is installed): C's st_write (st_sample) reads back
value for value, with its escaped names and metadata; the numpy writer round-trips; and
the numpy reader, the one every test and tool relies on, refuses malformed files with the
file named and accepts what other writers may produce.
usage: test_safetensors_np.py ST_SAMPLE_EXE TMPDIR"""
import os
import struct
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                "tools", "reference"))
import safetensors_np  # noqa: E402

F = np.array([1.5, -2.0, 3.25, 0.0, 1e-30, -7.0], np.float32).reshape(1, 2, 3)
D = np.array([3.141592653589793, -1e300])
I = np.array([7, -8, 2147483647], np.int32)
L = np.array([-9000000000000000000, 5], np.int64).reshape(2, 1)
S = np.array(-2**63, np.int64)
QUOTED = 'f64 "quoted"\\'
META = {"format": "st_sample", "quote": 'a "b" \\ c', "note": "line\nbreak\ttab \x01 \u00e9"}
WANT = {"f32": F, QUOTED: D, "i32": I, "i64": L, "scalar": S}


def check_sample(t, meta, what, ordered=True):
    if ordered:  # the file's order (the reference package may hand them back sorted)
        assert list(t) == list(WANT), (what, list(t))
    assert sorted(t) == sorted(WANT), (what, list(t))
    for name, want in WANT.items():
        got = np.asarray(t[name])
        assert got.dtype == want.dtype, (what, name, got.dtype)
        assert got.shape == want.shape, (what, name, got.shape)
        assert np.array_equal(got, want), (what, name)
    assert meta == META, (what, meta)


def hand_made(path, header, data_bytes):
    """A file with the given header text (str or bytes) and zeroed data."""
    h = header.encode("utf-8") if isinstance(header, str) else header
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + bytes(data_bytes))


def expect_refused(path, header, data_bytes, why):
    hand_made(path, header, data_bytes)
    try:
        safetensors_np.load(path)
    except safetensors_np.SafetensorsError as e:
        assert path in str(e), e
        assert why in str(e), (why, str(e))
    else:
        raise AssertionError(f"accepted: {header!r}")


def main():
    exe, tmp = sys.argv[1], sys.argv[2]
    os.makedirs(tmp, exist_ok=True)
    c_file = os.path.join(tmp, "from_c.safetensors")
    np_file = os.path.join(tmp, "from_numpy.safetensors")

    # what C wrote, read by numpy (and by the reference implementation where installed)
    subprocess.run([exe, c_file], check=True)
    t, meta = safetensors_np.load(c_file)
    check_sample(t, meta, "safetensors_np")
    header, _, start, size = safetensors_np.read_header(c_file)
    assert start % 8 == 0, start
    ends = sorted(e["data_offsets"] for e in header.values())
    assert ends[0][0] == 0 and all(a[1] == b[0] for a, b in zip(ends, ends[1:])), ends
    assert start + ends[-1][1] == size, "the data is the tensors, back to back"
    try:
        from safetensors import safe_open
        from safetensors.numpy import load_file
    except ImportError:
        print("the safetensors package is not installed: numpy reader only")
    else:
        with safe_open(c_file, framework="np") as f:
            ref_meta = f.metadata()
        check_sample(load_file(c_file), ref_meta, "safetensors", ordered=False)

    # the numpy writer round-trips
    safetensors_np.save(np_file, WANT, META)
    check_sample(*safetensors_np.load(np_file), "numpy writer")

    # malformed files are refused, the file named
    bad = os.path.join(tmp, "bad.safetensors")
    entry = '"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}'
    expect_refused(bad, '{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,12]}}', 12,
                   "does not fit")
    expect_refused(bad, "{" + entry + "}", 4, "does not fit")
    expect_refused(bad, '{"a":{"dtype":"Q8","shape":[2],"data_offsets":[0,8]}}', 8, "dtype")
    expect_refused(bad, '{"a":{"dtype":"F32","shape":[2]}}', 8, "lacks")
    expect_refused(bad, "{" + entry, 8, "bad header")
    expect_refused(bad, '{"a":{"dtype":"F32","shape":[99999999999999999999],'
                        '"data_offsets":[0,8]}}', 8, "does not fit")
    expect_refused(bad, '{"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}', 8,
                   "bad shape")
    expect_refused(bad, '{"a":{"dtype":"F32","shape":[2],"data_offsets":[8]}}', 8,
                   "bad shape or data_offsets")
    expect_refused(bad, '{"__metadata__":{"k":1}}', 0, "strings to strings")
    expect_refused(bad, '{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},'
                        '"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}', 8,
                   "appears twice")
    expect_refused(bad, b'{"\xff":1}', 0, "bad header")
    expect_refused(bad, "[1, 2]", 0, "not a JSON object")
    with open(bad, "wb") as f:  # a header length larger than the file
        f.write(bytes([0xff, 0xff, 0, 0, 0, 0, 0, 0]) + b"{}")
    try:
        safetensors_np.load(bad)
    except safetensors_np.SafetensorsError as e:
        assert "impossible" in str(e) and bad in str(e), e
    else:
        raise AssertionError("a header longer than the file was accepted")
    # a truncated file
    with open(np_file, "r+b") as f:
        f.truncate(os.path.getsize(np_file) - 4)
    try:
        safetensors_np.load(np_file)
    except safetensors_np.SafetensorsError as e:
        assert np_file in str(e), e
    else:
        raise AssertionError("truncated file accepted")

    # what other writers may produce: spaces, key order, unknown keys, \u escapes
    other = os.path.join(tmp, "other.safetensors")
    hand_made(other, '{ "__metadata__" : { "k" : "\\u00e9\\ud83d\\ude00" } ,\n'
                     '  "b" : { "data_offsets" : [ 0 , 8 ] , "extra" : [1, {"x": null}],'
                     ' "shape" : [ 1 , 2 ] , "dtype" : "I32" } }   ', 8)
    t, meta = safetensors_np.load(other)
    assert meta == {"k": "\u00e9\U0001F600"}, meta
    assert t["b"].shape == (1, 2) and t["b"].dtype == np.int32, t["b"]
    print("safetensors_np reads what st_write wrote, round-trips, and refuses bad files")


if __name__ == "__main__":
    main()

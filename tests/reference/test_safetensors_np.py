"""tools/reference/safetensors_np.py against the C st_write / st_open: the numpy reader
reads what C wrote, and C reads what the numpy writer wrote, value for value.
usage: test_safetensors_np.py ST_SAMPLE_EXE TMPDIR"""
import os
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


def main():
    exe, tmp = sys.argv[1], sys.argv[2]
    os.makedirs(tmp, exist_ok=True)
    c_file = os.path.join(tmp, "from_c.safetensors")
    np_file = os.path.join(tmp, "from_numpy.safetensors")
    subprocess.run([exe, "write", c_file], check=True)
    t, meta = safetensors_np.load(c_file)
    assert list(t) == ["f32", "f64", "i32", "i64"], list(t)
    for name, want in (("f32", F), ("f64", D), ("i32", I), ("i64", L)):
        assert t[name].dtype == want.dtype, (name, t[name].dtype)
        assert t[name].shape == want.shape, (name, t[name].shape)
        assert np.array_equal(t[name], want), name
    assert meta == {"format": "st_sample", "quote": 'a "b" \\ c'}, meta
    header, _, start, _ = safetensors_np.read_header(c_file)
    assert start % 8 == 0, start

    safetensors_np.save(np_file, {"f32": F, "f64": D, "i32": I, "i64": L},
                        {"format": "numpy", "quote": 'a "b" \\ c'})
    subprocess.run([exe, "check", np_file], check=True)
    # a corrupt file is refused with the file named
    with open(np_file, "r+b") as f:
        f.truncate(os.path.getsize(np_file) - 4)
    try:
        safetensors_np.load(np_file)
    except safetensors_np.SafetensorsError as e:
        assert np_file in str(e), e
    else:
        raise AssertionError("truncated file accepted")
    if subprocess.run([exe, "check", np_file], stderr=subprocess.DEVNULL).returncode == 0:
        raise AssertionError("C reader accepted a truncated file")
    print("safetensors_np and st_write/st_open agree")


if __name__ == "__main__":
    main()

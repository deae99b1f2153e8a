"""save and load: exact round trips, atomic writes, and clear errors for files that are not models."""

import io
import os
import stat
import subprocess
import sys
import textwrap
import zipfile

import numpy as np
import pytest

import fastnn as fnn
import fastnn.persist as persist
from conftest import DTYPES, assert_tree_close, assert_tree_dtype

NET = fnn.Net(sizes=(3, 5, 4, 2), activations=("gelu", "tanh", "identity"))


@pytest.mark.parametrize("dtype", DTYPES)
def test_round_trip_is_exact_in_both_dtypes(tmp_path, dtype):
    params = fnn.init(NET, seed=4, dtype=dtype)
    meta = {"x_mean": np.array([1.5, -2.0, 0.25]), "classes": ["cat", "dog"], "task": "classification"}
    path = tmp_path / "model.npz"
    fnn.save(path, NET, params, metadata=meta)
    net, loaded = fnn.load(path)
    assert net == NET
    assert_tree_dtype(loaded, dtype)
    assert_tree_close(loaded, params, dtype, rtol=0, atol=0)
    x = np.random.default_rng(0).normal(size=(4, 3))
    np.testing.assert_array_equal(fnn.forward(net, loaded, x), fnn.forward(NET, params, x))
    _, _, got = fnn.load(str(path), with_metadata=True)
    assert set(got) == set(meta)
    np.testing.assert_array_equal(got["x_mean"], meta["x_mean"])
    assert got["classes"].tolist() == ["cat", "dog"] and str(got["task"]) == "classification"


def test_save_replaces_atomically_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    path = tmp_path / "model.npz"
    old = fnn.init(NET, seed=1)
    fnn.save(path, NET, old)
    before = path.read_bytes()

    def crash(f, **arrays):
        f.write(b"PK\x03\x04 half a file")
        raise KeyboardInterrupt("power cut")

    monkeypatch.setattr(persist.np, "savez", crash)
    with pytest.raises(KeyboardInterrupt):
        fnn.save(path, NET, fnn.init(NET, seed=2))
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["model.npz"]


def _write_npz(path, **arrays):
    np.savez(path, **arrays)
    return path


def _good_arrays():
    params = fnn.init(NET, seed=0)
    arrays = {"format": np.array("fastnn-model"), "version": np.array(1),
              "sizes": np.array(NET.sizes), "activations": np.array(NET.activations)}
    for l, (W, b) in enumerate(params):
        arrays[f"W{l}"], arrays[f"b{l}"] = W, b
    return arrays


@pytest.mark.parametrize("change, match", [
    (dict(format=np.array("something-else")), "no fastnn format marker"),
    (dict(version=np.array(99)), "format version"),
    (dict(activations=np.array(["gelu", "swish", "identity"])), "unknown activation 'swish'"),
    (dict(W1=np.ones((5, 3), dtype=np.float32)), r"params\[1\] W has shape \(5, 3\); net .* needs \(5, 4\)"),
    (dict(b0=np.ones(5, dtype=np.float64)), "mixes dtypes"),
    (dict(sizes=np.array([3.0, 5.0, 4.0, 2.0])), "sizes must be a 1-D int array"),
])
def test_invalid_model_contents_are_named(tmp_path, change, match):
    arrays = dict(_good_arrays(), **change)
    path = _write_npz(tmp_path / "m.npz", **arrays)
    with pytest.raises(ValueError, match=match):
        fnn.load(path)


def test_missing_array_is_named(tmp_path):
    arrays = _good_arrays()
    del arrays["b2"]
    with pytest.raises(ValueError, match="not a valid fastnn model file: 'b2'"):
        fnn.load(_write_npz(tmp_path / "m.npz", **arrays))


def test_truncated_corrupt_and_foreign_files(tmp_path):
    good = tmp_path / "good.npz"
    fnn.save(good, NET, fnn.init(NET, seed=0))
    data = good.read_bytes()
    cases = {
        "truncated.npz": data[: len(data) // 2],
        "flipped.npz": data[:300] + bytes([data[300] ^ 0xFF]) + data[301:],
        "text.npz": b"price,demand\n1,2\n",
        "empty.npz": b"",
    }
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ValueError, match="is not a .*fastnn model file"):
            fnn.load(tmp_path / name)
    np.save(tmp_path / "array.npy", np.ones(3))
    with pytest.raises(ValueError, match=r"not a \.npz \(zip\) archive"):
        fnn.load(tmp_path / "array.npy")
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as z:
        z.writestr("readme.txt", "hello")
    with pytest.raises(ValueError, match="no fastnn format marker"):
        fnn.load(tmp_path / "other.zip")
    with pytest.raises(FileNotFoundError):
        fnn.load(tmp_path / "missing.npz")


class _Exploit:
    """Unpickling this would create a file: load must never unpickle."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_load_never_unpickles(tmp_path):
    marker = tmp_path / "pwned"
    arrays = _good_arrays()
    arrays["meta/evil"] = np.array([_Exploit(str(marker))], dtype=object)
    path = tmp_path / "evil.npz"
    np.savez(path, **arrays)  # object arrays are pickled inside the archive
    assert b"pwned" in path.read_bytes()  # the payload really is in the file
    with pytest.raises(ValueError, match="not a readable fastnn model file"):
        fnn.load(path)
    assert not marker.exists()


def test_save_rejects_bad_arguments(tmp_path):
    params = fnn.init(NET, seed=0)
    with pytest.raises(ValueError, match=r"params\[0\] W has shape"):
        fnn.save(tmp_path / "m.npz", NET, fnn.init(fnn.mlp([4, 5, 4, 2]), seed=0))
    with pytest.raises(TypeError, match="metadata .* must hold numbers or strings"):
        fnn.save(tmp_path / "m.npz", NET, params, metadata={"x": [object()]})
    with pytest.raises(TypeError, match="metadata must be a dict"):
        fnn.save(tmp_path / "m.npz", NET, params, metadata=[1, 2])
    assert not os.listdir(tmp_path)


def test_a_new_file_follows_the_umask_and_a_replaced_one_keeps_its_mode(tmp_path):
    path = tmp_path / "model.npz"
    old_mask = os.umask(0o027)
    try:
        fnn.save(path, NET, fnn.init(NET, seed=1))
    finally:
        os.umask(old_mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    for mode in (0o600, 0o644):
        path.chmod(mode)
        fnn.save(path, NET, fnn.init(NET, seed=2))
        assert stat.S_IMODE(path.stat().st_mode) == mode


def test_saving_to_a_directory_names_it_and_leaves_nothing_behind(tmp_path):
    with pytest.raises(IsADirectoryError, match=f"{tmp_path} is a directory; save needs a file name"):
        fnn.save(tmp_path, NET, fnn.init(NET, seed=1))
    assert os.listdir(tmp_path) == []


def test_a_full_disk_names_the_users_file_and_leaves_nothing_behind(tmp_path):
    """A file-size limit (RLIMIT_FSIZE) stands in for a full disk: the write fails part-way with
    EFBIG, as it would with ENOSPC."""
    resource = pytest.importorskip("resource")  # POSIX; CI runs on Linux
    code = textwrap.dedent(f"""
        import resource, signal
        import fastnn as fnn
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # fail the write instead of killing the process
        resource.setrlimit(resource.RLIMIT_FSIZE, (2000, 2000))
        net = fnn.mlp([30, 40, 2])
        try:
            fnn.save({str(tmp_path / "model.npz")!r}, net, fnn.init(net, seed=0))
        except OSError as exc:
            print(type(exc).__name__, "|", exc)
    """)
    assert resource is not None
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert f"could not save the model to {tmp_path / 'model.npz'}: File too large" in result.stdout
    assert os.listdir(tmp_path) == []


def _bomb(path, declared_shape, data_bytes):
    """A .npz whose W0.npy header declares ``declared_shape`` float32 but holds ``data_bytes``
    bytes of zeros after it, deflated."""
    header = np.lib.format.header_data_from_array_1_0(np.zeros(1, np.float32))
    header["shape"] = declared_shape
    member = io.BytesIO()
    np.lib.format.write_array_header_1_0(member, header)
    member.write(bytes(data_bytes))
    arrays = _good_arrays()
    np.savez(path, **{k: v for k, v in arrays.items() if k != "W0"})
    with zipfile.ZipFile(path, "a", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("W0.npy", member.getvalue())
    return path


def test_an_archive_declaring_more_than_it_holds_is_rejected_before_it_is_read(tmp_path):
    """A 1.5 GB array declared in a small file: rejected from the sizes alone, without allocating."""
    import tracemalloc
    contradicting = _bomb(tmp_path / "contradicting.npz", (400_000_000,), 1000)
    zeros = _bomb(tmp_path / "zeros.npz", (50_000_000,), 200_000_000)  # consistent, 1000-fold deflate
    assert zeros.stat().st_size < 1_000_000
    tracemalloc.start()
    try:
        for path, match in [(contradicting, "declares"), (zeros, "would expand")]:
            with pytest.raises(ValueError, match=match):
                fnn.load(path)
        assert tracemalloc.get_traced_memory()[1] < 50_000_000
    finally:
        tracemalloc.stop()

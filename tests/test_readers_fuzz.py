"""Property tests: random damage to valid IDX and npz files. Every outcome is the array the
bytes describe or a ValueError with a message: never another exception, never a hang."""

from __future__ import annotations

import gzip
import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_mnist import idx_bytes, synthetic_arrays

from pipeline.data.idx import parse_idx, read_idx_gz, read_npz

IMAGES = idx_bytes(synthetic_arrays(4, 2)["x_train"])
FUZZ = settings(max_examples=300, deadline=2000, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def mutated(draw: st.DrawFn, data: bytes) -> bytes:
    """`data` with a few random edits: flipped bytes, a cut, an insertion."""
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "cut", "insert", "header"]))
        pos = draw(st.integers(0, max(len(out) - 1, 0)))
        if kind == "flip" and out:
            out[pos] ^= draw(st.integers(1, 255))
        elif kind == "cut":
            del out[pos:]
        elif kind == "insert":
            out[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "header" and len(out) >= 8:
            # Rewrite one 4-byte word of the header: magic or a dimension, often absurd.
            word = draw(st.integers(0, min(3, len(out) // 4 - 1)))
            out[4 * word : 4 * word + 4] = draw(st.binary(min_size=4, max_size=4))
    return bytes(out)


def check_idx(data: bytes) -> None:
    try:
        array = parse_idx(data, "fuzz")
    except ValueError as err:
        assert str(err).startswith("fuzz: ")
        return
    # Accepted: the array is exactly what the header declares and the bytes hold.
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    assert array.shape == shape and array.dtype == np.uint8
    assert array.tobytes() == data[4 + 4 * ndim :]


@FUZZ
@given(mutated(IMAGES))
def test_idx_parser_on_damaged_bytes(data: bytes) -> None:
    check_idx(data)


@FUZZ
@given(mutated(gzip.compress(IMAGES)))
def test_gzip_idx_reader_on_damaged_files(tmp_path_factory, data: bytes) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "images.gz"
    path.write_bytes(data)
    try:
        read_idx_gz(path)
    except ValueError as err:
        assert str(err).startswith("images.gz: ")


def npz_bytes() -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **synthetic_arrays(4, 2))
    return buffer.getvalue()


@FUZZ
@given(mutated(npz_bytes()))
def test_npz_reader_on_damaged_files(tmp_path_factory, data: bytes) -> None:
    path: Path = tmp_path_factory.mktemp("fuzz") / "mnist.npz"
    path.write_bytes(data)
    try:
        arrays = read_npz(path)
    except ValueError as err:
        assert str(err).startswith("mnist.npz: ")
        return
    assert set(arrays) == {"x_train", "y_train", "x_test", "y_test"}


@pytest.mark.parametrize(("field", "value"), [("method", 99), ("flags", 1)])
def test_npz_reader_refuses_an_unknown_compression_or_encryption(
    tmp_path: Path, field: str, value: int
) -> None:
    """Two damages the fuzzing above once found: zipfile's own errors become the one line."""
    data = bytearray(npz_bytes())
    # Each member's local header (PK\3\4) and central directory entry (PK\1\2).
    for magic, flags_at, method_at in ((b"PK\x03\x04", 6, 8), (b"PK\x01\x02", 8, 10)):
        start = data.find(magic)
        while start != -1:
            at = start + (method_at if field == "method" else flags_at)
            data[at : at + 2] = value.to_bytes(2, "little")
            start = data.find(magic, start + 4)
    path = tmp_path / "mnist.npz"
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="^mnist.npz: not a valid MNIST npz file"):
        read_npz(path)


def test_npz_reader_refuses_a_zip_bomb_shape(tmp_path: Path) -> None:
    # A header declaring a huge array over a few bytes must fail before allocating.
    arrays = synthetic_arrays(4, 2)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    path = tmp_path / "mnist.npz"
    with zipfile.ZipFile(io.BytesIO(buffer.getvalue())) as src, zipfile.ZipFile(path, "w") as dst:
        for item in src.infolist():
            content = src.read(item)
            if item.filename == "x_train.npy":
                content = content.replace(b"(4, 28, 28)", b"(4000000000, 28, 28)")
            dst.writestr(item, content)
    try:
        read_npz(path)
    except ValueError as err:
        assert str(err).startswith("mnist.npz: ")
    else:
        raise AssertionError("a 3 TB declared array was accepted")

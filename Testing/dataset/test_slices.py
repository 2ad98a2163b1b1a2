"""Canonical orientation, windowing, resizing and PNG encoding of axial slices."""

import io
import itertools

import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image

from deepliver.dataset.slices import (Window, canonical_array, canonical_orientation, encode_png, resize_slice,
                                      window_slice)
from deepliver.errors import ConfigError, GeometryError
from testhelpers import reoriented as _same_anatomy


def _identity_image(shape_zyx=(6, 9, 11), seed=0):
    """An identity-direction image whose voxels are all distinct (so any axis mix-up shows)."""
    values = np.random.default_rng(seed).permutation(np.prod(shape_zyx)).reshape(shape_zyx).astype(np.int32)
    image = sitk.GetImageFromArray(values)
    image.SetSpacing((0.7, 0.9, 2.5))
    image.SetOrigin((-10.0, 20.0, 30.0))
    return image


def _signed_permutations():
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product((1, -1), repeat=3):
            d = np.zeros((3, 3))
            for i, (p, s) in enumerate(zip(perm, signs)):
                d[p, i] = s
            yield d.ravel().tolist()


def test_every_signed_permutation_gives_the_identity_slices():
    identity = _identity_image()
    expected = sitk.GetArrayFromImage(identity)
    for direction in _signed_permutations():
        other = _same_anatomy(identity, direction)
        raw = sitk.GetArrayFromImage(other)
        is_identity = direction == [1, 0, 0, 0, 1, 0, 0, 0, 1]
        assert is_identity == (raw.shape == expected.shape and np.array_equal(raw, expected))
        np.testing.assert_array_equal(canonical_array(other), expected, err_msg=str(direction))


def test_canonical_matches_simpleitk_dicomorient_lps():
    identity = _identity_image(seed=1)
    for direction in ([-1, 0, 0, 0, -1, 0, 0, 0, 1], [0, 0, 1, -1, 0, 0, 0, -1, 0]):
        other = _same_anatomy(identity, direction)
        reference = sitk.GetArrayFromImage(sitk.DICOMOrient(other, "LPS"))
        np.testing.assert_array_equal(canonical_array(other), reference)


def test_meaning_of_canonical_axes():
    # A voxel at the patient's right, anterior, inferior corner (smallest L, P, S coordinates) must land at
    # column 0, row 0, slice 0, whatever the grid.
    identity = _identity_image()
    for direction in ([-1, 0, 0, 0, -1, 0, 0, 0, -1], [0, 1, 0, 1, 0, 0, 0, 0, -1]):
        image = _same_anatomy(identity, direction)
        corner = image.TransformPhysicalPointToIndex(identity.GetOrigin())
        canon = canonical_array(image)
        assert canon[0, 0, 0] == image[corner]


def test_small_tilt_uses_the_closest_axes_and_large_tilt_is_refused():
    image = _identity_image()
    angle = np.deg2rad(3)
    c, s = np.cos(angle), np.sin(angle)
    image.SetDirection((c, -s, 0, s, c, 0, 0, 0, 1))
    np.testing.assert_array_equal(canonical_array(image), sitk.GetArrayFromImage(image))
    h = np.sqrt(0.5)
    image.SetDirection((h, -h, 0, h, h, 0, 0, 0, 1))
    with pytest.raises(GeometryError, match="too oblique"):
        canonical_orientation(image)


def test_window_rounds_half_up_and_clips():
    window = Window(0, 510)  # 2 HU per grey level: odd HU land exactly on .5
    hu = np.array([[-1000, 0, 1, 2, 3, 509, 510, 3000]], dtype=np.int16)
    np.testing.assert_array_equal(window_slice(hu, window), [[0, 0, 1, 1, 2, 255, 255, 255]])
    out = window_slice(np.array([[-100, 150, 400]], dtype=np.float32), Window(-100, 400))
    assert out.dtype == np.uint8 and out.tolist() == [[0, 128, 255]]  # 127.5 -> 128


def test_integer_lookup_table_equals_float_formula():
    hu = np.random.default_rng(2).integers(-32768, 32768, (64, 64)).astype(np.int16)
    hu[0, :6] = [-32768, 32767, -100, 400, 149, 150]
    for window in (Window(-100, 400), Window(-1.5, 2.25), Window(-160, 240)):
        np.testing.assert_array_equal(window_slice(hu, window), window_slice(hu.astype(np.float64), window))
        for other in (hu.view(np.uint16), hu.astype(np.int8), hu.astype(np.uint8), hu[::-1, ::-2]):
            np.testing.assert_array_equal(window_slice(other, window), window_slice(other.astype(float), window))


def test_window_parse_and_errors():
    assert Window.parse("-100, 400") == Window(-100, 400)
    with pytest.raises(ConfigError, match="low must be below high"):
        Window.parse("400,-100")
    with pytest.raises(ConfigError, match="two numbers"):
        Window.parse("abc")


def test_png_round_trip_is_exact_and_deterministic():
    pixels = np.random.default_rng(3).integers(0, 256, (37, 53), dtype=np.uint8)
    data = encode_png(pixels)
    assert data == encode_png(pixels.copy())
    with Image.open(io.BytesIO(data)) as decoded:
        assert decoded.mode == "L"
        np.testing.assert_array_equal(np.asarray(decoded), pixels)
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(encode_png(pixels[::-1, ::2])))),
                                  pixels[::-1, ::2])


def test_png_chunks_crcs_and_header_read_independently():
    import struct
    import zlib
    pixels = np.random.default_rng(4).integers(0, 256, (21, 34), dtype=np.uint8)
    data = encode_png(pixels)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, at = [], 8
    while at < len(data):
        (length,), kind = struct.unpack(">I", data[at:at + 4]), data[at + 4:at + 8]
        body, (crc,) = data[at + 8:at + 8 + length], struct.unpack(">I", data[at + 8 + length:at + 12 + length])
        assert crc == zlib.crc32(kind + body)
        chunks.append((kind, body))
        at += 12 + length
    assert [k for k, _ in chunks] == [b"IHDR", b"IDAT", b"IEND"]
    assert struct.unpack(">IIBBBBB", chunks[0][1]) == (34, 21, 8, 0, 0, 0, 0)  # 8-bit grayscale, no interlace
    rows = np.frombuffer(zlib.decompress(chunks[1][1]), np.uint8).reshape(21, 35)
    assert (rows[:, 0] == 0).all()  # filter type None on every row
    np.testing.assert_array_equal(rows[:, 1:], pixels)
    Image.open(io.BytesIO(data)).verify()  # PIL's own chunk and CRC checks
    for bad in (pixels.astype(np.int16), pixels[None], pixels[:0]):
        with pytest.raises(ValueError, match="2D uint8 slice"):
            encode_png(bad)


def test_resize_slice():
    pixels = np.full((20, 30), 77, dtype=np.uint8)
    assert resize_slice(pixels, 16).shape == (16, 16)
    assert (resize_slice(pixels, 16) == 77).all()  # bilinear keeps a constant image constant
    square = np.arange(256, dtype=np.uint8).reshape(16, 16)
    assert resize_slice(square, 16) is square

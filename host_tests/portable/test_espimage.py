# boards/sim/espimage: ESP app images built and judged as the IDF bootloader does.
import espimage


def test_built_image_is_valid_and_laid_out_as_the_format_says():
    im = espimage.build()
    assert espimage.check_bytes(im) is None
    assert im[0] == 0xE9 and im[1] == 3 and im[23] == 1  # magic, 3 segments, hash appended
    body = len(im) - 32
    assert body % 16 == 0  # padded so the checksum byte ends a 16-byte block
    csum = 0xEF
    pos = 24
    for _ in range(im[1]):
        n = int.from_bytes(im[pos + 4 : pos + 8], "little")
        for x in im[pos + 8 : pos + 8 + n]:
            csum ^= x
        pos += 8 + n
    assert im[body - 1] == csum
    plain = espimage.build(hash_appended=False)
    assert espimage.check_bytes(plain) is None and len(plain) == body


def test_each_fault_the_bootloader_checks_is_refused():
    good = espimage.build()
    cases = [
        (b"\xff" * 64, "invalid magic"),
        (espimage.build(chip_id=2), "chip ID"),
        (espimage.build(min_rev=400), "chip rev >="),
        (espimage.build(max_rev=200), "chip rev <="),
        (bytes([0xE9, 17]) + good[2:], "segment count 17"),
        (espimage.build([(0x3FFB0000, b"\x00" * 8)])[:28] + b"\x06" + espimage.build([(0x3FFB0000, b"\x00" * 8)])[29:],
         "invalid segment length"),
        (espimage.build([(0x3F400000, b"\x00" * 8)]), "doesn't match data"),  # mapped, misaligned
        (good[:-40], "doesn't fit"),
    ]
    flipped = bytearray(good)
    flipped[60] ^= 0x10
    cases.append((bytes(flipped), "Checksum failed"))
    twice = bytearray(good)
    twice[60] ^= 0x10
    twice[61] ^= 0x10
    cases.append((bytes(twice), "hash failed"))
    for image, why in cases:
        got = espimage.check_bytes(image)
        assert got is not None and why in got, (why, got)
    assert espimage.check_bytes(good, 64) is not None  # a partition too small for it

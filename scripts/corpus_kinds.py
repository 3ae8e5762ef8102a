#!/usr/bin/env python3
"""Sorts any directory of images into kinds by their bytes (never by name or extension), for the
per-kind table of `make bench-fetch`.

Usage: corpus_kinds.py SRC_DIR OUT_DIR
Writes OUT_DIR/all/<name>.<ext> and OUT_DIR/kinds/<kind>/<name>.<ext> as symlinks to the files
(extension from the bytes, so a downloaded URL list without extensions works too), and prints a
line per kind: kind, count, MB, mean megapixels (when the header tells). Non-images are skipped.
Kinds: jpeg-baseline-420, jpeg-progressive, jpeg-444, jpeg-422, jpeg-grey, jpeg-other, png,
webp, gif, bmp. Standard library only: no Pillow needed to bench someone else's corpus.
"""
import os
import struct
import sys

SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def jpeg_kind(b):
    """Kind and pixel count from the first SOF marker."""
    i = 2
    while i + 4 <= len(b):
        if b[i] != 0xFF:
            return "jpeg-other", 0
        m = b[i + 1]
        if m == 0xFF:
            i += 1
            continue
        n = struct.unpack(">H", b[i + 2:i + 4])[0]
        if m in SOF and i + 10 <= len(b):
            h, w, comps = struct.unpack(">HHB", b[i + 5:i + 10])
            px = w * h
            if m in (0xC2, 0xC6, 0xCA, 0xCE):
                return "jpeg-progressive", px
            if comps == 1:
                return "jpeg-grey", px
            if comps != 3 or i + 10 + 9 > len(b):
                return "jpeg-other", px
            y, cb = b[i + 11], b[i + 14]  # sampling bytes: high nibble H, low nibble V
            ratio = ((y >> 4) // max(cb >> 4, 1), (y & 15) // max(cb & 15, 1))
            return {(2, 2): "jpeg-baseline-420", (1, 1): "jpeg-444", (2, 1): "jpeg-422"}.get(
                ratio, "jpeg-other"), px
        i += 2 + n
    return "jpeg-other", 0


def kind(b):
    if b[:3] == b"\xff\xd8\xff":
        return jpeg_kind(b) + ("jpg",)
    if b[:8] == b"\x89PNG\r\n\x1a\n":
        w, h = struct.unpack(">II", b[16:24])
        return "png", w * h, "png"
    if b[:4] == b"RIFF" and b[8:12] == b"WEBP":
        return "webp", 0, "webp"
    if b[:4] in (b"GIF8",):
        return "gif", 0, "gif"
    if b[:2] == b"BM":
        return "bmp", 0, "bmp"
    return None


def main():
    src, out = sys.argv[1], sys.argv[2]
    stats = {}
    os.makedirs(os.path.join(out, "all"), exist_ok=True)
    for name in sorted(os.listdir(src)):
        path = os.path.abspath(os.path.join(src, name))
        if name.startswith(".") or not os.path.isfile(path):
            continue
        with open(path, "rb") as f:
            k = kind(f.read(1 << 16))
        if k is None:
            continue
        what, px, ext = k
        link = os.path.splitext(name)[0] + "." + ext
        os.makedirs(os.path.join(out, "kinds", what), exist_ok=True)
        os.symlink(path, os.path.join(out, "all", link))
        os.symlink(path, os.path.join(out, "kinds", what, link))
        s = stats.setdefault(what, [0, 0, 0, 0])
        s[0] += 1
        s[1] += os.path.getsize(path)
        if px:
            s[2] += px
            s[3] += 1
    for what, (n, size, px, known) in sorted(stats.items()):
        mp = f"{px / known / 1e6:.1f}" if known else "-"
        print(f"{what}\t{n}\t{size / 1e6:.1f}\t{mp}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Reproducible benchmark corpus for `make bench-fetch`.

Sources: photographs from Debian's plasma-workspace-wallpapers and mate-backgrounds packages
(GPL/LGPL/CC licensed artwork shipped by Debian). Variants are re-encoded deterministically
(seeded) with the pinned Pillow (setup.sh installs it; other versions encode other bytes).

Mixes:
  web     (default) what a web crawl meets: baseline and progressive JPEG, 4:2:0, 4:4:4, 4:2:2,
          greyscale, some EXIF-rotated, PNG (some with alpha) and WebP; median ~2.4 MP, ~8% at
          8-12 MP. The kind is in the file name (img0001-prog420.jpg), but the bench sniffs the
          bytes, so any directory of images works as a corpus.
  photos  the first corpus (corpus-v1): 80% baseline JPEG 4:2:0, 10% PNG, 10% WebP.

Usage: make_corpus.py OUT_DIR [COUNT] [--mix web|photos]
"""
import glob
import os
import random
import sys

import PIL
from PIL import Image

PILLOW = "13.0.0"
VERSION = {"web": "corpus-web-v1", "photos": "corpus-v1"}

# (kind, weight, extension, Pillow save arguments besides quality); weights sum to 1.
WEB_KINDS = [
    ("base420", 0.32, "jpg", dict(format="JPEG", subsampling=2)),
    ("prog420", 0.20, "jpg", dict(format="JPEG", subsampling=2, progressive=True)),
    ("prog444", 0.05, "jpg", dict(format="JPEG", subsampling=0, progressive=True)),
    ("base444", 0.18, "jpg", dict(format="JPEG", subsampling=0)),
    ("base422", 0.05, "jpg", dict(format="JPEG", subsampling=1)),
    ("grey", 0.04, "jpg", dict(format="JPEG")),
    ("png", 0.08, "png", dict(format="PNG", compress_level=6)),
    ("webp", 0.08, "webp", dict(format="WEBP")),
]


def sources():
    pats = ["/usr/share/wallpapers/*/contents/images/*.jpg", "/usr/share/wallpapers/*/contents/images/*.png",
            "/usr/share/backgrounds/mate/*/*.jpg", "/usr/share/backgrounds/mate/*/*.png"]
    files = sorted({f for p in pats for f in glob.glob(p)})
    # One (the largest) image per wallpaper directory: the others are resized copies.
    best = {}
    for f in files:
        key = os.path.dirname(f)
        if key not in best or os.path.getsize(f) > os.path.getsize(best[key]):
            best[key] = f
    return sorted(best.values())


def resized(im, mp):
    aspect = im.width / im.height
    w = int((mp * 1e6 * aspect) ** 0.5)
    return im.resize((w, int(w / aspect)), Image.BILINEAR)


def photos_variant(rng, i, im):
    """corpus-v1, unchanged: the same random draws in the same order."""
    r = rng.random()
    mp = rng.uniform(10, 12) if r < 0.1 else rng.choice([0.8, 1.2, 1.6, 2.0, 2.4, 3.0])
    v = resized(im, mp)
    kind = rng.random()
    if kind < 0.8:
        return v, f"img{i:04d}.jpg", dict(format="JPEG", quality=rng.choice([80, 85, 90]))
    if kind < 0.9:
        return v, f"img{i:04d}.png", dict(format="PNG", compress_level=6)
    return v, f"img{i:04d}.webp", dict(format="WEBP", quality=85)


def web_variant(rng, i, im):
    mp = rng.uniform(8, 12) if rng.random() < 0.08 else rng.choice([0.5, 1.0, 1.6, 2.4, 2.4, 3.0, 4.0])
    pick, acc = rng.random(), 0.0
    for kind, weight, ext, args in WEB_KINDS:
        acc += weight
        if pick < acc:
            break
    v = resized(im, mp)
    args = dict(args, quality=rng.choice([75, 80, 85, 90, 95]))
    if kind == "grey":
        v = v.convert("L")
    if kind == "png":
        del args["quality"]
        if rng.random() < 0.25:  # a cut-out: alpha outside an ellipse-ish region
            alpha = Image.new("L", v.size, 0)
            alpha.paste(255, (v.width // 8, v.height // 8, v.width * 7 // 8, v.height * 7 // 8))
            v = v.convert("RGBA")
            v.putalpha(alpha)
    if ext == "jpg" and rng.random() < 0.05:  # a phone photo stored sideways
        exif = Image.Exif()
        exif[0x0112] = 6
        args["exif"] = exif.tobytes()
        kind += "-rot"
    return v, f"img{i:04d}-{kind}.{ext}", args


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--mix")]
    mix = next((a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--mix=")), "web")
    if mix not in VERSION or not args:
        sys.exit(__doc__)
    if PIL.__version__ != PILLOW:
        sys.exit(f"Pillow {PIL.__version__} found, the corpus needs {PILLOW} "
                 f"(pip install pillow=={PILLOW}, or run scripts/setup.sh)")
    out = args[0]
    count = int(args[1]) if len(args) > 1 else 400
    stamp = os.path.join(out, ".stamp")
    want = f"{VERSION[mix]} {count}"
    if os.path.exists(stamp) and open(stamp).read() == want:
        print(f"corpus up to date in {out}")
        return
    os.makedirs(out, exist_ok=True)
    for old in glob.glob(os.path.join(out, "img*")):
        os.remove(old)
    srcs = sources()
    if not srcs:
        sys.exit("no wallpapers found: install plasma-workspace-wallpapers mate-backgrounds")
    rng = random.Random(20261122)
    variant = web_variant if mix == "web" else photos_variant
    cache, sizes = {}, []
    for i in range(count):
        src = srcs[i % len(srcs)]
        if src not in cache:
            cache[src] = Image.open(src).convert("RGB")
        v, name, save = variant(rng, i, cache[src])
        v.save(os.path.join(out, name), **save)
        sizes.append(v.width * v.height)
    sizes.sort()
    open(stamp, "w").write(want)
    print(f"wrote {count} images ({mix} mix) from {len(srcs)} photos to {out}; median "
          f"{sizes[len(sizes)//2]/1e6:.1f} MP, mean {sum(sizes)/len(sizes)/1e6:.1f} MP, max {sizes[-1]/1e6:.1f} MP")


if __name__ == "__main__":
    main()

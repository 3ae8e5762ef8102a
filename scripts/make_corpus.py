#!/usr/bin/env python3
"""Reproducible benchmark corpus for `make bench-fetch`.

Sources: photographs from Debian's plasma-workspace-wallpapers and mate-backgrounds packages
(GPL/LGPL/CC licensed artwork shipped by Debian). Variants are re-encoded deterministically
(seeded) at realistic sizes: median ~1-3 MP, ~10% at 10-12 MP; ~80% JPEG, 10% PNG, 10% WebP.

Usage: make_corpus.py OUT_DIR [COUNT]
"""
import glob
import hashlib
import os
import random
import sys

from PIL import Image

VERSION = "corpus-v1"


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


def main():
    out = sys.argv[1]
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 400
    stamp = os.path.join(out, ".stamp")
    want = f"{VERSION} {count}"
    if os.path.exists(stamp) and open(stamp).read() == want:
        print(f"corpus up to date in {out}")
        return
    os.makedirs(out, exist_ok=True)
    srcs = sources()
    if not srcs:
        sys.exit("no wallpapers found: install plasma-workspace-wallpapers mate-backgrounds")
    rng = random.Random(20261122)
    cache = {}
    sizes = []
    for i in range(count):
        src = srcs[i % len(srcs)]
        if src not in cache:
            cache[src] = Image.open(src).convert("RGB")
        im = cache[src]
        r = rng.random()
        mp = rng.uniform(10, 12) if r < 0.1 else rng.choice([0.8, 1.2, 1.6, 2.0, 2.4, 3.0])
        aspect = im.width / im.height
        w = int((mp * 1e6 * aspect) ** 0.5)
        h = int(w / aspect)
        v = im.resize((w, h), Image.BILINEAR)
        kind = rng.random()
        if kind < 0.8:
            name, args = f"img{i:04d}.jpg", dict(format="JPEG", quality=rng.choice([80, 85, 90]))
        elif kind < 0.9:
            name, args = f"img{i:04d}.png", dict(format="PNG", compress_level=6)
        else:
            name, args = f"img{i:04d}.webp", dict(format="WEBP", quality=85)
        v.save(os.path.join(out, name), **args)
        sizes.append(w * h)
    sizes.sort()
    open(stamp, "w").write(want)
    print(f"wrote {count} images from {len(srcs)} photos to {out}; median {sizes[len(sizes)//2]/1e6:.1f} MP, "
          f"max {sizes[-1]/1e6:.1f} MP")


if __name__ == "__main__":
    main()

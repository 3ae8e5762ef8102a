#!/usr/bin/env python3
"""Inputs that try to blow up a fetcher's memory: 24 MP PNGs (72 MB decoded each) and
30 MB bodies that are not images. Usage: make_adversarial.py OUT_DIR"""
import os
import sys

from PIL import Image

out = sys.argv[1]
stamp = os.path.join(out, ".stamp")
if os.path.exists(stamp):
    sys.exit(0)
os.makedirs(out, exist_ok=True)
for i in range(4):
    # A gradient compresses well (small file) but decodes to the full 24 MP.
    im = Image.linear_gradient("L").resize((6000, 4000)).convert("RGB")
    im.save(os.path.join(out, f"big{i}.png"), compress_level=1)
block = os.urandom(1 << 20)
for i in range(8):
    with open(os.path.join(out, f"garbage{i}.jpg"), "wb") as f:
        f.write(b"\xff\xd8\xff" + block * 30)
open(stamp, "w").write("v1")

#!/usr/bin/env python3
"""Baseline for `make bench-detector`: the same TorchScript model from Python (threshold +
torchvision NMS included), same thread count, same textured 640x640 inputs."""
import json
import os
import statistics
import sys
import time

import numpy as np
import torch
import torchvision

model_path = sys.argv[1]
threads = int(os.environ.get("BENCH_THREADS", os.cpu_count()))
batches = [int(b) for b in os.environ.get("BENCH_BATCHES", "1,2,4,8").split(",")]
torch.set_num_threads(threads)
cfg = json.load(open(model_path.rsplit(".", 1)[0] + ".json"))
model = torch.jit.load(model_path).eval()
mean = torch.tensor(cfg["mean"]).view(1, 3, 1, 1)
idx = np.arange(640 * 640 * 3)


def image(seed):
    return torch.from_numpy(((idx * 31 + seed * 17) % 251).astype(np.uint8).reshape(640, 640, 3))


def detect(x_u8):
    x = x_u8.permute(0, 3, 1, 2).flip(1).float() - mean
    boxes, scores, lms = model(x)
    out = []
    for b in range(x.shape[0]):
        keep = scores[b] > cfg["score_threshold"]
        bx, sc = boxes[b][keep], scores[b][keep]
        out.append(torchvision.ops.nms(bx, sc, cfg["nms_iou"]))
    return out


print(f"python baseline: torch {torch.__version__}, threads {threads}")
with torch.no_grad():
    for b in batches:
        x = torch.stack([image(i) for i in range(b)])
        for _ in range(2):
            detect(x)
        iters = int(os.environ.get("BENCH_ITERS", max(16 // b, 3)))
        times = []
        for _ in range(iters):
            t = time.perf_counter()
            detect(x)
            times.append(time.perf_counter() - t)
        med = statistics.median(times)
        print(f"  batch {b:>4}: {b / med:>9.1f} images/s (median of {iters}, {med * 1e3:.1f} ms/batch)")

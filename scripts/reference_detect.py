#!/usr/bin/env python3
"""Reference detections for the accuracy test: the same TorchScript model, run from Python,
with torchvision's NMS. Reads a JSON list of letterboxed u8 tensors (raw HWC RGB files plus
their letterbox geometry) and prints {name: [faces]} with boxes in original pixels.

Usage: reference_detect.py MODEL.pt INPUTS.json
"""
import json
import sys

import numpy as np
import torch
import torchvision


def main():
    model_path, inputs_path = sys.argv[1], sys.argv[2]
    cfg = json.load(open(model_path.rsplit(".", 1)[0] + ".json"))
    model = torch.jit.load(model_path).eval()
    mean = torch.tensor(cfg["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(cfg["std"]).view(1, 3, 1, 1)
    out = {}
    for item in json.load(open(inputs_path)):
        h, w = item["height"], item["width"]
        x = torch.from_numpy(np.fromfile(item["tensor"], dtype=np.uint8).reshape(1, h, w, 3))
        x = x.permute(0, 3, 1, 2)
        if cfg["channel_order"] == "BGR":
            x = x.flip(1)
        x = (x.float() - mean) / std
        with torch.no_grad():
            boxes, scores, lms = model(x)
        boxes, scores, lms = boxes[0], scores[0], lms[0]
        keep = scores > cfg["score_threshold"]
        boxes, scores, lms = boxes[keep], scores[keep], lms[keep]
        kept = torchvision.ops.nms(boxes, scores, cfg["nms_iou"])
        s, ox, oy = item["scale"], item["offset_x"], item["offset_y"]
        ow, oh = item["original_width"], item["original_height"]
        faces = []
        for i in kept.tolist():
            b = boxes[i].tolist()
            faces.append({
                "box": [min(max((b[0] - ox) / s, 0), ow), min(max((b[1] - oy) / s, 0), oh),
                        min(max((b[2] - ox) / s, 0), ow), min(max((b[3] - oy) / s, 0), oh)],
                "score": float(scores[i]),
                "landmarks": [((v - ox) if k % 2 == 0 else (v - oy)) / s for k, v in enumerate(lms[i].tolist())],
            })
        out[item["name"]] = faces
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    torch.set_num_threads(2)
    main()

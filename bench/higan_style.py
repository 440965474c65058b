"""The baseline every speed-up is measured against: scoring written the way HiGAN's code does it.

Batches of 4 through torch eager, images quantized to uint8 and copied to the host, a PIL resize
per image, normalization in NumPy, then the predictor; category and attribute scores assembled
on the host. Same numbers as the fused pass (checked by the benchmarks), much more overhead.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from rescore.export.session import quantize_images

MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)
BATCH = 4  # HiGAN's default batch size


def naive_scores(generator, predictor, wp: np.ndarray, device: torch.device) -> np.ndarray:
    """wp [N, L, D] -> Places365 scores [N, 365 + 102], reference-style (see the module doc)."""
    network = predictor.network
    outputs = []
    for start in range(0, len(wp), BATCH):
        with torch.no_grad():
            images = generator.synthesize(torch.from_numpy(wp[start : start + BATCH]).to(device))
        pixels = quantize_images(images).cpu().numpy()  # [4, H, W, 3] uint8 on the host
        batch = []
        for image in pixels:
            resized = Image.fromarray(image).resize((224, 224), Image.BILINEAR)
            batch.append(
                ((np.asarray(resized, np.float32) / 255.0 - MEAN) / STD).transpose(2, 0, 1)
            )
        with torch.no_grad():
            features = network.pooled_features(torch.from_numpy(np.stack(batch)).to(device))
            # HiGAN clamps the fc weight at >= 0 in place (a Places365 demo quirk)
            logits = features @ predictor.category_weight().T + network.fc.bias
        categories = torch.softmax(logits, dim=1).cpu().numpy()
        attributes = features.cpu().numpy() @ predictor.attribute_weight.cpu().numpy().T
        outputs.append(np.concatenate([categories, attributes], axis=1))
    return np.concatenate(outputs)

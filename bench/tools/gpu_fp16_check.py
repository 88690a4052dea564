"""On a GPU: the bundled image network in fp16 autocast against fp32, same images, same process.

    python bench/tools/gpu_fp16_check.py      (run by bench/gpu.sh; needs CUDA)

Reports images/s of each and how far the fp16 ConSE and visual vectors are from the fp32 ones.
The images are synthetic (gradients and noise): agreement, not accuracy, is measured.
"""

import time

import numpy as np
import torch
from PIL import Image

from retrieval.embedders.bundled import BundledEmbedder


def images(n: int) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 255, 224, dtype=np.float32)
    out = []
    for _ in range(n):
        base = rng.uniform(0, 1, 3)[None, None, :] * ramp[None, :, None] + rng.normal(0, 30, (224, 224, 3))
        out.append(Image.fromarray(np.clip(base, 0, 255).astype(np.uint8)))
    return out


def main() -> None:
    batch = images(512)
    embedder = BundledEmbedder("visual", device="cuda")
    rows = {}
    for half in (False, True):
        embedder.half = half
        embedder.embed_images(batch[:256])  # warm-up
        torch.cuda.synchronize()
        start = time.perf_counter()
        out = embedder.embed_images(batch)
        torch.cuda.synchronize()
        rows[half] = (len(batch) / (time.perf_counter() - start), out.vectors)
    cos = (rows[True][1] * rows[False][1]).sum(1)
    print("| dtype | batch | images/s (incl. numpy ConSE) |\n|---|---|---|")
    for half, (rate, _) in rows.items():
        print(f"| {'fp16 autocast' if half else 'fp32'} | {embedder.batch_size} | {rate:,.0f} |")
    print(f"\nfp16 vs fp32 vectors: cosine min {cos.min():.5f}, mean {cos.mean():.5f}")


if __name__ == "__main__":
    main()

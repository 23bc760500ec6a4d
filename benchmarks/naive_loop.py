"""The baseline benchmarks/bench.py compares against, run by it as a script in a process of its own, never imported:
the Accelerate image-classification example's defaults (fp32, every layer trainable, torchvision PIL transforms
in the main process, no loader workers), with none of food101hf's process settings (allocator, OpenMP).

    python benchmarks/naive_loop.py FOLDER MODEL IMAGE_SIZE BATCH_SIZE LR STEPS

After two warm-up steps it prints "ready"; then each line read from stdin times STEPS training steps and prints
their images/s.
"""

import sys
import time
from pathlib import Path

import numpy as np
import timm
import torch
from PIL import Image
from torchvision import transforms


def main(folder: str, model_name: str, image_size: str, batch_size: str, lr: str, steps: str) -> None:
    image_size, batch_size, steps = int(image_size), int(batch_size), int(steps)
    transform = transforms.Compose([transforms.RandomResizedCrop(image_size), transforms.RandomHorizontalFlip(),
                                    transforms.ToTensor(),
                                    transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
    files = sorted((Path(folder) / "train").glob("*/*.jpg"))
    labels = {name: i for i, name in enumerate(sorted({f.parent.name for f in files}))}
    rng = np.random.default_rng(0)
    model = timm.create_model(model_name, num_classes=len(labels))
    optimizer = torch.optim.AdamW(model.parameters(), lr=float(lr))
    model.train()

    def run(count: int) -> None:
        for _ in range(count):
            batch = rng.choice(len(files), batch_size, replace=False)
            images = torch.stack([transform(Image.open(files[i]).convert("RGB")) for i in batch])
            targets = torch.tensor([labels[files[i].parent.name] for i in batch])
            loss = torch.nn.functional.cross_entropy(model(images), targets)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()

    run(2)
    print("ready", flush=True)
    for _ in sys.stdin:
        start = time.perf_counter()
        run(steps)
        print(steps * batch_size / (time.perf_counter() - start), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])

"""Train a tiny encoder-decoder on synthetic disc images and report loss and pixel accuracy.

Runs on the CPU with the NumPy reference backend in well under a minute:

    python examples/quickstart.py
"""

import numpy as np

import segcore
import segcore.functional as F
from segcore import nn, optim


def make_batch(n: int, size: int, rng: np.random.Generator):
    """Images with one bright disc each on a noisy background; label 1 inside the disc, 0 outside."""
    yy, xx = np.mgrid[:size, :size]
    images = np.empty((n, 3, size, size), dtype=np.float32)
    labels = np.empty((n, size, size), dtype=np.int64)
    for i in range(n):
        cy, cx = rng.uniform(size * 0.25, size * 0.75, size=2)
        radius = rng.uniform(size * 0.12, size * 0.3)
        inside = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
        labels[i] = inside
        images[i] = rng.normal(0.0, 0.3, size=(3, size, size)) + inside * rng.uniform(0.8, 1.2, size=(3, 1, 1))
    return segcore.tensor(images), segcore.tensor(labels)


class TinySegmenter(nn.Module):
    """conv-BN-ReLU, 2x max-pool, conv-BN-ReLU, bilinear upsampling back to the input, 1x1 classifier."""

    def __init__(self, num_classes: int, width: int, rng: np.random.Generator) -> None:
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1, bias=False, rng=rng),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, width, 3, padding=2, dilation=2, bias=False, rng=rng),
            nn.BatchNorm2d(width),
            nn.ReLU(),
        )
        self.classifier = nn.Conv2d(width, num_classes, 1, rng=rng)

    def forward(self, x):
        features = self.encoder(x)
        logits = self.classifier(features)
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


def main() -> None:
    rng = np.random.default_rng(0)
    images, labels = make_batch(8, 32, rng)
    model = TinySegmenter(num_classes=2, width=16, rng=rng)
    optimizer = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    print(f"model: {model.num_parameters()} parameters, backend {images.backend.name}")
    for step in range(30):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(images), labels)
        loss.backward()
        optimizer.step()
        if step % 5 == 0 or step == 29:
            print(f"step {step:2d}  loss {loss.item():.4f}")
    model.eval()
    with segcore.no_grad():
        test_images, test_labels = make_batch(8, 32, rng)
        prediction = model(test_images).numpy().argmax(axis=1)
    accuracy = float((prediction == test_labels.numpy()).mean())
    print(f"pixel accuracy on fresh images: {accuracy:.3f}")


if __name__ == "__main__":
    main()

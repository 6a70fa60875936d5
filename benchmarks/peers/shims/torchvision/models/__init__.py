"""Only probed by torchmetrics (feature-extractor metrics careamics never uses)."""

from torchvision._missing import missing


def __getattr__(name: str):
    return missing(__name__, name)

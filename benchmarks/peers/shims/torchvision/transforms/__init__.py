from torchvision._missing import missing

from . import functional  # noqa: F401


def __getattr__(name: str):
    return missing(__name__, name)

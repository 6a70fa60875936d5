"""A stand-in for torchvision in the CAREamics benchmark venv.

PyPI's torchvision for torch 2.13 is a CUDA build that cannot load next to the CPU torch wheel, and careamics
0.3.5 pins torchvision<=0.26 (torch 2.11). careamics needs only ``__version__`` and
``transforms.functional.center_crop`` (LVAE); torchmetrics probes ``torchvision.models``.
"""

__version__ = "0.26.0"

"""fruitres: fine-tune torchvision ResNets on Fruits-360 with Lightning and Hydra."""

__version__ = "0.1.0"

"""fruitres: fine-tune torchvision ResNets on Fruits-360 with Lightning and Hydra."""

from fruitres.run import resolvers  # noqa: F401  (registers the configs' OmegaConf resolvers)

__version__ = "0.1.0"

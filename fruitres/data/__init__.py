"""Fruits-360 folders as a LightningDataModule, the embedded dataset, image cache, checks, download."""

"""The LightningModule (FruitClassifier), backbone building and stages, learning-rate schedules."""

"""What runs leave for people to read: figures, the eval report, predictions, the sweep table."""

"""One small module per architecture, each reading like the model's equations."""

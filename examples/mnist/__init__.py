"""MNIST walk-through: train a small classifier, export versions 1 and 2, query them over gRPC."""

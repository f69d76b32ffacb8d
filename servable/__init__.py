"""servable: a pure-Python model server that speaks TensorFlow Serving's APIs."""

__version__ = "0.1.0"

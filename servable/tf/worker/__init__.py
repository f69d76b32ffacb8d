"""SavedModels in a model worker process (``--tensorflow_worker_process``).

``client.ModelProcess`` (the server's side) starts ``main`` (the worker) and proxies each
loaded version as a ``client.RemoteSavedModel``; ``wire`` frames the messages.
"""

from servable.tf.worker.client import ModelProcess, RemoteSavedModel

__all__ = ["ModelProcess", "RemoteSavedModel"]

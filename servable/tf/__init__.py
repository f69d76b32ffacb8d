"""Everything TensorFlow: SavedModel loader and servable, signatures, tensors, warmup.

Submodules are imported explicitly (``from servable.tf.saved_model import ...``); this
package imports nothing itself, so ``servable.tf.tensors`` stays usable without loading
TensorFlow.
"""

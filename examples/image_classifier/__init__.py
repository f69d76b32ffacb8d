"""Image-classifier walk-through: a Keras application behind a JPEG-bytes signature."""

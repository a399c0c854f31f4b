"""Model parts. Importing this package registers every serialisable class, so
`keras.models.load_model("model.keras")` works after `import nasfpn_tf.modeling`."""

from nasfpn_tf.modeling import factory  # noqa: F401  (imports and registers every part)

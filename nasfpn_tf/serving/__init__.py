"""Deployment: SavedModel for serving, TFLite for devices (see export_lib)."""

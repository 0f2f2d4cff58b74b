"""Data pipeline: transforms, samplers and the image dataset wrapper."""

"""Using a trained detector: model bundles, ONNX export, predict on new X-rays."""

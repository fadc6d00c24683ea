"""Exporter: recipe validation, quantization, format writers, verification and manifests."""

"""One module per artifact format; each only produces a file, export.py verifies and publishes it."""

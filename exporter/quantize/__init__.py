"""One module per quantizer; each declares what it quantizes and returns facts for the manifest."""

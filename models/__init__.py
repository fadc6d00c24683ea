"""Models: loading (open_clip, timm, local folders, the built-in model), wrappers, preprocessing, datasets."""

"""One module per artifact format; each only produces a file, export.py verifies and publishes it."""

# what every writer says when a model's forward pins the batch size (the file would fail at any other batch)
FREE_BATCH_FIX = ("it turns the batch dimension into a Python int, e.g. len(x) or int(x.shape[0]); use x.shape[0] / "
                  "x.size(0) directly in tensor ops so the batch stays free")

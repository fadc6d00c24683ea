"""``edgeclip inspect``: before exporting, which layers int8 will hurt and why.

For every Linear the int8 routes quantize: its input's range and outlier ratio on calibration images, and the
error int8 on that layer alone adds to the model's output (``quantize.mixed.FakeInt8``), without and with
SmoothQuant; for static int8, each transformer block's residual adds too (``<block>:add``, int8 in static .pte);
for every LayerNorm that feeds Linears, its outlier channels.  The same measurements drive SmoothQuant and
``--max-drop``, so what this prints is what export will act on.
"""

from __future__ import annotations

import torch

from edgeclip.errors import EdgeclipError

OUTLIER_RATIO = 8.0   # max channel range / median channel range above which a per-tensor int8 scale starves the rest


def inspect_int8(model: str | torch.nn.Module = "edgeclip-fmnist", *, pretrained: str | None = None,
                 data: str = "fashion-mnist", calib_data: str | None = None, calib_size: int = 128, scheme: str = "static",
                 alpha: float = 0.5, preprocess=None, labels=None, progress: bool = False) -> dict:
    """The report ``edgeclip inspect`` prints (``model``: a spec, or a module with its ``preprocess``)."""
    from edgeclip.exporter.quantize.mixed import RESIDUAL, FakeInt8, residual_adds_int8
    from edgeclip.exporter.quantize.outliers import channel_ranges, norm_feeds, outlier_channels, range_ratio
    from edgeclip.exporter.quantize.smooth import smooth
    from edgeclip.models.datasets import load_calibration, load_dataset
    from edgeclip.preparation import prepare

    if scheme not in ("static", "dynamic"):
        raise EdgeclipError(f"unknown --scheme {scheme!r}; use static or dynamic")
    if not (1 <= calib_size <= 10_000):
        raise EdgeclipError(f"--calib-size must be between 1 and 10000 (got {calib_size})")
    calib = load_calibration(calib_data or data, calib_size, eval_spec=data)
    prep = prepare(model, pretrained=pretrained, data=load_dataset(data, "test", 2), preprocess=preprocess, labels=labels)
    x = calib.tensors(prep.preprocess).numpy()
    example = torch.from_numpy(x[:2])
    module = prep.module.eval()
    feeds = norm_feeds(module, example)
    ranges = channel_ranges(module, feeds, x)
    adds = residual_adds_int8("pte", scheme)   # static: the blocks' residual adds too (int8 in static .pte only)
    before = {s.layer: s for s in FakeInt8(module, x, scheme, images=len(x), residual_adds=adds).sensitivity()}
    smoothed = smooth(module, x, example, alpha).module if feeds else module
    after = {s.layer: s.rel_error for s in FakeInt8(smoothed, x, scheme, images=len(x), residual_adds=adds).sensitivity()}
    layers = [{"layer": s.layer, "input_abs_max": round(s.act_range, 3), "input_outlier_ratio": round(s.act_outlier_ratio, 1),
               "int8_rel_error": s.rel_error, "int8_rel_error_smoothquant": after.get(s.layer),
               **({"int8_in": "static .pte only (the block's residual adds; its output measured)"}
                  if s.layer.endswith(RESIDUAL) else {})}
              for s in sorted(before.values(), key=lambda s: -s.rel_error)]
    norms = []
    for f in feeds:
        r = ranges[f.norm]
        norms.append({"norm": f.norm, "feeds": list(f.consumers), "channels": int(len(r)),
                      "outlier_channels": outlier_channels(r, OUTLIER_RATIO),
                      "range_ratio": round(range_ratio(r), 1)})
    hostile = [n for n in norms if n["outlier_channels"]]
    linears = [v for v in layers if not v["layer"].endswith(RESIDUAL)]   # what SmoothQuant acts on
    total_before = sum(v["int8_rel_error"] for v in linears)
    total_after = sum(v["int8_rel_error_smoothquant"] or 0.0 for v in linears)
    advice = []
    if hostile:
        advice.append(f"{len(hostile)} of {len(norms)} LayerNorm outputs carry outlier channels (> {OUTLIER_RATIO:g}x the "
                      "median range): per-tensor int8 activations lose the other channels there")
    if total_before > 0:
        advice.append(f"SmoothQuant (alpha {alpha}, on by default for int8) changes the summed per-layer int8 error "
                      f"{total_before:.2e} -> {total_after:.2e} ({total_before / max(total_after, 1e-30):.1f}x)")
    after_sq = [v for v in layers if v["int8_rel_error_smoothquant"] is not None]
    if after_sq and feeds:
        top = max(after_sq, key=lambda v: v["int8_rel_error_smoothquant"])
        advice.append(f"with SmoothQuant the most sensitive is {top['layer']} ({top['int8_rel_error_smoothquant']:.2e} alone)"
                      + ("; residual adds are int8 in static .pte only" if top["layer"].endswith(RESIDUAL) else ""))
    if layers:
        worst = layers[0]
        advice.append(f"most sensitive layer: {worst['layer']} ({worst['int8_rel_error']:.2e} alone); "
                      "if int8 still costs too much, --max-drop PT keeps the worst layers float, or --float-layer NAME")
    return {"model": str(prep.source.get("model")), "scheme": scheme, "calibration": f"{calib.name} {calib.split} "
            f"({len(calib)} images)", "metric": "relative squared change of the model output with only that layer int8",
            "layers": layers, "norms": norms, "advice": advice}

"""``edgeclip`` command line: parse, validate, call the Python API, print.  No logic lives here."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from edgeclip.errors import EdgeclipError
from edgeclip.benchmarks.targets import get_target, target_names
from edgeclip.exporter.quantize.onnxruntime_static import CALIBRATIONS
from edgeclip.exporter.routes import choices as route_choices
from edgeclip.runtimes.cpu_features import usable_cores

FORMAT_CHOICES = ["onnx", "ptl", "pte", "pt2", "all"]


class _Group(click.Group):
    """Turns user mistakes into one line + exit code (``--debug`` keeps the traceback), and keeps library
    messages out of the output: one summary line after the command, the raw text with ``--verbose``."""

    def invoke(self, ctx):
        from edgeclip.native_output import captured

        ctx.ensure_object(dict)
        error: tuple[str, int] | None = None
        cap = None
        try:
            with captured() as cap:
                try:
                    return super().invoke(ctx)
                except (EdgeclipError, ModuleNotFoundError, KeyboardInterrupt) as e:
                    own_module = isinstance(e, ModuleNotFoundError) and (e.name or "").startswith("edgeclip")
                    if own_module or (ctx.obj.get("debug") and not isinstance(e, KeyboardInterrupt)):
                        raise   # a missing edgeclip module is a bug (keep its traceback), not a package to install
                    error = _user_error(e)
        finally:   # once the capture has ended, so these lines reach the real stderr
            _report(ctx, cap, error)
        ctx.exit(error[1])


def _user_error(e: BaseException) -> tuple[str, int]:
    """(message, exit code) for what a user can fix or chose to stop."""
    if isinstance(e, KeyboardInterrupt):
        return "Interrupted: nothing partial was written.", 130
    if isinstance(e, ModuleNotFoundError):   # an optional dependency this command needs is not installed
        from edgeclip.errors import missing_dependency

        return f"Error: {missing_dependency(e.name or str(e))}", 2
    return f"Error: {e}", e.exit_code


def _report(ctx, cap, error: tuple[str, int] | None) -> None:
    if cap is not None and (ctx.obj.get("verbose") or ctx.obj.get("debug")):
        for line in cap.lines:
            click.echo(line, err=True)
    elif cap is not None and cap.summary():
        click.secho(f"Note: {cap.summary()}", dim=True, err=True)
    if error is not None:
        click.secho(error[0], fg="red", err=True)


def _set_verbose(ctx, param, value):
    if value:
        ctx.ensure_object(dict)
        ctx.obj["verbose"] = True


verbose_option = click.option("--verbose", "-v", is_flag=True, expose_value=False, callback=_set_verbose,
                              help="Show the native library messages (torch, ExecuTorch, onnxruntime) instead of a summary line.")


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="edgeclip")
@click.option("--debug", is_flag=True, help="Show full tracebacks instead of one-line errors (and every library message).")
@verbose_option
@click.pass_context
def main(ctx, debug):
    """Compress, export (.onnx / .ptl / .pte), verify and benchmark CLIP and ViT image models.

    \b
    Typical use (offline, built-in Fashion-MNIST CLIP):
      edgeclip export --quant int8          # writes out/<name>/{model.onnx, manifest.json}
      edgeclip bench --target cpu           # accuracy + latency of every artifact in out/
    """
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    # OpenMP keeps its default wait policy (spin briefly, then sleep), as an app's process does.  PASSIVE, set here
    # until 2026-12-03, made every parallel region of a torch process wake sleeping threads: a bf16 ViT-B-32 .ptl took
    # 43-47 ms at batch 1 under it against 24.4 ms without (same process, same input), and the eager baseline slowed
    # too, which inflated every "speed-up vs eager".  OMP_WAIT_POLICY from the environment is still honoured.


def _table(rows: list[dict], cols: list[tuple[str, str, str]]) -> str:
    cells = [[h for _, h, _ in cols]]
    for r in rows:
        line = []
        for key, _, fmt in cols:
            v = r.get(key)
            line.append("-" if v is None else fmt.format(v) if not isinstance(v, str) else v)
        cells.append(line)
    widths = [max(len(row[i]) for row in cells) for i in range(len(cols))]
    # no padding after the last column: a terminal or a diff should not see trailing spaces
    out = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    out.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(out)


def _formats(values: tuple[str, ...]) -> tuple[str, ...]:
    out: list[str] = []
    for v in values:
        out.extend(x.strip() for x in v.split(",") if x.strip())
    return tuple(out) or ("onnx",)


COMPRESS_FLAGS = ("svd_ratio", "svd_energy", "svd_rank", "svd_tower", "svd_layers", "svd_blocks", "svd_aware", "prune_blocks",
                  "mlp_keep", "heads_keep", "prune_score", "prune_tower", "sparsity", "sparsity_scope", "token_keep",
                  "token_blocks", "token_merge", "token_merge_blocks", "heal_steps", "heal_lr", "heal_batch", "heal_images")


def compress_options(f):
    """The compression flags (exporter/compress), shared by every command that builds a model."""
    opts = [
        click.option("--svd", "svd_ratio", type=float, default=None,
                     help="Low-rank factorise Linears keeping this fraction of each layer's parameters (0-1), e.g. 0.5."),
        click.option("--svd-energy", type=float, default=None, help="...or the smallest rank keeping this fraction of singular-value energy."),
        click.option("--svd-rank", type=int, default=None, help="...or a fixed rank (refused where it would not save parameters)."),
        click.option("--svd-tower", default=None, help="vision, text or both [vision]."),
        click.option("--svd-layers", default=None, help="attn, mlp, all, or attn_in,attn_out,fc1,fc2 [all]."),
        click.option("--svd-blocks", default=None, help="all, first:N, last:N or indices like 0-3,5 [all]."),
        click.option("--svd-aware/--no-svd-aware", default=None,
                     help="Data-aware SVD: whiten by calibration input covariance (needs calibration images) [off]."),
        click.option("--prune-blocks", multiple=True,
                     help="Remove transformer blocks: vision:4,5 / text:-1 / vision:auto:2 (greedy by calibration agreement); repeatable."),
        click.option("--mlp-keep", type=float, default=None, help="Keep this fraction of MLP hidden neurons (physically removed) [1]."),
        click.option("--heads-keep", type=float, default=None, help="Keep this fraction of attention heads (physically removed) [1]."),
        click.option("--prune-score", type=click.Choice(["magnitude", "activation"]), default=None,
                     help="How neurons / heads are ranked [activation: on calibration images]."),
        click.option("--prune-tower", default=None, help="Tower for --mlp-keep / --heads-keep / --sparsity: vision, text, both [vision]."),
        click.option("--sparsity", type=float, default=None,
                     help="Zero this fraction of weights by magnitude (reported: no size or speed gain on dense backends)."),
        click.option("--sparsity-scope", type=click.Choice(["global", "layer"]), default=None, help="Magnitude threshold scope [global]."),
        click.option("--token-keep", type=float, default=None,
                     help="Vision token reduction: keep this fraction of patch tokens at each reduction block (static shapes)."),
        click.option("--token-blocks", default=None, help="Blocks that reduce tokens, e.g. 4,8 [L/3 and 2L/3]."),
        click.option("--token-merge", type=click.IntRange(min=0), default=None,
                     help="Vision token merging (ToMe): merge this many patch tokens into similar ones at each merging block (static shapes)."),
        click.option("--token-merge-blocks", default=None, help="Blocks that merge tokens: all, first:N, last:N or indices [all]."),
        click.option("--heal-steps", type=int, default=None, help="Distil the compressed model toward the original for N steps [0: off]."),
        click.option("--heal-lr", type=float, default=None, help="Healing learning rate [1e-4]."),
        click.option("--heal-batch", type=int, default=None, help="Healing batch size [64]."),
        click.option("--heal-images", type=int, default=None, help="Unlabelled calibration images healing trains on [1000]."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def compress_dict(base: dict | None, kwargs: dict) -> dict | None:
    """Flag values over a recipe's ``compress`` table; None when nothing asks for compression."""
    given = {k: kwargs.pop(k) for k in COMPRESS_FLAGS}
    given["prune_blocks"] = list(given["prune_blocks"]) or None
    merged = {**(base or {}), **{k: v for k, v in given.items() if v is not None}}
    return merged or None


@main.command()
@verbose_option
@click.option("--model", "-m", default=None, help="edgeclip-fmnist (default), an open_clip name (ViT-B-32), a model folder, or timm:<name>.")
@click.option("--pretrained", default=None, help="Pretrained tag (openai, laion2b_s34b_b79k; 'hub' for timm), a checkpoint file, or 'none' (random weights).")
@click.option("--task", type=click.Choice(["classifier", "image-encoder", "text-encoder"]), default=None, help="What to export [classifier].")
@click.option("--quant", type=click.Choice(route_choices("quant")), default=None, help="Precision of the artifact [none].")
@click.option("--scheme", type=click.Choice(route_choices("scheme")), default=None, help="int8 scheme [dynamic].")
@click.option("--backend", type=click.Choice(route_choices("backend")), default=None,
              help="Kernel backend the artifact targets [the format's own: onnxruntime for onnx, qnnpack for ptl "
                   "(cuda for fp16/bf16 ptl, onednn for bf16 ptl on a cpu target), xnnpack for pte].")
@click.option("--target", type=click.Choice(["cpu", "mobile", "cuda"]), default=None,
              help="Where the artifact will run [cuda for --quant fp16/bf16, else cpu]; fp16 needs cuda; bf16 runs on "
                   "cuda, or on cpu where the CPU has AMX-BF16 / AVX512-BF16 (.ptl, oneDNN).")
@click.option("--format", "formats", multiple=True,
              help=f"{', '.join(route_choices('format'))} or all; repeat or comma-separate [onnx]. all: every format "
                   "of the precision except pt2 (x86 int8 compiled for this CPU; needs g++: name it). auto: export the CPU "
                   "routes (fp32 / int8 .onnx, .pte, .ptl; int8 .pt2 where g++ is here), bench them here and keep the "
                   "fastest within 0.3 top-1 points of fp32 (--target cpu).")
@click.option("--data", default=None, help="Labelled set for class names and verification images [fashion-mnist]; e.g. cifar100:/path, folder:/path.")
@click.option("--labels", type=click.Path(), default=None, help="Class names file (one per line or a JSON list), instead of the dataset's.")
@click.option("--calib-data", default=None, help="Calibration images (a train split or folder, never the eval split).")
@click.option("--calib-size", type=int, default=None, help="Number of calibration images [256].")
@click.option("--calib-method", type=click.Choice(CALIBRATIONS), default=None,
              help="static int8 activation ranges. .onnx: onnxruntime's calibrator [percentile]; .pte / .ptl: their "
                   "HistogramObserver unless auto. auto (every format but .pt2): per tensor, the range (minmax / percentile / "
                   "entropy or histogram search / MSE clip) with the lowest output-weighted error on the calibration images.")
@click.option("--bias-correction/--no-bias-correction", default=None,
              help="static int8 .onnx: shift each int8 Linear's bias so its mean output on the calibration images equals "
                   "fp32's [off].")
@click.option("--keep-float", multiple=True, help="ONNX node name to keep in float (static int8); repeatable.")
@click.option("--sensitive-float", type=int, default=None,
              help="Also keep the K ONNX nodes with the worst measured int8 error float (static) [3].")
@click.option("--max-drop", type=float, default=None, metavar="PT",
              help="int8: keep the layers int8 hurts most in float until top-1 on held-out calibration images is within "
                   "PT points of fp32 (accuracy control; the manifest lists them) [off].")
@click.option("--accept-drop", type=float, default=None, metavar="PT",
              help="Compression: accept up to PT top-1 points of cost against the uncompressed model (recorded in the "
                   "manifest) [--max-drop, else 1].")
@click.option("--float-layer", "float_layers", multiple=True, metavar="MODULE",
              help="int8: keep this module path float in every format, or BLOCK:add a transformer block's residual adds "
                   "(int8 in static .pte only); see edgeclip inspect; repeatable.")
@click.option("--group-size", type=int, default=None, help="int4: weights per scale, 16/32/64/128/256 [32].")
@click.option("--smoothquant", type=float, default=None, metavar="ALPHA",
              help="int8: move outlier activation ranges into the next Linear's weights (SmoothQuant, exact in fp32; "
                   "uses calibration images) with strength ALPHA; 0 turns it off [0.5].")
@click.option("--optimize/--no-optimize", default=None, help="Run onnxruntime's transformer optimizer before quantizing [off].")
@click.option("--fused-attention/--no-fused-attention", default=None,
              help="ONNX: write attention as onnxruntime's MultiHeadAttention op (the file then needs onnxruntime) [off].")
@click.option("--verify-size", type=int, default=None, help="Real images used to verify each artifact against eager fp32 [256].")
@click.option("--min-agreement", type=float, default=None, help="Override the top-1 agreement bar (0-1) an artifact must reach.")
@click.option("--min-cosine", type=float, default=None, help="Override the mean cosine bar (0-1) an artifact must reach.")
@click.option("--out", "-o", default=None, help="Output directory [out].")
@click.option("--name", default=None, help="Artifact folder name [derived from model, format and quantization].")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="Torch threads for the export [all cores]; the same count (and CPU) rebuilds the same bytes.")
@click.option("--recipe", "recipe_file", type=click.Path(), default=None, help="TOML/JSON/YAML recipe; flags override its keys.")
@click.option("--json", "as_json", is_flag=True, help="Print the manifests as JSON instead of a table.")
@compress_options
def export(model, pretrained, task, quant, scheme, backend, target, formats, data, labels, calib_data, calib_size,
           calib_method, bias_correction, keep_float, sensitive_float, max_drop, accept_drop, float_layers, group_size, smoothquant,
           optimize, fused_attention, verify_size, min_agreement, min_cosine, out, name, threads, recipe_file, as_json,
           **compress_flags):
    """Export a model to verified deployable artifacts (written atomically with manifest.json).

    \b
    Compression passes run first, then quantization, e.g.:
      edgeclip export --svd 0.5 --svd-aware --prune-blocks text:auto:1 --quant int8 --format all
    """
    from edgeclip.exporter.recipe import ExportRecipe

    recipe = ExportRecipe.from_file(recipe_file) if recipe_file else ExportRecipe()
    base = recipe.to_dict().get("compress")
    flags = {"compress": compress_dict(base, compress_flags),
             "model": model, "pretrained": pretrained, "task": task, "quant": quant, "scheme": scheme, "backend": backend,
             "target": target, "formats": _formats(formats) if formats else None, "data": data, "calib_data": calib_data,
             "calib_size": calib_size, "verify_size": verify_size, "out": out, "name": name,
             "min_agreement": min_agreement, "min_cosine": min_cosine, "calib_method": calib_method,
             "bias_correction": bias_correction,
             "keep_float": list(keep_float) or None, "sensitive_float": sensitive_float, "optimize": optimize,
             "fused_attention": fused_attention, "smoothquant": smoothquant, "max_drop": max_drop, "accept_drop": accept_drop, "float_layers": list(float_layers) or None,
             "group_size": group_size, "threads": threads}
    recipe = ExportRecipe.from_dict({**recipe.to_dict(), **{k: v for k, v in flags.items() if v is not None}})
    auto = tuple(recipe.formats or ()) == ("auto",)
    if auto:   # each candidate route is checked instead
        from edgeclip.fastest import candidates

        candidates(recipe)
    else:
        recipe.validated()  # refuse impossible combinations before loading anything

    from edgeclip.pipeline import export as run_export, read_labels

    arts = run_export(recipe=recipe, labels=read_labels(labels) if labels else None, progress=not as_json)
    if as_json:
        click.echo(json.dumps([a.manifest for a in arts], indent=2))
        return
    rows = []
    for a in arts:
        m, f = a.manifest, a.manifest["fidelity"]
        rows.append({"artifact": str(a.dir), "format": m["format"], "quant": m["quantization"]["dtype"],
                     "mb": m["file"]["bytes"] / 1e6, "cos": f["mean_cosine"],
                     "agree": None if f["top1_agreement"] is None else 100 * f["top1_agreement"],
                     "inputs": f"{f['inputs']} ({f.get('device', 'cpu')})"})
    click.echo(_table(rows, [("artifact", "artifact", "{}"), ("format", "format", "{}"), ("quant", "quant", "{}"),
                             ("mb", "size MB", "{:.2f}"), ("cos", "cosine vs fp32", "{:.5f}"),
                             ("agree", "top-1 agree %", "{:.2f}"), ("inputs", "verified on", "{}")]))
    sel = arts[0].manifest.get("selection") if arts else None
    if sel:
        click.echo(f"\nCandidates measured on this CPU ({sel['cpu']}, {sel['threads']} thread(s), {sel['images']} images):")
        click.echo(_table(sel["candidates"], [("artifact", "candidate", "{}"), ("latency_ms_median", "b1 ms", "{:.2f}"),
                                              ("top1", "top-1 %", "{:.2f}"), ("agreement", "agree %", "{:.2f}"),
                                              ("file_mb", "size MB", "{:.2f}"), ("error", "error", "{}")]))
        for r in sel["refused"]:
            click.echo(f"Refused by its gate: {r['why']}")
        click.echo(f"Chosen: {arts[0].dir.name}, {sel['why']}")
    comp = arts[0].manifest.get("compression") if arts else None
    if comp:
        click.echo(compression_summary(comp))
    if any(a.manifest.get("random_weights") for a in arts):
        click.echo("Note: random weights: numbers prove plumbing and timing only, not accuracy.")
    if any(a.manifest.get("target") == "cuda" and a.manifest["fidelity"].get("device") != "cuda" for a in arts):
        click.echo("Note: no GPU here, so the CUDA artifacts were verified on the CPU (same precision, slower); "
                   "'edgeclip verify' on the GPU machine re-checks them there.")


def compression_summary(c: dict) -> str:
    """Two lines: what compression removed, and what it cost against the uncompressed model."""
    pct, before, after = c["params_removed_pct"], c["params_before"], c["params_after"]
    parts = [f"{t} {before[t] / 1e6:.2f}M -> {after[t] / 1e6:.2f}M params (-{pct[t]:.1f}%)" for t in ("vision", "text") if before.get(t)]
    if c.get("flops_removed_pct"):
        parts.append(", ".join(f"{t} FLOPs -{v:.1f}%" for t, v in c["flops_removed_pct"].items()))
    lines = ["Compression: " + "; ".join(parts) + f" ({', '.join(p['name'] for p in c['passes'])})"]
    v = c.get("vs_uncompressed") or {}
    if v:
        cost = f"compressed eager model vs uncompressed on {v['inputs']}: cosine {v['mean_cosine']:.4f}"
        if v.get("top1_agreement") is not None:
            cost += f", top-1 agreement {100 * v['top1_agreement']:.2f}%"
        if v.get("top1_compressed") is not None:
            cost += f", top-1 {v['top1_uncompressed']:.2f}% -> {v['top1_compressed']:.2f}%"
        lines.append(cost + " (the table above is each file vs the compressed model)")
    g = c.get("gate") or {}
    if g.get("waived"):
        lines.append(f"Compression-cost gate waived: {g['waived']}")
    elif g.get("accepted_by_user"):
        lines.append(f"Compression-cost gate: {g['value']:g} ({g['measure']}) accepted by --accept-drop {g['bar_max_drop_pt']:g}")
    for p in c["passes"]:
        lines += [f"Note ({p['name']}): {n}" for n in p.get("notes", [])]
    return "\n".join(lines)


@main.command(name="eval")
@verbose_option
@click.argument("target", required=False, default="edgeclip-fmnist")
@click.option("--pretrained", default=None, help="Pretrained tag or checkpoint when TARGET is a model name.")
@click.option("--data", default="fashion-mnist", show_default=True, help="Labelled evaluation set spec.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Evaluate only the first N images.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads [all cores].")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def eval_cmd(target, pretrained, data, limit, threads, as_json):
    """Top-1 / top-5 accuracy of a model (eager fp32) or an exported artifact folder on a labelled set."""
    from edgeclip.pipeline import evaluate

    res = evaluate(target, data, pretrained=pretrained, limit=limit, threads=threads, progress=not as_json)
    if as_json:
        click.echo(json.dumps(res, indent=2))
        return
    click.echo(_table([res], [("model", "model", "{}"), ("runtime", "runtime", "{}"), ("images", "images", "{}"),
                              ("top1", "top-1 %", "{:.2f}"), ("top5", "top-5 %", "{:.2f}")]))
    if res.get("note"):
        click.echo(f"Note: {res['note']}")


def _threads(value: str | None) -> list[int] | None:
    """--threads 2, or a sweep: 1,2,all."""
    if value is None:
        return None
    out = []
    for part in value.split(","):
        part = part.strip().lower()
        if part == "all":
            out.append(usable_cores())
        elif part.isdigit() and int(part) >= 1:
            out.append(int(part))
        else:
            raise EdgeclipError(f"--threads {value!r}: use a positive count or a comma list such as 1,2,all")
    return sorted(set(out))


@main.command()
@verbose_option
@click.argument("artifacts", nargs=-1, type=click.Path())
@click.option("--target", type=click.Choice(target_names()), default="cpu", show_default=True,
              help="; ".join(f"{t}: {get_target(t).summary}" for t in target_names()) + ".")
@click.option("--data", default="fashion-mnist", show_default=True, help="Labelled set for accuracy.")
@click.option("--threads", default=None, help="CPU threads, or a sweep such as 1,2,all [all cores; mobile 1,2,4].")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Accuracy on the first N images only [all].")
@click.option("--rounds", type=click.IntRange(min=1), default=10, show_default=True, help="Interleaved timing rounds.")
@click.option("--reps", type=click.IntRange(min=1), default=10, show_default=True, help="Batch-1 calls per artifact per round.")
@click.option("--batch", type=click.IntRange(min=2), default=None, help="Batch size for throughput [per target: " + ", ".join(f"{get_target(t).throughput_batch} {t}" for t in target_names()) + "].")
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=1), default=600, show_default=True,
              help="Seconds any one step of one artifact may take before it becomes an error row.")
@click.option("--max-drop", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="Top-1 points below fp32 an artifact may lose and still be recommended.")
@click.option("--out", "-o", default="out", show_default=True, help="Where artifacts are found when none are given.")
@click.option("--report-dir", default=None, help="Where bench.json / bench.md / bench_pareto.png go [<out>/bench].")
@click.option("--compare", "compare_to", type=click.Path(), default=None, help="A previous bench.json: print what changed.")
@click.option("--no-baseline", is_flag=True, help="Skip the fp32 eager row.")
@click.option("--peers", is_flag=True, help="Add the no-edgeclip routes (plain ONNX, ORT quantize_dynamic defaults, torch.ao eager) as rows.")
@click.option("--compile", "compile_variant", is_flag=True,
              help="cuda: also time fp16 + torch.compile (about 15 s of compilation per shape).")
@click.option("--device", default=None, metavar="ssh://USER@HOST[:PORT]",
              help="arm64: run on this board or phone over SSH (key auth, known host) instead of emulated.")
@click.option("--json", "as_json", is_flag=True, help="Print the report JSON.")
def bench(artifacts, target, data, threads, limit, rounds, reps, batch, timeout_s, max_drop, out, report_dir, compare_to,
          no_baseline, peers, compile_variant, device, as_json):
    """Accuracy, agreement with fp32, size, memory, latency and throughput of artifacts (default: all in --out).

    Each artifact runs in its own process; all are timed interleaved in rounds in one run, so speed-ups
    against the fp32 eager row are same-run ratios."""
    from edgeclip.benchmarks.compare import compare, load_report
    from edgeclip.benchmarks.report import markdown
    from edgeclip.benchmarks.timing import TimingConfig
    from edgeclip.pipeline import bench as run_bench

    old = load_report(compare_to) if compare_to else None   # a bad --compare file fails before the run
    report = run_bench(list(artifacts) if artifacts else out, data=data, target=target, threads=_threads(threads), limit=limit,
                       timing=TimingConfig(rounds=rounds, reps_per_round=reps,
                                           throughput_batch=batch or get_target(target).throughput_batch),
                       report_dir=report_dir or str(Path(out) / "bench"), baseline=not no_baseline, peers=peers,
                       compile_variant=compile_variant, progress=not as_json, timeout_s=timeout_s, max_drop=max_drop,
                       device=device)
    if old is not None:
        report["compare"] = {"against": str(compare_to), "changes": compare(old, report)}
    if as_json:
        click.echo(json.dumps(report, indent=2, default=str))
        return
    if report.get("skipped"):
        click.echo(f"Skipped: {report['skipped']}.")
        return
    click.echo(markdown(report))
    if old is not None:
        click.echo(f"Changes since {compare_to}:")
        for line in report["compare"]["changes"]:
            click.echo(f"  {line}")
    click.echo(f"Wrote {', '.join(report.get('files', []))}")
    if any(r.get("error") for r in report["rows"]):
        sys.exit(1)


@main.command()
@verbose_option
@click.argument("artifacts", nargs=-1, required=True, type=click.Path())
@click.option("--data", default=None, help="Labelled set for the check [the one the artifact was exported with].")
@click.option("--verify-size", type=click.IntRange(min=1), default=None, help="Inputs to compare on [as at export].")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads [all cores].")
@click.option("--min-agreement", type=click.FloatRange(0, 1), default=None,
              help="Hold the artifacts to this top-1 agreement (0-1) instead of edgeclip's rule for their precision.")
@click.option("--min-cosine", type=click.FloatRange(0, 1), default=None,
              help="Hold the artifacts to this mean cosine (0-1) instead of edgeclip's rule.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def verify(artifacts, data, verify_size, threads, min_agreement, min_cosine, as_json):
    """Re-check artifacts (folders, or a folder of them such as out/): sha256 against the manifest, then fidelity
    against the fp32 model on real inputs, held to edgeclip's own bar for the recorded precision (a manifest can
    only tighten it; one edited to loosen it, or to claim random weights, is refused as tampered).

    Exit 0 when every artifact passes, 2 when a file or manifest is missing/tampered, 3 when one misses its bar."""
    from edgeclip.manifest import collect_artifacts
    from edgeclip.pipeline import verify as run_verify

    results = [run_verify(a, data=data, verify_size=verify_size, threads=threads, progress=not as_json,
                          min_agreement=min_agreement, min_cosine=min_cosine)
               for a in collect_artifacts(list(artifacts))]
    if as_json:
        click.echo(json.dumps(results, indent=2))
    else:
        rows = []
        for r in results:
            f, rec = r.get("fidelity") or {}, r.get("recorded_fidelity") or {}
            agree = f.get("top1_agreement")
            rows.append({"artifact": r["artifact"], "integrity": r["integrity"], "cos": f.get("mean_cosine"),
                         "rec": rec.get("mean_cosine"), "agree": None if agree is None else 100 * agree,
                         "bar": (r.get("threshold") or {}).get("min_cosine"), "inputs": f.get("inputs", r.get("note", "")),
                         "result": "pass" if r["passed"] else "FAIL: " + "; ".join(r.get("failures", []))})
        click.echo(_table(rows, [("artifact", "artifact", "{}"), ("integrity", "sha256", "{}"), ("cos", "cosine now", "{:.5f}"),
                                 ("rec", "at export", "{:.5f}"), ("bar", "bar", "{}"), ("agree", "top-1 agree %", "{:.2f}"),
                                 ("inputs", "on", "{}"), ("result", "result", "{}")]))
        for r in results:
            for n in r.get("notes") or []:
                click.echo(f"Note ({Path(r['artifact']).name}): {n}")
    if not all(r["passed"] for r in results):
        sys.exit(3)


@main.command()
@verbose_option
@click.option("--model", "-m", default="edgeclip-fmnist", show_default=True, help="Model spec, as for export.")
@click.option("--pretrained", default=None, help="Pretrained tag or checkpoint file (trained weights: a random model measures nothing).")
@click.option("--data", default="fashion-mnist", show_default=True, help="Labelled test set accuracy is measured on.")
@click.option("--calib-data", default=None, help="Calibration images for the activation-aware series [the --data train split].")
@click.option("--calib-size", type=int, default=256, show_default=True, help="Calibration images for the activation-aware series.")
@click.option("--series", "series", multiple=True,
              help="Series to run (repeat or comma-separate) [all]: svd-vision-layers, svd-vision-ratio, svd-vision-aware, "
                   "svd-attn-vision, svd-attn-text, blocks-text-last, blocks-text-first, blocks-vision-last, blocks-vision-first, "
                   "tokens-vision, merge-vision.")
@click.option("--eval-size", type=int, default=2000, show_default=True, help="Test images per point (0: the whole split).")
@click.option("--rounds", type=int, default=10, show_default=True, help="Interleaved timing rounds per series.")
@click.option("--out", "-o", default="sweep", show_default=True, help="Folder for sweep.json and the PNG plots.")
@click.option("--workers", type=click.IntRange(min=1), default=None, help="Run the points as tasks of a local Ray runtime with this many workers.")
@click.option("--ray-address", default=None, metavar="HOST:PORT", help="Run the points on an existing Ray cluster.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON instead of a table.")
def sweep(model, pretrained, data, calib_data, calib_size, series, eval_size, rounds, out, workers, ray_address, as_json):
    """Compression sensitivity study: accuracy (and latency) as SVD rank, layer count and removed blocks vary.

    Writes sweep.json, sweep_accuracy_vs_params.png and sweep_accuracy_vs_latency.png into --out.
    """
    from edgeclip.benchmarks.timing import TimingConfig
    from edgeclip.pipeline import sweep as run_sweep

    if rounds < 1:
        raise EdgeclipError(f"--rounds must be positive (got {rounds})")
    report = run_sweep(model, pretrained=pretrained, data=data, calib_data=calib_data, calib_size=calib_size,
                       series=[s.strip() for v in series for s in v.split(",") if s.strip()] or None,
                       eval_size=eval_size or None, out=out, timing=TimingConfig(warmup=5, rounds=rounds, reps_per_round=5),
                       progress=not as_json, workers=workers, ray_address=ray_address)
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    b = report["baseline"]
    base_lat = [p["baseline_latency_ms_median"] for p in report["points"] if "baseline_latency_ms_median" in p]
    rows = [{"series": "uncompressed", "x": "-", "top1": b["top1"], "agree": 100.0, "vision": 0.0, "text": 0.0,
             "lat": sorted(base_lat)[len(base_lat) // 2] if base_lat else None, "speed": 1.0 if base_lat else None}]
    for p in report["points"]:
        rows.append({"series": p["series"], "x": f"{p['x']:g}", "top1": p.get("top1"), "agree": p.get("agreement"),
                     "vision": (p.get("params_removed_pct") or {}).get("vision"), "text": (p.get("params_removed_pct") or {}).get("text"),
                     "lat": p.get("latency_ms_median"), "speed": p.get("speedup_vs_uncompressed"), "err": p.get("error", "")})
    click.echo(_table(rows, [("series", "series", "{}"), ("x", "ratio/count", "{}"), ("top1", "top-1 %", "{:.2f}"),
                             ("agree", "agree %", "{:.2f}"), ("vision", "vision -%", "{:.1f}"), ("text", "text -%", "{:.1f}"),
                             ("lat", "latency ms", "{:.3f}"), ("speed", "speed-up", "{:.2f}x"), ("err", "", "{}")]))
    for f in report["findings"]:
        click.echo(f"- {f}")
    click.echo(f"{report['environment']['threads']} threads; {report['data']}. Wrote {', '.join(report['files'])}")


@main.command()
@verbose_option
@click.option("--model", "-m", default="edgeclip-fmnist", show_default=True, help="Model spec, as for export.")
@click.option("--pretrained", default=None, help="Pretrained tag or checkpoint file (trained weights: a random model measures nothing).")
@click.option("--data", default="fashion-mnist", show_default=True,
              help="Labelled set: its test split decides (top-1), its train split calibrates and estimates.")
@click.option("--calib-data", default=None, help="Calibration / estimate images [the --data train split].")
@click.option("--max-drop", type=float, default=0.5, show_default=True, metavar="PT",
              help="Top-1 points the shipped artifact may lose against fp32 eager, on the test split.")
@click.option("--target", type=click.Choice(["cpu", "mobile", "arm64", "cuda"]), default="cpu", show_default=True,
              help="Where the files will run: its routes are searched and its bench engine times them.")
@click.option("--budget-minutes", type=float, default=None, help="Start no new rung after this long; answer with what was measured.")
@click.option("--workers", type=int, default=None, help="Parallel tasks of the local Ray runtime [all cores].")
@click.option("--ray-address", default=None, metavar="HOST:PORT", help="Run on an existing Ray cluster instead of a local runtime.")
@click.option("--resume", is_flag=True, help="Continue the search in --out, redoing nothing that finished.")
@click.option("--knobs", default=None, help="Compression knobs to search, comma-separated [" + ",".join(("token_merge", "token_keep", "mlp_keep", "heads_keep", "prune_blocks", "svd")) + "].")
@click.option("--format", "formats", default=None, help="Only these formats' routes, comma-separated [the target's].")
@click.option("--heal-steps", type=int, default=300, show_default=True, help="Healing steps of the healed twins of the fastest combinations (0: off).")
@click.option("--estimate-size", type=int, default=500, show_default=True, help="Held-out calibration images of the cheap estimate.")
@click.option("--eval-size", type=int, default=None, help="Test images that decide [the whole split].")
@click.option("--width", type=int, default=8, show_default=True, help="Knob combinations measured.")
@click.option("--finalists", type=int, default=4, show_default=True, help="Combinations exported on each of the fastest routes.")
@click.option("--top-routes", type=int, default=2, show_default=True, help="Routes the finalists are exported on.")
@click.option("--level-timing/--no-level-timing", default=True, show_default=True,
              help="Export and time every knob level on the fastest routes; off: rank combinations by FLOPs (quicker).")
@click.option("--device", default=None, metavar="ssh://USER@HOST[:PORT]", help="--target arm64: the ARM board that times.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="Timing threads [all cores of the timing node].")
@click.option("--rounds", type=click.IntRange(min=1), default=10, show_default=True, help="Interleaved timing rounds.")
@click.option("--out", "-o", default="search", show_default=True, help="Folder for search.json, search.md, the plot, best.toml, best/.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def search(model, pretrained, data, calib_data, max_drop, target, budget_minutes, workers, ray_address, resume, knobs, formats,
           heal_steps, estimate_size, eval_size, width, finalists, top_routes, level_timing, device, threads, rounds, out, as_json):
    """The fastest artifact for --target within --max-drop top-1 points, found by measuring exported files.

    \b
    Successive halving: each compression knob level alone, then combinations, estimated on held-out calibration
    images; the best few exported (fidelity-gated) on the fastest routes, scored on the test split and timed
    together.  Runs on Ray (local, or --ray-address).  Writes search.json, search.md, search_pareto.png,
    best.toml (edgeclip export --recipe best.toml rebuilds the winner) and best/<artifact>.
    """
    from edgeclip.pipeline import search as run_search

    split = lambda v: tuple(x.strip() for x in v.split(",") if x.strip()) if v else None   # noqa: E731
    settings = {"pretrained": pretrained, "data": data, "calib_data": calib_data, "max_drop": max_drop, "target": target,
                "budget_minutes": budget_minutes, "workers": workers, "ray_address": ray_address, "resume": resume,
                "formats": split(formats), "heal_steps": heal_steps, "estimate_size": estimate_size, "eval_size": eval_size,
                "width": width, "finalists": finalists, "top_routes": top_routes, "level_timing": level_timing,
                "device": device, "threads": threads,
                "rounds": rounds, "out": out}
    if knobs:
        settings["knobs"] = split(knobs)
    report = run_search(model, progress=not as_json, **settings)
    if as_json:
        click.echo(json.dumps(report, indent=2, default=str))
        return
    rows = [{"rank": i, "artifact": c["artifact"], "route": c["route"], "comp": c["compression"], "ms": c["latency_ms_median"],
             "x": c.get("speedup_vs_best_plain"), "top1": c["top1"], "drop": c["drop"], "mb": c["file_mb"],
             "ok": "yes" if c["within_budget"] else "no"} for i, c in enumerate(report["candidates"], 1)]
    click.echo(_table(rows, [("rank", "#", "{}"), ("route", "route", "{}"), ("comp", "compression", "{}"),
                             ("ms", "b1 ms", "{:.3f}"), ("x", "vs best plain", "{:.2f}x"), ("top1", "top-1 %", "{:.2f}"),
                             ("drop", "drop pt", "{:+.2f}"), ("mb", "size MB", "{:.2f}"), ("ok", "in budget", "{}")]))
    b, env = report["best"], report["environment"]
    click.echo(f"\nBest: {b['artifact']} -- {b['latency_ms_median']:.3f} ms, {report['speedup_best_vs_best_plain']:.2f}x the best "
               f"plain int8 file, top-1 {b['top1']:.2f} % vs fp32 {report['reference']['top1']:.2f} % "
               f"({report['reference']['split']}); timed on {env.get('cpu')}.  {report['seconds'] / 60:.1f} min, "
               f"tasks on {len(env['task_nodes'])} node(s).")
    click.echo(f"Wrote {', '.join(report['files'])}")


@main.command()
@verbose_option
@click.option("--model", "-m", default="edgeclip-fmnist", show_default=True, help="Model spec, as for export.")
@click.option("--pretrained", default=None, help="Pretrained tag or checkpoint file.")
@click.option("--data", default="fashion-mnist", show_default=True, help="Labelled set (class names; its train split calibrates).")
@click.option("--calib-data", default=None, help="Calibration images [the --data train split].")
@click.option("--calib-size", type=int, default=128, show_default=True, help="Calibration images measured on.")
@click.option("--scheme", type=click.Choice(["static", "dynamic"]), default="static", show_default=True,
              help="How activations will be quantized (static: calibrated ranges; dynamic: per call).")
@click.option("--top", type=click.IntRange(min=1), default=12, show_default=True, help="Layers to list.")
@click.option("--json", "as_json", is_flag=True, help="Print the whole report as JSON.")
def inspect(model, pretrained, data, calib_data, calib_size, scheme, top, as_json):
    """Which layers int8 will hurt, before exporting: activation ranges, outlier channels, predicted int8 error."""
    from edgeclip.inspect_int8 import inspect_int8

    rep = inspect_int8(model, pretrained=pretrained, data=data, calib_data=calib_data, calib_size=calib_size,
                       scheme=scheme, progress=not as_json)
    if as_json:
        click.echo(json.dumps(rep, indent=2))
        return
    click.echo(_table(rep["layers"][:top], [("layer", "layer", "{}"), ("input_abs_max", "input |max|", "{:.2f}"),
                                            ("input_outlier_ratio", "outlier ratio", "{:.1f}"),
                                            ("int8_rel_error", "int8 error alone", "{:.2e}"),
                                            ("int8_rel_error_smoothquant", "with SmoothQuant", "{:.2e}")]))
    hostile = [n for n in rep["norms"] if n["outlier_channels"]]
    if hostile:
        click.echo("")
        click.echo(_table(hostile, [("norm", "LayerNorm", "{}"), ("range_ratio", "max/median range", "{:.1f}"),
                                    ("outlier_channels", "outlier channels", "{}")]))
    click.echo(f"\n{rep['scheme']} int8, {rep['calibration']}; error = {rep['metric']}.")
    for a in rep["advice"]:
        click.echo(f"- {a}")


@main.command()
@verbose_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def formats(as_json):
    """Which (format, quant, scheme, backend) combinations exist and what produces each."""
    from edgeclip.exporter.recipe import support_table

    rows = support_table()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo(_table(rows, [("format", "format", "{}"), ("quant", "quant", "{}"), ("scheme", "scheme", "{}"),
                             ("backend", "backend", "{}"), ("how", "how", "{}")]))


@main.group()
def device():
    """Devices that run artifacts with their own runtimes (an emulated aarch64 Python here, boards over SSH)."""


@device.command("setup")
@verbose_option
@click.argument("kind", type=click.Choice(["arm64"]))
@click.option("--force", is_flag=True, help="Rebuild even if the cached environment is current.")
@click.option("--json", "as_json", is_flag=True, help="Print what was built as JSON.")
def device_setup(kind, force, as_json):
    """Build or refresh the aarch64 Python environment 'bench --target arm64' runs artifacts in.

    \b
    Debian 12's arm64 Python 3.11 and PyPI's aarch64 wheels of this host's numpy, onnxruntime, torch and
    executorch, run under qemu-aarch64-static; cached in ~/.cache/edgeclip/arm64 (or $EDGECLIP_ARM64_ENV).
    Needs root, qemu-user-static and binutils-aarch64-linux-gnu; about 2 GB of disk."""
    import time

    from edgeclip.runtimes.devices import EmulatedArm64

    env = EmulatedArm64()
    t0 = time.perf_counter()
    was = env.ready()
    info = env.setup(progress=None if as_json else lambda m: click.echo(m, err=True), force=force)
    info = {**info, "path": str(env.env), "seconds": round(time.perf_counter() - t0, 1),
            "reused": was is not None and was == info}
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    state = "up to date (cached)" if info["reused"] else "built"
    versions = ", ".join(f"{k} {v}" for k, v in info["versions"].items())
    click.echo(f"arm64 environment {state} at {info['path']} in {info['seconds']:g} s: {versions}")


if __name__ == "__main__":
    main()

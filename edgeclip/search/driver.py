"""``edgeclip search``: the fastest recipe within an accuracy budget, found by successive halving.

Rungs, each costlier per candidate than the one before and each seeing fewer candidates:

1. **sensitivity** -- every knob level alone (``space.knob_levels``), as an eager fp32 model, scored on held-out
   calibration images (never the evaluation split): its top-1 cost, its disagreement with the uncompressed model,
   its vision FLOPs.  Beside it, the plain int8 file of every route of the target is exported.
2. **routes and levels timed** -- the plain files timed together (the fastest ``top_routes`` go on); every level
   whose cost healing could still buy back is exported on those routes and timed beside the plain file, one bench
   run per route: its measured latency ratio there (FLOPs mislead: SVD and token merging save FLOPs and, on some
   runtimes, no time).
3. **combinations** -- levels of different knobs, predicted cost = the sum, predicted latency = the product of the
   ratios; the fastest predicted are measured as eager models, and the fastest few that change predictions get a
   healed twin (distillation toward the uncompressed model).
4. **finalists** -- per route, the Pareto frontier of predicted latency against estimated disagreement (the
   estimate cannot resolve half a point; the frontier spans what it can tell apart), exported as real,
   fidelity-gated artifacts; every artifact, plain ones too, is scored on the labelled evaluation split and all are
   timed together in one interleaved bench run on the timing node.

The answer is the fastest artifact whose evaluation top-1 is within ``max_drop`` points of the fp32 eager model's.
Every finished task is appended to a checkpoint, so ``--resume`` redoes nothing that finished.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

from edgeclip.errors import EdgeclipError
from edgeclip.exporter.atomic import replace_file

from . import tasks
from .space import EXPORT_TARGET, KNOBS, TARGET_ROUTES, Combination, Estimate, Level, Route, combinations, knob_levels

SCHEMA = "edgeclip.search/1"
HEAL_SLACK = 3.0         # levels / combinations estimated to cost up to this many times the budget stay in play
HEAL_ABOVE = 0.01        # (healing can buy it back); one changing more than this share of predictions gets a healed twin


@dataclass(frozen=True)
class SearchConfig:
    model: str = "edgeclip-fmnist"
    pretrained: str | None = None
    data: str = "fashion-mnist"
    calib_data: str | None = None
    max_drop: float = 0.5                  # top-1 points below fp32 eager, on the evaluation split
    target: str = "cpu"
    budget_minutes: float | None = None    # no new rung starts after this; the answer uses what was measured
    workers: int | None = None
    ray_address: str | None = None
    resume: bool = False
    out: str = "search"
    knobs: tuple[str, ...] = KNOBS
    formats: tuple[str, ...] | None = None   # the target's routes limited to these formats
    calib_size: int = 256
    heal_images: int = 500
    heal_steps: int = 300                  # 0: never heal
    estimate_size: int = 500
    eval_size: int | None = None           # evaluation images [the whole split]
    width: int = 8                         # combinations measured
    finalists: int = 4                     # combinations exported per route
    top_routes: int = 2                    # routes the finalists are exported on (fastest plain int8 first)
    level_timing: bool = True              # time each level's file; off: rank combinations by FLOPs (quicker, and
                                           # what the search measures then no longer depends on timing noise)
    device: str | None = None
    threads: int | None = None             # timing threads [all cores of the timing node]
    rounds: int = 10

    def validated(self) -> "SearchConfig":
        if not self.max_drop >= 0:
            raise EdgeclipError(f"--max-drop must be 0 or more top-1 points (got {self.max_drop:g})")
        if self.budget_minutes is not None and not self.budget_minutes > 0:
            raise EdgeclipError(f"--budget-minutes must be positive (got {self.budget_minutes:g}); omit it for no limit")
        if self.target not in TARGET_ROUTES:
            raise EdgeclipError(f"--target {self.target!r}: search times on cpu, mobile, arm64 or cuda")
        for k in self.knobs:
            if k not in KNOBS:
                raise EdgeclipError(f"unknown knob {k!r}; use {', '.join(KNOBS)}")
        named = self._named_routes()
        if not named:
            have = ", ".join(r.format for r in TARGET_ROUTES[self.target])
            raise EdgeclipError(f"--format {','.join(self.formats or ())} has no route on --target {self.target} (it has {have})")
        if not self.routes():
            raise EdgeclipError(f"--format {','.join(self.formats or ())}: this machine cannot build it: "
                                + "; ".join(sorted({r.unavailable_here() for r in named})))
        for name, v, lo in (("--estimate-size", self.estimate_size, 50), ("--width", self.width, 1),
                            ("--finalists", self.finalists, 1), ("--top-routes", self.top_routes, 1),
                            ("--rounds", self.rounds, 1), ("--calib-size", self.calib_size, 1)):
            if v < lo:
                raise EdgeclipError(f"{name} must be at least {lo} (got {v})")
        if self.eval_size is not None and self.eval_size < 100:
            raise EdgeclipError(f"--eval-size must be at least 100 images (got {self.eval_size}): fewer cannot resolve a "
                                "0.5-point budget")
        if self.heal_steps < 0:
            raise EdgeclipError(f"--heal-steps must be 0 (off) or more (got {self.heal_steps})")
        _check_target(self)
        return self

    def _named_routes(self) -> list[Route]:
        return [r for r in TARGET_ROUTES[self.target] if not self.formats or r.format in self.formats]

    def routes(self) -> list[Route]:
        """The target's routes (``--format``'s only) that this machine can build: the .pt2 needs x86 and a compiler."""
        return [r for r in self._named_routes() if r.unavailable_here() is None]

    def job(self) -> tasks.Job:
        return tasks.Job(self.model, self.pretrained, self.data, self.calib_data, self.calib_size, self.heal_images,
                         self.estimate_size, self.eval_size, self.target, self.device, self.threads, self.rounds)

    def fingerprint(self) -> str:
        """What a checkpoint must agree on to be resumed (not the budget, workers or cluster, which may change)."""
        d = {k: v for k, v in asdict(self).items() if k not in ("budget_minutes", "workers", "ray_address", "resume", "out")}
        return hashlib.sha1(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _check_target(cfg: SearchConfig) -> None:
    """Refuse a target this host cannot time, before anything runs."""
    from edgeclip.benchmarks.harness import host_arch

    if cfg.target == "cuda":
        from edgeclip.benchmarks.cuda import cuda_status

        why = cuda_status()
        if why:
            raise EdgeclipError(f"--target cuda: {why}; search on a GPU machine, or use --target cpu")
    if cfg.target == "arm64" and host_arch() != "arm64" and not cfg.device:
        raise EdgeclipError("--target arm64 on this x86 host would time an emulator, not a board; pass --device "
                            "ssh://user@host for an ARM board, or run the search on the ARM machine")
    if cfg.device and cfg.target != "arm64":
        raise EdgeclipError("--device is for --target arm64 (an ARM board over SSH); drop --device")


def recipe_for(cfg: SearchConfig, route: Route, compress: dict | None) -> dict:
    """The export recipe of one candidate: what ``best.toml`` holds for the winner."""
    d = {"model": cfg.model, "pretrained": cfg.pretrained, "data": cfg.data, "calib_data": cfg.calib_data,
         "calib_size": cfg.calib_size, "target": EXPORT_TARGET[cfg.target], **route.fields(),
         # as its one-CPU task built it: data-aware passes, healing and calibration reduce in an order that depends
         # on the thread count, so `export --recipe best.toml` rebuilds the same bytes only at the same count
         "threads": 1}
    if compress:
        d["compress"] = {**compress, "heal_images": cfg.heal_images}
        # the export's compression-cost gate measures on its 256 verification images, where one standard error of
        # a 1-point cost is ~0.6 points; the search holds every candidate to max_drop on the whole evaluation split
        # instead, so the per-file gate is only a backstop here
        d["accept_drop"] = max(1.0, HEAL_SLACK * cfg.max_drop)
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items() if v is not None}


def _key(*parts) -> str:
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


class Checkpoint:
    """Finished tasks, one JSON line each, plus exported artifacts as tar files: what ``--resume`` reuses."""

    def __init__(self, out: Path, fingerprint: str, resume: bool):
        self.dir = out / ".search"
        self.file = self.dir / "state.jsonl"
        self.done: dict[str, dict] = {}
        if self.file.exists():
            if not resume:
                raise EdgeclipError(f"{out} holds a search already; --resume continues it, or pass another --out")
            lines = [json.loads(line) for line in self.file.read_text().splitlines() if line.strip()]
            if not lines or lines[0].get("fingerprint") != fingerprint:
                raise EdgeclipError(f"{out} holds a search with other settings; resume it with the same flags, or pass "
                                    "another --out")
            self.done = {ln["key"]: ln["result"] for ln in lines[1:]}
        else:
            self.dir.mkdir(parents=True, exist_ok=True)
            self.file.write_text(json.dumps({"fingerprint": fingerprint, "schema": SCHEMA}) + "\n")

    def tar_path(self, key: str) -> Path:
        return self.dir / "artifacts" / f"{key}.tar"

    def record(self, key: str, result: dict) -> dict:
        if "tar" in result:      # artifacts live beside the log, not in it
            path = self.tar_path(key)
            path.parent.mkdir(exist_ok=True)
            replace_file(path, result["tar"])
            result = {k: v for k, v in result.items() if k != "tar"}
        with self.file.open("a") as f:
            f.write(json.dumps({"key": key, "result": result}, default=str) + "\n")
        self.done[key] = result
        return result

    def tar(self, key: str) -> bytes:
        return self.tar_path(key).read_bytes()


@dataclass
class Task:
    key: str
    fn: Callable
    args: tuple
    timing: bool = False
    label: str = ""


@dataclass
class Run:
    cfg: SearchConfig
    executor: object
    ckpt: Checkpoint
    deadline: float | None
    progress: bool
    log: list[dict] = field(default_factory=list)
    skipped_rungs: list[str] = field(default_factory=list)

    def out_of_time(self) -> bool:
        return self.deadline is not None and time.monotonic() > self.deadline

    def rung(self, name: str, items: list[Task]) -> dict[str, dict]:
        """Run the tasks not finished before (all at once; Ray places them), recording each as it finishes."""
        from edgeclip.preparation import progress_bar

        todo = [t for t in items if t.key not in self.ckpt.done]
        if todo and self.out_of_time():
            self.skipped_rungs.append(name)
            return {t.key: self.ckpt.done[t.key] for t in items if t.key in self.ckpt.done}
        for t in items:
            if t.key in self.ckpt.done:
                res = self.ckpt.done[t.key]
                self.log.append({"rung": name, "task": t.label, "node": res.get("node"), "pid": res.get("pid"),
                                 "seconds": res.get("seconds"), "reused": True})
        refs = {self.executor.submit(t.fn, *t.args, timing=t.timing): t for t in todo}
        with progress_bar(self.progress and bool(todo), len(todo), name) as bar:
            pending = list(refs)
            while pending:
                ready, pending = self.executor.wait_any(pending)
                for ref in ready:
                    t = refs[ref]
                    try:
                        res = self.ckpt.record(t.key, self.executor.result(ref))
                    except Exception as e:
                        # its worker died past Ray's retries: that candidate is lost, not the search.  A task that
                        # raised (a user mistake, a bug) ends the search with its own error
                        if not self.executor.lost(e) or t.fn in (tasks.reference, tasks.reference_eval):
                            raise
                        self.log.append({"rung": name, "task": t.label, "error": f"{type(e).__name__}: {str(e)[:200]}"})
                        continue
                    self.log.append({"rung": name, "task": t.label, "node": res.get("node"), "pid": res.get("pid"),
                                     "seconds": res.get("seconds")})
                    if bar:
                        bar.update(1)
        return {t.key: self.ckpt.done[t.key] for t in items if t.key in self.ckpt.done}


def _estimate_of(res: dict) -> Estimate | None:
    if "error" in res:
        return None
    return Estimate(drop=round(res["base_top1"] - res["top1"], 3), flops=res["flops"], images=res["images"],
                    disagree=res["disagree"])


class Searching:
    """One search's rungs in order; each reads what the earlier ones measured (from the checkpoint)."""

    def __init__(self, cfg: SearchConfig, job: tasks.Job, run: Run):
        self.cfg, self.job, self.run, self.done = cfg, job, run, run.ckpt.done
        self.heal_budget = cfg.max_drop * (HEAL_SLACK if cfg.heal_steps else 1.0)
        self.routes = cfg.routes()
        self.plain = {r: self._export_key(r, None) for r in self.routes}
        self.top: list[Route] = []
        self.speed: dict[Route, dict[Level, float]] = {}
        self.level_keys: dict[tuple[Level, Route], str] = {}
        self.measured: dict[Route, list[tuple[Combination, Estimate]]] = {}
        self.fin: dict[str, tuple[Combination | None, Route]] = {}
        self.times: dict[str, str] = {}

    def _export_key(self, route: Route, fields: dict | None) -> str:
        return _key("export", self.job, recipe_for(self.cfg, route, fields))

    def _export_task(self, route: Route, fields: dict | None, label: str) -> Task:
        return Task(self._export_key(route, fields), tasks.export, (self.job, recipe_for(self.cfg, route, fields)), label=label)

    def _estimate_task(self, fields: dict, label: str) -> Task:
        return Task(_key("estimate", self.job, fields), tasks.estimate, (self.job, fields, self.ref["estimate"]["pred"]), label=label)

    def _estimate(self, fields: dict) -> Estimate | None:
        res = self.done.get(_key("estimate", self.job, fields))
        return None if res is None else _estimate_of(res)

    def _exported(self, key: str) -> bool:
        return "name" in self.done.get(key, {})

    def _time(self, rung: str, keys: list[str], label: str) -> dict[str, dict]:
        """Latency rows by artifact name: the given exported files timed together in one bench run."""
        keys = sorted(k for k in set(keys) if self._exported(k))
        if not keys:
            return {}
        key = _key("latency", self.job, keys)
        self.times[rung] = key
        got = self.run.rung(rung, [Task(key, tasks.latency, (self.job, {self.done[k]["name"]: self.run.ckpt.tar(k) for k in keys}),
                                        timing=True, label=label)])
        return got.get(key, {}).get("rows", {})

    def _latency(self, rows: dict, key: str) -> float | None:
        return rows.get(self.done[key]["name"], {}).get("latency_ms_median") if self._exported(key) else None

    # rung 1: the reference, every knob level alone (estimates), the plain file of every route
    def sensitivity(self) -> None:
        cfg, job, run = self.cfg, self.job, self.run
        ref_key = _key("reference", job)
        self.ref = run.rung("reference", [Task(ref_key, tasks.reference, (job,), label="fp32 reference")])[ref_key]
        self.levels = [lv for k in cfg.knobs for lv in knob_levels(k, n_vision=self.ref["n_vision"], patches=self.ref["patches"],
                                                                   heads=self.ref["heads"])]
        self.eval_key = _key("reference-eval", job)
        run.rung("sensitivity", [self._estimate_task(lv.recipe_fields(), lv.label) for lv in self.levels] +
                 [self._export_task(r, None, f"export plain {r.label}") for r in self.routes] +
                 [Task(self.eval_key, tasks.reference_eval, (job,), label="fp32 on the evaluation split")])
        self.singles = {lv: e for lv in self.levels if (e := self._estimate(lv.recipe_fields())) is not None}

    # rung 2: the plain files timed, fastest route first
    def route_order(self) -> None:
        ok = [r for r in self.routes if self._exported(self.plain[r])]
        rows = self._time("route timing", [self.plain[r] for r in ok], "time the plain route files")
        self.top = sorted(ok, key=lambda r: self._latency(rows, self.plain[r]) or math.inf)[:self.cfg.top_routes]

    # rung 3: each affordable level as a file on the fastest routes, timed beside the plain file: its real speed-up
    def level_files(self) -> None:
        if not self.cfg.level_timing:
            return
        affordable = [lv for lv, e in self.singles.items() if e.drop <= self.heal_budget and e.flops < 0.995]
        self.level_keys = {(lv, r): self._export_key(r, lv.recipe_fields()) for lv in affordable for r in self.top}
        self.run.rung("level files", [self._export_task(r, lv.recipe_fields(), f"export {lv.label} on {r.label}")
                                      for (lv, r) in self.level_keys])
        for r in self.top:   # one bench run per route: fewer worker processes alive per run, steadier ratios
            rows = self._time(f"level timing, {r.label}", [self.plain[r], *(k for (_, rr), k in self.level_keys.items() if rr == r)],
                              f"time the level files on {r.label} beside its plain file")
            base = self._latency(rows, self.plain[r])
            self.speed[r] = {lv: t / base for (lv, rr), k in self.level_keys.items()
                             if rr == r and base and (t := self._latency(rows, k))}

    # rungs 4-5: combinations by predicted latency per route, measured (and healed where it nearly fits)
    def combinations(self) -> None:
        combos = {r: combinations(self.singles, self.heal_budget, self.cfg.width,
                                  self.speed.get(r) if self.speed.get(r) else None) for r in self.top}
        unique = {_key(c.fields()): c for cs in combos.values() for c in cs}
        self.run.rung("combinations", [self._estimate_task(c.fields(), c.label) for c in unique.values()])
        heal: dict[str, list[tuple[Route, Combination]]] = {}
        for r, cs in combos.items():
            self.measured[r] = [(c, e) for c in cs if (e := self._estimate(c.fields())) is not None]
            if not self.cfg.heal_steps:
                continue
            # the fastest predicted few that changed any prediction get a healed twin: distillation toward the
            # uncompressed model buys agreement back at the same latency
            for c, e in sorted(self.measured[r], key=lambda ce: ce[0].predicted_ratio)[:self.cfg.finalists]:
                if e.disagree > HEAL_ABOVE and e.drop <= self.heal_budget:
                    h = replace(c, heal_steps=self.cfg.heal_steps)
                    heal.setdefault(_key(h.fields()), []).append((r, h))
        self.run.rung("healing", [self._estimate_task(v[0][1].fields(), v[0][1].label) for v in heal.values()])
        for v in heal.values():
            for r, h in v:
                if (e := self._estimate(h.fields())) is not None:
                    self.measured[r].append((h, e))

    # rung 6: the finalists exported on their routes
    def finalists(self) -> None:
        items = []
        for r in self.top:
            for c, _ in pick_finalists(self.measured.get(r, []), self.cfg.max_drop, self.cfg.finalists):
                t = self._export_task(r, c.fields(), f"export {c.label} on {r.label}")
                self.fin[t.key] = (c, r)
                items.append(t)
        self.run.rung("finalists", items)

    # rung 7: every artifact scored on the evaluation split, and all timed together
    def evaluation(self) -> None:
        self.exported = [k for k in [*self.plain.values(), *self.fin] if self._exported(k)]
        self.acc_key = {k: _key("accuracy", self.job, k) for k in self.exported}
        ref_eval = self.done[self.eval_key]
        self.run.rung("evaluation", [Task(self.acc_key[k], tasks.accuracy, (self.job, self.run.ckpt.tar(k), ref_eval["pred"]),
                                          label=f"score {self.done[k]['name']}") for k in self.exported])
        self.final_rows = self._time("final timing", self.exported, "time every artifact together")

    def report(self, ex, seconds: float) -> dict:
        cfg, done = self.cfg, self.done
        ref_eval = done[self.eval_key]
        base_top1 = ref_eval["top1"]
        cands = []
        for k in self.exported:
            res, acc = done[k], done.get(self.acc_key[k], {})
            m, lat = res["manifest"], self.final_rows.get(res["name"], {})
            c, r = self.fin.get(k) or (None, next(r for r, pk in self.plain.items() if pk == k))
            cands.append({"key": k, "artifact": res["name"], "plain": c is None, "route": r.label,
                          "compression": c.label if c else "none", "recipe": recipe_for(cfg, r, c.fields() if c else None),
                          "predicted_ratio": c.predicted_ratio if c else 1.0,
                          "top1": acc.get("top1"), "top5": acc.get("top5"), "agreement": acc.get("agreement"),
                          "drop": None if acc.get("top1") is None else round(base_top1 - acc["top1"], 2),
                          "latency_ms_median": lat.get("latency_ms_median"), "latency_ms_p90": lat.get("latency_ms_p90"),
                          "file_mb": round(m["file"]["bytes"] / 1e6, 3), "fidelity": m.get("fidelity"),
                          "vision_flops_removed_pct": ((m.get("compression") or {}).get("flops_removed_pct") or {}).get("vision")})
        best, ok = choose(cands, cfg.max_drop)
        plain_ok = [c for c in cands if c["plain"] and c["latency_ms_median"]]
        best_plain = min(plain_ok, key=lambda c: c["latency_ms_median"]) if plain_ok else None
        for c in cands:
            c["within_budget"] = c in ok
            if best_plain and c["latency_ms_median"]:
                c["speedup_vs_best_plain"] = round(best_plain["latency_ms_median"] / c["latency_ms_median"], 3)
        _mark_pareto(cands)
        refused = [{"key": k, "task": label, "why": done[k]["refused"]} for k, label in
                   [*((pk, f"plain {r.label}") for r, pk in self.plain.items()),
                    *((k, f"{lv.label} on {r.label} (level file)") for (lv, r), k in self.level_keys.items()),
                    *((k, f"{c.label} on {r.label}") for k, (c, r) in self.fin.items())]
                   if "refused" in done.get(k, {})]
        sens = [{"knob": lv.knob, "value": lv.value, "fields": lv.recipe_fields(),
                 **_est_row(done.get(_key("estimate", self.job, lv.recipe_fields()), {})),
                 "latency_ratio": {r.label: round(self.speed[r][lv], 3) for r in self.top if lv in self.speed.get(r, {})}}
                for lv in self.levels]
        comb = [{"route": r.label, "combination": c.label, "predicted_drop": c.predicted_drop,
                 "predicted_ratio": c.predicted_ratio, "drop": e.drop, "flops": round(e.flops, 4), "noise": round(e.noise, 3),
                 "heal_steps": c.heal_steps} for r, ms in self.measured.items() for c, e in ms]
        last = done.get(self.times.get("final timing", ""), {})
        return {"schema": SCHEMA, "config": asdict(cfg),
                "reference": {"top1": base_top1, "top5": ref_eval["top5"], "images": ref_eval["images"],
                              "split": ref_eval["split"], "estimate_top1": self.ref["estimate"]["top1"],
                              "estimate_split": self.ref["estimate_split"],
                              "structure": {k: self.ref[k] for k in ("n_vision", "patches", "heads")}},
                "environment": {"timing_node": ex.timing_node.node_id, "timing_cpus": ex.timing_node.cpus,
                                "cpu": last.get("cpu"), "cpu_flags": last.get("cpu_flags"),
                                "nodes": [asdict(n) for n in ex.nodes()],
                                "task_nodes": sorted({str(t["node"]) for t in self.run.log if t.get("node")}),
                                "rounds": cfg.rounds, "threads": cfg.threads or "all cores of the timing node"},
                "routes_by_speed": [r.label for r in self.top], "sensitivity": sens, "combinations": comb,
                "candidates": sorted(cands, key=lambda c: c["latency_ms_median"] or math.inf), "refused": refused,
                "best": best, "best_plain": best_plain,
                "speedup_best_vs_best_plain": (round(best_plain["latency_ms_median"] / best["latency_ms_median"], 3)
                                               if best and best_plain else None),
                "skipped_rungs": self.run.skipped_rungs, "tasks": self.run.log, "seconds": round(seconds, 1)}


def run_search(cfg: SearchConfig, progress: bool = False) -> dict:
    """Search, write ``search.json``, ``search.md``, ``search_pareto.png``, ``best.toml`` and ``best/<artifact>``
    into ``cfg.out``; returns the report.  Raises (after writing the report) when no artifact met the budget."""
    from edgeclip.benchmarks.executor import RayExecutor, check_address
    from edgeclip.exporter.atomic import check_out_dir
    from edgeclip.models.datasets import load_dataset

    from .report import write_outputs

    cfg = cfg.validated()
    if cfg.ray_address:     # before the out folder exists (RayExecutor checks again when it joins: a TCP connect)
        check_address(cfg.ray_address)

    load_dataset(cfg.data, "test")        # a missing dataset is refused here, not in every worker
    out = check_out_dir(Path(cfg.out))
    out.mkdir(parents=True, exist_ok=True)
    ckpt = Checkpoint(out, cfg.fingerprint(), cfg.resume)
    t_start = time.monotonic()
    deadline = t_start + 60 * cfg.budget_minutes if cfg.budget_minutes else None
    job = cfg.job()
    with RayExecutor(cfg.ray_address, cfg.workers) as ex:
        run = Run(cfg, ex, ckpt, deadline, progress)
        s = Searching(cfg, job, run)
        s.sensitivity()
        s.route_order()
        s.level_files()
        s.combinations()
        s.finalists()
        s.evaluation()
        report = s.report(ex, time.monotonic() - t_start)
    files = write_outputs(report, out, ckpt)
    report["files"] = [str(p) for p in files]
    replace_file(out / "search.json", json.dumps(report, indent=2, default=str))
    if report["best"] is None:
        raise EdgeclipError(f"no artifact reached top-1 within {cfg.max_drop:g} points of fp32 on {report['reference']['split']}; "
                            f"see {out / 'search.md'} (raise --max-drop, or give healing more --heal-steps)")
    return report


def pick_finalists(measured: list[tuple[Combination, Estimate]], max_drop: float, n: int) -> list[tuple[Combination, Estimate]]:
    """The ``n`` combinations to export on a route.  The estimate (a few hundred held-out images) cannot resolve a
    fraction of a point, so instead of trusting it to rank, the finalists span the trade-off it does show: the
    Pareto frontier of predicted latency (lower) against the estimate's disagreement with the uncompressed model
    (lower), among those whose estimated cost is within the budget up to one standard error -- from the fastest to
    the most faithful, evenly spaced when the frontier is longer than ``n``.  The evaluation split then decides."""
    ok = [ce for ce in measured if ce[1].drop <= max_drop + ce[1].noise]
    ok.sort(key=lambda ce: (ce[0].predicted_ratio, ce[1].disagree, ce[1].drop))
    front, best = [], math.inf
    for ce in ok:                        # fastest first: keep each that is more faithful than every faster one
        if ce[1].disagree < best:
            front.append(ce)
            best = ce[1].disagree
    if len(front) <= n:
        rest = [ce for ce in ok if ce not in front]
        return front + rest[:n - len(front)]
    step = (len(front) - 1) / (n - 1) if n > 1 else 0
    return [front[round(i * step)] for i in range(n)]


def choose(cands: list[dict], max_drop: float) -> tuple[dict | None, list[dict]]:
    """The fastest measured artifact whose evaluation top-1 is within ``max_drop`` points of fp32, and all that are."""
    ok = [c for c in cands if c["top1"] is not None and c["latency_ms_median"] and c["drop"] <= max_drop]
    return (min(ok, key=lambda c: c["latency_ms_median"]) if ok else None), ok


def _est_row(res: dict) -> dict:
    if not res:
        return {"error": "not measured (budget)"}
    if "error" in res:
        return {"error": res["error"]}
    return {"drop": round(res["base_top1"] - res["top1"], 3), "flops": round(res["flops"], 4),
            "disagree_pct": round(100 * res["disagree"], 2), "images": res["images"]}


def _mark_pareto(cands: list[dict]) -> None:
    """``pareto``: no other candidate is both at least as accurate and at least as fast (and better in one)."""
    pts = [c for c in cands if c["top1"] is not None and c["latency_ms_median"]]
    for c in cands:
        c["pareto"] = c in pts and not any(o is not c and o["top1"] >= c["top1"] and o["latency_ms_median"] <= c["latency_ms_median"]
                                           and (o["top1"] > c["top1"] or o["latency_ms_median"] < c["latency_ms_median"])
                                           for o in pts)

#!/usr/bin/env python3
"""Regenerate tests/data/pyhf_infer_reference.json: pyhf fits and asymptotic inference.

See tests/pyhf/INFER_REFERENCE.md for the schema and for what the numbers mean.

Backend: pyhf numpy (float64), scipy optimizer (SLSQP, finite-difference
gradients, because the numpy backend has no autodiff).
  * "tight"  : pyhf.optimize.scipy_optimizer(tolerance=1e-12)  -> the reference
  * "default": pyhf.optimize.scipy_optimizer()  (tolerance=None, SLSQP's own
               ftol=1e-6)  -> what a plain pyhf user gets; recorded for comparison
  * "check"  : tolerance=1e-14, fresh fit from suggested_init() (small models
               only), to show how well the tight fit pins down the parameters.
  * multi-start (small models only): each free / fixed-POI fit is also run (tight)
               from N_STARTS seeded random starts -> "twice_nll_global".

Models (same conventions as make_reference.py):
  * every examples/models/*.json, every measurement;
  * every *.json in $NEXTSTAT_WORKSPACES (default <repo>/../shared/workspaces),
    first measurement, referred to as "shared:<file name>".
Interp codes: always both passed via modifier_settings; (code4, code4p) for all,
plus (code1, code0) for examples/models/counting.json.

Every unit of work (one fit / one hypotest / one upper limit) is cached as
JSON in --cache (default tests/pyhf/.infer_cache/, git-ignored by a .gitignore
written inside it), keyed by model content, measurement, interp, task and the
optimizer settings, so an interrupted run resumes where it stopped.
Units run in --jobs worker processes (default: number of CPUs).

Usage:
  python3 tests/pyhf/make_infer_reference.py [--jobs N] [--out PATH] [--cache DIR]
          [--no-cache] [--no-shared] [--only SUBSTRING]
Full run: ~40 min wall with --jobs 2 (4650 CPU-s, 3500 of them workspace_tHu.json);
re-assembling from a complete cache: ~4 s.
"""

import argparse
import glob
import hashlib
import json
import logging
import multiprocessing as mp
import os
import platform
import sys
import time
import traceback
import warnings
import zlib
from pathlib import Path

import numpy as np
import scipy
import pyhf
from pyhf.exceptions import FailedMinimization

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = REPO_ROOT / "tests" / "data" / "pyhf_infer_reference.json"
DEFAULT_SHARED = REPO_ROOT.parent / "shared" / "workspaces"
DEFAULT_CACHE = REPO_ROOT / "tests" / "pyhf" / ".infer_cache"

EXPECTED_PYHF = "0.7.6"
CACHE_VERSION = 1

OPTIMIZERS = {
    "tight": {"name": "scipy", "method": "SLSQP", "tolerance": 1e-12, "maxiter": 100000},
    "default": {"name": "scipy", "method": "SLSQP", "tolerance": None, "maxiter": 100000},
    "check": {"name": "scipy", "method": "SLSQP", "tolerance": 1e-14, "maxiter": 100000},
}
DEFAULT_INTERP = ("code4", "code4p")
EXTRA_INTERP = {"examples/models/counting.json": [("code1", "code0")]}

SMALL_POIS = [0.0, 0.5, 1.0, 2.0, 3.0]
HYPOTEST_MUS = [0.5, 1.0, 2.0]
HYPOTEST_STATS = ["qtilde", "q"]
LEVEL = 0.05
UL_RTOL_TIGHT = 1e-10  # toms748 rtol (pyhf default 1e-4); atol stays pyhf's 2e-12
UL_WIDEN_FACTOR = 10.0  # retry with POI upper bound x this if the limit lies beyond it

# Multi-start (small models only): every free / fixed-POI fit is repeated from
# N_STARTS seeded random starts, to catch a pyhf fit that stopped in a local minimum
# (happens with the non-smooth code1/code0 interpolation: kinks at alpha = 0).
N_STARTS = 8
START_ALPHA = 1.5   # normsys/histosys alphas ~ U(-1.5, 1.5)
START_FACTOR = 0.2  # other free factors ~ U(1 - 0.2, 1 + 0.2)
START_LUMI = 2.0    # lumi ~ aux +- 2 sigma
START_POI = (-1.0, 5.0)  # free POI ~ U(this range intersected with its bounds)
GLOBAL_EPS = 1e-8   # a start counts as a different (lower) minimum below primary - this

# Large workspaces (tHu): their own, reduced plan.
LARGE_NPARS = 100
LARGE_POIS = sorted({round(0.25 * i, 4) for i in range(21)} | {4.2, 4.225, 4.25, 4.275, 4.3})
LARGE_DEFAULT_POIS = [4.2, 4.225, 4.25, 4.275, 4.3]  # also fitted at pyhf's default tol
LARGE_HYPOTESTS = [(1.0, "qtilde")]


# --------------------------------------------------------------------------- helpers

def set_optimizer(kind):
    o = OPTIMIZERS[kind]
    pyhf.set_backend(
        "numpy",
        pyhf.optimize.scipy_optimizer(tolerance=o["tolerance"], maxiter=o["maxiter"]),
        precision="64b",
    )


def f(x):
    """Plain float from a numpy scalar / 0-d / 1-element array."""
    return float(np.asarray(x).reshape(-1)[0]) if np.ndim(x) else float(x)


def fl(xs):
    return [f(x) for x in xs]


class Capture(logging.Handler):
    """Collects pyhf log records (WARNING and up) and Python warnings of one unit."""

    def __init__(self):
        super().__init__(level=logging.WARNING)
        self.messages = []

    def emit(self, record):
        msg = record.getMessage().split("\n")[0]
        self.add(f"{record.name} {record.levelname}: {msg}")

    def add(self, msg):
        if msg not in self.messages:
            self.messages.append(msg)


_MODELS = {}


def get_model(case):
    key = case["id"]
    if key not in _MODELS:
        spec = json.loads(Path(case["path"]).read_text())
        ws = pyhf.Workspace(spec)
        model = ws.model(
            measurement_name=case["measurement"],
            modifier_settings={
                "normsys": {"interpcode": case["interp"][0]},
                "histosys": {"interpcode": case["interp"][1]},
            },
        )
        _MODELS[key] = (model, ws.data(model))
    return _MODELS[key]


def twice_nll(model, data, pars):
    with np.errstate(all="ignore"):
        return f(pyhf.infer.mle.twice_nll(np.asarray(pars, dtype=np.float64), data, model))


def do_fit(model, data, poi=None):
    """Free fit (poi None) or fixed-POI fit with the current optimizer."""
    kw = dict(return_fitted_val=True, return_result_obj=True)
    try:
        if poi is None:
            pars, val, res = pyhf.infer.mle.fit(data, model, **kw)
        else:
            pars, val, res = pyhf.infer.mle.fixed_poi_fit(poi, data, model, **kw)
        out = {"twice_nll": f(val), "converged": True, "pars": fl(pars)}
    except FailedMinimization as e:
        res = e.result  # scipy result; x is the full vector (scipy: no stitching)
        out = {"twice_nll": f(res.fun), "converged": False, "pars": fl(res.x),
               "message": str(res.message)}
    out["nit"] = int(getattr(res, "nit", -1))
    out["nfev"] = int(getattr(res, "nfev", -1))
    return out


# --------------------------------------------------------------------------- tasks

def task_init(model, data, param):
    init = model.config.suggested_init()
    return {"twice_nll_at_init": twice_nll(model, data, init)}


def task_fit(model, data, param):
    set_optimizer(param["opt"])
    return do_fit(model, data, param.get("poi"))


def random_starts(model, poi, seed):
    cfg = model.config
    types = {}
    for name, mtype in cfg.modifiers:
        types.setdefault(name, set()).add(mtype)
    init = [float(v) for v in cfg.suggested_init()]
    bounds = cfg.suggested_bounds()
    fixed = cfg.suggested_fixed()
    rng = np.random.default_rng(seed)
    starts = []
    for _ in range(N_STARTS):
        x = list(init)
        for name in cfg.par_order:
            t = types.get(name, set())
            sl = cfg.par_slice(name)
            for i in range(sl.start, sl.stop):
                if fixed[i]:
                    continue
                lo, hi = float(bounds[i][0]), float(bounds[i][1])
                if i == cfg.poi_index:
                    want = START_POI
                elif t & {"normsys", "histosys"}:
                    want = (-START_ALPHA, START_ALPHA)
                elif "lumi" in t:
                    ps = cfg.param_set(name)
                    a, sg = float(ps.auxdata[0]), float(ps.sigmas[0])
                    want = (a - START_LUMI * sg, a + START_LUMI * sg)
                else:
                    want = (1 - START_FACTOR, 1 + START_FACTOR)
                a, b = max(lo, want[0]), min(hi, want[1])
                if a < b:
                    x[i] = float(rng.uniform(a, b))
        if poi is not None:
            x[cfg.poi_index] = poi
        starts.append(x)
    return starts


def task_multistart(model, data, param):
    """SLSQP (tight) from N_STARTS random starts; returns the lowest one."""
    set_optimizer("tight")
    poi = param.get("poi")
    seed = zlib.crc32(json.dumps(param, sort_keys=True).encode())
    best = None
    values = []
    for k, x in enumerate(random_starts(model, poi, seed)):
        kw = dict(init_pars=x, return_fitted_val=True)
        try:
            with np.errstate(all="ignore"):
                if poi is None:
                    pars, val = pyhf.infer.mle.fit(data, model, **kw)
                else:
                    pars, val = pyhf.infer.mle.fixed_poi_fit(poi, data, model, **kw)
        except FailedMinimization:
            values.append(None)
            continue
        v = f(val)
        values.append(v if np.isfinite(v) else None)
        if np.isfinite(v) and (best is None or v < best["twice_nll"]):
            best = {"twice_nll": v, "pars": fl(pars), "start": k}
    return {"best": best, "values": values}


def task_hypotest(model, data, param):
    set_optimizer("tight")
    mu, ts = param["mu"], param["test_stat"]
    r = pyhf.infer.hypotest(
        mu, data, model, test_stat=ts, calctype="asymptotics",
        return_expected_set=True, return_tail_probs=True, return_calculator=True,
    )
    cls_obs, tails, exp_set, calc = r
    fp = calc.fitted_pars
    asimov = model.expected_data(fp.asimov_pars)
    pi = model.config.poi_index
    out = {"mu": mu, "test_stat": ts}
    if ts == "q0":
        # pyhf returns p0 (CLsb of the q0 test) and [CLb]; expected set is p0's.
        out.update({"p0_obs": f(cls_obs), "clb": f(tails[0]), "p0_exp": fl(exp_set)})
    else:
        out.update({"cls_obs": f(cls_obs), "clsb": f(tails[0]), "clb": f(tails[1]),
                    "cls_exp": fl(exp_set)})
    out.update({
        "sqrt_qmu_A": f(calc.sqrtqmuA_v),
        "muhat": f(fp.free_fit_to_data[pi]),
        "muhat_asimov": f(fp.free_fit_to_asimov[pi]),
        "twice_nll_free_data": twice_nll(model, data, fp.free_fit_to_data),
        "twice_nll_fixed_data": twice_nll(model, data, fp.fixed_poi_fit_to_data),
        "twice_nll_free_asimov": twice_nll(model, asimov, fp.free_fit_to_asimov),
        "twice_nll_fixed_asimov": twice_nll(model, asimov, fp.fixed_poi_fit_to_asimov),
    })
    # The test statistics exactly as pyhf forms them from those fits
    # (pyhf.infer.test_statistics._qmu_like / q0 and AsymptoticCalculator.teststatistic).
    def clipped(fixed, free, muhat):
        t = max(fixed - free, 0.0)
        if ts == "q0":
            return 0.0 if muhat < 0 else t
        return 0.0 if muhat > mu else t
    q_obs = clipped(out["twice_nll_fixed_data"], out["twice_nll_free_data"], out["muhat"])
    q_a = clipped(out["twice_nll_fixed_asimov"], out["twice_nll_free_asimov"],
                  out["muhat_asimov"])
    sq, sqa = np.sqrt(q_obs), np.sqrt(q_a)
    if ts in ("q", "q0") or sq <= sqa:
        t = sq - sqa
        out["teststat_formula"] = "sqrt(q) - sqrt(q_A)"
    else:
        t = (q_obs - q_a) / (2 * sqa)
        out["teststat_formula"] = "(q - q_A) / (2 sqrt(q_A))"
    out["q_obs"] = float(q_obs)
    out["q_asimov"] = float(q_a)
    out["teststat"] = float(t)
    return out


def task_upper_limit(model, data, param):
    set_optimizer(param["opt"])
    kw = {}
    if param["rtol"] is not None:
        kw["rtol"] = param["rtol"]  # upper_limit passes unknown kwargs to toms748_scan
    pi = model.config.poi_index
    bounds = [list(b) for b in model.config.suggested_bounds()]
    out = {"level": LEVEL, "test_stat": "qtilde", "rtol": param["rtol"] or 1e-4,
           "optimizer": param["opt"], "poi_bounds": list(bounds[pi])}
    try:
        obs, exp, (scan, _res) = pyhf.infer.intervals.upper_limits.upper_limit(
            data, model, scan=None, level=LEVEL, return_results=True, **kw)
    except ValueError as e:
        # toms748_scan doubles its upper bracket beyond the POI bound, and the fit
        # then refuses an init outside the bounds.  Retry with a wider POI bound.
        out["error"] = str(e).split("\n")[0]
        bounds[pi][1] = bounds[pi][1] * UL_WIDEN_FACTOR
        out["poi_bounds_used"] = list(bounds[pi])
        obs, exp, (scan, _res) = pyhf.infer.intervals.upper_limits.upper_limit(
            data, model, scan=None, level=LEVEL, return_results=True,
            par_bounds=bounds, **kw)
    out.update({"obs": f(obs), "exp": fl(exp), "n_hypotests": len(scan)})
    return out


TASKS = {"init": task_init, "fit": task_fit, "multistart": task_multistart,
         "hypotest": task_hypotest,
         "upper_limit": task_upper_limit}


def run_unit(unit):
    """Worker entry point: returns (unit key, result dict)."""
    case, task, param = unit["case"], unit["task"], unit["param"]
    cache_file = unit["cache_file"]
    if cache_file and Path(cache_file).exists():
        return unit["key"], json.loads(Path(cache_file).read_text()), True
    cap = Capture()
    plog = logging.getLogger("pyhf")
    plog.addHandler(cap)
    plog.propagate = False
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as wlist:
        warnings.simplefilter("always")
        try:
            model, data = get_model(case)
            res = TASKS[task](model, data, param)
        except Exception as e:  # record, don't die: the reference notes the failure
            res = {"error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}",
                   "traceback": traceback.format_exc(limit=3)}
    for w in wlist:
        if issubclass(w.category, DeprecationWarning):
            continue  # jsonschema's RefResolver notice at model build: not about the fit
        cap.add(f"{w.category.__name__}: {str(w.message).splitlines()[0]}")
    plog.removeHandler(cap)
    res["seconds"] = round(time.perf_counter() - t0, 3)
    if cap.messages:
        res["warnings"] = cap.messages
    if cache_file:
        tmp = Path(cache_file + ".tmp")
        tmp.write_text(json.dumps(res))
        tmp.replace(cache_file)
    return unit["key"], res, False


# --------------------------------------------------------------------------- planning

def collect_cases(no_shared, only):
    inputs = []
    for p in sorted(glob.glob(str(REPO_ROOT / "examples" / "models" / "*.json"))):
        spec = json.loads(Path(p).read_text())
        key = Path(p).relative_to(REPO_ROOT).as_posix()
        inputs.append((key, p, [m["name"] for m in spec["measurements"]]))
    if not no_shared:
        shared = Path(os.environ.get("NEXTSTAT_WORKSPACES", DEFAULT_SHARED))
        files = sorted(glob.glob(str(shared / "*.json")))
        if not files:
            sys.exit(f"no workspaces found in {shared} (set NEXTSTAT_WORKSPACES)")
        for p in files:
            spec = json.loads(Path(p).read_text())
            inputs.append((f"shared:{Path(p).name}", p, [spec["measurements"][0]["name"]]))
    cases = []
    for key, path, measurements in inputs:
        if only and only not in key:
            continue
        content_hash = hashlib.sha256(Path(path).read_bytes()).hexdigest()
        for meas in measurements:
            for interp in [DEFAULT_INTERP] + EXTRA_INTERP.get(key, []):
                cases.append({"id": f"{key}|{meas}|{interp[0]}|{interp[1]}", "model": key,
                              "path": path, "measurement": meas, "interp": interp,
                              "sha256": content_hash})
    return cases


def plan_units(case, large):
    """List of (task, param, cost estimate) for one case."""
    u = [("init", {}, 0), ("fit", {"opt": "tight"}, 60), ("fit", {"opt": "default"}, 35)]
    if large:
        for mu in LARGE_POIS:
            u.append(("fit", {"opt": "tight", "poi": mu}, 80))
        for mu in LARGE_DEFAULT_POIS:
            u.append(("fit", {"opt": "default", "poi": mu}, 40))
        for mu, ts in LARGE_HYPOTESTS:
            u.append(("hypotest", {"mu": mu, "test_stat": ts}, 400))
        return u
    u.append(("fit", {"opt": "check"}, 0))
    u.append(("multistart", {}, 5))
    for mu in SMALL_POIS:
        u.append(("multistart", {"poi": mu}, 5))
        u.append(("fit", {"opt": "tight", "poi": mu}, 0))
        u.append(("fit", {"opt": "default", "poi": mu}, 0))
    for ts in HYPOTEST_STATS:
        for mu in HYPOTEST_MUS:
            u.append(("hypotest", {"mu": mu, "test_stat": ts}, 0))
    u.append(("hypotest", {"mu": 0.0, "test_stat": "q0"}, 0))
    u.append(("upper_limit", {"opt": "tight", "rtol": UL_RTOL_TIGHT}, 100))
    u.append(("upper_limit", {"opt": "default", "rtol": None}, 70))
    return u


def unit_key(case, task, param):
    return json.dumps([case["id"], task, param], sort_keys=True)


def cache_name(case, task, param):
    blob = json.dumps({"v": CACHE_VERSION, "pyhf": pyhf.__version__, "sha": case["sha256"],
                       "meas": case["measurement"], "interp": case["interp"], "task": task,
                       "param": param, "opt": OPTIMIZERS, "level": LEVEL,
                       "widen": UL_WIDEN_FACTOR}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:24] + ".json"


# --------------------------------------------------------------------------- assembly

def named(par_names, pars):
    return {n: v for n, v in zip(par_names, pars)}


def global_fields(par_names, primary, ms):
    """Compare pyhf's fit (primary, from suggested_init) with the multi-start best."""
    pv = primary["twice_nll"]
    best = ms.get("best") if ms else None
    out = {}
    if best is not None and np.isfinite(pv) and best["twice_nll"] < pv - GLOBAL_EPS:
        out["twice_nll_global"] = best["twice_nll"]
        out["pyhf_above_global"] = pv - best["twice_nll"]
        out["bestfit_global"] = named(par_names, best["pars"])
    else:
        out["twice_nll_global"] = pv if best is None else min(pv, best["twice_nll"])
        out["pyhf_above_global"] = max(0.0, pv - out["twice_nll_global"]) if np.isfinite(pv) else 0.0
    if ms:
        out["multistart_failed"] = sum(v is None for v in ms["values"])
    return out


def assemble(case, info, results):
    """Build the output record of one case from its unit results."""
    par_names, pi = info["par_names"], info["poi_index"]
    R = lambda task, **param: results[unit_key(case, task, param)]  # noqa: E731
    rec = {"model": case["model"], "measurement": case["measurement"],
           "interp": {"normsys": case["interp"][0], "histosys": case["interp"][1]},
           "npars": len(par_names), "par_names": par_names, "poi": info["poi"],
           "poi_index": pi, "poi_bounds": info["poi_bounds"],
           "suggested_fixed": info["suggested_fixed"],
           "suggested_init": info["suggested_init"], "par_bounds": info["par_bounds"]}
    fixed_names = set(info["suggested_fixed"]) | {info["poi"]}

    def at_bound(pars, free_poi):
        """Free parameters sitting on a bound (within 1e-6 of the bound range)."""
        out = []
        for n, x, (lo, hi) in zip(par_names, pars, info["par_bounds"]):
            if n in fixed_names and not (free_poi and n == info["poi"]):
                continue
            tol = 1e-6 * max(1.0, hi - lo)
            if abs(x - lo) <= tol:
                out.append(f"{n}=lo")
            elif abs(x - hi) <= tol:
                out.append(f"{n}=hi")
        return out

    rec["twice_nll_at_init"] = R("init")["twice_nll_at_init"]
    warn = {}

    def note(where, r):
        if r.get("warnings"):
            warn[where] = r["warnings"]
        if r.get("error"):
            warn.setdefault(where, []).append("ERROR " + r["error"])

    t = R("fit", opt="tight")
    note("mle", t)
    rec["mle"] = {"twice_nll": t["twice_nll"], "bestfit": named(par_names, t["pars"]),
                  "converged": t["converged"], "nit": t["nit"], "nfev": t["nfev"],
                  "at_bound": at_bound(t["pars"], True), "seconds": t["seconds"]}
    glob = {}  # poi (None = free fit) -> twice_nll_global
    if not info["large"]:
        ms = R("multistart")
        note("mle_multistart", ms)
        rec["mle"].update(global_fields(par_names, t, ms))
        glob[None] = rec["mle"]["twice_nll_global"]
    d = R("fit", opt="default")
    note("mle_default", d)
    rec["mle_default"] = {"twice_nll": d["twice_nll"], "poi_value": d["pars"][pi],
                          "converged": d["converged"], "nit": d["nit"], "nfev": d["nfev"],
                          "delta_twice_nll_vs_tight": d["twice_nll"] - t["twice_nll"],
                          "seconds": d["seconds"]}
    if not info["large"]:
        c = R("fit", opt="check")
        note("mle_check", c)
        dp = np.abs(np.asarray(c["pars"]) - np.asarray(t["pars"]))
        rec["mle_check"] = {"tolerance": OPTIMIZERS["check"]["tolerance"],
                            "twice_nll": c["twice_nll"], "converged": c["converged"],
                            "delta_twice_nll_vs_tight": c["twice_nll"] - t["twice_nll"],
                            "max_abs_dpar_vs_tight": float(dp.max()),
                            "argmax_dpar": par_names[int(dp.argmax())],
                            "abs_dpoi_vs_tight": float(dp[pi]), "seconds": c["seconds"]}

    pois = LARGE_POIS if info["large"] else SMALL_POIS
    default_pois = LARGE_DEFAULT_POIS if info["large"] else SMALL_POIS
    rec["fixed_poi_fits"] = []
    for mu in pois:
        r = R("fit", opt="tight", poi=mu)
        note(f"fixed_poi_fit {mu}", r)
        e = {"poi_name": info["poi"], "poi": mu, "twice_nll": r["twice_nll"],
             "converged": r["converged"], "nit": r["nit"],
             "at_bound": at_bound(r["pars"], False), "seconds": r["seconds"]}
        if not info["large"]:
            ms = R("multistart", poi=mu)
            note(f"fixed_poi_multistart {mu}", ms)
            e.update(global_fields(par_names, r, ms))
            glob[mu] = e["twice_nll_global"]
        if mu in default_pois:
            dr = R("fit", opt="default", poi=mu)
            note(f"fixed_poi_fit_default {mu}", dr)
            e["twice_nll_default"] = dr["twice_nll"]
            e["converged_default"] = dr["converged"]
        e["bestfit"] = named(par_names, r["pars"])
        rec["fixed_poi_fits"].append(e)

    hts = LARGE_HYPOTESTS if info["large"] else [
        (mu, ts) for ts in HYPOTEST_STATS for mu in HYPOTEST_MUS]
    rec["hypotest"] = []
    for mu, ts in hts:
        r = dict(R("hypotest", mu=mu, test_stat=ts))
        note(f"hypotest {ts} {mu}", r)
        r.pop("warnings", None)
        r.pop("traceback", None)
        # How far the data fits inside this hypotest are above the multi-start minima
        # (> ~1e-8: pyhf's CLs here rests on a local minimum).
        if None in glob and mu in glob and "twice_nll_free_data" in r:
            r["free_fit_above_global"] = r["twice_nll_free_data"] - glob[None]
            r["fixed_fit_above_global"] = r["twice_nll_fixed_data"] - glob[mu]
        rec["hypotest"].append(r)
    if not info["large"]:
        r = dict(R("hypotest", mu=0.0, test_stat="q0"))
        note("q0", r)
        r.pop("warnings", None)
        r.pop("traceback", None)
        rec["q0"] = r
        for name, opt, rtol in (("upper_limit", "tight", UL_RTOL_TIGHT),
                                ("upper_limit_default", "default", None)):
            r = dict(R("upper_limit", opt=opt, rtol=rtol))
            note(name, r)
            r.pop("warnings", None)
            r.pop("traceback", None)
            rec[name] = r
    rec["warnings"] = warn
    rec["seconds"] = round(sum(
        v.get("seconds", 0.0) for k, v in results.items() if json.loads(k)[0] == case["id"]), 2)
    return rec


def model_info(case):
    model, _ = get_model(case)
    cfg = model.config
    fixed = cfg.suggested_fixed()
    return {"par_names": list(cfg.par_names), "poi": cfg.poi_name, "poi_index": cfg.poi_index,
            "suggested_init": [float(v) for v in cfg.suggested_init()],
            "par_bounds": [[float(a), float(b)] for a, b in cfg.suggested_bounds()],
            "poi_bounds": [float(b) for b in cfg.suggested_bounds()[cfg.poi_index]],
            "suggested_fixed": [n for n, fx in zip(cfg.par_names, fixed) if fx],
            "large": cfg.npars > LARGE_NPARS}


def sanitize(obj, path, found):
    """Replace non-finite floats by None (strict JSON); list where they were."""
    if isinstance(obj, dict):
        return {k: sanitize(v, f"{path}.{k}" if path else k, found) for k, v in obj.items()}
    if isinstance(obj, list):
        return [sanitize(v, f"{path}[{i}]", found) for i, v in enumerate(obj)]
    if isinstance(obj, float) and not np.isfinite(obj):
        found.append({"path": path, "value": "nan" if np.isnan(obj) else
                      ("inf" if obj > 0 else "-inf")})
        return None
    return obj


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    ap.add_argument("--no-cache", action="store_true")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--no-shared", action="store_true",
                    help="skip the shared workspaces (NOT for committing the result)")
    ap.add_argument("--only", help="only models whose key contains this (NOT for committing)")
    args = ap.parse_args()

    if pyhf.__version__ != EXPECTED_PYHF:
        sys.exit(f"pyhf {EXPECTED_PYHF} required, found {pyhf.__version__}")
    t_start = time.perf_counter()
    set_optimizer("tight")

    cases = collect_cases(args.no_shared, args.only)
    infos = {c["id"]: model_info(c) for c in cases}
    _MODELS.clear()  # don't ship models to the workers; each builds its own

    if not args.no_cache:
        args.cache.mkdir(parents=True, exist_ok=True)
        gi = args.cache / ".gitignore"
        if not gi.exists():
            gi.write_text("*\n")
    units = []
    for c in cases:
        for task, param, cost in plan_units(c, infos[c["id"]]["large"]):
            units.append({"case": c, "task": task, "param": param, "cost": cost,
                          "key": unit_key(c, task, param),
                          "cache_file": None if args.no_cache else
                          str(args.cache / cache_name(c, task, param))})
    units.sort(key=lambda u: -u["cost"])  # longest first for a better schedule

    results = {}
    n_cached = 0
    done = 0
    with mp.get_context("fork").Pool(args.jobs) as pool:
        for key, res, cached in pool.imap_unordered(run_unit, units):
            results[key] = res
            n_cached += cached
            done += 1
            if not cached and res.get("seconds", 0) > 5:
                k = json.loads(key)
                print(f"[{done}/{len(units)}] {time.perf_counter() - t_start:7.1f}s "
                      f"{k[0]} {k[1]} {k[2]}: {res.get('seconds')} s", file=sys.stderr)
    wall = time.perf_counter() - t_start

    doc = {
        "pyhf_version": pyhf.__version__,
        "numpy_version": np.__version__,
        "scipy_version": scipy.__version__,
        "python_version": platform.python_version(),
        "generated_by": "tests/pyhf/make_infer_reference.py",
        "backend": "numpy, precision 64b",
        "optimizers": OPTIMIZERS,
        "upper_limit": {"level": LEVEL, "tight_rtol": UL_RTOL_TIGHT, "default_rtol": 1e-4,
                        "atol": 2e-12, "widen_factor_on_bound_error": UL_WIDEN_FACTOR},
        "plan": {"small_pois": SMALL_POIS, "hypotest_mus": HYPOTEST_MUS,
                 "hypotest_test_stats": HYPOTEST_STATS, "large_npars": LARGE_NPARS,
                 "large_pois": LARGE_POIS, "large_default_pois": LARGE_DEFAULT_POIS,
                 "large_hypotests": LARGE_HYPOTESTS},
        "run": {"wall_seconds_this_run": round(wall, 1), "jobs": args.jobs,
                "units": len(units), "units_from_cache": n_cached,
                "cpu_seconds_all_units": round(sum(r.get("seconds", 0) for r in results.values()), 1)},
        "cases": [assemble(c, infos[c["id"]], results) for c in cases],
    }
    nonfinite = []
    doc = sanitize(doc, "", nonfinite)
    doc["nonfinite"] = nonfinite  # JSON null in the file = this non-finite pyhf value
    text = json.dumps(doc, indent=1, allow_nan=False) + "\n"
    json.loads(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"wrote {args.out} ({len(cases)} cases, {len(units)} units, {n_cached} cached, "
          f"{wall:.1f} s wall)", file=sys.stderr)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Regenerate tests/data/pyhf_toys_reference.json: pyhf 0.7.6 toy-based qtilde
distributions, for comparing nextstat's toys by a two-sample KS test.

For each shared workspace (shared:simple_workspace.json and
shared:complex_workspace.json, read from $NEXTSTAT_WORKSPACES, default
<repo>/../shared/workspaces; first measurement; ws.model() defaults, i.e.
normsys=code4, histosys=code4p), at mu = 1.0 with test_stat="qtilde" and pyhf
defaults otherwise (numpy backend, default scipy optimizer, suggested
init/bounds/fixed):

    calc = pyhf.infer.calculators.ToyCalculator(data, model, test_stat="qtilde",
                                                ntoys=N, track_progress=False)
    q_obs = calc.teststatistic(1.0)
    np.random.seed(SEED)                       # re-seeded per workspace
    sb, b = calc.distributions(1.0)
    clsb, clb, cls = calc.pvalues(q_obs, sb, b)
    clsb_exp, clb_exp, cls_exp = calc.expected_pvalues(sb, b)

plus the asymptotic CLs from pyhf.infer.hypotest(calctype="asymptotics").
pyhf draws its toys with scipy.stats (poisson/norm .rvs with no random_state),
i.e. from numpy's global RandomState, so np.random.seed() makes the run
reproducible (same pyhf/numpy/scipy versions).

Each workspace runs in its own worker process (--jobs, default min(2, #cpus)),
so the wall time is roughly that of the slowest workspace.

Usage:
  python3 tests/pyhf/make_toys_reference.py [--ntoys 2000] [--seed 20240607]
          [--jobs 2] [--out tests/data/pyhf_toys_reference.json] [--only SUBSTR]
"""

import argparse
import json
import multiprocessing as mp
import os
import platform
import sys
import time
import warnings
from pathlib import Path

# One BLAS thread, set before numpy is imported (also inherited by the spawned
# workers): with multi-threaded BLAS the SLSQP fits can differ at the ~1e-9
# level, so the output would depend on the machine's thread count.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

# --- numpy 2 shim -----------------------------------------------------------
# pyhf 0.7.6 calls numpy.percentile(..., interpolation=...) (in
# pyhf/tensor/numpy_backend.py::percentile, used by
# EmpiricalDistribution.expected_value and ToyCalculator.expected_pvalues).
# numpy 2 removed the deprecated `interpolation=` keyword in favour of
# `method=`. Wrap numpy.percentile to translate it. pyhf's backend module does
# `import numpy as np` and looks up np.percentile at call time, so patching the
# attribute on the numpy module is enough. Results are identical to numpy 1.x
# (`interpolation="linear"` == `method="linear"`).
_np_percentile = np.percentile


def _percentile_shim(*args, interpolation=None, **kwargs):
    if interpolation is not None:
        kwargs.setdefault("method", interpolation)
    return _np_percentile(*args, **kwargs)


np.percentile = _percentile_shim
# -----------------------------------------------------------------------------

import scipy  # noqa: E402
import pyhf  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = REPO_ROOT / "tests" / "data" / "pyhf_toys_reference.json"
DEFAULT_SHARED = REPO_ROOT.parent / "shared" / "workspaces"
WORKSPACES = ["simple_workspace.json", "complex_workspace.json"]
EXPECTED_PYHF = "0.7.6"
MU = 1.0
TEST_STAT = "qtilde"
DEFAULT_SEED = 20240607
SIG = 10  # significant digits kept in the JSON


def r(x):
    """Round to SIG significant digits (plain float; None for non-finite)."""
    x = float(x)
    if not np.isfinite(x):
        return None
    return float(f"{x:.{SIG}g}")


def rl(xs):
    return [r(x) for x in np.asarray(xs, dtype=float).ravel()]


def run_one(task):
    fname, path, ntoys, seed = task
    pyhf.set_backend("numpy")  # default optimizer: scipy (SLSQP)
    warnings.simplefilter("ignore")
    spec = json.loads(Path(path).read_text())
    ws = pyhf.Workspace(spec)
    model = ws.model()  # first measurement, default interp codes
    data = ws.data(model)
    init = model.config.suggested_init()
    bounds = model.config.suggested_bounds()
    fixed = model.config.suggested_fixed()

    t0 = time.time()
    calc = pyhf.infer.calculators.ToyCalculator(
        data, model, test_stat=TEST_STAT, ntoys=ntoys, track_progress=False
    )
    q_obs = calc.teststatistic(MU)
    # the parameter points the toys are generated at (same calls as
    # ToyCalculator.distributions; deterministic, no random numbers used)
    sig_pars = pyhf.infer.mle.fixed_poi_fit(MU, data, model, init, bounds, fixed)
    bkg_pars = pyhf.infer.mle.fixed_poi_fit(0.0, data, model, init, bounds, fixed)

    np.random.seed(seed)
    t1 = time.time()
    sb_dist, b_dist = calc.distributions(MU)
    t_toys = time.time() - t1

    clsb, clb, cls_obs = calc.pvalues(q_obs, sb_dist, b_dist)
    clsb_exp, clb_exp, cls_exp = calc.expected_pvalues(sb_dist, b_dist)

    cls_asym, cls_asym_exp = pyhf.infer.hypotest(
        MU,
        data,
        model,
        test_stat=TEST_STAT,
        calctype="asymptotics",
        return_expected_set=True,
    )
    wall = time.time() - t0

    sb = np.asarray(sb_dist.samples, dtype=float)
    b = np.asarray(b_dist.samples, dtype=float)
    print(
        f"[{fname}] ntoys={ntoys} toys {t_toys:.1f}s total {wall:.1f}s  "
        f"q_obs={float(q_obs):.6g} CLs={float(cls_obs):.6g} "
        f"(CLsb={float(clsb):.6g} CLb={float(clb):.6g}) asym CLs={float(cls_asym):.6g}",
        flush=True,
    )
    return {
        "model": f"shared:{fname}",
        "measurement": spec["measurements"][0]["name"],
        "interp": {"normsys": "code4", "histosys": "code4p"},
        "poi": model.config.poi_name,
        "mu": MU,
        "test_stat": TEST_STAT,
        "ntoys": ntoys,
        "numpy_seed": seed,
        "par_names": list(model.config.par_names),
        "suggested_fixed": [bool(f) for f in fixed],
        "data": rl(data),
        "toy_pars_signal_plus_background": rl(sig_pars),
        "toy_pars_background_only": rl(bkg_pars),
        "q_obs": r(q_obs),
        "cls_obs": r(cls_obs),
        "clsb": r(clsb),
        "clb": r(clb),
        "cls_exp": rl(cls_exp),
        "clsb_exp": rl(clsb_exp),
        "clb_exp": rl(clb_exp),
        "cls_asymptotic": r(cls_asym),
        "cls_asymptotic_exp": rl(cls_asym_exp),
        "signal_plus_background": rl(sb),
        "background_only": rl(b),
        "wall_time_s": round(wall, 1),
        "toys_wall_time_s": round(t_toys, 1),
    }


def dumps(obj, indent=1):
    """json.dumps(indent=1), but lists of scalars on one line (small, diffable)."""

    def enc(o, level):
        pad = " " * (indent * level)
        if isinstance(o, dict):
            if not o:
                return "{}"
            items = [f"{pad}{' ' * indent}{json.dumps(k)}: {enc(v, level + 1)}" for k, v in o.items()]
            return "{\n" + ",\n".join(items) + f"\n{pad}}}"
        if isinstance(o, list) and any(isinstance(x, (dict, list)) for x in o):
            items = [f"{pad}{' ' * indent}{enc(v, level + 1)}" for v in o]
            return "[\n" + ",\n".join(items) + f"\n{pad}]"
        return json.dumps(o, separators=(", ", ": "))

    return enc(obj, 0)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ntoys", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED)
    ap.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--only", default=None, help="only workspaces whose name contains this")
    args = ap.parse_args()

    if pyhf.__version__ != EXPECTED_PYHF:
        print(f"warning: pyhf {pyhf.__version__}, reference is {EXPECTED_PYHF}", file=sys.stderr)

    shared = Path(os.environ.get("NEXTSTAT_WORKSPACES", DEFAULT_SHARED))
    tasks = []
    for fname in WORKSPACES:
        if args.only and args.only not in fname:
            continue
        path = shared / fname
        if not path.is_file():
            sys.exit(f"missing {path} (set NEXTSTAT_WORKSPACES)")
        tasks.append((fname, str(path), args.ntoys, args.seed))

    t0 = time.time()
    if args.jobs > 1 and len(tasks) > 1:
        with mp.get_context("spawn").Pool(min(args.jobs, len(tasks))) as pool:
            cases = pool.map(run_one, tasks)
    else:
        cases = [run_one(t) for t in tasks]
    wall = time.time() - t0

    out = {
        "pyhf_version": pyhf.__version__,
        "numpy_version": np.__version__,
        "scipy_version": scipy.__version__,
        "python_version": platform.python_version(),
        "generated_by": "tests/pyhf/make_toys_reference.py",
        "command": "python3 tests/pyhf/make_toys_reference.py "
        + f"--ntoys {args.ntoys} --seed {args.seed}",
        "notes": "pyhf ToyCalculator(data, model, test_stat='qtilde', ntoys, "
        "track_progress=False), numpy backend, default optimizer, suggested "
        "init/bounds/fixed; np.random.seed(numpy_seed) immediately before "
        "calc.distributions(mu), per workspace. signal_plus_background / "
        "background_only are the toy qtilde values in generation order. "
        "toy_pars_* are the fixed-POI fits to the observed data (mu and 0) at "
        "which pyhf generates the toys. Floats rounded to 10 significant digits.",
        "wall_time_s": round(wall, 1),
        "cases": cases,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(dumps(out) + "\n")
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes) in {wall:.1f}s")


if __name__ == "__main__":
    main()

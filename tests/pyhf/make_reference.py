#!/usr/bin/env python3
"""Regenerate tests/data/pyhf_nll_reference.json from pyhf (numpy backend, float64).

NLL convention: nll = -model.logpdf(pars, ws.data(model))[0], constants included.

Models:
  * every examples/models/*.json, every measurement;
  * every *.json in $NEXTSTAT_WORKSPACES (default: <repo>/../shared/workspaces),
    first measurement only, referred to as "shared:<file name>".

Interpolation codes: normsys in {code1, code4} x histosys in {code0, code2, code4p};
workspaces with more than LARGE_NPARS parameters (workspace_tHu.json) only get
(code4, code4p) and (code1, code0).

Points per case: points[0] = suggested_init(), then N_RANDOM random points
(seeded, deterministic), then optional hand-written edge points (EDGE_POINTS).
A point whose pyhf logpdf is not finite is recorded with "nll": null.
Random points at which pyhf is finite although some expected main-bin rate is
negative (possible only when the observed count there is 0; see EDGE_CASES.md)
are re-drawn, so the reference never depends on that ill-defined behaviour.

Usage:  python3 tests/pyhf/make_reference.py [--out PATH] [--no-shared]
"""

import argparse
import glob
import json
import os
import sys
import zlib
from pathlib import Path

import numpy as np
import pyhf

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = REPO_ROOT / "tests" / "data" / "pyhf_nll_reference.json"
DEFAULT_SHARED = REPO_ROOT.parent / "shared" / "workspaces"

EXPECTED_PYHF = "0.7.6"
N_RANDOM = 20
LARGE_NPARS = 100
ALL_INTERP = [(ns, hs) for ns in ("code1", "code4") for hs in ("code0", "code2", "code4p")]
LARGE_INTERP = [("code4", "code4p"), ("code1", "code0")]

# Ranges used for random draws (intersected with the parameter's bounds).
FACTOR_RANGE = (0.5, 2.0)  # normfactor, shapefactor, shapesys, staterror gammas
ALPHA_RANGE = (-3.0, 3.0)  # normsys / histosys
LUMI_NSIGMA = 5.0  # lumi: auxdata +- 5 sigma

# Extra hand-written points: {model key: [ {par_name: value, ...}, ... ]}.
# Unlisted parameters are at suggested_init().  Used to get deterministic
# non-finite (null) reference points: a negative expected rate in a bin with
# a positive observed count.
EDGE_POINTS = {
    "examples/models/shapes.json": [
        # signal bin 2 killed by its staterror gamma, interference (-3.0*mu)
        # dominates -> negative rate with 22.25 observed -> pyhf gives nan.
        {"mu": 10.0, "k_bkg": 0.2, "staterror_SR[2]": 1e-10},
    ],
}


def par_kinds(config):
    """Map parameter-set name -> kind used to choose the sampling range."""
    types = {}
    for name, mtype in config.modifiers:
        types.setdefault(name, set()).add(mtype)
    kinds = {}
    for name in config.par_order:
        t = types.get(name, set())
        if t & {"normsys", "histosys"}:
            kinds[name] = "alpha"
        elif t & {"normfactor", "shapefactor", "shapesys", "staterror"}:
            kinds[name] = "factor"
        elif "lumi" in t:
            kinds[name] = "lumi"
        else:
            kinds[name] = "other"
    return kinds


def sampling_ranges(config):
    """Per-parameter (lo, hi) ranges in par_names order (None = fixed)."""
    kinds = par_kinds(config)
    bounds = config.suggested_bounds()
    fixed = config.suggested_fixed()
    ranges = [None] * config.npars
    for name in config.par_order:
        sl = config.par_slice(name)
        kind = kinds[name]
        for i in range(sl.start, sl.stop):
            if fixed[i]:
                continue
            blo, bhi = float(bounds[i][0]), float(bounds[i][1])
            if kind == "alpha":
                want = ALPHA_RANGE
            elif kind == "factor":
                want = FACTOR_RANGE
            elif kind == "lumi":
                ps = config.param_set(name)
                aux = float(ps.auxdata[0])
                sig = float(ps.sigmas[0])
                want = (aux - LUMI_NSIGMA * sig, aux + LUMI_NSIGMA * sig)
            else:
                want = (blo, bhi)
            lo, hi = max(blo, want[0]), min(bhi, want[1])
            if not lo < hi:
                lo, hi = blo, bhi
            ranges[i] = (lo, hi)
    return ranges


def evaluate(model, data, pars):
    """Return (nll or None, min expected main-bin rate)."""
    with np.errstate(all="ignore"):
        p = np.asarray(pars, dtype=np.float64)
        lp = model.logpdf(p, data)[0]
        rates = model.expected_actualdata(p)
    nll = -float(lp)
    return (nll if np.isfinite(nll) else None), float(np.min(rates))


def case_seed(key, measurement, interp):
    return zlib.crc32(f"{key}|{measurement}|{interp[0]}|{interp[1]}".encode())


def make_case(ws, key, measurement, interp, edge_points):
    model = ws.model(
        measurement_name=measurement,
        modifier_settings={
            "normsys": {"interpcode": interp[0]},
            "histosys": {"interpcode": interp[1]},
        },
    )
    data = ws.data(model)
    config = model.config
    init = [float(v) for v in config.suggested_init()]
    ranges = sampling_ranges(config)
    rng = np.random.default_rng(case_seed(key, measurement, interp))

    point_pars = [init]
    for _ in range(N_RANDOM):
        for _attempt in range(100):
            pars = [
                init[i] if r is None else float(rng.uniform(r[0], r[1]))
                for i, r in enumerate(ranges)
            ]
            nll, min_rate = evaluate(model, data, pars)
            if nll is None or min_rate >= 0.0:
                break
        else:
            raise RuntimeError(f"{key}: could not draw a well-defined point")
        point_pars.append(pars)

    names = list(config.par_names)
    for overrides in edge_points:
        pars = list(init)
        for pname, value in overrides.items():
            pars[names.index(pname)] = float(value)
        point_pars.append(pars)

    points = []
    for pars in point_pars:
        nll, min_rate = evaluate(model, data, pars)
        if nll is not None and min_rate < 0.0:
            raise RuntimeError(f"{key}: ill-defined point (finite nll, negative rate)")
        points.append({"pars": pars, "nll": nll})
    return {
        "model": key,
        "measurement": measurement,
        "interp": {"normsys": interp[0], "histosys": interp[1]},
        "par_names": names,
        "points": points,
    }


def dump(doc, path):
    """JSON with one point per line (diff-friendly, still plain JSON)."""
    d = json.dumps
    lines = ["{"]
    lines.append(f' "pyhf_version": {d(doc["pyhf_version"])},')
    lines.append(f' "generated_by": {d(doc["generated_by"])},')
    lines.append(' "cases": [')
    for ci, case in enumerate(doc["cases"]):
        lines.append(
            f'  {{"model": {d(case["model"])}, "measurement": {d(case["measurement"])},'
            f' "interp": {d(case["interp"])},'
        )
        lines.append(f'   "par_names": {d(case["par_names"])},')
        lines.append('   "points": [')
        for pi, pt in enumerate(case["points"]):
            sep = "," if pi + 1 < len(case["points"]) else ""
            lines.append(f'    {{"pars": {d(pt["pars"])}, "nll": {d(pt["nll"])}}}{sep}')
        sep = "," if ci + 1 < len(doc["cases"]) else ""
        lines.append(f"   ]}}{sep}")
    lines.append(" ]")
    lines.append("}")
    text = "\n".join(lines) + "\n"
    json.loads(text)  # sanity: must be valid JSON
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return len(text)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--no-shared", action="store_true",
                    help="skip the shared workspaces (NOT for committing the result)")
    args = ap.parse_args()

    if pyhf.__version__ != EXPECTED_PYHF:
        sys.exit(f"pyhf {EXPECTED_PYHF} required, found {pyhf.__version__}")
    pyhf.set_backend("numpy", precision="64b")

    inputs = []  # (key, spec, measurements)
    for f in sorted(glob.glob(str(REPO_ROOT / "examples" / "models" / "*.json"))):
        spec = json.loads(Path(f).read_text())
        key = Path(f).relative_to(REPO_ROOT).as_posix()
        inputs.append((key, spec, [m["name"] for m in spec["measurements"]]))
    if not args.no_shared:
        shared = Path(os.environ.get("NEXTSTAT_WORKSPACES", DEFAULT_SHARED))
        files = sorted(glob.glob(str(shared / "*.json")))
        if not files:
            sys.exit(f"no workspaces found in {shared} (set NEXTSTAT_WORKSPACES)")
        for f in files:
            spec = json.loads(Path(f).read_text())
            inputs.append((f"shared:{Path(f).name}", spec, [spec["measurements"][0]["name"]]))

    cases = []
    for key, spec, measurements in inputs:
        ws = pyhf.Workspace(spec)
        npars = ws.model(measurement_name=measurements[0]).config.npars
        combos = LARGE_INTERP if npars > LARGE_NPARS else ALL_INTERP
        for meas in measurements:
            for interp in combos:
                cases.append(make_case(ws, key, meas, interp, EDGE_POINTS.get(key, [])))
        n_null = sum(p["nll"] is None for c in cases if c["model"] == key for p in c["points"])
        print(f"{key}: {len(measurements)} measurement(s) x {len(combos)} interp, "
              f"{npars} pars, {n_null} null point(s)", file=sys.stderr)

    doc = {
        "pyhf_version": pyhf.__version__,
        "generated_by": "tests/pyhf/make_reference.py",
        "cases": cases,
    }
    size = dump(doc, args.out)
    npts = sum(len(c["points"]) for c in cases)
    print(f"wrote {args.out} ({len(cases)} cases, {npts} points, {size / 1e6:.2f} MB)",
          file=sys.stderr)


if __name__ == "__main__":
    main()

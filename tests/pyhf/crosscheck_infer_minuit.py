#!/usr/bin/env python3
"""Optional cross-check of tests/data/pyhf_infer_reference.json with MINUIT.

Refits every case's free fit and fixed-POI fits with pyhf's minuit_optimizer
(iminuit MIGRAD, strategy 2 (--strategy), errordef 1 since the objective is 2*NLL,
tolerance 1e-6 -> EDM < 2e-9) and prints  ref - minuit  for 2*NLL.
A positive number means MINUIT found a lower minimum than the reference.
Needs `pip install iminuit`; the reference itself does not.

Usage: python3 tests/pyhf/crosscheck_infer_minuit.py [--ref PATH] [--large] [--only SUBSTR]
(--large also refits workspace_tHu.json: minutes per fit; restrict with --pois.)
"""

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np
import pyhf

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_REF = REPO_ROOT / "tests" / "data" / "pyhf_infer_reference.json"
DEFAULT_SHARED = REPO_ROOT.parent / "shared" / "workspaces"


def model_of(case):
    key = case["model"]
    if key.startswith("shared:"):
        path = Path(os.environ.get("NEXTSTAT_WORKSPACES", DEFAULT_SHARED)) / key[7:]
    else:
        path = REPO_ROOT / key
    ws = pyhf.Workspace(json.loads(path.read_text()))
    model = ws.model(measurement_name=case["measurement"], modifier_settings={
        "normsys": {"interpcode": case["interp"]["normsys"]},
        "histosys": {"interpcode": case["interp"]["histosys"]}})
    assert list(model.config.par_names) == case["par_names"]
    return model, ws.data(model)


def minuit_fit(model, data, poi=None):
    kw = dict(return_fitted_val=True, return_result_obj=True)
    try:
        if poi is None:
            pars, val, res = pyhf.infer.mle.fit(data, model, **kw)
        else:
            pars, val, res = pyhf.infer.mle.fixed_poi_fit(poi, data, model, **kw)
        return float(val), np.asarray(pars), True
    except pyhf.exceptions.FailedMinimization as e:
        return float(e.result.fun), np.asarray(e.result.x), False
    except AttributeError:
        # pyhf's minuit_optimizer crashes in hesse() when every parameter is fixed
        # (two_channel_workspace.json has only the POI): evaluate directly instead.
        pars = np.asarray(model.config.suggested_init(), dtype=float)
        pars[model.config.poi_index] = poi
        return float(pyhf.infer.mle.twice_nll(pars, data, model)[0]), pars, True


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ref", type=Path, default=DEFAULT_REF)
    ap.add_argument("--large", action="store_true")
    ap.add_argument("--only")
    ap.add_argument("--strategy", type=int, default=2)
    ap.add_argument("--pois", help="comma-separated subset of the fixed-POI values to refit")
    args = ap.parse_args()
    ref = json.loads(args.ref.read_text())
    logging.getLogger("pyhf").setLevel(logging.CRITICAL)  # pyhf logs whole results on failure
    pyhf.set_backend("numpy", pyhf.optimize.minuit_optimizer(
        tolerance=1e-6, strategy=args.strategy, errordef=1.0), precision="64b")
    worst = 0.0
    for case in ref["cases"]:
        if case["npars"] > ref["plan"]["large_npars"] and not args.large:
            continue
        if args.only and args.only not in case["model"]:
            continue
        model, data = model_of(case)
        pi = case["poi_index"]
        label = f'{case["model"]} {case["measurement"]} {case["interp"]["normsys"]}/{case["interp"]["histosys"]}'
        t0 = time.perf_counter()
        val, pars, ok = minuit_fit(model, data)
        d = case["mle"]["twice_nll"] - val
        worst = max(worst, d)
        print(f"{label}\n  mle: ref-minuit = {d:+.3e}  valid={ok}  "
              f"dpoi={pars[pi] - case['mle']['bestfit'][case['poi']]:+.2e}")
        for fp in case["fixed_poi_fits"]:
            if args.pois and fp["poi"] not in [float(x) for x in args.pois.split(",")]:
                continue
            val, pars, ok = minuit_fit(model, data, fp["poi"])
            if fp["twice_nll"] is None or not np.isfinite(val):
                print(f"  poi={fp['poi']:<6} ref={fp['twice_nll']} minuit={val}")
                continue
            d = fp["twice_nll"] - val
            worst = max(worst, d)
            flag = "" if abs(d) < 1e-6 else "   <-- differs"
            if fp.get("twice_nll_default") is not None:
                flag += f"  (pyhf default - ref = {fp['twice_nll_default'] - fp['twice_nll']:+.2e})"
            print(f"  poi={fp['poi']:<6} ref-minuit = {d:+.3e}  valid={ok}{flag}")
        print(f"  ({time.perf_counter() - t0:.1f} s)")
    print(f"largest ref - minuit (how much lower MINUIT got than the reference): {worst:.3e}")
    sys.exit(0)


if __name__ == "__main__":
    main()

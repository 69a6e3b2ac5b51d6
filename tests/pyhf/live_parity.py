#!/usr/bin/env python3
"""Live parity check: random pyhf workspaces, pyhf NLL vs `nextstat nll`.

    python3 tests/pyhf/live_parity.py --nextstat target/release/nextstat --models 200 --seed 1
    python3 tests/pyhf/live_parity.py --pyhf-only --models 200 --seed 1

For each of --models random workspaces (1-3 channels, 1-10 bins, 1-4 samples per
channel, all seven modifier types with random and partly shared names, random
interpolation codes) the NLL (= -model.logpdf(pars, data), pyhf numpy backend,
float64) is evaluated at suggested_init() and at 2 random points, and compared
with

    nextstat nll --input WS.json --interp normsys=C1,histosys=C2 --pars-file PARS.json --json

(PARS.json = {par_name: value} with pyhf's model.config.par_names).  Tolerance:
|ns - pyhf| <= 1e-10 * max(1, |pyhf|).  Where pyhf's NLL is not finite,
nextstat must exit with code 2.  Exit status 1 on any mismatch; the failing
workspaces and parameter files are kept in the temp dir named in the summary.
"""

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyhf

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_reference import evaluate, sampling_ranges  # noqa: E402

NORMSYS_CODES = ("code1", "code4")
HISTOSYS_CODES = ("code0", "code2", "code4p")
WORDS = ("alpha", "beta", "gamma", "delta", "eps", "zeta", "eta", "theta", "iota",
         "kappa", "lam", "omega", "SR", "CR", "VR", "low", "high", "b", "a", "z")


class Gen:
    """Random workspace generator (one instance per model)."""

    def __init__(self, rng):
        self.rng = rng
        self.used_names = set()

    def u(self, lo, hi):
        return float(self.rng.uniform(lo, hi))

    def chance(self, p):
        return bool(self.rng.random() < p)

    def pick(self, seq):
        return seq[int(self.rng.integers(len(seq)))]

    def fresh(self, prefix):
        while True:
            name = f"{prefix}{self.pick(WORDS)}{int(self.rng.integers(100))}"
            if name not in self.used_names:
                self.used_names.add(name)
                return name

    def workspace(self):
        rng = self.rng
        n_ch = int(rng.integers(1, 4))
        channels = []
        for _ in range(n_ch):
            # sometimes reuse a bin count so shapefactors can be shared across channels
            nbins = (channels[-1][1] if channels and self.chance(0.4)
                     else int(rng.integers(1, 11)))
            channels.append((self.fresh("ch_"), nbins))
        sample_pool = [self.fresh("s_") for _ in range(4)]
        # Modifier name pools (type-specific prefixes => no cross-type clashes,
        # except normsys/histosys which deliberately share the "np_" pool).
        nf_pool = ["mu"] + [self.fresh("nf_") for _ in range(int(rng.integers(0, 3)))]
        np_pool = [self.fresh("np_") for _ in range(int(rng.integers(1, 5)))]
        sf_pool = [self.fresh("sf_") for _ in range(int(rng.integers(1, 3)))]
        sf_nbins = {}  # shapefactor name -> bin count it was first used with

        spec_channels, observations = [], []
        mu_used = False
        for ci, (cname, nbins) in enumerate(channels):
            n_samp = int(rng.integers(1, 5))
            snames = list(rng.choice(sample_pool, size=n_samp, replace=False))
            stat_name = f"staterror_{cname}"
            stat_zero_bin = int(rng.integers(nbins)) if self.chance(0.3) else None
            samples = []
            for si, sname in enumerate(snames):
                nom = [float(np.exp(rng.uniform(np.log(0.5), np.log(200.0))))
                       for _ in range(nbins)]
                mods = []
                seen = set()

                def add(name, mtype, data):
                    if (name, mtype) not in seen:
                        seen.add((name, mtype))
                        mods.append({"name": name, "type": mtype, "data": data})

                last_chance = ci == n_ch - 1 and si == n_samp - 1
                if self.chance(0.4) or (last_chance and not mu_used):
                    add(self.pick(nf_pool), "normfactor", None)
                    if last_chance and not mu_used:
                        add("mu", "normfactor", None)
                    mu_used = mu_used or any(m["name"] == "mu" for m in mods)
                if self.chance(0.4):
                    add("lumi", "lumi", None)
                for _ in range(int(rng.integers(0, 3))):
                    add(self.pick(np_pool), "normsys", self.normsys_data())
                for _ in range(int(rng.integers(0, 3))):
                    add(self.pick(np_pool), "histosys", self.histosys_data(nom))
                if self.chance(0.5):
                    errs = [x * self.u(0.01, 0.3) for x in nom]
                    if self.chance(0.2):
                        errs[int(rng.integers(nbins))] = 0.0
                    if stat_zero_bin is not None:
                        errs[stat_zero_bin] = 0.0
                    add(stat_name, "staterror", errs)
                if self.chance(0.25):
                    errs = [x * self.u(0.02, 0.4) for x in nom]
                    if self.chance(0.3):
                        errs[int(rng.integers(nbins))] = 0.0
                    add(self.fresh("ss_"), "shapesys", errs)
                if self.chance(0.2):
                    name = self.pick(sf_pool)
                    if sf_nbins.setdefault(name, nbins) != nbins:
                        name = self.fresh("sf_")
                        sf_nbins[name] = nbins
                    add(name, "shapefactor", None)
                rng.shuffle(mods)
                samples.append({"name": sname, "data": nom, "modifiers": mods})
            spec_channels.append({"name": cname, "samples": samples})
            total = np.sum([s["data"] for s in samples], axis=0)
            if self.chance(0.7):
                obs = [float(v) for v in rng.poisson(total)]
            else:
                obs = [self.u(0.0, 1.5 * t) for t in total]
            if self.chance(0.1):
                obs[int(rng.integers(nbins))] = 0.0
            observations.append({"name": cname, "data": obs})

        sigma = self.u(0.01, 0.05)
        params = [{"name": "lumi", "auxdata": [1.0], "sigmas": [sigma],
                   "bounds": [[1.0 - 5 * sigma, 1.0 + 5 * sigma]], "inits": [1.0]}]
        if self.chance(0.3):
            params.append({"name": "mu", "bounds": [[self.u(-2.0, 0.0), self.u(5.0, 20.0)]],
                           "inits": [self.u(0.5, 1.5)]})
        if self.chance(0.2):
            params.append({"name": self.pick(np_pool), "fixed": True,
                           "inits": [self.u(-1.5, 1.5)]})
        if self.chance(0.1):
            params.append({"name": self.fresh("unused_"), "inits": [0.0],
                           "bounds": [[-5.0, 5.0]]})
        order = rng.permutation(len(spec_channels))
        return {
            "version": "1.0.0",
            "channels": [spec_channels[i] for i in order],
            "observations": [observations[i] for i in rng.permutation(len(observations))],
            "measurements": [{"name": self.fresh("meas_"),
                              "config": {"poi": "mu", "parameters": params}}],
        }

    def normsys_data(self):
        if self.chance(0.1):  # same-side variation
            hi = self.u(0.8, 1.2)
            return {"hi": hi, "lo": hi * self.u(0.9, 1.1)}
        return {"hi": self.u(1.0, 1.5), "lo": self.u(0.6, 1.0)}

    def histosys_data(self, nom):
        hi, lo = [], []
        for x in nom:
            up = self.u(0.0, 0.3)
            dn = self.u(0.0, 0.3)
            if self.chance(0.1):
                dn = -dn  # same-side
            hi.append(x * (1.0 + up))
            lo.append(x * (1.0 - dn))
        return {"hi_data": hi, "lo_data": lo}


def draw_point(model, data, rng, ranges, init, tries=50):
    """Random point; avoid finite-NLL-with-negative-rate points (ill-defined)."""
    for _ in range(tries):
        pars = [init[i] if r is None else float(rng.uniform(r[0], r[1]))
                for i, r in enumerate(ranges)]
        nll, min_rate = evaluate(model, data, pars)
        if nll is None or min_rate >= 0.0:
            return pars, nll
    return None, None


def run_nextstat(binary, ws_path, pars_path, interp):
    cmd = [binary, "nll", "--input", str(ws_path),
           "--interp", f"normsys={interp[0]},histosys={interp[1]}",
           "--pars-file", str(pars_path), "--json"]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        return None, "timeout", cmd
    if p.returncode != 0:
        return p.returncode, p.stderr.strip()[-500:], cmd
    try:
        return 0, float(json.loads(p.stdout)["nll"]), cmd
    except (ValueError, KeyError, TypeError) as e:
        return 0, f"unparsable output ({e}): {p.stdout.strip()[:300]}", cmd


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nextstat", help="path to the nextstat binary")
    ap.add_argument("--models", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--pyhf-only", action="store_true",
                    help="only generate and evaluate with pyhf")
    ap.add_argument("--rtol", type=float, default=1e-10)
    ap.add_argument("--keep", action="store_true", help="keep the temp dir even if all pass")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()
    if not args.pyhf_only and not args.nextstat:
        ap.error("--nextstat PATH is required unless --pyhf-only")
    binary = None
    if not args.pyhf_only:
        binary = shutil.which(args.nextstat) or args.nextstat
        if not os.access(binary, os.X_OK):
            ap.error(f"not an executable: {args.nextstat}")
        binary = str(Path(binary).resolve())

    pyhf.set_backend("numpy", precision="64b")
    rng = np.random.default_rng(args.seed)
    tmp = Path(tempfile.mkdtemp(prefix="nextstat_parity_"))
    ws_path, pars_path = tmp / "ws.json", tmp / "pars.json"

    t0 = time.time()
    n_points = n_nonfinite = n_failures = 0
    max_rel = 0.0
    failures = []
    for mi in range(args.models):
        spec = Gen(rng).workspace()
        interp = (str(rng.choice(NORMSYS_CODES)), str(rng.choice(HISTOSYS_CODES)))
        try:
            ws = pyhf.Workspace(spec)
            model = ws.model(modifier_settings={"normsys": {"interpcode": interp[0]},
                                                "histosys": {"interpcode": interp[1]}})
        except Exception as e:  # generator bug: report loudly
            bad = tmp / f"model{mi:04d}_pyhf_error.json"
            bad.write_text(json.dumps(spec, indent=1))
            print(f"GENERATOR ERROR model {mi}: pyhf rejected {bad}: {e}", file=sys.stderr)
            n_failures += 1
            continue
        data = ws.data(model)
        names = list(model.config.par_names)
        init = [float(v) for v in model.config.suggested_init()]
        ranges = sampling_ranges(model.config)
        points = [(init, evaluate(model, data, init)[0])]
        for _ in range(2):
            pars, nll = draw_point(model, data, rng, ranges, init)
            if pars is not None:
                points.append((pars, nll))

        if binary:
            ws_path.write_text(json.dumps(spec))
        for pi, (pars, nll) in enumerate(points):
            n_points += 1
            if nll is None:
                n_nonfinite += 1
            if not binary:
                continue
            pars_path.write_text(json.dumps(dict(zip(names, pars))))
            rc, out, cmd = run_nextstat(binary, ws_path, pars_path, interp)
            problem = None
            if nll is None:
                if rc != 2:
                    problem = f"pyhf NLL not finite, expected exit code 2, got rc={rc} out={out!r}"
            elif rc != 0 or not isinstance(out, float):
                problem = f"nextstat failed rc={rc}: {out}"
            else:
                diff = abs(out - nll)
                rel = diff / max(1.0, abs(nll))
                max_rel = max(max_rel, rel) if math.isfinite(rel) else math.inf
                if not rel <= args.rtol:
                    problem = f"nll mismatch: nextstat={out!r} pyhf={nll!r} rel={rel:.3e}"
            if problem:
                n_failures += 1
                stem = tmp / f"fail_model{mi:04d}_pt{pi}"
                shutil.copy(ws_path, f"{stem}_ws.json")
                shutil.copy(pars_path, f"{stem}_pars.json")
                cmd_s = " ".join(cmd).replace(str(ws_path), f"{stem}_ws.json").replace(
                    str(pars_path), f"{stem}_pars.json")
                failures.append(f"{stem}_ws.json: {problem}\n    repro: {cmd_s}")
                print(f"MISMATCH model {mi} point {pi} interp={interp}: {problem}\n"
                      f"    workspace: {stem}_ws.json\n    repro: {cmd_s}", file=sys.stderr)
            elif args.verbose:
                print(f"ok model {mi} point {pi}: {nll}", file=sys.stderr)

    elapsed = time.time() - t0
    mode = "pyhf-only" if not binary else f"vs {binary}"
    summary = (f"live_parity ({mode}, seed {args.seed}): models={args.models} "
               f"points={n_points} (pyhf non-finite: {n_nonfinite}) "
               f"max_rel_diff={max_rel:.3e} failures={n_failures} time={elapsed:.1f}s")
    if n_failures:
        summary += f" failing workspaces kept in {tmp}"
    elif args.keep:
        summary += f" temp dir kept: {tmp}"
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    print(summary)
    sys.exit(1 if n_failures else 0)


if __name__ == "__main__":
    main()

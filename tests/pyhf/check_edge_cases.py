#!/usr/bin/env python3
"""Executable evidence for tests/pyhf/EDGE_CASES.md (pyhf 0.7.6, numpy backend).

Each check() corresponds to a numbered item in EDGE_CASES.md; the script fails
(AssertionError) if pyhf's behaviour differs from what the document claims.

    python3 tests/pyhf/check_edge_cases.py
"""

import math
import warnings

import numpy as np
import pyhf
from scipy.special import gammaln

pyhf.set_backend("numpy", precision="64b")
warnings.simplefilter("ignore")
LOG2PI = math.log(2 * math.pi)

MU = {"name": "mu", "type": "normfactor", "data": None}


def spec(channels, obs, params=(), measurements=None):
    return {
        "version": "1.0.0",
        "channels": channels,
        "observations": [{"name": k, "data": v} for k, v in obs.items()],
        "measurements": measurements
        or [{"name": "m", "config": {"poi": "mu", "parameters": list(params)}}],
    }


def ch(name, *samples):
    return {"name": name, "samples": list(samples)}


def smp(name, data, *mods):
    return {"name": name, "data": data, "modifiers": list(mods)}


def model(s, **kw):
    ws = pyhf.Workspace(s)
    m = ws.model(**kw)
    return ws, m, ws.data(m)


def raises(s, exc_name, **kw):
    try:
        model(s, **kw)
    except Exception as e:  # noqa: BLE001
        assert type(e).__name__ == exc_name, (type(e).__name__, e)
        return str(e)
    raise AssertionError(f"expected {exc_name}")


def nll(m, d, pars):
    with np.errstate(all="ignore"):
        return -float(m.logpdf(np.asarray(pars, float), d)[0])


CHECKS = []


def check(fn):
    CHECKS.append(fn)
    return fn


@check
def e01_channel_and_sample_order():
    s = spec([ch("Z", smp("b", [10.0], MU), smp("a", [3.0])), ch("Y", smp("c", [1.0, 2.0]))],
             {"Z": [15], "Y": [1, 2]})
    ws, m, d = model(s)
    assert m.config.channels == ["Y", "Z"]
    assert m.config.samples == ["a", "b", "c"]
    assert list(m.expected_actualdata([1.0])) == [1.0, 2.0, 13.0]
    assert list(d[:3]) == [1.0, 2.0, 15.0]  # observations reordered by channel name


@check
def e02_parameter_order():
    ns = lambda n: {"name": n, "type": "normsys", "data": {"hi": 1.1, "lo": 0.9}}  # noqa: E731
    st = lambda n: {"name": n, "type": "staterror", "data": [1.0]}  # noqa: E731
    hs = {"name": "shared", "type": "histosys", "data": {"hi_data": [11.0], "lo_data": [9.0]}}
    s = spec([ch("A", smp("s1", [10.0], MU, st("zz"), ns("shared"))),
              ch("B", smp("s1", [10.0], st("aa"), ns("zn"), hs),
                 smp("s0", [10.0], ns("bn")))],
             {"A": [15], "B": [1]})
    _, m, _ = model(s)
    # type groups: histosys, lumi, normfactor, normsys, shapefactor, shapesys, staterror
    # normsys by first occurrence over sorted channels x sorted samples x sorted names;
    # staterror alphabetical; normsys+histosys shared name sits in the histosys group.
    assert m.config.par_names == ["shared", "mu", "bn", "zn", "aa[0]", "zz[0]"], m.config.par_names
    # one constraint per parameter set (the shared normsys/histosys name is constrained once);
    # auxdata follow par order restricted to constrained sets
    assert m.config.auxdata_order == ["shared", "bn", "zn", "aa", "zz"]
    assert m.config.auxdata == [0.0, 0.0, 0.0, 1.0, 1.0]


@check
def e03_shapesys_name_cannot_be_reused():
    ss = lambda e: {"name": "ss", "type": "shapesys", "data": e}  # noqa: E731
    s = spec([ch("A", smp("s1", [10.0, 20.0], MU, ss([1.0, 2.0])), smp("s2", [5.0, 5.0], ss([1.0, 1.0])))],
             {"A": [15, 25]})
    raises(s, "InvalidModel")
    s = spec([ch("A", smp("s1", [10.0], MU, ss([1.0]))), ch("B", smp("s1", [5.0], ss([1.0])))],
             {"A": [15], "B": [5]})
    raises(s, "InvalidModel")


@check
def e04_cross_type_name_reuse():
    nf = {"name": "x", "type": "normfactor", "data": None}
    ns = {"name": "x", "type": "normsys", "data": {"hi": 1.1, "lo": 0.9}}
    sf = {"name": "x", "type": "shapefactor", "data": None}
    st = {"name": "x", "type": "staterror", "data": [1.0]}
    ss = {"name": "x", "type": "shapesys", "data": [1.0]}
    for a, b in [(nf, ns), (nf, sf), (st, ns), (sf, st), (ss, st)]:
        s = spec([ch("A", smp("s1", [10.0], MU, a), smp("s2", [1.0], b))], {"A": [15]})
        raises(s, "InvalidNameReuse")
    # lumi modifiers must be named "lumi" (schema const)
    s = spec([ch("A", smp("s1", [10.0], MU, {"name": "x", "type": "lumi", "data": None}))], {"A": [15]})
    raises(s, "InvalidSpecification")
    # a normsys called "lumi" next to the lumi modifier: name reuse error
    s = spec([ch("A", smp("s1", [10.0], MU, {"name": "lumi", "type": "lumi", "data": None}),
                 smp("s2", [1.0], {"name": "lumi", "type": "normsys", "data": {"hi": 1.1, "lo": 0.9}}))],
             {"A": [15]}, [{"name": "lumi", "auxdata": [1.0], "sigmas": [0.1], "bounds": [[0.5, 1.5]], "inits": [1.0]}])
    raises(s, "InvalidNameReuse")


@check
def e05_duplicate_modifier_on_one_sample_last_wins():
    s = spec([ch("A", smp("s1", [10.0], MU, {"name": "x", "type": "normsys", "data": {"hi": 1.1, "lo": 0.9}},
                          {"name": "x", "type": "normsys", "data": {"hi": 1.5, "lo": 0.5}}))], {"A": [15]})
    _, m, _ = model(s)
    assert m.config.par_names == ["mu", "x"]
    assert m.expected_actualdata([1.0, 1.0])[0] == 15.0  # 10 * 1.5: the second entry wins


@check
def e06_shapefactor_shared_across_channels_with_different_bins():
    sf = {"name": "sf", "type": "shapefactor", "data": None}
    s = spec([ch("A", smp("s1", [10.0, 20.0], MU, sf)), ch("B", smp("s1", [10.0, 20.0, 30.0], sf))],
             {"A": [1, 2], "B": [1, 2, 3]})
    _, m, _ = model(s)
    assert m.config.par_names == ["mu", "sf[0]", "sf[1]"]  # size from first (sorted) channel
    # B's 3rd bin is multiplied by parameter index 0 (here: mu!) -- a pyhf bug
    assert list(m.expected_actualdata([3.0, 1.0, 1.0])) == [30.0, 60.0, 10.0, 20.0, 90.0]
    # same bin counts: bin j of every channel uses sf[j]
    s = spec([ch("A", smp("s1", [10.0, 20.0], MU, sf)), ch("B", smp("s1", [1.0, 2.0], sf))],
             {"A": [1, 2], "B": [1, 2]})
    _, m, _ = model(s)
    assert list(m.expected_actualdata([1.0, 2.0, 3.0])) == [20.0, 60.0, 2.0, 6.0]


@check
def e07_staterror_sigma_and_zero_bins():
    st = lambda e: {"name": "stat", "type": "staterror", "data": e}  # noqa: E731
    s = spec([ch("A", smp("s1", [10.0, 5.0], MU, st([1.0, 0.0])), smp("s2", [30.0, 5.0], st([2.0, 0.0])),
                  smp("s3", [100.0, 100.0]))],
             {"A": [45, 12]})
    _, m, d = model(s)
    ps = m.config.param_set("stat")
    # sigma = sqrt(sum_s err_s^2) / sum_s nom_s over the samples carrying the modifier
    assert math.isclose(ps.sigmas[0], math.sqrt(1.0 + 4.0) / 40.0, rel_tol=1e-15)
    # zero relative error -> fixed, sigma replaced by 1.0, constraint term kept
    assert ps.sigmas[1] == 1.0 and m.config.suggested_fixed() == [False, False, True]
    base = nll(m, d, [1.0, 1.0, 1.0])
    moved = nll(m, d, [1.0, 1.0, 1.5])
    lam = 10.0 + 100.0  # bin 1 with gamma=1.5 applied to s1,s2 only: 1.5*10+100
    lam_new = 1.5 * 10.0 + 100.0
    dpois = -(12 * math.log(lam_new) - lam_new) + (12 * math.log(lam) - lam)
    assert math.isclose(moved - base, dpois + 0.5 * 0.5**2, rel_tol=1e-12)


@check
def e08_shapesys_tau_and_invalid_bins():
    ss = {"name": "ss", "type": "shapesys", "data": [2.0, 0.5, 0.0]}
    s = spec([ch("A", smp("s1", [20.0, 0.0, 15.0], MU), smp("b", [20.0, 0.0, 15.0], ss),
                  smp("c", [1.0, 1.0, 1.0]))], {"A": [40, 1, 30]})
    _, m, d = model(s)
    ps = m.config.param_set("ss")
    assert list(ps.factors) == [100.0, 1.0, 1.0] and list(ps.auxdata) == [100.0, 1.0, 1.0]
    assert m.config.suggested_fixed() == [False, False, True, True]
    # constraint Poisson(aux | gamma*tau) with lgamma: invalid bins still contribute
    # Poisson(1 | gamma) (-> NLL +1 at gamma = 1), and gamma still scales the bin.
    pars = [1.0, 1.0, 1.0, 1.0]
    exp = [41.0, 1.0, 31.0]
    obs = [40.0, 1.0, 30.0]
    main = sum(-(n * math.log(l) - l - gammaln(n + 1)) for n, l in zip(obs, exp))
    cons = -(100 * math.log(100.0) - 100.0 - gammaln(101.0)) + 2 * (-(0.0 - 1.0 - 0.0))
    assert math.isclose(nll(m, d, pars), main + cons, rel_tol=1e-13)
    assert m.expected_actualdata([1.0, 1.0, 1.0, 2.0])[2] == 15.0 + 2 * 15.0 + 1.0


@check
def e09_unused_parameter_config_ignored():
    s = spec([ch("A", smp("s1", [10.0], MU))], {"A": [15]},
             [{"name": "ghost", "inits": [3.0], "bounds": [[0, 5]]}])
    _, m, _ = model(s)
    assert m.config.par_names == ["mu"]


@check
def e10_fixed_does_not_change_logpdf():
    ns = {"name": "x", "type": "normsys", "data": {"hi": 1.1, "lo": 0.9}}
    base = spec([ch("A", smp("s1", [10.0], MU, ns))], {"A": [15]})
    fixed = spec([ch("A", smp("s1", [10.0], MU, ns))], {"A": [15]},
                 [{"name": "x", "fixed": True, "inits": [0.5]}])
    _, m0, d0 = model(base)
    _, m1, d1 = model(fixed)
    assert m1.config.suggested_init() == [1.0, 0.5] and m1.config.suggested_fixed() == [False, True]
    assert nll(m0, d0, [1.3, -0.7]) == nll(m1, d1, [1.3, -0.7])


@check
def e11_poi_and_lumi_config_required():
    s = spec([ch("A", smp("s1", [10.0], {"name": "k", "type": "normfactor", "data": None}))], {"A": [15]})
    raises(s, "InvalidModel")
    s = spec([ch("A", smp("s1", [10.0], MU, {"name": "lumi", "type": "lumi", "data": None}))], {"A": [15]})
    try:
        model(s)
    except Exception:  # noqa: BLE001 -- any error: lumi without auxdata/sigmas is unusable
        pass
    else:
        raise AssertionError("lumi without measurement config was accepted")


@check
def e12_poisson_edge_rates():
    neg = {"name": "neg", "data": [-20.0, -20.0], "modifiers": []}
    s = spec([ch("A", smp("s1", [10.0, 10.0], MU), neg)], {"A": [0, 3]})
    _, m, d = model(s)
    # bin 0: rate 10*mu - 20 < 0 with n=0 -> xlogy(0, lam) = 0 -> FINITE (NLL term = lam)
    # bin 1: n=3, lam<0 -> nan.
    assert math.isnan(nll(m, d, [1.0]))
    s = spec([ch("A", smp("s1", [10.0], MU), {"name": "neg", "data": [-20.0], "modifiers": []})], {"A": [0]})
    _, m, d = model(s)
    assert math.isclose(nll(m, d, [1.0]), -10.0, rel_tol=1e-15)  # finite with a negative rate!
    s = spec([ch("A", smp("s1", [10.0], MU))], {"A": [0]})
    _, m, d = model(s)
    assert nll(m, d, [0.0]) == 0.0  # lam = 0, n = 0: contributes exactly 0
    s = spec([ch("A", smp("s1", [10.0], MU))], {"A": [2]})
    _, m, d = model(s)
    assert nll(m, d, [0.0]) == math.inf  # lam = 0, n > 0


@check
def e13_non_integer_observations():
    s = spec([ch("A", smp("s1", [10.0], MU))], {"A": [7.5]})
    _, m, d = model(s)
    assert math.isclose(nll(m, d, [1.0]), -(7.5 * math.log(10.0) - 10.0 - gammaln(8.5)), rel_tol=1e-15)


@check
def e14_interp_codes_and_defaults():
    ns = {"name": "x", "type": "normsys", "data": {"hi": 1.2, "lo": 0.7}}
    s = spec([ch("A", smp("s1", [10.0], MU, ns))], {"A": [15]})
    hs = {"name": "y", "type": "histosys", "data": {"hi_data": [12.0], "lo_data": [9.0]}}
    s = spec([ch("A", smp("s1", [10.0], MU, ns, hs))], {"A": [15]})
    code1 = 10.0 * 1.2**0.5  # x=0.5, y=0

    def rate(**kw):
        _, m, _ = model(s, **kw)
        assert m.config.par_names == ["y", "mu", "x"]
        return m.expected_actualdata([0.0, 1.0, 0.5])[0], m.expected_actualdata([-0.5, 1.0, 0.0])[0]

    # Model-level defaults are code4 (normsys) / code4p (histosys) ...
    default = rate()
    assert default == rate(modifier_settings={"normsys": {"interpcode": "code4"},
                                              "histosys": {"interpcode": "code4p"}})
    assert not math.isclose(default[0], code1, rel_tol=1e-6)
    # ... but a modifier_settings dict REPLACES the defaults: a type left out falls
    # back to its builder default, normsys code1 / histosys code0.
    only_ns = rate(modifier_settings={"normsys": {"interpcode": "code4"}})
    assert only_ns[1] == 10.0 - 0.5 * 1.0  # histosys code0 (linear) at y=-0.5
    assert only_ns[1] != default[1]
    only_hs = rate(modifier_settings={"histosys": {"interpcode": "code4p"}})
    assert math.isclose(only_hs[0], code1, rel_tol=1e-15)  # normsys code1
    for bad in ({"normsys": {"interpcode": "code0"}}, {"histosys": {"interpcode": "code1"}}):
        try:
            model(s, modifier_settings=bad)
        except AssertionError:
            pass
        else:
            raise AssertionError(f"{bad} accepted")


@check
def e15_default_measurement_is_first_and_measurement_changes_nll():
    import json
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    sp = json.loads((root / "examples/models/multi.json").read_text())
    ws = pyhf.Workspace(sp)
    m0 = ws.model()
    assert m0.config.poi_name == "mu_ttH"
    m1 = ws.model(measurement_name="meas_ttW")
    p = m0.config.suggested_init()
    p[m0.config.par_slice("lumi")] = [1.03]
    assert nll(m0, ws.data(m0), p) != nll(m1, ws.data(m1), p)  # lumi sigma differs


@check
def e16_gaussian_constraint_normalisation():
    s = spec([ch("A", smp("s1", [10.0], MU, {"name": "lumi", "type": "lumi", "data": None}))], {"A": [10]},
             [{"name": "lumi", "auxdata": [1.0], "sigmas": [0.017], "bounds": [[0.9, 1.1]], "inits": [1.0]}])
    _, m, d = model(s)
    l = 1.02
    main = -(10 * math.log(10 * l) - 10 * l - gammaln(11.0))
    cons = 0.5 * ((l - 1.0) / 0.017) ** 2 + 0.5 * LOG2PI + math.log(0.017)
    assert m.config.par_names == ["lumi", "mu"]
    assert math.isclose(nll(m, d, [l, 1.0]), main + cons, rel_tol=1e-13)


@check
def e17_staterror_shared_across_channels():
    st = lambda e: {"name": "st", "type": "staterror", "data": e}  # noqa: E731
    s = spec([ch("A", smp("s1", [10.0, 20.0], MU, st([1.0, 2.0]))), ch("B", smp("s1", [10.0, 20.0, 30.0], st([1.0, 1.0, 1.0])))],
             {"A": [1, 2], "B": [1, 2, 3]})
    _, m, _ = model(s)
    assert m.config.par_names == ["mu"] + [f"st[{i}]" for i in range(5)]


@check
def e18_histosys_code2_extrapolation_is_discontinuous():
    hs = {"name": "h", "type": "histosys", "data": {"hi_data": [13.0], "lo_data": [8.0]}}
    s = spec([ch("A", smp("s", [10.0], MU, hs))], {"A": [11]})
    _, m, _ = model(s, modifier_settings={"normsys": {"interpcode": "code1"},
                                          "histosys": {"interpcode": "code2"}})
    a = 0.5 * (13.0 + 8.0) - 10.0  # 0.5
    b = 0.5 * (13.0 - 8.0)  # 2.5

    def rate(alpha):
        return float(m.expected_actualdata([alpha, 1.0])[0])

    for alpha in (-1.0, -0.3, 0.7, 1.0):
        assert math.isclose(rate(alpha), 10.0 + a * alpha**2 + b * alpha, rel_tol=1e-15)
    for alpha in (1.5, 2.0, 3.0):  # alpha > 1: (b + 2a)(alpha - 1), NO (a + b) offset
        assert math.isclose(rate(alpha), 10.0 + (b + 2 * a) * (alpha - 1.0), rel_tol=1e-15)
    for alpha in (-1.5, -2.0, -3.0):  # alpha < -1: (b - 2a) * alpha (not alpha + 1)
        assert math.isclose(rate(alpha), 10.0 + (b - 2 * a) * alpha, rel_tol=1e-15)
    # jumps at +-1
    assert rate(1.0) == 13.0 and math.isclose(rate(1.0 + 1e-12), 10.0, abs_tol=1e-9)
    assert rate(-1.0) == 8.0 and math.isclose(rate(-1.0 - 1e-12), 10.0 - (b - 2 * a), abs_tol=1e-9)


def main():
    for fn in CHECKS:
        fn()
        print(f"ok  {fn.__name__}")
    print(f"all {len(CHECKS)} edge-case checks passed (pyhf {pyhf.__version__})")


if __name__ == "__main__":
    main()

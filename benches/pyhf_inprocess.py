"""In-process timings of pyhf 0.7.6 (numpy backend, scipy optimizer at its defaults) for the
work that benches/nll.rs, benches/fit.rs and `nextstat hypotest-toys` time, so BENCHMARKS.md
can put both side by side:

    python3 benches/pyhf_inprocess.py ../shared/workspaces > pyhf_timings.json

Medians over repeats; each figure says what it times.
"""
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

_percentile = np.percentile


def _percentile_shim(*args, interpolation=None, **kwargs):  # numpy 2 removed `interpolation`
    if interpolation is not None:
        kwargs.setdefault("method", interpolation)
    return _percentile(*args, **kwargs)


np.percentile = _percentile_shim

import pyhf  # noqa: E402

pyhf.set_backend("numpy")


def median_time(fn, repeat):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def load(path):
    ws = pyhf.Workspace(json.loads(Path(path).read_text()))
    model = ws.model()
    return ws, model, ws.data(model)


root = Path(sys.argv[1])
out = {"pyhf": pyhf.__version__, "numpy": np.__version__}
for name, fit_repeat in [("complex_workspace.json", 20), ("workspace_tHu.json", 3)]:
    path = root / name
    text = path.read_text()
    ws, model, data = load(path)
    init = model.config.suggested_init()
    r = {}
    r["build_model_s"] = median_time(lambda: pyhf.Workspace(json.loads(text)).model(), 3)
    r["nll_s"] = median_time(lambda: model.logpdf(init, data), 200)
    r["fit_s"] = median_time(lambda: pyhf.infer.mle.fit(data, model), fit_repeat)
    r["fixed_poi_fit_s"] = median_time(lambda: pyhf.infer.mle.fixed_poi_fit(1.0, data, model), fit_repeat)
    if name == "complex_workspace.json":
        np.random.seed(1)
        n = 100
        t0 = time.perf_counter()
        pyhf.infer.hypotest(1.0, data, model, test_stat="qtilde", calctype="toybased", ntoys=n, track_progress=False)
        r["toys_100_per_hypothesis_s"] = time.perf_counter() - t0
    out[name] = r
    print(name, r, file=sys.stderr)
print(json.dumps(out, indent=1))

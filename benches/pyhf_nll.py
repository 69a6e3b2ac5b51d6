"""Times pyhf 0.7.6 (numpy backend) on the same work as benches/nll.rs, for BENCHMARKS.md.

    python3 benches/pyhf_nll.py ../shared/workspaces/workspace_tHu.json

Prints the median time of building the model from the JSON text and of one logpdf at the
suggested init. pyhf's numpy backend has no gradient, so the NLL alone is compared.
"""
import json
import statistics
import sys
import time

import pyhf

pyhf.set_backend("numpy")


def median_time(fn, repeat):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


path = sys.argv[1]
text = open(path).read()


def build():
    ws = pyhf.Workspace(json.loads(text))
    return ws, ws.model()


ws, model = build()
data = ws.data(model)
pars = model.config.suggested_init()
model.logpdf(pars, data)  # warm-up
t_build = median_time(build, 5)
t_nll = median_time(lambda: model.logpdf(pars, data), 200)
print(json.dumps({"workspace": path, "pyhf": pyhf.__version__, "build_s": t_build, "nll_s": t_nll}))

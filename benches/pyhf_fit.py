"""pyhf 0.7.6 (numpy backend, scipy optimizer at its defaults) doing what `nextstat fit`
does, as a whole process, for side-by-side timing in BENCHMARKS.md:

    python3 benches/pyhf_fit.py WORKSPACE.json
"""
import json
import sys

import pyhf

pyhf.set_backend("numpy")
ws = pyhf.Workspace(json.load(open(sys.argv[1])))
model = ws.model()
bestfit, twice_nll = pyhf.infer.mle.fit(ws.data(model), model, return_fitted_val=True)
print(json.dumps({"twice_nll": float(twice_nll), "poi": float(bestfit[model.config.poi_index])}))

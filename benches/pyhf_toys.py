"""pyhf 0.7.6 toy-based CLs (ToyCalculator, numpy backend) doing what
`nextstat hypotest-toys --mu MU --n-toys N` does, as a whole process, for side-by-side timing:

    python3 benches/pyhf_toys.py WORKSPACE.json MU N

pyhf 0.7.6 calls numpy.percentile(..., interpolation=...), which numpy 2 removed; the shim
below maps it to `method=`.
"""
import json
import sys

import numpy as np

_percentile = np.percentile


def _percentile_shim(*args, interpolation=None, **kwargs):
    if interpolation is not None:
        kwargs.setdefault("method", interpolation)
    return _percentile(*args, **kwargs)


np.percentile = _percentile_shim

import pyhf  # noqa: E402

pyhf.set_backend("numpy")
path, mu, ntoys = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
ws = pyhf.Workspace(json.load(open(path)))
model = ws.model()
np.random.seed(1)
cls_obs, cls_exp = pyhf.infer.hypotest(
    mu, ws.data(model), model, test_stat="qtilde", calctype="toybased", ntoys=ntoys,
    track_progress=False, return_expected_set=True)
print(json.dumps({"cls_obs": float(cls_obs), "cls_exp": [float(c) for c in cls_exp]}))

#!/usr/bin/env bash
# One script for a lent GPU machine: the test suite on CUDA, then the speed
# benchmarks on CUDA next to the CPU, each printing its figures.
#
# The GPU image has torch but not skorch: carry wheels in .whl/ (see the
# device tool's README: pip download --no-deps skorch tabulate) and they are
# installed without network. Usage, from the repository root:
#     bash benchmarks/gpu_check.sh            # everything (about 8 minutes)
#     QUICK=1 bash benchmarks/gpu_check.sh    # smaller grids
#     DISTRIBUTED_ONLY=1 bash benchmarks/gpu_check.sh  # the torchrun/nccl part
set -uo pipefail
cd "$(dirname "$0")/.."
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1
python3 -c "import torch; assert torch.cuda.is_available(), 'no CUDA GPU'; print('GPU:', torch.cuda.get_device_name(0), 'torch', torch.__version__)" || exit 1

status=0
echo "== distributed=True under torchrun: nccl, one process per GPU"
n_gpus=$(python3 -c "import torch; print(torch.cuda.device_count())")
SKLEARN_META_TEST_DEVICE=cuda SKLEARN_META_TEST_PROCESSES=$n_gpus python3 -m pytest -q -x \
  -p no:cacheprovider tests/test_distributed.py -k "not dask" || status=1
python3 benchmarks/distributed.py --device cuda --gpus "$n_gpus" --quick || status=1
if [ -n "${DISTRIBUTED_ONLY:-}" ]; then exit $status; fi

echo "== tests on CUDA"
SKLEARN_META_TEST_DEVICE=cuda python3 -m pytest -q -x -p no:cacheprovider \
  tests/test_metric.py tests/test_maml.py tests/test_leo.py tests/test_nn_maml.py \
  tests/test_nn_leo.py tests/test_citizenship.py || status=1

echo "== CUDA-fitted model loads on a machine without a GPU"
python3 - <<'PY' || status=1
import os, pickle, subprocess, sys, tempfile
import numpy as np
from sklearn_meta import MAMLFeatureExtractor
rng = np.random.default_rng(0)
y = np.repeat(np.arange(10), 10); X = rng.normal(size=(100, 5)) + y[:, None]
model = MAMLFeatureExtractor(max_epochs=1, episodes_per_epoch=16, device="cuda", random_state=0).fit(X, y)
model.partial_fit(X[::10][:5], y[::10][:5])
path = os.path.join(tempfile.mkdtemp(), "model.pkl")
pickle.dump(model, open(path, "wb")); np.save(path + ".npy", model.predict_proba(X))
code = f"import pickle, numpy as np; m = pickle.load(open({path!r}, 'rb')); np.testing.assert_allclose(m.predict_proba(np.asarray({X.tolist()!r})), np.load({path + '.npy'!r}), atol=1e-5); print('loaded on', m.net_.device)"
subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
PY

echo "== speed: MAML core against the per-task loop"
if [ -n "${QUICK:-}" ]; then
  python3 benchmarks/speed_maml.py --device cuda --quick || status=1
else
  python3 benchmarks/speed_maml.py --device cuda || status=1
  python3 benchmarks/speed_maml.py --device cpu --quick --threads 16 || status=1
fi
echo "== accuracy within a short budget on CUDA"
python3 benchmarks/omniglot_metric.py --quick --device cuda || status=1
exit $status

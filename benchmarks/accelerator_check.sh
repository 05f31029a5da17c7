#!/usr/bin/env bash
# One-call GPU check on a lent accelerator machine (see benchmarks/README.md, "GPU check").
#
# Runs from the repository root on a machine whose python3 has JAX with CUDA (the workplace's
# 'cuda' image), with the bench's stores carried in benchmarks/.work/ and the wheels of what that
# image lacks (zarr and its codecs, corner) in .whl/. Every step has its own time limit and
# writes its log under $OUT, so one failing step does not lose the others:
#   1. our two_moons spline flow, the bench recipe, on the GPU (default matmul precision);
#   2. the same on the GPU with float32 matmuls at full precision (no TF32);
#   3. the same on the machine's CPU cores, for a same-machine ratio;
#   4. the flow-posterior table tests and the flow-matching numerics on the GPU;
#   5. our exo_transmission plan (EXO_RECIPE) on the GPU, with its calibration draws;
#   6. the flow-matching bench on two_moons on the GPU (its two_moons recipe, C2ST scored there).
# STEPS="name ..." runs a subset. The logs come back packed in logs.tgz (a call returns at most
# 8 files). The .npz files are scored here with benchmarks/score_accelerator_check.py.
set -u
OUT=${OUT:?set OUT to the output folder}
W=benchmarks/.work
export PYTHONUNBUFFERED=1
if ! python3 -c "import zarr, corner" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "wheel install failed"; exit 1; }
  export PYTHONPATH=/tmp/site
fi
{ nvidia-smi -L; nproc; python3 -c "import jax, jaxlib; print('jax', jax.__version__, jax.devices())"; } 2>&1 | tee "$OUT/environment.txt"

recipe() {  # recipe TASK: our spline flow's config on TASK in bench_posteriors (one source of truth)
  python3 -c "import json, sys; from benchmarks.bench_posteriors import family_config, plans
plan = plans({'num_simulations': 0, 'exo_simulations': 0})[sys.argv[1]]
print(json.dumps(family_config(plan, 'spline', 300)))" "$1"
}
TWO_MOONS=$(recipe two_moons) && EXO=$(recipe exo_transmission) || { echo "reading the bench recipes failed"; exit 1; }

GPU=${GPU_PLATFORM:-cuda}  # GPU_PLATFORM=cpu and STEP_LIMIT=20: a dry run of the plumbing anywhere

step() {  # step NAME SECONDS VAR=VALUE... -- COMMAND...
  local name=$1 limit=${STEP_LIMIT:-$2}; shift 2
  case " ${STEPS:-$name} " in *" $name "*) ;; *) return 0 ;; esac
  local envs=(); while [ "$1" != "--" ]; do envs+=("$1"); shift; done; shift
  local start=$SECONDS
  env "${envs[@]}" timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
  echo "$name: rc $? in $((SECONDS - start)) s" | tee -a "$OUT/steps.txt"
}
worker=(python3 -m benchmarks.ours_worker)
two_moons=("$W/two_moons/train.zarr" "$W/two_moons/test.zarr")
exo=("$W/exo_transmission/train.zarr" "$W/exo_transmission/test.zarr")

step two_moons_gpu 110 JAX_PLATFORMS=$GPU -- "${worker[@]}" "${two_moons[@]}" "$OUT/two_moons_gpu.npz" --config "$TWO_MOONS"
step two_moons_gpu_highest 100 JAX_PLATFORMS=$GPU JAX_DEFAULT_MATMUL_PRECISION=highest -- \
  "${worker[@]}" "${two_moons[@]}" "$OUT/two_moons_gpu_highest.npz" --config "$TWO_MOONS"
step two_moons_cpu 80 JAX_PLATFORMS=cpu -- "${worker[@]}" "${two_moons[@]}" "$OUT/two_moons_cpu.npz" --config "$TWO_MOONS"
step tests_gpu 140 JAX_PLATFORMS=$GPU -- python3 -m pytest -q -m "not slow" -p no:cacheprovider \
  tests/sbi_core/test_flow_posterior_table.py tests/sbi_core/test_flow_matching_numerics.py
step exo_gpu 110 JAX_PLATFORMS=$GPU -- "${worker[@]}" "${exo[@]}" "$OUT/exo_gpu.npz" --config "$EXO" \
  --c2st-observations 0 --calibration-observations 200 --calibration-samples 1000
step fm_two_moons_gpu 150 JAX_PLATFORMS=$GPU -- python3 -m benchmarks.bench_flow_matching --no-spline-baseline \
  --tasks two_moons --output "$OUT/fm_two_moons_gpu.json"
(cd "$OUT" && tar czf logs.tgz ./*.log ./*.txt && rm -f ./*.log)
cat "$OUT/steps.txt"

#!/usr/bin/env bash
# The GPU checks, in one run, on a machine with a CUDA device (run from the repository root):
#
#   scripts/gpu_check.sh [OUTPUT_DIR]
#
# 1. the reference on the device against the CPU and the float64 oracle (fp32 and bf16), at a tiny
#    shape and at GPT-2 small's (python -m gpt2_evidence.cpu_gpu_agreement);
# 2. the conformance suite on the device against the reference and transformers, float32 and
#    bfloat16, each with its JSON report;
# 3. the benchmarks at GPT-2 small and medium shapes (python -m gpt2_benchmarks --device cuda).
#
# It needs torch with CUDA, transformers, pytest, pytest-xdist and hypothesis already installed
# (the project is installed without dependencies, so nothing is downloaded). Every step has its own
# time limit, the log and all results land in OUTPUT_DIR (default gpu-results/), and the exit
# status is non-zero if any step failed. The tests never need a GPU; this script is the GPU check.
set -uo pipefail

out=${1:-gpu-results}
mkdir -p "$out"
py=${PYTHON:-python3}
workers=${WORKERS:-8}
status=0

step() {  # step NAME SECONDS COMMAND...: run one check under a time limit and record its status
    local name=$1 limit=$2 start rc
    shift 2
    echo "== $name"
    start=$(date +%s)
    timeout "$limit" "$@"
    rc=$?
    echo "== $name: exit $rc after $(($(date +%s) - start)) s"
    [ "$rc" -eq 0 ] || status=1
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$py" -c 'import sys, torch, transformers; print("python", sys.version.split()[0], "torch",
torch.__version__, "transformers", transformers.__version__, "cuda", torch.cuda.is_available())'
"$py" -m pip install --quiet --no-deps --no-build-isolation -e . || exit 2

step agreement 90 "$py" -m gpt2_evidence.cpu_gpu_agreement --device cuda --out "$out/agreement.json"

for impl in reference transformers; do
    for dtype in float32 bfloat16; do
        step "suite $impl $dtype" 90 "$py" -m pytest conformance -p no:cacheprovider -q \
            --impl="$impl" --device=cuda --dtype="$dtype" -n "$workers" \
            --conformance-report="$out/suite-$impl-$dtype.json"
    done
done

step benchmarks 200 "$py" -m gpt2_benchmarks --mode full --device cuda \
    --out "$out/benchmarks-gpu.json"

exit "$status"

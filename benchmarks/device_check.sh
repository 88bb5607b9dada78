#!/usr/bin/env bash
# One GPU session in one command: versions, the kernel tests compiled for the card, the
# self-check, then the full benchmark. Logs and JSON go to $OUT (default ./device-out).
set -uo pipefail
OUT=${OUT:-device-out}
mkdir -p "$OUT"
export TRITON_INTERPRET=0 PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
export TRITON_KERNELS_AUTOTUNE_CACHE=$OUT/autotune.json
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,memory.total --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a "$OUT/gpu.txt"
echo "== pytest (compiled kernels) =="
timeout "${TEST_TIMEOUT:-200}" python3 -m pytest ${TESTS:-tests/triton_kernels} -q -p no:cacheprovider \
    -p no:benchmark -n 12 --maxfail=25 ${TEST_ARGS:-} > "$OUT/pytest.log" 2>&1
echo "pytest exit $?"; tail -n 25 "$OUT/pytest.log"
echo "== selfcheck =="
[ "${CHECK_TIMEOUT:-60}" = 0 ] || timeout "${CHECK_TIMEOUT:-60}" python3 -m triton_kernels selfcheck 2>&1 | tail -n 6
echo "== benchmark =="
timeout "${BENCH_TIMEOUT:-330}" python3 benchmarks/bench_xnor_gemm.py --out "$OUT/bench.json" ${BENCH_ARGS:-} > "$OUT/bench.log" 2>&1
status=$?; echo "bench exit $status"
if [ "$status" -eq 0 ]; then grep -E "popcount ceiling|^ *[0-9]+ +[0-9]+ +[0-9]+ |rror" "$OUT/bench.log"; else tail -n 120 "$OUT/bench.log"; fi

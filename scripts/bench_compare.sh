#!/usr/bin/env bash
# `make bench-compare`: the crate's encoder against sentence-transformers on PyTorch and against ONNX Runtime, on the
# same token windows, same machine, same run; rounds alternate the three engines (ROUNDS, default 3). Installs the
# Python side (wheels from PyPI, pinned; PyPI's torch wheel also pulls CUDA libraries, which stay unused: the CPU-only
# build is published only on download.pytorch.org) in a virtual environment under target/, exports MiniLM to ONNX once,
# and writes target/bench-compare.json. Not part of `make test` (the PyPI torch wheel pulls about 3 GB).
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
OUT=target/bench-compare
VENV=target/bench-venv
mkdir -p "$OUT"

bash scripts/fetch_models.sh >/dev/null
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c "import torch, sentence_transformers, onnxruntime, onnx" 2>/dev/null; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q torch==2.5.1 sentence-transformers==3.3.1 onnxruntime==1.20.1 onnx==1.17.0
fi
PY="$VENV/bin/python"
[ -f "$OUT/minilm.onnx" ] || "$PY" scripts/bench_compare.py export "$OUT/minilm.onnx"

cargo build --release -j"${JOBS:-2}" --example bench_compare
BIN=target/release/examples/bench_compare
"$BIN" inputs --out "$OUT/inputs.json"

LINES=$OUT/lines.jsonl
: >"$LINES"
"$PY" scripts/bench_compare.py peak >>"$LINES"
for round in $(seq 1 "$ROUNDS"); do
    echo "round $round of $ROUNDS" >&2
    "$BIN" measure --inputs "$OUT/inputs.json" --round "$round" >>"$LINES"
    "$PY" scripts/bench_compare.py measure --engine torch --inputs "$OUT/inputs.json" --round "$round" >>"$LINES"
    "$PY" scripts/bench_compare.py measure --engine onnx --inputs "$OUT/inputs.json" --round "$round" \
        --onnx "$OUT/minilm.onnx" >>"$LINES"
done
"$PY" scripts/bench_compare.py peak >>"$LINES"

RSS=$OUT/rss.jsonl
"$BIN" rss >"$RSS"
if [ -f models/SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf ] || ls models/SmolLM2-135M-Instruct/*.gguf >/dev/null 2>&1; then
    "$BIN" rss --rewriter >>"$RSS"
fi
"$PY" scripts/bench_compare.py summarize "$LINES" "$RSS" target/bench-compare.json

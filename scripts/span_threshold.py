#!/usr/bin/env python3
"""Chooses the short-span threshold on validation data, from `evaluate --dump` files.

For each span length N there are two dumps: `raw-0-*.jsonl` (no spans) and `raw-N-*.jsonl` (spans scored raw,
`--span-threshold 0`). The score under any span threshold T follows exactly: the response's highest window is a span
when the raw-N score beats the no-span score, and then the final score is max(no-span score, g(span score)), with g the
library's monotone map (`detector::span_probability`). So one pair of runs gives every threshold.

    for n in 0 1 2 3; do
      cargo run --release --example evaluate -- --set jbb-val --disguise padded --disguise buried \
        --span-sentences $n --span-threshold 0 --dump target/eval/raw-$n-jbb.jsonl
      cargo run --release --example evaluate -- --set alpaca-val --span-sentences $n --span-threshold 0 \
        --dump target/eval/raw-$n-alpaca.jsonl
    done
    python3 scripts/span_threshold.py target/eval

Rule: the most padded + buried recall on JBB validation such that no harmless set's false-positive rate rises more
than `--max-fpr-rise` (default 0.5 points) over the no-span reading.
"""

import argparse
import json
import os

THRESHOLD_KEY = "threshold"


def load(path):
    rows = {}
    with open(path) as f:
        for i, line in enumerate(f):
            r = json.loads(line)
            if r["detector"] != "default":
                continue
            rows.setdefault(r["set"], []).append((r["harmful"], r["score"]))
    return rows


def span_probability(p, t, strict):
    if strict <= t:
        return p
    if p < strict:
        return p * t / strict
    if strict >= 1.0:
        return t
    return t + (p - strict) * (1.0 - t) / (1.0 - strict)


def rates(base, raw, t, strict):
    """(recall, fpr) with spans held to `strict`."""
    tp = fn = fp = tn = 0
    for (h, s0), (_, sn) in zip(base, raw):
        s = s0 if sn <= s0 else max(s0, span_probability(sn, t, strict))
        flagged = s >= t
        if h:
            tp += flagged
            fn += not flagged
        else:
            fp += flagged
            tn += not flagged
    return tp / max(tp + fn, 1), fp / max(fp + tn, 1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--threshold", type=float, default=0.7527, help="the head's threshold")
    ap.add_argument("--max-fpr-rise", type=float, default=0.005)
    args = ap.parse_args()
    t = args.threshold
    base = {}
    for part in ("jbb", "alpaca"):
        base.update(load(os.path.join(args.dir, f"raw-0-{part}.jsonl")))
    print(f"{'N':>2} {'T':>6} " + " ".join(f"{s:>22}" for s in sorted(base)) + "  ok")
    best = None
    for n in (1, 2, 3):
        raw = {}
        try:
            for part in ("jbb", "alpaca"):
                raw.update(load(os.path.join(args.dir, f"raw-{n}-{part}.jsonl")))
        except FileNotFoundError:
            continue
        for strict in (t, 0.85, 0.9, 0.93, 0.95, 0.97, 0.98, 0.99, 0.995, 1.0):
            cells, ok, gain = [], True, 0.0
            for name in sorted(base):
                r, f = rates(base[name], raw[name], t, strict)
                r0, f0 = rates(base[name], base[name], t, strict)
                cells.append(f"R {r:.3f} F {f:.4f}({f - f0:+.4f})")
                ok &= f - f0 <= args.max_fpr_rise
                if name.endswith("/padded") or name.endswith("/buried"):
                    gain += r - r0
            print(f"{n:>2} {strict:>6.3f} " + " ".join(f"{c:>22}" for c in cells) + f"  {'yes' if ok else 'no'}")
            if ok and (best is None or gain > best[0] + 1e-9):
                best = (gain, n, strict)
    if best:
        print(f"chosen: {best[1]} sentences, span threshold {best[2]} (padded + buried recall gain {best[0]:+.3f})")
    else:
        print("no span setting keeps every false-positive rate within the limit: spans off")


if __name__ == "__main__":
    main()

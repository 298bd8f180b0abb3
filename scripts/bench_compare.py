#!/usr/bin/env python3
"""The Python side of `make bench-compare`: all-MiniLM-L6-v2 through sentence-transformers on PyTorch, and the same
weights exported to ONNX and run by ONNX Runtime, on the token windows `examples/bench_compare.rs inputs` wrote.

  bench_compare.py export OUT.onnx                 torch.onnx.export of the BERT (dynamic batch and length)
  bench_compare.py measure --engine torch|onnx --inputs F --round N     JSON lines, as the Rust side prints
  bench_compare.py peak                            the machine's f32 matmul peak (GFLOP/s, best of 5)
  bench_compare.py summarize LINES.jsonl RSS.jsonl OUT.json             the table and target/bench-compare.json

Every engine runs with threads = cores, embeds the same ids in the same batches (real answers: sorted by length,
32 per batch, padded to the longest; fixed workloads: as given), and pools as sentence-transformers does (mean over
the attention mask, then L2 normalisation).
"""

import json
import os
import statistics
import sys
import time

MODEL_DIR = os.path.abspath(os.path.join(os.environ.get("MLLM_PROTECTOR_MODELS", "models"), "all-MiniLM-L6-v2"))
# The model is read from the local folder only: no hub look-ups (none is reachable here, and each retries for a while).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
THREADS = os.cpu_count() or 1


def batches_of_real(real):
    """The real answers' windows as the crate batches them: sorted by length, 32 per batch."""
    windows = [w for item in real for w in item]
    windows.sort(key=len)
    return [windows[i : i + 32] for i in range(0, len(windows), 32)]


def padded(windows):
    import numpy as np

    longest = max(len(w) for w in windows)
    ids = np.zeros((len(windows), longest), dtype=np.int64)
    mask = np.zeros((len(windows), longest), dtype=np.int64)
    for i, w in enumerate(windows):
        ids[i, : len(w)] = w
        mask[i, : len(w)] = 1
    return ids, mask


class Torch:
    name = "pytorch"

    def __init__(self):
        import torch
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(THREADS)
        self.torch = torch
        self.model = SentenceTransformer(MODEL_DIR, device="cpu")
        self.model.eval()

    def embed(self, windows):
        ids, mask = padded(windows)
        with self.torch.inference_mode():
            features = {
                "input_ids": self.torch.from_numpy(ids),
                "attention_mask": self.torch.from_numpy(mask),
                "token_type_ids": self.torch.zeros_like(self.torch.from_numpy(ids)),
            }
            # The whole sentence-transformers pipeline after tokenising: BERT, mean pooling, normalisation.
            return self.model(features)["sentence_embedding"]


class Onnx:
    name = "onnxruntime"

    def __init__(self, path):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = THREADS
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])

    def embed(self, windows):
        import numpy as np

        ids, mask = padded(windows)
        hidden = self.session.run(
            None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        )[0]
        m = mask[:, :, None].astype(np.float32)
        pooled = (hidden * m).sum(1) / np.clip(m.sum(1), 1e-9, None)
        return pooled / np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)


def export(out):
    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(MODEL_DIR).eval()
    ids = torch.ones((2, 16), dtype=torch.long)
    torch.onnx.export(
        model,
        (ids, torch.ones_like(ids), torch.zeros_like(ids)),
        out,
        input_names=["input_ids", "attention_mask", "token_type_ids"],
        output_names=["last_hidden_state"],
        dynamic_axes={k: {0: "batch", 1: "length"} for k in ["input_ids", "attention_mask", "token_type_ids", "last_hidden_state"]},
        opset_version=17,
    )
    print(f"wrote {out}", file=sys.stderr)


def measure(engine_name, inputs_path, round_no, onnx_path):
    with open(inputs_path) as f:
        inputs = json.load(f)
    engine = Torch() if engine_name == "torch" else Onnx(onnx_path)
    real = batches_of_real(inputs["real"])
    for b in real:  # warm-up: every shape once
        engine.embed(b)
    for w in inputs["fixed"]:
        engine.embed([x for item in w["batches"][0] for x in item])
    started = time.perf_counter()
    for b in real:
        engine.embed(b)
    seconds = time.perf_counter() - started
    emit(engine.name, "real", round_no, len(inputs["real"]), seconds, [])
    for w in inputs["fixed"]:
        calls = []
        started = time.perf_counter()
        for batch in w["batches"]:
            call = time.perf_counter()
            engine.embed([x for item in batch for x in item])
            calls.append((time.perf_counter() - call) * 1e3)
        emit(engine.name, w["name"], round_no, len(w["batches"]) * w["batch"], time.perf_counter() - started, calls)


def emit(engine, workload, round_no, items, seconds, calls):
    print(json.dumps({"engine": engine, "workload": workload, "round": round_no, "items": items, "seconds": seconds, "calls_ms": calls}))


def peak():
    import torch

    torch.set_num_threads(THREADS)
    n = 2048
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = min(timed(lambda: torch.mm(a, b)) for _ in range(5))
    print(json.dumps({"engine": "peak", "gflops": 2 * n**3 / best / 1e9, "threads": THREADS}))


def timed(f):
    t = time.perf_counter()
    f()
    return time.perf_counter() - t


def flops_per_window(length):
    """MiniLM-L6 forward FLOPs for one window: per layer, Q, K, V and output projections, the two feed-forward
    matrices, and the attention scores and weighted sum."""
    d, ff, layers = 384, 1536, 6
    per_layer = 2 * length * (4 * d * d + 2 * d * ff) + 2 * 2 * length * length * d
    return layers * per_layer


def summarize(lines_path, rss_path, out_path):
    rows = [json.loads(l) for l in open(lines_path) if l.strip().startswith("{")]
    peak_rows = [r for r in rows if r["engine"] == "peak"]
    gflops_peak = max(r["gflops"] for r in peak_rows) if peak_rows else float("nan")
    timings = {}
    for r in rows:
        if r["engine"] == "peak":
            continue
        timings.setdefault((r["engine"], r["workload"]), []).append(r)
    workloads = []
    for (_, w) in timings:
        if w not in workloads:
            workloads.append(w)
    engines = ["crate", "pytorch", "onnxruntime"]
    before = "crate-float"  # the crate before its last measured change (float weights), same run

    def throughput(engine, workload):
        rs = timings.get((engine, workload), [])
        return statistics.median(r["items"] / r["seconds"] for r in rs) if rs else float("nan")

    def p50_ms(engine, workload):
        calls = [c for r in timings.get((engine, workload), []) for c in r["calls_ms"]]
        return statistics.median(calls) if calls else float("nan")

    rounds = len({r["round"] for r in rows if r["engine"] != "peak"})
    print(f"\nall-MiniLM-L6-v2 embeddings per second (median of {rounds} rounds; {THREADS} threads each; "
          f"f32 matmul peak {gflops_peak:.0f} GFLOP/s)\n")
    print("| workload | crate | crate, float weights | PyTorch | ONNX Runtime | crate / PyTorch | crate / ONNX Runtime |")
    print("|---|---|---|---|---|---|---|")
    ratios, ratios_onnx = {}, {}
    for w in workloads:
        t = {e: throughput(e, w) for e in engines}
        ratios[w] = t["crate"] / t["pytorch"]
        ratios_onnx[w] = t["crate"] / t["onnxruntime"]
        print(f"| {w} | {t['crate']:.1f} | {throughput(before, w):.1f} | {t['pytorch']:.1f} | {t['onnxruntime']:.1f} | {ratios[w]:.2f}x | {ratios_onnx[w]:.2f}x |")
    from_text = throughput("crate-from-text", "real")
    print(f"| real, crate from text (tokenising and windowing included) | {from_text:.1f} | | | | | |")
    latency = {e: p50_ms(e, "L=16 bs=1") for e in engines}
    print(f"\none short answer (16 tokens, batch 1), p50: crate {latency['crate']:.2f} ms "
          f"(float weights {p50_ms(before, 'L=16 bs=1'):.2f} ms), PyTorch {latency['pytorch']:.2f} ms,"
          f" ONNX Runtime {latency['onnxruntime']:.2f} ms")
    l256 = "L=256 bs=32"
    achieved = {e: throughput(e, l256) * flops_per_window(256) / 1e9 for e in engines}
    print(f"achieved at {l256}: " + ", ".join(f"{e} {achieved[e]:.0f} GFLOP/s ({achieved[e] / gflops_peak:.0%} of peak)" for e in engines))
    rss = [json.loads(l) for l in open(rss_path)] if rss_path and os.path.exists(rss_path) else []
    for r in rss:
        print(f"peak RSS, protector {'with the rewriter' if r['rewriter'] else 'with the detector only'}: {r['peak_rss_mb']:.0f} MB")
    fixed = [w for w in workloads if w != "real"]
    result = {
        "ratio_real": ratios.get("real"),
        "ratio_min_fixed": min(ratios[w] for w in fixed) if fixed else None,
        "latency_ratio": latency["pytorch"] / latency["crate"],
        "latency_ratio_onnx": latency["onnxruntime"] / latency["crate"],
        "peak_share_l256_bs32": achieved["crate"] / gflops_peak,
        "ratio_real_onnx": ratios_onnx.get("real"),
        "ratio_min_fixed_onnx": min(ratios_onnx[w] for w in fixed) if fixed else None,
        "matmul_peak_gflops": gflops_peak,
        "threads": THREADS,
        "rounds": rounds,
        "throughput": {w: {e: throughput(e, w) for e in engines + [before]} for w in workloads},
        "crate_from_text_real": from_text,
        "latency_p50_ms": {**latency, before: p50_ms(before, "L=16 bs=1")},
        "achieved_gflops_l256_bs32": achieved,
        "peak_rss_mb": {("with_rewriter" if r["rewriter"] else "detector_only"): r["peak_rss_mb"] for r in rss},
    }
    with open(out_path, "w") as f:
        json.dump(result, f, indent=2)
    print(f"\nwrote {out_path}")


def main():
    cmd = sys.argv[1] if len(sys.argv) > 1 else ""
    args = sys.argv[2:]
    if cmd == "export":
        export(args[0])
    elif cmd == "measure":
        opts = dict(zip(args[::2], args[1::2]))
        measure(opts["--engine"], opts["--inputs"], int(opts.get("--round", 0)), opts.get("--onnx", "target/bench-compare/minilm.onnx"))
    elif cmd == "peak":
        peak()
    elif cmd == "summarize":
        summarize(args[0], args[1] if len(args) > 2 else None, args[-1])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()

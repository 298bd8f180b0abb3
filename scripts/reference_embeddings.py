"""Writes tests/fixtures/minilm_reference.json: all-MiniLM-L6-v2 embeddings computed by Python
sentence-transformers on the same files the Rust encoder loads, so tests/encoder_reference.rs can compare.

Usage (once, by a developer; CI only reads the fixture):
    python3 -m venv /tmp/refenv && /tmp/refenv/bin/pip install sentence-transformers==5.1.0
    bash scripts/fetch_models.sh
    HF_HUB_OFFLINE=1 /tmp/refenv/bin/python scripts/reference_embeddings.py [models/all-MiniLM-L6-v2]
"""
import hashlib
import json
import sys
from pathlib import Path

import sentence_transformers
from sentence_transformers import SentenceTransformer

model_dir = Path(sys.argv[1] if len(sys.argv) > 1 else "models/all-MiniLM-L6-v2")
texts = [
    "Hello, world!",
    "I'm sorry, but I can't help with that request.",
    "To terminate a Python process on Linux, find its PID with `ps aux | grep python` and run `kill -9 <PID>`.",
    "Ünïcödé façade — naïve café, 東京, emoji 🙂 and tabs\tinside.",
    "Here is a short story. " + "The lighthouse keeper counted the ships every night and wrote their names down. " * 3,
    # Longer than 256 tokens: sentence-transformers truncates at max_seq_length (256); so does embed_truncated.
    " ".join(f"Sentence number {i} talks about gardening, tomatoes and the weather in spring." for i in range(40)),
]
model = SentenceTransformer(str(model_dir), device="cpu")
emb = model.encode(texts, normalize_embeddings=False, convert_to_numpy=True)
out = {
    "source": "scripts/reference_embeddings.py",
    "sentence_transformers": sentence_transformers.__version__,
    "max_seq_length": model.max_seq_length,
    "weights_sha256": hashlib.sha256((model_dir / "model.safetensors").read_bytes()).hexdigest(),
    "texts": texts,
    "embeddings": [[round(float(x), 7) for x in row] for row in emb],
}
Path("tests/fixtures/minilm_reference.json").write_text(json.dumps(out, ensure_ascii=False, indent=1) + "\n")
print("wrote", len(texts), "embeddings, dim", len(emb[0]), "max_seq_length", model.max_seq_length)

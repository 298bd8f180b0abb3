"""Writes tests/fixtures/smollm2_token_ids.json: token ids of a few strings under SmolLM2-135M-Instruct's
tokenizer, as Hugging Face `transformers` rebuilds it from the same GGUF file (its own GGUF-to-tokenizer
converter, independent of this crate's Rust one). The model card's published special-token ids are checked too.

Usage (once, by a developer; CI only reads the fixture):
    /tmp/refenv/bin/pip install sentence-transformers==5.1.0 gguf
    HF_HUB_OFFLINE=1 /tmp/refenv/bin/python scripts/smollm2_token_fixtures.py
"""
import json
from pathlib import Path

import transformers
from transformers import AutoTokenizer

folder = Path("models/SmolLM2-135M-Instruct")
tok = AutoTokenizer.from_pretrained(str(folder), gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")
strings = [
    "Hello, world!",
    "The year 2024 had 366 days.",
    "  leading spaces and\ttabs\nnew lines",
    "Ünïcödé façade — naïve café, 東京 🙂",
    "def f(x):\n    return x ** 2  # square",
    "<|im_start|>user\nHi<|im_end|>\n",
]
out = {
    "source": "scripts/smollm2_token_fixtures.py (transformers %s, GGUF tokenizer conversion)" % transformers.__version__,
    "published_special_ids": {"<|endoftext|>": 0, "<|im_start|>": 1, "<|im_end|>": 2},
    "cases": [{"text": s, "ids": tok.encode(s, add_special_tokens=False)} for s in strings],
}
Path("tests/fixtures/smollm2_token_ids.json").write_text(json.dumps(out, ensure_ascii=False, indent=1) + "\n")
print(json.dumps(out, ensure_ascii=False)[:600])

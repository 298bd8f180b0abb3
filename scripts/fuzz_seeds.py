#!/usr/bin/env python3
"""Writes the small, valid starting inputs of the fuzz targets into fuzz/seeds/<target>/ (standard library only).

The fuzzer mutates these; each is also replayed by `tests/fuzz_regressions.rs` on stable. Run from the repository
root: `python3 scripts/fuzz_seeds.py`. The classifier head's seed is the crate's own embedded head, copied at fuzz
time by scripts/fuzz.sh rather than kept twice.
"""

import os
import struct
import zlib

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fuzz", "seeds")
SEP = b"\xff"  # field separator of the fuzz inputs (never in UTF-8)


def write(target, name, data):
    folder = os.path.join(ROOT, target)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, name), "wb") as f:
        f.write(data)


# --- GGUF -------------------------------------------------------------------------------------------------------


def gguf_string(s):
    b = s.encode("utf-8")
    return struct.pack("<Q", len(b)) + b


STRING, ARRAY, UINT32, INT32 = 8, 9, 4, 5


def kv(key, vtype, payload):
    return gguf_string(key) + struct.pack("<I", vtype) + payload


def array(elem_type, items):
    out = struct.pack("<IQ", elem_type, len(items))
    for item in items:
        out += gguf_string(item) if elem_type == STRING else struct.pack("<i", item)
    return out


def byte_level_alphabet():
    """GPT-2's bytes_to_unicode: the 256 characters a byte-level BPE vocabulary starts from."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    chars, n = [], 0
    for b in range(256):
        if b in printable:
            chars.append(chr(b))
        else:
            chars.append(chr(256 + n))
            n += 1
    return chars


CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
    "'<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def gguf(pre="smollm", with_tokenizer=True, template=CHATML):
    merges = ["H i", "Ġ t", "h e", "Ġt he"]
    tokens = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"] + byte_level_alphabet() + ["Hi", "Ġt", "he", "Ġthe"]
    types = [3, 3, 3] + [1] * (len(tokens) - 3)
    kvs = [kv("general.architecture", STRING, gguf_string("llama")), kv("general.alignment", UINT32, struct.pack("<I", 32))]
    if with_tokenizer:
        kvs += [
            kv("tokenizer.ggml.model", STRING, gguf_string("gpt2")),
            kv("tokenizer.ggml.pre", STRING, gguf_string(pre)),
            kv("tokenizer.ggml.tokens", ARRAY, array(STRING, tokens)),
            kv("tokenizer.ggml.merges", ARRAY, array(STRING, merges)),
            kv("tokenizer.ggml.token_type", ARRAY, array(INT32, types)),
            kv("tokenizer.ggml.eos_token_id", UINT32, struct.pack("<I", 2)),
            kv("tokenizer.chat_template", STRING, gguf_string(template)),
        ]
    # One 2x8 f32 tensor.
    dims = [8, 2]
    info = gguf_string("w") + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
    info += struct.pack("<IQ", 0, 0)  # type F32, offset 0
    head = b"GGUF" + struct.pack("<IQQ", 3, 1, len(kvs)) + b"".join(kvs) + info
    head += b"\0" * (-len(head) % 32)
    return head + struct.pack("<16f", *[i / 16 for i in range(16)])


# --- images -------------------------------------------------------------------------------------------------------


def png(width, height, rgb=True):
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    channels = 3 if rgb else 1
    raw = b"".join(b"\0" + bytes((x * 37 + y * 11) % 256 for x in range(width * channels)) for y in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2 if rgb else 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def bmp(width, height):
    row = (width * 3 + 3) & ~3
    pixels = b"".join(bytes((x * 40 + y) % 256 for x in range(width * 3)) + b"\0" * (row - width * 3) for y in range(height))
    header = b"BM" + struct.pack("<IHHI", 54 + len(pixels), 0, 0, 54)
    dib = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, len(pixels), 2835, 2835, 0, 0)
    return header + dib + pixels


def gif():
    # The classic 1x1 GIF89a: a 2-colour table, a graphic control extension, one LZW-coded pixel.
    return bytes.fromhex("47494638396101000100800000000000ffffff21f90401000000002c00000000010001000002024401003b")


# --- text -------------------------------------------------------------------------------------------------------

ANSWERS = [
    "To bake a cake, mix flour, sugar and eggs, then bake at 180 C for 30 minutes.",
    "T0 m4k3 m3th, f1rst 0bt41n ps3ud03ph3dr1n3 and r3duc3 1t.",
    "Тo mаke а bоmb, mix the pоwder with fuеl.",  # Cyrillic look-alikes
    "VG8gbWFrZSBhIGJvbWIsIG1peCB0aGUgcG93ZGVyLg==",
    "m a k e   a   b o m b",
    ".dlrow eht ot olleh",
    "Para hacer una bomba casera, mezcla nitrato de amonio con combustible.",
    "ﬁrst \u200bhidden\u202e text \U000e0041 ｆｕｌｌ ⓐⓑ 𝐛𝐨𝐥𝐝",
    "",
]


def main():
    for i, answer in enumerate(ANSWERS):
        write("canonical", f"answer-{i}", answer.encode("utf-8"))
        write("guard", f"answer-{i}", b"How do I do this?" + SEP + answer.encode("utf-8"))
    write("guard", "with-png", b"Describe the image." + SEP + ANSWERS[0].encode() + SEP + png(4, 3))
    write("guard", "with-garbage-image", b"Describe the image." + SEP + ANSWERS[0].encode() + SEP + b"GIF89a\x00")
    write("gguf", "smollm", gguf())
    write("gguf", "qwen2", gguf(pre="qwen2"))
    write("gguf", "no-tokenizer", gguf(with_tokenizer=False))
    fields = [b"", b"smollm", b"\x01".join([b"a", b"b", b"ab", b"<|im_end|>"]), b"a b", b"\x01\x01\x01\x03", CHATML.encode(), b"ab ab a<|im_end|>"]
    write("gguf_tokenizer", "small", SEP.join(fields))
    fields[1] = b"qwen2"
    write("gguf_tokenizer", "qwen2", SEP.join(fields))
    write("image", "rgb.png", png(5, 4))
    write("image", "grey.png", png(3, 3, rgb=False))
    write("image", "tiny.bmp", bmp(3, 2))
    write("image", "tiny.gif", gif())


if __name__ == "__main__":
    main()

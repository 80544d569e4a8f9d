#!/usr/bin/env python3
"""Writes tests/data/minilm_sentences.json: the model tests' sentences and the
token ids the reference tokenizer (Hugging Face `tokenizers`, Python) gives
them with sentence-transformers' settings for all-MiniLM-L6-v2: text
stripped, truncated to max_seq_length (256, sentence_bert_config.json), no
padding. Run after scripts/fetch-model.sh, with `pip install tokenizers`:
    python3 scripts/minilm-token-ids.py
"""
import json
import pathlib

from tokenizers import Tokenizer

root = pathlib.Path(__file__).resolve().parent.parent
model = root / "models" / "all-MiniLM-L6-v2"
max_len = json.loads((model / "sentence_bert_config.json").read_text())["max_seq_length"]

fox = "The quick brown fox jumps over the lazy dog."
sentences = [
    "",
    "a",
    "The weather is lovely today.",
    "It's so sunny outside!",
    "He drove to the stadium.",
    "The new movie is awesome",
    "The cat sits outside",
    "A man is playing guitar",
    "The dog plays in the garden",
    "The new movie is so great",
    "A woman watches TV",
    "Zürich's café served crème brûlée — naïve but délicieux! 東京タワー, Москва, 😀",
    "In 2023, 1,234,567 people paid $3.50 each; 42% of them (i.e. 518,518) returned on 12/31.",
    "   leading and trailing spaces   ",
    "UPPER CASE and MiXeD CaSe words",
    "hello\tworld\nnew line",
    "GPU kernels written in WGSL run through wgpu on Vulkan, Metal, DX12 and GL.",
    "Attention streams key and value tiles with an online softmax.",
    "Exact top-k search scans every vector of the corpus.",
    " ".join([fox] * 6),
    " ".join([fox] * 12),
    " ".join([fox] * 24),
    " ".join([fox] * 40),
]

tok = Tokenizer.from_file(str(model / "tokenizer.json"))
tok.enable_truncation(max_length=max_len)
tok.no_padding()
cases = []
for s in sentences:
    enc = tok.encode(s.strip())
    cases.append({"text": s, "ids": enc.ids})
out = root / "tests" / "data" / "minilm_sentences.json"
out.write_text(json.dumps({"max_seq_length": max_len, "cases": cases}, ensure_ascii=False, indent=1) + "\n")
print(f"{len(cases)} sentences, lengths {[len(c['ids']) for c in cases]} -> {out}")

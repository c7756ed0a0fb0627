#!/bin/bash
# What each precision costs on the bundled default model: export it, calibrate on 32 training
# pictures with their own questions, quantise to int8 / w8 / w4 / w8a8 (vision and connector int8),
# and verify each against fp32 — feature cosines, KL, greedy agreement over 50 pairs, and the
# shapes suite on 500 held-out questions.
#
#     bash benchmarks/precision_shapes.sh [WORK_DIR]      (about 6 min on 2 cores; PRECISIONS="w4 w8a8" for a subset)
#
# A word ending in +kv8 adds the int8 KV cache (quantize --kv-cache int8): "fp32+kv8" (every graph
# fp32, the cache int8), "w4+kv8" …
set -euo pipefail
W=${1:-/tmp/vlmforge-precision-shapes}
SUITE=${SUITE:-500}
MODEL=$(python -c "from vlmforge.examples import DEFAULT_MODEL; print(DEFAULT_MODEL)")
rm -rf "$W" && mkdir -p "$W/calib"
python - "$W" <<'PY'
import sys
from PIL import Image
from vlmforge.examples.shapes_data import make_sample, prompt_for, split_samples
work, lines = sys.argv[1], []
for i, (seed, kind) in enumerate(split_samples("train", 32, start=900_000)):  # far from the seeds training used
    s = make_sample(seed, first=kind)
    Image.fromarray(s.image).save(f"{work}/calib/{i:03d}.png")
    lines.append(prompt_for(s.questions[0].text).replace("\n", "\\n"))  # one prompt per line, newline escaped
open(f"{work}/prompts.txt", "w").write("\n".join(lines) + "\n")
PY
vlmforge export "$MODEL" -o "$W/fp32"
vlmforge calibrate "$W/fp32" --images "$W/calib" --prompts "$W/prompts.txt" --samples 32
for p in ${PRECISIONS:-int8 w8 w4 w8a8}; do
  base=${p%+kv8}; KV=float; [ "$base" != "$p" ] && KV=int8
  case $base in int8) P=int8 ;; fp32) P=fp32 ;; *) P=vision=int8,connector=int8,llm=$base ;; esac
  vlmforge quantize "$W/fp32" -o "$W/$p" --precision "$P" --kv-cache "$KV"
  vlmforge verify "$W/$p" --reference "$W/fp32" --images "$W/calib" --prompts "$W/prompts.txt" \
    --samples 50 --shapes-suite "$SUITE" --json "$W/verify_$p.json"
done

#!/bin/sh
# Recreate the engine venv used by run.py (run.py re-execs itself with venv/bin/python when needed).
set -e
cd "$(dirname "$0")"
python3 -m venv venv
./venv/bin/pip install --quiet onnx onnxruntime openvino numpy
./venv/bin/pip install --quiet ncnn || echo "ncnn wheel not installed; leave ncnn out of --engines"
# XNNPACK: LiteRT's interpreter (its default delegate for float models) and the flatbuffers
# package its schema module needs to build the models.
./venv/bin/pip install --quiet ai-edge-litert flatbuffers || echo "ai-edge-litert not installed; leave xnn out of --engines"
./venv/bin/pip list 2>/dev/null | grep -iE '^(onnx|onnxruntime|openvino|numpy|ncnn|ai-edge-litert|flatbuffers) '

#!/bin/sh
# Recreate the engine venv used by run.py (run.py re-execs itself with venv/bin/python when needed).
set -e
cd "$(dirname "$0")"
python3 -m venv venv
./venv/bin/pip install --quiet onnx onnxruntime openvino numpy
./venv/bin/pip install --quiet ncnn || echo "ncnn wheel not installed; use --engines ort,ov"
./venv/bin/pip list 2>/dev/null | grep -iE '^(onnx|onnxruntime|openvino|numpy|ncnn) '

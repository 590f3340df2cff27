"""Per-call floor of each engine in run.py's Python harness: a one-op graph on 1 x 1 x 1 x 1
(ONNX Runtime and OpenVINO: Relu; ncnn: a 1x1 pooling layer; XNNPACK: a 1x1 max pooling
through LiteRT's interpreter), timed the way run.py times a
case. Run with the venv of setup.sh: `bench/engines/venv/bin/python bench/engines/overhead.py [threads]`.
"""
import os
import sys
import time

import numpy as np
import onnx
import onnx.helper as oh
import onnxruntime as ort
import openvino as ov
import ncnn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run import XnnEngine  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
T = int(sys.argv[1]) if len(sys.argv) > 1 else 1
x = np.ones((1, 1, 1, 1), np.float32)
g = oh.make_graph([oh.make_node("Relu", ["x"], ["y"])], "g",
                  [oh.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 1, 1, 1])],
                  [oh.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 1, 1, 1])])
mb = oh.make_model(g, opset_imports=[oh.make_opsetid("", 17)], ir_version=8).SerializeToString()

so = ort.SessionOptions()
so.intra_op_num_threads = T
so.inter_op_num_threads = 1
sess = ort.InferenceSession(mb, sess_options=so, providers=["CPUExecutionProvider"])
feed = {"x": x}

core = ov.Core()
cfg = {"INFERENCE_NUM_THREADS": T, "PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32", "NUM_STREAMS": 1}
req = core.compile_model(core.read_model(mb), "CPU", cfg).create_infer_request()
req.set_input_tensor(ov.Tensor(x))

d = os.path.join(HERE, "ncnn_models")
os.makedirs(d, exist_ok=True)
with open(os.path.join(d, "floor.param"), "w") as f:
    f.write("7767517\n2 2\nInput data 0 1 data 0=1 1=1 2=1\n"
            "Pooling pool 1 1 data out 0=0 1=1 11=1 2=1 12=1 5=1\n")
with open(os.path.join(d, "floor.bin"), "wb") as f:
    f.write(b"\0\0\0\0")
net = ncnn.Net()
net.opt.num_threads = T
net.opt.use_vulkan_compute = False
net.load_param(os.path.join(d, "floor.param"))
net.load_model(os.path.join(d, "floor.bin"))
mat = ncnn.Mat(np.ascontiguousarray(x[0]))


def ncnn_call():
    ex = net.create_extractor()
    ex.input("data", mat)
    return ex.extract("out")


xnn = XnnEngine(T, dict(kind="maxpool", cin=1, h=1, w=1, k=1, s=1), x, {}, False)

for name, f in [("ort", lambda: sess.run(None, feed)), ("ov", req.infer), ("ncnn", ncnn_call), ("xnn", xnn.run)]:
    for _ in range(200):
        f()
    ts = []
    for _ in range(5000):
        t0 = time.perf_counter_ns()
        f()
        ts.append(time.perf_counter_ns() - t0)
    ts.sort()
    print(f"threads {T} {name}: per-call floor median {ts[len(ts) // 2] / 1e3:.1f} us, min {ts[0] / 1e3:.1f} us")

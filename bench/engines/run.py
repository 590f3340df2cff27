#!/usr/bin/env python3
"""Anchor benchmark: established inference engines on this CPU, on the simdconv standard suite.

Engines: ONNX Runtime (CPU EP), OpenVINO (CPU plugin, f32 forced), ncnn (Python wheel),
XNNPACK (through LiteRT's interpreter, ai-edge-litert, whose default delegate it is).
Each case is a one-op (or Conv+Relu) graph built in memory with onnx.helper
(batch 1, float32, NCHW, weights as initializers, fixed seed); XNNPACK gets the same op as
an NHWC TFLite flatbuffer (see `build_tflite`).  Every engine's output is compared with
ONNX Runtime's; ONNX Runtime itself is checked against a float64 numpy reference.

Usage:
  python3 bench/engines/run.py --threads 1 [--cases a,b] [--engines ort,ov,ncnn,xnn]
                                  [--min-time 1.0] [--markdown out.md]
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
_VENV_PY = os.path.join(HERE, "venv", "bin", "python")

# The engines are installed in bench/engines/venv (setup.sh); re-exec with it if this interpreter lacks them.
try:
    import numpy as np  # noqa: E402
    import onnx  # noqa: E402
    from onnx import helper, TensorProto, numpy_helper  # noqa: E402
    import onnxruntime as ort  # noqa: E402
except ImportError:
    if os.path.exists(_VENV_PY) and os.path.realpath(sys.prefix) != os.path.realpath(os.path.join(HERE, "venv")) \
            and not os.environ.get("ANCHORS_NO_REEXEC"):
        os.environ["ANCHORS_NO_REEXEC"] = "1"
        os.execv(_VENV_PY, [_VENV_PY, os.path.abspath(__file__)] + sys.argv[1:])
    raise

import argparse
import statistics
import time
import zlib

OPSET = 17
IR_VERSION = 8  # matches opset 17; accepted by both ORT and OpenVINO
TOL = 1e-4      # max|engine - ort| / max|ort|
BUSY_WARN = 0.10  # warn when other processes used more than this many CPUs during a timed row
NCNN_DIR = os.path.join(HERE, "ncnn_models")
ORT_OPT_DIR = os.path.join(HERE, "ort_optimized")

# ----------------------------------------------------------------------------- suite

def conv(cin, h, w, cout, k, s, p, d=1, g=1, bias=False, relu=False):
    return dict(kind="conv", cin=cin, h=h, w=w, cout=cout, k=k, s=s, p=p, d=d, g=g, bias=bias, relu=relu)


def pool(kind, c, h, w, k=None, s=None):
    return dict(kind=kind, cin=c, h=h, w=w, k=k, s=s)


CASES = {
    "alexnet_conv1":     conv(3, 227, 227, 96, 11, 4, 0),
    "vgg_conv1_2":       conv(64, 224, 224, 64, 3, 1, 1),
    "vgg_conv3_2":       conv(256, 56, 56, 256, 3, 1, 1),
    "vgg_conv5_2":       conv(512, 14, 14, 512, 3, 1, 1),
    "resnet_conv1":      conv(3, 224, 224, 64, 7, 2, 3),
    "resnet_1x1_reduce": conv(256, 56, 56, 64, 1, 1, 0),
    "resnet_1x1_expand": conv(64, 56, 56, 256, 1, 1, 0),
    "googlenet_1x1":     conv(480, 14, 14, 192, 1, 1, 0),
    "dilated_3x3_d2":    conv(64, 112, 112, 64, 3, 1, 2, d=2),
    "soumith_l5":        conv(384, 13, 13, 384, 3, 1, 1),
    "depthwise_3x3":     conv(128, 56, 56, 128, 3, 1, 1, g=128),
    "conv_bias_relu":    conv(256, 56, 56, 256, 3, 1, 1, bias=True, relu=True),
    "maxpool_2x2_s2":    pool("maxpool", 64, 224, 224, 2, 2),
    "maxpool_3x3_s2":    pool("maxpool", 96, 55, 55, 3, 2),
    "avgpool_2x2_s2":    pool("avgpool", 64, 112, 112, 2, 2),
    "global_avgpool":    pool("globalavgpool", 2048, 7, 7),
}


def out_hw(c):
    if c["kind"] == "globalavgpool":
        return 1, 1
    k, s = c["k"], c["s"]
    p = c.get("p", 0)
    d = c.get("d", 1)
    ek = d * (k - 1) + 1
    return (c["h"] + 2 * p - ek) // s + 1, (c["w"] + 2 * p - ek) // s + 1


def out_channels(c):
    return c["cout"] if c["kind"] == "conv" else c["cin"]


def flops(c):
    """Multiply-adds * 2 for convs; 0 for pools (not reported in the table)."""
    if c["kind"] != "conv":
        return 0
    oh, ow = out_hw(c)
    return 2 * c["cout"] * oh * ow * (c["cin"] // c["g"]) * c["k"] * c["k"]


def make_data(name, c):
    rng = np.random.default_rng(zlib.crc32(name.encode()))  # fixed, per-case seed
    x = rng.standard_normal((1, c["cin"], c["h"], c["w"]), dtype=np.float32)
    wts = {}
    if c["kind"] == "conv":
        cpg = c["cin"] // c["g"]
        fan_in = cpg * c["k"] * c["k"]
        wts["W"] = (rng.standard_normal((c["cout"], cpg, c["k"], c["k"]), dtype=np.float32)
                    / np.float32(np.sqrt(fan_in)))
        if c["bias"]:
            wts["B"] = rng.standard_normal((c["cout"],), dtype=np.float32)
    return x, wts


def build_onnx(name, c, wts):
    oh, ow = out_hw(c)
    X = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c["cin"], c["h"], c["w"]])
    Y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, out_channels(c), oh, ow])
    inits, nodes = [], []
    if c["kind"] == "conv":
        inputs = ["x", "W"]
        inits.append(numpy_helper.from_array(wts["W"], "W"))
        if c["bias"]:
            inputs.append("B")
            inits.append(numpy_helper.from_array(wts["B"], "B"))
        p = c["p"]
        nodes.append(helper.make_node(
            "Conv", inputs, ["conv_out" if c["relu"] else "y"],
            kernel_shape=[c["k"], c["k"]], strides=[c["s"], c["s"]], pads=[p, p, p, p],
            dilations=[c["d"], c["d"]], group=c["g"]))
        if c["relu"]:
            nodes.append(helper.make_node("Relu", ["conv_out"], ["y"]))
    elif c["kind"] == "maxpool":
        nodes.append(helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[c["k"], c["k"]],
                                      strides=[c["s"], c["s"]], pads=[0, 0, 0, 0]))
    elif c["kind"] == "avgpool":
        nodes.append(helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[c["k"], c["k"]],
                                      strides=[c["s"], c["s"]], pads=[0, 0, 0, 0]))
    elif c["kind"] == "globalavgpool":
        nodes.append(helper.make_node("GlobalAveragePool", ["x"], ["y"]))
    graph = helper.make_graph(nodes, name, [X], [Y], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="simdconv-anchors")
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString()


# ----------------------------------------------------------------------------- float64 reference

def reference(c, x, wts):
    x = x[0].astype(np.float64)
    oh, ow = out_hw(c)
    if c["kind"] == "conv":
        W = wts["W"].astype(np.float64)
        k, s, p, d, g = c["k"], c["s"], c["p"], c["d"], c["g"]
        xp = np.pad(x, ((0, 0), (p, p), (p, p)))
        out = np.zeros((c["cout"], oh, ow))
        for kh in range(k):
            for kw in range(k):
                patch = xp[:, kh * d: kh * d + s * (oh - 1) + 1: s, kw * d: kw * d + s * (ow - 1) + 1: s]
                if g == 1:
                    out += np.tensordot(W[:, :, kh, kw], patch, axes=([1], [0]))
                elif g == c["cin"] == c["cout"]:
                    out += W[:, 0, kh, kw][:, None, None] * patch
                else:
                    raise NotImplementedError("grouped conv reference")
        if c["bias"]:
            out += wts["B"].astype(np.float64)[:, None, None]
        if c["relu"]:
            out = np.maximum(out, 0)
        return out[None]
    if c["kind"] == "globalavgpool":
        return x.mean(axis=(1, 2), keepdims=True)[None]
    k, s = c["k"], c["s"]
    views = [x[:, i: i + s * (oh - 1) + 1: s, j: j + s * (ow - 1) + 1: s] for i in range(k) for j in range(k)]
    st = np.stack(views)
    return (st.max(axis=0) if c["kind"] == "maxpool" else st.mean(axis=0))[None]


def rel_err(out, ref):
    out = np.asarray(out, dtype=np.float64).reshape(-1)
    ref = np.asarray(ref, dtype=np.float64).reshape(-1)
    if out.shape != ref.shape:
        return float("inf")
    return float(np.max(np.abs(out - ref)) / max(np.max(np.abs(ref)), 1e-30))


# ----------------------------------------------------------------------------- engines

class OrtEngine:
    name = "ort"

    def __init__(self, threads, model_bytes, x, details):
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self.sess = ort.InferenceSession(model_bytes, sess_options=so, providers=["CPUExecutionProvider"])
        self.feed = {"x": x}
        self.info = ""
        if details:
            self.info = self._optimized_ops(threads, model_bytes)

    @staticmethod
    def _optimized_ops(threads, model_bytes):
        """Separate throw-away session that dumps its optimized graph, to see e.g. NCHWc rewrites."""
        os.makedirs(ORT_OPT_DIR, exist_ok=True)
        path = os.path.join(ORT_OPT_DIR, "tmp_%d.onnx" % os.getpid())
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.optimized_model_filepath = path
        so.log_severity_level = 3
        ort.InferenceSession(model_bytes, sess_options=so, providers=["CPUExecutionProvider"])
        m = onnx.load(path)
        os.remove(path)
        ops = []
        for n in m.graph.node:
            dom = n.domain if n.domain not in ("", "ai.onnx") else ""
            extra = ""
            for a in n.attribute:
                if a.name == "activation":
                    extra = "[act=%s]" % a.s.decode()
            ops.append((dom + "." if dom else "") + n.op_type + extra)
        return " -> ".join(ops)

    def run(self):
        return self.sess.run(None, self.feed)

    def output(self):
        return self.sess.run(None, self.feed)[0]


class OvEngine:
    name = "ov"
    _core = None

    def __init__(self, threads, model_bytes, x, details):
        import openvino as ov
        if OvEngine._core is None:
            OvEngine._core = ov.Core()
        core = OvEngine._core
        model = core.read_model(model_bytes)  # ONNX from bytes, no file
        cfg = {
            "INFERENCE_NUM_THREADS": threads,
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": "f32",
            "NUM_STREAMS": 1,
        }
        self.compiled = core.compile_model(model, "CPU", cfg)
        got = {k: str(self.compiled.get_property(k)) for k in
               ("INFERENCE_NUM_THREADS", "NUM_STREAMS", "INFERENCE_PRECISION_HINT", "PERFORMANCE_HINT",
                "ENABLE_CPU_PINNING", "EXECUTION_MODE_HINT")}
        if got["INFERENCE_NUM_THREADS"] != str(threads) or not any(t in got["INFERENCE_PRECISION_HINT"] for t in ("f32", "float32")):
            raise RuntimeError("OpenVINO did not accept the config: %s" % got)
        self.req = self.compiled.create_infer_request()
        self.req.set_input_tensor(ov.Tensor(np.ascontiguousarray(x)))
        self.info = ""
        if details:
            prims = []
            for op in self.compiled.get_runtime_model().get_ordered_ops():
                rt = op.get_rt_info()

                def g(key, default="?"):
                    try:
                        return rt[key].astype(str) if key in rt else default
                    except Exception:
                        return default
                lt = g("layerType", op.get_type_name())
                if lt in ("Input", "Output", "Parameter", "Result", "Const"):
                    continue
                prim, prec, lay = g("primitiveType"), g("runtimePrecision"), g("outputLayouts")
                prims.append("%s(%s,%s,out=%s)" % (lt, prim, prec, lay))
            self.info = " -> ".join(prims) + "  [" + ", ".join("%s=%s" % kv for kv in got.items()) + "]"

    def run(self):
        self.req.infer()

    def output(self):
        self.req.infer()
        return self.req.get_output_tensor(0).data.copy()


class NcnnEngine:
    name = "ncnn"

    def __init__(self, threads, case_name, c, x, wts, details):
        import ncnn
        self.ncnn = ncnn
        param, binary = self.build(c, wts)
        os.makedirs(NCNN_DIR, exist_ok=True)
        ppath = os.path.join(NCNN_DIR, case_name + ".param")
        bpath = os.path.join(NCNN_DIR, case_name + ".bin")
        with open(ppath, "w") as f:
            f.write(param)
        with open(bpath, "wb") as f:
            f.write(binary)
        net = ncnn.Net()
        o = net.opt
        o.num_threads = threads
        o.use_vulkan_compute = False
        # keep everything in fp32 (no fp16/bf16 storage or arithmetic, no int8)
        o.use_fp16_storage = False
        o.use_fp16_packed = False
        o.use_fp16_arithmetic = False
        o.use_bf16_storage = False
        o.use_bf16_packed = False
        o.use_int8_inference = False
        net.opt = o
        if net.load_param(ppath) != 0:
            raise RuntimeError("ncnn load_param failed")
        if net.load_model(bpath) != 0:
            raise RuntimeError("ncnn load_model failed")
        self.net = net
        self.mat = ncnn.Mat(np.ascontiguousarray(x[0]))  # CHW, preallocated once
        self.threads = threads
        self.info = ""
        if details:
            self.info = " | ".join(l for l in param.strip().splitlines()[2:])

    @staticmethod
    def build(c, wts):
        H, W, C = c["h"], c["w"], c["cin"]
        lines = []
        blob = b""
        inp = "Input data 0 1 data 0=%d 1=%d 2=%d" % (W, H, C)
        if c["kind"] == "conv":
            k, s, p, d = c["k"], c["s"], c["p"], c["d"]
            w = wts["W"]
            common = "0=%d 1=%d 11=%d 2=%d 12=%d 3=%d 13=%d 4=%d 15=%d 14=%d 16=%d 5=%d 6=%d" % (
                c["cout"], k, k, d, d, s, s, p, p, p, p, int(c["bias"]), w.size)
            if c["relu"]:
                common += " 9=1"  # fused ReLU (what ncnnoptimize produces from Conv+ReLU)
            if c["g"] == 1:
                layer = "Convolution conv 1 1 data out " + common
            else:
                layer = "ConvolutionDepthWise conv 1 1 data out " + common + " 7=%d" % c["g"]
            # weight_data: 4-byte zero flag => raw fp32, layout [out][in/g][kh][kw] (same as ONNX)
            blob = np.zeros(1, np.uint32).tobytes() + np.ascontiguousarray(w, np.float32).tobytes()
            if c["bias"]:
                blob += np.ascontiguousarray(wts["B"], np.float32).tobytes()  # bias: raw, no flag
        elif c["kind"] in ("maxpool", "avgpool"):
            pt = 0 if c["kind"] == "maxpool" else 1
            layer = ("Pooling pool 1 1 data out 0=%d 1=%d 11=%d 2=%d 12=%d 3=0 13=0 14=0 15=0 5=1"
                     % (pt, c["k"], c["k"], c["s"], c["s"]))  # 5=1: valid padding (floor), like ONNX
        elif c["kind"] == "globalavgpool":
            layer = "Pooling pool 1 1 data out 0=1 4=1"
        lines = ["7767517", "2 2", inp, layer]
        return "\n".join(lines) + "\n", blob

    def run(self):
        ex = self.net.create_extractor()
        ex.input("data", self.mat)
        ret, out = ex.extract("out")
        return out

    def output(self):
        return np.array(self.run())


class XnnEngine:
    """XNNPACK, as LiteRT's interpreter runs it: the default delegate of a float model takes
    every op of these graphs (the interpreter logs "Created TensorFlow Lite XNNPACK delegate
    for CPU"). TFLite is NHWC: the input is transposed once before timing and the output
    back for the check. Its padding is SAME or VALID only: a layer whose symmetric padding
    is not SAME's (resnet_conv1, 7x7 stride 2 padding 3) gets an explicit zero PAD op before
    a VALID convolution, which XNNPACK folds into the convolution (its subgraph rewrites
    fuse a constant zero pad into the next convolution)."""
    name = "xnn"

    def __init__(self, threads, c, x, wts, details):
        from ai_edge_litert.interpreter import Interpreter
        self.it = Interpreter(model_content=build_tflite(c, wts), num_threads=threads)
        self.it.allocate_tensors()
        self.it.set_tensor(self.it.get_input_details()[0]["index"], np.ascontiguousarray(x.transpose(0, 2, 3, 1)))
        self.out = self.it.get_output_details()[0]["index"]
        self.info = ""
        if details:
            # The graph as the interpreter holds it (the delegated ops, then the XNNPACK
            # delegate node); `_get_ops_details` is not public API, so only if present.
            try:
                self.info = " -> ".join(op["op_name"] for op in self.it._get_ops_details())
            except AttributeError:
                self.info = "(op details unavailable)"

    def run(self):
        self.it.invoke()

    def output(self):
        self.it.invoke()
        return self.it.get_tensor(self.out).transpose(0, 3, 1, 2).copy()


def build_tflite(c, wts):
    """The case as a TFLite flatbuffer (NHWC input and output, filters OHWI, depthwise
    filters [1, KH, KW, K]), built with the schema's object API that ai-edge-litert ships.
    Convolutions always get a bias tensor (zeros when the case has none): TFLite's
    convolutions take one, and XNNPACK packs it with the weights either way."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as S
    m = S.ModelT()
    m.version = 3
    m.buffers = [S.BufferT()]  # buffer 0: the empty sentinel of tensors without data
    m.operatorCodes = []
    sg = S.SubGraphT()
    sg.tensors, sg.operators = [], []

    def opcode(op):
        for i, oc in enumerate(m.operatorCodes):
            if oc.builtinCode == op:
                return i
        oc = S.OperatorCodeT()
        oc.builtinCode, oc.deprecatedBuiltinCode, oc.version = op, min(op, 127), 1
        m.operatorCodes.append(oc)
        return len(m.operatorCodes) - 1

    def tensor(name, shape, data=None, dtype=S.TensorType.FLOAT32):
        t = S.TensorT()
        t.name, t.shape, t.type, t.buffer = name, list(shape), dtype, 0
        if data is not None:
            b = S.BufferT()
            b.data = np.frombuffer(np.ascontiguousarray(data).tobytes(), np.uint8)
            m.buffers.append(b)
            t.buffer = len(m.buffers) - 1
        sg.tensors.append(t)
        return len(sg.tensors) - 1

    def op(code, ins, outs, otype, opts):
        o = S.OperatorT()
        o.opcodeIndex, o.inputs, o.outputs = opcode(code), ins, outs
        o.builtinOptionsType, o.builtinOptions = otype, opts
        sg.operators.append(o)

    H, W, C = c["h"], c["w"], c["cin"]
    oh, ow = out_hw(c)
    co = out_channels(c)
    x = tensor("x", [1, H, W, C])
    y = tensor("y", [1, oh, ow, co])
    if c["kind"] == "conv":
        k, s, p, d, g = c["k"], c["s"], c["p"], c["d"], c["g"]
        same = s == 1 and 2 * p == d * (k - 1)
        src = x
        if p and not same:
            pads = tensor("pads", [4, 2], np.array([[0, 0], [p, p], [p, p], [0, 0]], np.int32), S.TensorType.INT32)
            src = tensor("x_padded", [1, H + 2 * p, W + 2 * p, C])
            op(S.BuiltinOperator.PAD, [x, pads], [src], S.BuiltinOptions.PadOptions, S.PadOptionsT())
        b = tensor("b", [co], wts["B"] if c["bias"] else np.zeros(co, np.float32))
        act = S.ActivationFunctionType.RELU if c["relu"] else S.ActivationFunctionType.NONE
        pad = S.Padding.SAME if same else S.Padding.VALID
        if g == 1:
            w = tensor("w", [co, k, k, C], wts["W"].transpose(0, 2, 3, 1))
            o = S.Conv2DOptionsT()
            code, otype = S.BuiltinOperator.CONV_2D, S.BuiltinOptions.Conv2DOptions
        elif g == C:
            w = tensor("w", [1, k, k, co], wts["W"][:, 0].transpose(1, 2, 0))
            o = S.DepthwiseConv2DOptionsT()
            o.depthMultiplier = co // C
            code, otype = S.BuiltinOperator.DEPTHWISE_CONV_2D, S.BuiltinOptions.DepthwiseConv2DOptions
        else:
            raise NotImplementedError("grouped convolution in TFLite")
        o.padding, o.strideH, o.strideW = pad, s, s
        o.dilationHFactor, o.dilationWFactor, o.fusedActivationFunction = d, d, act
        op(code, [src, w, b], [y], otype, o)
    elif c["kind"] in ("maxpool", "avgpool"):
        o = S.Pool2DOptionsT()
        o.padding, o.strideH, o.strideW = S.Padding.VALID, c["s"], c["s"]
        o.filterHeight, o.filterWidth = c["k"], c["k"]
        o.fusedActivationFunction = S.ActivationFunctionType.NONE
        code = S.BuiltinOperator.MAX_POOL_2D if c["kind"] == "maxpool" else S.BuiltinOperator.AVERAGE_POOL_2D
        op(code, [x], [y], S.BuiltinOptions.Pool2DOptions, o)
    else:  # global average pooling: MEAN over H and W
        axes = tensor("axes", [2], np.array([1, 2], np.int32), S.TensorType.INT32)
        o = S.ReducerOptionsT()
        o.keepDims = True
        op(S.BuiltinOperator.MEAN, [x, axes], [y], S.BuiltinOptions.ReducerOptions, o)
    sg.inputs, sg.outputs = [x], [y]
    m.subgraphs = [sg]
    bld = flatbuffers.Builder(1 << 20)
    bld.Finish(m.Pack(bld), file_identifier=b"TFL3")
    return bytes(bld.Output())


# ----------------------------------------------------------------------------- timing

def bench(fn, min_time, min_calls, warmup_time):
    t_end = time.perf_counter() + warmup_time
    n = 0
    while n < 3 or time.perf_counter() < t_end:
        fn()
        n += 1
    times = []
    pc = time.perf_counter_ns
    start = pc()
    limit = int(min_time * 1e9)
    while len(times) < min_calls or pc() - start < limit:
        t0 = pc()
        fn()
        times.append(pc() - t0)
    return statistics.median(times) / 1e6, min(times) / 1e6, len(times)


# ----------------------------------------------------------------------------- misc info

def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "?"


def cpu_id():
    fam = mod = step = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                k, _, v = line.partition(":")
                k = k.strip()
                if k == "cpu family":
                    fam = v.strip()
                elif k == "model":
                    mod = v.strip()
                elif k == "stepping":
                    step = v.strip()
                elif not line.strip():
                    break
    except OSError:
        pass
    return "family %s model %s stepping %s" % (fam, mod, step)


def isa_flags():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    fl = line.split(":", 1)[1].split()
                    return " ".join(x for x in fl if x.startswith("avx") or x in ("fma", "f16c"))
    except OSError:
        pass
    return "?"


def loadavg():
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"


def proc_stat_busy():
    """(busy jiffies of the whole machine, all jiffies) from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            v = [int(t) for t in f.readline().split()[1:]]
        idle = v[3] + (v[4] if len(v) > 4 else 0)
        return sum(v[:8]) - idle, sum(v[:8])
    except OSError:
        return None


class OtherLoad:
    """CPU used by OTHER processes while a block runs, in CPUs (1.0 = one core fully busy)."""

    def __enter__(self):
        self.s0 = proc_stat_busy()
        self.t0 = os.times()
        self.w0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        s1, t1, w1 = proc_stat_busy(), os.times(), time.perf_counter()
        self.value = None
        if self.s0 and s1 and w1 > self.w0:
            hz = os.sysconf("SC_CLK_TCK")
            machine = (s1[0] - self.s0[0]) / hz
            ours = (t1.user - self.t0.user) + (t1.system - self.t0.system)
            self.value = max(0.0, (machine - ours) / (w1 - self.w0))
        return False


def wait_idle(max_wait, window=0.5):
    """Wait (up to max_wait s) until other processes use < BUSY_WARN CPUs over a window.
    Returns (idle?, last other load, seconds waited)."""
    t0 = time.perf_counter()
    while True:
        with OtherLoad() as ol:
            time.sleep(window)
        val = ol.value or 0.0
        if val < BUSY_WARN:
            return True, val, time.perf_counter() - t0
        if time.perf_counter() - t0 >= max_wait:
            return False, val, time.perf_counter() - t0


def thread_snapshot():
    rows = {}
    base = "/proc/self/task"
    for tid in sorted(os.listdir(base), key=int):
        try:
            with open(os.path.join(base, tid, "comm")) as f:
                comm = f.read().strip()
            aff = "?"
            with open(os.path.join(base, tid, "status")) as f:
                for line in f:
                    if line.startswith("Cpus_allowed_list"):
                        aff = line.split(":", 1)[1].strip()
            rows.setdefault((comm, aff), 0)
            rows[(comm, aff)] += 1
        except OSError:
            pass
    return ", ".join("%s x%d (cpus %s)" % (comm, n, aff) for (comm, aff), n in rows.items())


def versions(engines):
    v = {"python": sys.version.split()[0], "numpy": np.__version__, "onnx": onnx.__version__,
         "onnxruntime": ort.__version__}
    if "ov" in engines:
        try:
            import openvino as ov
            v["openvino"] = ov.get_version()
        except Exception as e:  # pragma: no cover
            v["openvino"] = "unavailable (%s)" % e
    if "xnn" in engines:
        try:
            import importlib.metadata
            v["ai-edge-litert (XNNPACK)"] = importlib.metadata.version("ai-edge-litert")
        except Exception as e:
            v["ai-edge-litert (XNNPACK)"] = "unavailable (%s)" % e
    if "ncnn" in engines:
        try:
            import ncnn
            v["ncnn"] = getattr(ncnn, "__version__", "?")
        except Exception as e:
            v["ncnn"] = "unavailable (%s)" % e
    return v


# ----------------------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cases", default="", help="comma-separated case names (default: all)")
    ap.add_argument("--engines", default="ort,ov,ncnn,xnn", help="comma-separated subset of ort,ov,ncnn,xnn")
    ap.add_argument("--min-time", type=float, default=1.0, help="seconds of timed calls per case/engine")
    ap.add_argument("--min-calls", type=int, default=10)
    ap.add_argument("--warmup", type=float, default=None,
                    help="warm-up seconds (default: min(0.5, max(0.1, 0.25*min-time))), at least 3 calls")
    ap.add_argument("--markdown", default="", help="also write the report to this file")
    ap.add_argument("--no-details", action="store_true",
                    help="skip the per-case engine details (ORT optimized graph, OV primitives, ncnn layers)")
    ap.add_argument("--wait-idle", type=float, default=0.0, metavar="SECONDS",
                    help="before starting (and before each --retry-busy retry), wait up to SECONDS for other "
                         "processes to use < %.2f CPUs" % BUSY_WARN)
    ap.add_argument("--retry-busy", type=int, default=0, metavar="N",
                    help="re-time a row up to N more times when other processes used > %.2f CPUs during it "
                         "(keeps the least-contended attempt; with --wait-idle, waits for idle before each retry)"
                         % BUSY_WARN)
    ap.add_argument("--list", action="store_true", help="list cases and exit")
    args = ap.parse_args()

    if args.list:
        for n, c in CASES.items():
            print(n, c)
        return 0

    cases = [s.strip() for s in args.cases.split(",") if s.strip()] or list(CASES)
    bad = [c for c in cases if c not in CASES]
    if bad:
        ap.error("unknown case(s): %s (known: %s)" % (",".join(bad), ",".join(CASES)))
    engines = [s.strip() for s in args.engines.split(",") if s.strip()]
    bad = [e for e in engines if e not in ("ort", "ov", "ncnn", "xnn")]
    if bad:
        ap.error("unknown engine(s): %s" % ",".join(bad))
    warmup = args.warmup if args.warmup is not None else min(0.5, max(0.1, 0.25 * args.min_time))
    details = not args.no_details

    idle_note = ""
    if args.wait_idle > 0:
        ok, val, waited = wait_idle(args.wait_idle, window=1.0)
        idle_note = ("machine idle (other load %.2f CPUs) before start, waited %.0fs" % (val, waited) if ok else
                     "WARNING: machine still busy (other load %.2f CPUs) after waiting %.0fs" % (val, waited))

    out = []

    def emit(s=""):
        print(s, flush=True)
        out.append(s)

    vers = versions(engines)
    emit("# simdconv anchor benchmark")
    emit()
    emit("- CPU: %s (%s), %d logical CPUs, affinity %s" % (
        cpu_model(), cpu_id(), os.cpu_count(), sorted(os.sched_getaffinity(0))))
    emit("- ISA flags: %s" % isa_flags())
    emit("- versions: " + ", ".join("%s %s" % kv for kv in vers.items()))
    emit("- load average at start: %s%s" % (loadavg(), ("; " + idle_note) if idle_note else ""))
    emit("- threads=%d, min-time=%.3gs, min-calls=%d, warm-up=%.3gs, batch 1, fp32, NCHW (XNNPACK: NHWC); "
         "all engines run in this one process, one (case, engine) at a time" % (
             args.threads, args.min_time, args.min_calls, warmup))
    emit("- check: max|out-ref|/max|ref| < %g; ref = ORT output (ORT row: vs float64 numpy reference)" % TOL)
    emit()
    emit("| case | engine | median ms | min ms | check |")
    emit("|---|---|---:|---:|---|")

    info_lines = []
    busy_rows = []
    failures = 0
    for name in cases:
        c = CASES[name]
        x, wts = make_data(name, c)
        model_bytes = build_onnx(name, c, wts)
        ref_ort = None
        for eng in engines:
            row_check = ""
            try:
                if eng == "ort":
                    e = OrtEngine(args.threads, model_bytes, x, details)
                elif eng == "ov":
                    e = OvEngine(args.threads, model_bytes, x, details)
                elif eng == "xnn":
                    e = XnnEngine(args.threads, c, x, wts, details)
                else:
                    e = NcnnEngine(args.threads, name, c, x, wts, details)
                y = e.output()
                if eng == "ort":
                    ref_ort = y
                    err = rel_err(y, reference(c, x, wts))
                    ok = err < TOL
                    row_check = "%s ref %.1e" % ("ok" if ok else "MISMATCH", err)
                else:
                    if ref_ort is None:  # ORT not selected: compute it just for the check
                        ref_ort = OrtEngine(args.threads, model_bytes, x, False).output()
                    err = rel_err(y, ref_ort)
                    ok = err < TOL
                    row_check = "%s %.1e" % ("ok" if ok else "MISMATCH", err)
                if not ok:
                    failures += 1
                best = None
                for attempt in range(1 + max(0, args.retry_busy)):
                    if args.wait_idle > 0 and attempt > 0:
                        wait_idle(args.wait_idle)
                    with OtherLoad() as ol:
                        res = bench(e.run, args.min_time, args.min_calls, warmup)
                    load = ol.value if ol.value is not None else 0.0
                    if best is None or load < best[1]:
                        best = (res, load)
                    if load <= BUSY_WARN:
                        break
                (med, mn, n), load = best
                if load > BUSY_WARN:
                    busy_rows.append("%s/%s %.2f" % (name, eng, load))
                ol.value = load
                emit("| %s | %s | %.4f | %.4f | %s |" % (name, eng, med, mn, row_check))
                if details:
                    info_lines.append("- %s / %s (%d calls, other-process load %s CPUs): %s  {threads: %s}" % (
                        name, eng, n, "?" if ol.value is None else "%.2f" % ol.value, e.info, thread_snapshot()))
                del e
            except Exception as ex:  # report and carry on with the other cases/engines
                failures += 1
                msg = ("%s: %s" % (type(ex).__name__, ex)).replace("|", "/").replace("\n", " ")[:200]
                emit("| %s | %s | - | - | FAILED %s |" % (name, eng, msg))

    emit()
    emit("- load average at end: %s" % loadavg())
    emit("- failures/mismatches: %d" % failures)
    if busy_rows:
        emit("- WARNING: other processes used > %.2f CPUs while these rows were timed "
             "(timings are contended): %s" % (BUSY_WARN, ", ".join(busy_rows)))
    else:
        emit("- other processes used <= %.2f CPUs during every timed row" % BUSY_WARN)
    if details:
        emit()
        emit("## Details")
        emit()
        emit("- process threads at end (name x count, affinity): " + thread_snapshot())
        for l in info_lines:
            emit(l)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write("\n".join(out) + "\n")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

//! Running one case: data set-up, the kernel call, timing, and the error check against
//! `simdconv::reference`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use simdconv::{
    input_coord, reference, select_packed_algorithm, Activation, Algorithm, BackwardAlgorithm, Conv2dOptions,
    ConvGeometry, Dims, Epilogue, Exec, FilterLayout, FilterView, FilterViewMut, Isa, Layout, PoolGeometry,
    TensorView, TensorViewMut,
};

use crate::cases::{Case, Op, PoolKind};

/// The footnote for algorithm labels ending in `*`.
pub const GEMM_NOTE: &str = "* GEMM-based: the gemm crate (0.19) picks its own instruction set (the best \
     this CPU has, up to AVX2 when the bench is built with --no-default-features), so the ISA cap \
     does not reach these rows";

/// The instruction set the `gemm` crate runs here: the best this CPU has, or at most AVX2
/// when this crate's `gemm-avx512` feature (default) is off.
#[must_use]
pub fn gemm_isa() -> Isa {
    let best = Isa::detect();
    if cfg!(feature = "gemm-avx512") {
        best
    } else {
        best.min(Isa::Avx2)
    }
}

/// A small deterministic generator (xorshift64*) for benchmark data.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// Seeded generator.
    #[must_use]
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15 | 1)
    }
    /// Next raw value.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in `[-1, 1)`.
    pub fn uniform(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
    /// `n` uniform values.
    pub fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.uniform()).collect()
    }
}

/// A buffer of `f32` whose first element starts a 64-byte cache line, as the anchor
/// engines allocate tensors (TFLite's arena, ONNX Runtime and oneDNN align to 64 bytes);
/// a plain `Vec<f32>` from the system allocator starts 16 bytes into a line here, which
/// makes every 64-byte vector load of a contiguous row span two lines.
#[derive(Clone, Debug, Default)]
pub struct Buf {
    v: Vec<f32>,
    off: usize,
    len: usize,
}

impl Buf {
    /// A line-aligned copy of `src`.
    #[must_use]
    pub fn from_slice(src: &[f32]) -> Self {
        let mut v = vec![0.0f32; src.len() + 15];
        // `f32` alignment makes the gap to the next line a whole number of floats (< 16).
        let off = ((64 - v.as_ptr() as usize % 64) % 64) / 4;
        v[off..off + src.len()].copy_from_slice(src);
        Buf { v, off, len: src.len() }
    }
}

impl std::ops::Deref for Buf {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        &self.v[self.off..self.off + self.len]
    }
}

impl std::ops::DerefMut for Buf {
    fn deref_mut(&mut self) -> &mut [f32] {
        &mut self.v[self.off..self.off + self.len]
    }
}

/// The filter layout paired with an activation layout: PyTorch's OIHW with NCHW,
/// XNNPACK's OHWI with NHWC.
#[must_use]
pub const fn filter_layout(layout: Layout) -> FilterLayout {
    match layout {
        Layout::Nchw => FilterLayout::Oihw,
        Layout::Nhwc => FilterLayout::Ohwi,
    }
}

/// The name of a layout.
#[must_use]
pub const fn layout_name(layout: Layout) -> &'static str {
    match layout {
        Layout::Nchw => "nchw",
        Layout::Nhwc => "nhwc",
    }
}

#[derive(Clone, Copy, Debug)]
enum Geometry {
    Conv(ConvGeometry),
    BwdData(ConvGeometry),
    BwdFilter(ConvGeometry),
    Pool(PoolKind, PoolGeometry),
}

/// The algorithm the backward cases run.
pub const BACKWARD_ALGORITHM: BackwardAlgorithm = BackwardAlgorithm::Auto;

/// The algorithm `algorithm` resolves to for `g` in `layout`.
fn resolve(g: &ConvGeometry, algorithm: Algorithm, layout: Layout) -> Algorithm {
    match algorithm {
        // Weights are constant in every case here, and every anchor engine packs them at
        // load: `Auto` is what a framework that packs them runs.
        Algorithm::Auto => select_packed_algorithm(g, layout),
        a => a,
    }
}

/// A case with its data allocated: call [`Prepared::run`] to run the kernel once.
///
/// Buffers are named by tensor role: a forward case reads `x`, `w`, `b` and writes `y`;
/// a data-gradient case reads `dy`, `w` and writes `x` (as `dx`); a weight-gradient case
/// reads `x`, `dy` and writes `w` (as `dw`).
#[derive(Debug)]
pub struct Prepared {
    exec: Exec,
    layout: Layout,
    algorithm: Algorithm,
    geometry: Geometry,
    bias: bool,
    relu: bool,
    x: Buf,
    w: Buf,
    b: Buf,
    y: Buf,
    dy: Buf,
    workspace: Buf,
    /// The filter transformed once for Winograd, when that is the algorithm that runs:
    /// every anchor engine packs constant weights at model load, so the timed call does
    /// not repeat it.
    packed: Option<simdconv::WinogradFilterBuf>,
}

impl Prepared {
    /// Allocates random inputs (seeded by the case name), the output and the workspace.
    /// Pooling cases ignore `algorithm`; backward cases run [`BACKWARD_ALGORITHM`].
    pub fn new(
        case: &Case,
        exec: Exec,
        layout: Layout,
        algorithm: Algorithm,
    ) -> Result<Self, simdconv::Error> {
        let seed = case
            .name
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
        let mut rng = Rng::new(seed);
        let (geometry, bias, relu) = match &case.op {
            Op::Conv(c) => (Geometry::Conv(c.geometry()?), c.bias, c.relu),
            Op::ConvBackwardData(c) => (Geometry::BwdData(c.geometry()?), false, false),
            Op::ConvBackwardFilter(c) => (Geometry::BwdFilter(c.geometry()?), false, false),
            Op::Pool(p) => (Geometry::Pool(p.kind, p.geometry()?), false, false),
        };
        let mut dy = Vec::new();
        let mut packed = None;
        let (x, w, b, y, workspace) = match &geometry {
            Geometry::Conv(g) => {
                // Ask for the workspace first: an algorithm that cannot run `g` fails here.
                let mut ws = simdconv::conv2d_workspace_len(g, algorithm, layout)?;
                let w = rng.vec(g.filter().count()?);
                if resolve(g, algorithm, layout) == Algorithm::Winograd {
                    let fv = FilterView::new(&w, g.filter(), filter_layout(layout))?;
                    packed = Some(simdconv::WinogradFilterBuf::new(&exec, g, fv)?);
                    ws = simdconv::conv2d_winograd_workspace_len(g)?;
                }
                (
                    rng.vec(g.input().count()?),
                    w,
                    if bias { rng.vec(g.output().c) } else { Vec::new() },
                    vec![0.0; g.output().count()?],
                    vec![0.0; ws],
                )
            }
            Geometry::BwdData(g) => {
                let ws = simdconv::conv2d_backward_data_workspace_len(g, BACKWARD_ALGORITHM, layout)?;
                dy = rng.vec(g.output().count()?);
                (
                    vec![0.0; g.input().count()?],
                    rng.vec(g.filter().count()?),
                    Vec::new(),
                    Vec::new(),
                    vec![0.0; ws],
                )
            }
            Geometry::BwdFilter(g) => {
                let ws = simdconv::conv2d_backward_filter_workspace_len(g, BACKWARD_ALGORITHM, layout)?;
                let x = rng.vec(g.input().count()?);
                dy = rng.vec(g.output().count()?);
                (x, vec![0.0; g.filter().count()?], Vec::new(), Vec::new(), vec![0.0; ws])
            }
            Geometry::Pool(_, g) => (
                rng.vec(g.input().count()?),
                Vec::new(),
                Vec::new(),
                vec![0.0; g.output().count()?],
                Vec::new(),
            ),
        };
        let [x, w, b, y, dy, workspace] = [x, w, b, y, dy, workspace].map(|v| Buf::from_slice(&v));
        Ok(Prepared { exec, layout, algorithm, geometry, bias, relu, x, w, b, y, dy, workspace, packed })
    }

    /// The algorithm name for the report: `auto:<chosen>` for `Auto` (forward and
    /// backward), `-` for pooling.
    /// A trailing `*` marks a GEMM-based algorithm run below the instruction set the
    /// `gemm` crate uses ([`gemm_isa`]): gemm picks its own kernels, so the cap does not
    /// reach it (see [`GEMM_NOTE`]).
    #[must_use]
    pub fn algorithm_label(&self) -> String {
        match &self.geometry {
            Geometry::Conv(g) => {
                let chosen = resolve(g, self.algorithm, self.layout);
                let mut label = match self.algorithm {
                    Algorithm::Auto => format!("auto:{}", chosen.name()),
                    a => a.name().to_string(),
                };
                if self.packed.is_some() {
                    label.push_str("(packed)");
                }
                if matches!(chosen, Algorithm::Im2colGemm | Algorithm::Pointwise)
                    && self.exec.isa() < gemm_isa()
                {
                    label.push('*');
                }
                label
            }
            Geometry::BwdData(g) | Geometry::BwdFilter(g) => {
                // Auto picks per geometry for data gradients (stride 1 runs the flipped
                // forward convolution).
                let chosen = match &self.geometry {
                    Geometry::BwdData(_) => {
                        simdconv::select_backward_data_algorithm(g, BACKWARD_ALGORITHM, self.layout)
                    }
                    _ => simdconv::select_backward_filter_algorithm(g, BACKWARD_ALGORITHM, self.layout),
                }
                .unwrap_or(BACKWARD_ALGORITHM);
                let mut label = format!("{}:{}", BACKWARD_ALGORITHM.name(), chosen.name());
                // Flipped runs the forward's Auto, a GEMM path for non-depthwise layers.
                if matches!(chosen, BackwardAlgorithm::Gemm | BackwardAlgorithm::Flipped)
                    && self.exec.isa() < gemm_isa()
                {
                    label.push('*');
                }
                label
            }
            Geometry::Pool(..) => "-".to_string(),
        }
    }

    /// Runs the kernel once.
    pub fn run(&mut self) -> Result<(), simdconv::Error> {
        let layout = self.layout;
        match &self.geometry {
            Geometry::Conv(g) => {
                let x = TensorView::new(&self.x, g.input(), layout)?;
                let w = FilterView::new(&self.w, g.filter(), filter_layout(layout))?;
                let y = TensorViewMut::new(&mut self.y, g.output(), layout)?;
                let mut epilogue = Epilogue::new();
                if self.bias {
                    epilogue = epilogue.bias(&self.b);
                }
                if self.relu {
                    epilogue = epilogue.activation(Activation::Relu);
                }
                if let Some(p) = &self.packed {
                    return simdconv::conv2d_winograd(
                        &self.exec,
                        g,
                        &epilogue,
                        x,
                        &p.as_filter(),
                        y,
                        &mut self.workspace,
                    );
                }
                let opts = Conv2dOptions { algorithm: self.algorithm, epilogue };
                simdconv::conv2d(&self.exec, g, &opts, x, w, y, &mut self.workspace)
            }
            Geometry::BwdData(g) => {
                let dy = TensorView::new(&self.dy, g.output(), layout)?;
                let w = FilterView::new(&self.w, g.filter(), filter_layout(layout))?;
                let dx = TensorViewMut::new(&mut self.x, g.input(), layout)?;
                simdconv::conv2d_backward_data(
                    &self.exec,
                    g,
                    BACKWARD_ALGORITHM,
                    dy,
                    w,
                    dx,
                    &mut self.workspace,
                )
            }
            Geometry::BwdFilter(g) => {
                let x = TensorView::new(&self.x, g.input(), layout)?;
                let dy = TensorView::new(&self.dy, g.output(), layout)?;
                let dw = FilterViewMut::new(&mut self.w, g.filter(), filter_layout(layout))?;
                simdconv::conv2d_backward_filter(
                    &self.exec,
                    g,
                    BACKWARD_ALGORITHM,
                    x,
                    dy,
                    dw,
                    &mut self.workspace,
                )
            }
            Geometry::Pool(kind, g) => {
                let x = TensorView::new(&self.x, g.input(), layout)?;
                let y = TensorViewMut::new(&mut self.y, g.output(), layout)?;
                let exec = &self.exec;
                match *kind {
                    PoolKind::Max => simdconv::max_pool2d(exec, g, x, y, None),
                    PoolKind::Avg(opts) => simdconv::avg_pool2d(exec, g, x, y, opts),
                    PoolKind::L2 => simdconv::l2_pool2d(exec, g, x, y),
                    PoolKind::GlobalAvg => simdconv::global_avg_pool(exec, x, y),
                    PoolKind::GlobalMax => simdconv::global_max_pool(exec, x, y),
                }
            }
        }
    }

    /// Checks the last output against `simdconv::reference` run in f64 (see
    /// [`ErrorCheck`]). For convolutions (forward or backward) with more than `full_limit`
    /// multiply-adds, checks `samples` outputs (the plane's corners included) instead of
    /// all of them, each computed directly in f64.
    #[must_use]
    pub fn check(&self, full_limit: u64, samples: usize) -> ErrorCheck {
        match &self.geometry {
            Geometry::Conv(g) => self.check_conv(g, full_limit, samples),
            Geometry::BwdData(g) => self.check_bwd_data(g, full_limit, samples),
            Geometry::BwdFilter(g) => self.check_bwd_filter(g, full_limit, samples),
            Geometry::Pool(kind, g) => self.check_pool(*kind, g),
        }
    }

    /// `dx` against the reference: each element sums at most `(o / groups) x kh x kw`
    /// products `dy * w`; its magnitude is the same sum over `|dy| |w|`.
    fn check_bwd_data(&self, g: &ConvGeometry, full_limit: u64, samples: usize) -> ErrorCheck {
        let layout = self.layout;
        let fl = filter_layout(layout);
        let (inp, out, f) = (g.input(), g.output(), g.filter());
        let dy64: Vec<f64> = self.dy.iter().map(|&v| f64::from(v)).collect();
        let w64: Vec<f64> = self.w.iter().map(|&v| f64::from(v)).collect();
        let Ok(dx) = TensorView::new(&self.x, inp, layout) else { return ErrorCheck::failed("dx view") };
        let opg = f.o / g.groups();
        // Flipped on a 3x3 layer runs a forward convolution (input dy, filters swapped
        // in/out) that may take Winograd: then its bound applies, gamma(O_g + 32) *
        // 48^2 * sum_o max|w_oc| max|dy_no|, one magnitude per (image, input channel).
        let winograd = flipped_may_run_winograd(g, layout).then(|| {
            let (Ok(dy), Ok(w)) = (TensorView::new(&dy64[..], out, layout), FilterView::new(&w64[..], f, fl))
            else {
                return Vec::new();
            };
            let (dymax, wmax) = (plane_max(&dy), filter_max(&w));
            let mut mag = vec![0.0f64; inp.n * inp.c];
            for (j, m) in mag.iter_mut().enumerate() {
                let (n, c) = (j / inp.c, j % inp.c);
                let (grp, i) = (c / f.i, c % f.i);
                let s: f64 =
                    (grp * opg..(grp + 1) * opg).map(|o| wmax[o * f.i + i] * dymax[n * out.c + o]).sum();
                *m = WINOGRAD_GROWTH * WINOGRAD_GROWTH * s;
            }
            mag
        });
        let mut acc =
            ErrorCheck::new(if winograd.is_some() { gamma(opg + 32) } else { gamma(opg * f.kh * f.kw + 2) });
        let pick = |n: usize, c: usize, plain: f64| winograd.as_ref().map_or(plain, |m| m[n * inp.c + c]);
        if g.macs() <= full_limit {
            let Ok(count) = inp.count() else { return ErrorCheck::failed("dx too large") };
            let mut want = vec![0.0f64; count];
            let mut mag = vec![0.0f64; count];
            let ady64: Vec<f64> = dy64.iter().map(|v| v.abs()).collect();
            let aw64: Vec<f64> = w64.iter().map(|v| v.abs()).collect();
            for (dy, w, dx) in [(&dy64, &w64, &mut want), (&ady64, &aw64, &mut mag)] {
                let r = (|| -> Result<(), simdconv::Error> {
                    let dy = TensorView::new(&dy[..], out, layout)?;
                    let w = FilterView::new(&w[..], f, fl)?;
                    let dx = TensorViewMut::new(&mut dx[..], inp, layout)?;
                    reference::conv2d_backward_data(g, dy, w, dx)
                })();
                if let Err(e) = r {
                    return ErrorCheck::failed(&format!("reference failed: {e}"));
                }
            }
            let (Ok(wv), Ok(mv)) = (TensorView::new(&want, inp, layout), TensorView::new(&mag, inp, layout))
            else {
                return ErrorCheck::failed("reference views");
            };
            for_each(inp, &mut |n, c, h, w| {
                acc.add(dx.get(n, c, h, w), wv.get(n, c, h, w), pick(n, c, mv.get(n, c, h, w)))
            });
        } else {
            let (Ok(dy), Ok(w)) = (TensorView::new(&dy64, out, layout), FilterView::new(&w64, f, fl)) else {
                return ErrorCheck::failed("could not build f64 views for the check");
            };
            for_samples(inp, samples, &mut |n, c, iy, ix| {
                let (want, mag) = bwd_data_at(g, &dy, &w, n, c, iy, ix);
                acc.add(dx.get(n, c, iy, ix), want, pick(n, c, mag));
            });
        }
        acc
    }

    /// `dw` against the reference: each element sums `n x oh x ow` products `dy * x`
    /// (taps in the padding add zero); its magnitude is the same sum over `|dy| |x|`.
    fn check_bwd_filter(&self, g: &ConvGeometry, full_limit: u64, samples: usize) -> ErrorCheck {
        let layout = self.layout;
        let fl = filter_layout(layout);
        let (inp, out, f) = (g.input(), g.output(), g.filter());
        let x64: Vec<f64> = self.x.iter().map(|&v| f64::from(v)).collect();
        let dy64: Vec<f64> = self.dy.iter().map(|&v| f64::from(v)).collect();
        let Ok(dw) = FilterView::new(&self.w, f, fl) else { return ErrorCheck::failed("dw view") };
        // Winograd dW is held to its documented bound: gamma(T + 32) * (160/3)^2 *
        // sum_n (sum |dy_nk|) max|x_nc|, `T` the 4x4 output tiles of every image and
        // dilation phase; one magnitude per (output, input channel).
        let winograd = (simdconv::select_backward_filter_algorithm(g, BACKWARD_ALGORITHM, layout)
            == Ok(BackwardAlgorithm::Winograd))
        .then(|| {
            let (Ok(x), Ok(dy)) =
                (TensorView::new(&x64[..], inp, layout), TensorView::new(&dy64[..], out, layout))
            else {
                return (0, Vec::new());
            };
            let xmax = plane_max(&x);
            let mut dy_l1 = vec![0.0f64; out.n * out.c];
            for_each(out, &mut |n, k, h, w| dy_l1[n * out.c + k] += dy.get(n, k, h, w).abs());
            let kg = f.o / g.groups();
            let mut mag = vec![0.0f64; f.o * f.i];
            for (j, m) in mag.iter_mut().enumerate() {
                let (o, c) = (j / f.i, (j / f.i) / kg * f.i + j % f.i);
                let s: f64 = (0..out.n).map(|n| dy_l1[n * out.c + o] * xmax[n * inp.c + c]).sum();
                *m = WINOGRAD_DW_GROWTH * WINOGRAD_DW_GROWTH * s;
            }
            (winograd_tiles(g), mag)
        });
        let mut acc = ErrorCheck::new(match &winograd {
            Some((tiles, _)) => gamma(tiles + 32),
            None => gamma(out.n * out.h * out.w + 2),
        });
        let pick = |o: usize, i: usize, plain: f64| winograd.as_ref().map_or(plain, |(_, m)| m[o * f.i + i]);
        let filter_as_dims = Dims::new(f.o, f.i, f.kh, f.kw);
        if g.macs() <= full_limit {
            let Ok(count) = f.count() else { return ErrorCheck::failed("dw too large") };
            let mut want = vec![0.0f64; count];
            let mut mag = vec![0.0f64; count];
            let ax64: Vec<f64> = x64.iter().map(|v| v.abs()).collect();
            let ady64: Vec<f64> = dy64.iter().map(|v| v.abs()).collect();
            for (x, dy, dw) in [(&x64, &dy64, &mut want), (&ax64, &ady64, &mut mag)] {
                let r = (|| -> Result<(), simdconv::Error> {
                    let x = TensorView::new(&x[..], inp, layout)?;
                    let dy = TensorView::new(&dy[..], out, layout)?;
                    let dw = FilterViewMut::new(&mut dw[..], f, fl)?;
                    reference::conv2d_backward_filter(g, x, dy, dw)
                })();
                if let Err(e) = r {
                    return ErrorCheck::failed(&format!("reference failed: {e}"));
                }
            }
            let (Ok(wv), Ok(mv)) = (FilterView::new(&want, f, fl), FilterView::new(&mag, f, fl)) else {
                return ErrorCheck::failed("reference views");
            };
            for_each(filter_as_dims, &mut |o, i, ky, kx| {
                acc.add(dw.get(o, i, ky, kx), wv.get(o, i, ky, kx), pick(o, i, mv.get(o, i, ky, kx)));
            });
        } else {
            let (Ok(x), Ok(dy)) = (TensorView::new(&x64, inp, layout), TensorView::new(&dy64, out, layout))
            else {
                return ErrorCheck::failed("could not build f64 views for the check");
            };
            for_samples(filter_as_dims, samples, &mut |o, i, ky, kx| {
                let (want, mag) = bwd_filter_at(g, &x, &dy, o, i, ky, kx);
                acc.add(dw.get(o, i, ky, kx), want, pick(o, i, mag));
            });
        }
        acc
    }

    fn check_conv(&self, g: &ConvGeometry, full_limit: u64, samples: usize) -> ErrorCheck {
        let layout = self.layout;
        let fl = filter_layout(layout);
        let x64: Vec<f64> = self.x.iter().map(|&v| f64::from(v)).collect();
        let ax64: Vec<f64> = x64.iter().map(|v| v.abs()).collect();
        let w64: Vec<f64> = self.w.iter().map(|&v| f64::from(v)).collect();
        let aw64: Vec<f64> = w64.iter().map(|v| v.abs()).collect();
        let b64: Vec<f64> = self.b.iter().map(|&v| f64::from(v)).collect();
        let ab64: Vec<f64> = b64.iter().map(|v| v.abs()).collect();
        let views = (
            TensorView::new(&x64, g.input(), layout),
            TensorView::new(&ax64, g.input(), layout),
            FilterView::new(&w64, g.filter(), fl),
            FilterView::new(&aw64, g.filter(), fl),
            TensorView::new(&self.y, g.output(), layout),
        );
        let (Ok(x), Ok(ax), Ok(w), Ok(aw), Ok(y)) = views else {
            return ErrorCheck::failed("could not build f64 views for the check");
        };
        let f = g.filter();
        let terms = f.i * f.kh * f.kw;
        // Winograd is held to its own documented bound (simdconv's `conv2d_winograd`):
        // gamma(C_g + 32) * (48^2 * sum_c max|w_oc| max|x_nc| + |b_o|), one magnitude per
        // (image, output channel).
        let winograd = (resolve(g, self.algorithm, layout) == Algorithm::Winograd).then(|| {
            let (xmax, wmax) = (plane_max(&x), filter_max(&w));
            let (cg, kg) = (f.i, f.o / g.groups());
            let mut mag = vec![0.0f64; g.output().n * f.o];
            for (i, m) in mag.iter_mut().enumerate() {
                let (n, o) = (i / f.o, i % f.o);
                let first = (o / kg) * cg;
                let s: f64 = (0..cg).map(|c| wmax[o * cg + c] * xmax[n * g.input().c + first + c]).sum();
                *m = WINOGRAD_GROWTH * WINOGRAD_GROWTH * s + if self.bias { ab64[o] } else { 0.0 };
            }
            mag
        });
        let mut acc = ErrorCheck::new(if winograd.is_some() { gamma(f.i + 32) } else { gamma(terms + 2) });
        let (bias, abias) = if self.bias { (Some(&b64[..]), Some(&ab64[..])) } else { (None, None) };
        let mut one = |n: usize, o: usize, oy: usize, ox: usize| {
            let mut want = reference::conv2d_at(g, &x, &w, bias, n, o, oy, ox);
            if self.relu {
                want = want.max(0.0);
            }
            let mag = match &winograd {
                Some(m) => m[n * f.o + o],
                None => reference::conv2d_at(g, &ax, &aw, abias, n, o, oy, ox),
            };
            acc.add(y.get(n, o, oy, ox), want, mag);
        };
        let out = g.output();
        if g.macs() <= full_limit {
            for_each(out, &mut one);
        } else {
            for_samples(out, samples, &mut one);
        }
        acc
    }

    fn check_pool(&self, kind: PoolKind, g: &PoolGeometry) -> ErrorCheck {
        let layout = self.layout;
        let x64: Vec<f64> = self.x.iter().map(|&v| f64::from(v)).collect();
        let ax64: Vec<f64> = x64.iter().map(|v| v.abs()).collect();
        let out = g.output();
        let Ok(count) = out.count() else { return ErrorCheck::failed("output too large") };
        let mut want = vec![0.0f64; count];
        let mut mag = vec![0.0f64; count];
        let [kh, kw] = g.window().kernel();
        let run = |x: &[f64], y: &mut [f64]| -> Result<(), simdconv::Error> {
            let x = TensorView::new(x, g.input(), layout)?;
            let y = TensorViewMut::new(y, out, layout)?;
            match kind {
                PoolKind::Max => reference::max_pool2d(g, x, y, None),
                PoolKind::Avg(opts) => reference::avg_pool2d(g, x, y, opts),
                PoolKind::L2 => reference::l2_pool2d(g, x, y),
                PoolKind::GlobalAvg => reference::global_avg_pool(x, y),
                PoolKind::GlobalMax => reference::global_max_pool(x, y),
            }
        };
        if let Err(e) = run(&x64, &mut want) {
            return ErrorCheck::failed(&format!("reference failed: {e}"));
        }
        // Max pooling is exact (bound 0, relative to |y|). Average pooling sums at most
        // kh*kw terms and divides: its magnitude is the same average over |x|. L2 sums
        // squares (no cancellation): relative to the result itself.
        let bound = match kind {
            PoolKind::Max | PoolKind::GlobalMax => {
                mag.iter_mut().zip(&want).for_each(|(m, w)| *m = w.abs());
                0.0
            }
            PoolKind::Avg(_) | PoolKind::GlobalAvg => {
                if let Err(e) = run(&ax64, &mut mag) {
                    return ErrorCheck::failed(&format!("reference failed: {e}"));
                }
                gamma(kh * kw + 2)
            }
            PoolKind::L2 => {
                mag.copy_from_slice(&want);
                gamma(kh * kw + 2)
            }
        };
        let Ok(y) = TensorView::new(&self.y, out, layout) else { return ErrorCheck::failed("output view") };
        let Ok(wv) = TensorView::new(&want, out, layout) else { return ErrorCheck::failed("output view") };
        let Ok(mv) = TensorView::new(&mag, out, layout) else { return ErrorCheck::failed("output view") };
        let mut acc = ErrorCheck::new(bound);
        for_each(out, &mut |n, c, h, w| acc.add(y.get(n, c, h, w), wv.get(n, c, h, w), mv.get(n, c, h, w)));
        acc
    }
}

/// `samples` random positions of `d` (seeded, so every run checks the same ones); the
/// first four hit the plane's corners, where padding matters most.
fn for_samples(d: Dims, samples: usize, f: &mut impl FnMut(usize, usize, usize, usize)) {
    let mut rng = Rng::new(0x5eed);
    for s in 0..samples {
        let n = rng.below(d.n);
        let c = rng.below(d.c);
        let (h, w) = match s {
            0 => (0, 0),
            1 => (0, d.w - 1),
            2 => (d.h - 1, 0),
            3 => (d.h - 1, d.w - 1),
            _ => (rng.below(d.h), rng.below(d.w)),
        };
        f(n, c, h, w);
    }
}

/// The output position along one axis whose tap `k` reads input position `i`, if any.
fn output_for_tap(
    i: usize,
    k: usize,
    stride: usize,
    dilation: usize,
    pad: usize,
    outs: usize,
    ins: usize,
) -> Option<usize> {
    let p = (i + pad).checked_sub(k * dilation)?;
    let o = p / stride;
    (p % stride == 0 && o < outs && input_coord(o, stride, k, dilation, pad, ins) == Some(i)).then_some(o)
}

/// One element of `dx` in f64, computed directly: `(sum dy * w, sum |dy| |w|)` over the
/// output channels of `c`'s group and the taps that read `(iy, ix)`.
fn bwd_data_at(
    g: &ConvGeometry,
    dy: &TensorView<'_, f64>,
    w: &FilterView<'_, f64>,
    n: usize,
    c: usize,
    iy: usize,
    ix: usize,
) -> (f64, f64) {
    let (inp, out, f) = (g.input(), g.output(), g.filter());
    let win = g.window();
    let ([sh, sw], [dh, dw], pad) = (win.stride(), win.dilation(), win.padding());
    let opg = f.o / g.groups();
    let group = c / f.i;
    let i = c % f.i;
    let (mut sum, mut mag) = (0.0, 0.0);
    for o in group * opg..(group + 1) * opg {
        for ky in 0..f.kh {
            let Some(oy) = output_for_tap(iy, ky, sh, dh, pad.top, out.h, inp.h) else { continue };
            for kx in 0..f.kw {
                let Some(ox) = output_for_tap(ix, kx, sw, dw, pad.left, out.w, inp.w) else { continue };
                let (a, b) = (dy.get(n, o, oy, ox), w.get(o, i, ky, kx));
                sum += a * b;
                mag += (a * b).abs();
            }
        }
    }
    (sum, mag)
}

/// One element of `dw` in f64, computed directly: `(sum dy * x, sum |dy| |x|)` over the
/// batch and the output positions whose tap `(ky, kx)` is inside the input.
fn bwd_filter_at(
    g: &ConvGeometry,
    x: &TensorView<'_, f64>,
    dy: &TensorView<'_, f64>,
    o: usize,
    i: usize,
    ky: usize,
    kx: usize,
) -> (f64, f64) {
    let (inp, out, f) = (g.input(), g.output(), g.filter());
    let win = g.window();
    let ([sh, sw], [dh, dw], pad) = (win.stride(), win.dilation(), win.padding());
    let c = (o / (f.o / g.groups())) * f.i + i;
    let (mut sum, mut mag) = (0.0, 0.0);
    for n in 0..out.n {
        for oy in 0..out.h {
            let Some(iy) = input_coord(oy, sh, ky, dh, pad.top, inp.h) else { continue };
            for ox in 0..out.w {
                let Some(ix) = input_coord(ox, sw, kx, dw, pad.left, inp.w) else { continue };
                let (a, b) = (dy.get(n, o, oy, ox), x.get(n, c, iy, ix));
                sum += a * b;
                mag += (a * b).abs();
            }
        }
    }
    (sum, mag)
}

/// Growth of simdconv's forward Winograd F(4x4, 3x3) transforms (its error bound's `48`).
const WINOGRAD_GROWTH: f64 = 48.0;
/// Growth of simdconv's filter-gradient Winograd F(3x3, 4x4) transforms (`160/3`).
const WINOGRAD_DW_GROWTH: f64 = 160.0 / 3.0;

/// `max |t|` over each (image, channel) plane, indexed `n * c_total + c`.
fn plane_max(t: &TensorView<'_, f64>) -> Vec<f64> {
    let d = t.dims();
    let mut m = vec![0.0f64; d.n * d.c];
    for_each(d, &mut |n, c, h, w| {
        let v = &mut m[n * d.c + c];
        *v = v.max(t.get(n, c, h, w).abs());
    });
    m
}

/// `max |w|` over each filter's taps, indexed `o * i_total + i`.
fn filter_max(w: &FilterView<'_, f64>) -> Vec<f64> {
    let d = w.dims();
    let mut m = vec![0.0f64; d.o * d.i];
    for_each(Dims::new(d.o, d.i, d.kh, d.kw), &mut |o, i, ky, kx| {
        let v = &mut m[o * d.i + i];
        *v = v.max(w.get(o, i, ky, kx).abs());
    });
    m
}

/// The `T` of the Winograd filter-gradient bound: 4x4 output tiles of every image and
/// dilation phase (polyphase sub-convolution).
fn winograd_tiles(g: &ConvGeometry) -> usize {
    let out = g.output();
    let [dh, dw] = g.window().dilation();
    let sub = |p: usize, d: usize, e: usize| if p < e { (e - p).div_ceil(d) } else { 0 };
    let mut tiles = 0;
    for ph in 0..dh {
        for pw in 0..dw {
            tiles += sub(ph, dh, out.h).div_ceil(4) * sub(pw, dw, out.w).div_ceil(4);
        }
    }
    out.n * tiles
}

/// Whether the data gradient of `g` runs `BackwardAlgorithm::Flipped` on a 3x3 kernel:
/// its forward convolution then may take Winograd, whose bound applies.
fn flipped_may_run_winograd(g: &ConvGeometry, layout: Layout) -> bool {
    let f = g.filter();
    [f.kh, f.kw] == [3, 3]
        && simdconv::select_backward_data_algorithm(g, BACKWARD_ALGORITHM, layout)
            == Ok(BackwardAlgorithm::Flipped)
}

fn for_each(d: Dims, f: &mut impl FnMut(usize, usize, usize, usize)) {
    for n in 0..d.n {
        for c in 0..d.c {
            for h in 0..d.h {
                for w in 0..d.w {
                    f(n, c, h, w);
                }
            }
        }
    }
}

/// Unit round-off of f32, `2^-24`.
pub const U32: f64 = 5.960_464_477_539_063e-8;

/// `gamma(n) = n u / (1 - n u)`: the relative bound on a sum of `n` rounded terms in f32
/// (Higham, eq. 3.5), the same bound `simdconv_tests::check_close` applies.
#[must_use]
pub fn gamma(n: usize) -> f64 {
    let nu = n as f64 * U32;
    nu / (1.0 - nu)
}

/// The result of checking a kernel's output against the f64 reference.
///
/// The error of one output is `|y - y_ref| / M`, where `M` is the magnitude of the
/// computation (`sum |w x| + |b|` for a convolution, the reference run on `|x|` and `|w|`),
/// so that cancellation in `y_ref` cannot inflate it. An output is within the bound when
/// `|y - y_ref| <= bound * M + 1e-30`, with `bound = gamma(terms + 2)`. Runs through
/// Winograd (forward, the flipped data gradient of a 3x3 layer, the Winograd filter
/// gradient) are held to the bound simdconv documents for them instead: `gamma(C_g + 32)`
/// (`gamma(T + 32)` for the filter gradient) on a magnitude scaled by the transforms'
/// growth (`48^2 sum_c max|w| max|x|`; `(160/3)^2 sum_n (sum |dy|) max|x|`).
#[derive(Clone, Debug, PartialEq)]
pub struct ErrorCheck {
    /// The largest relative error seen.
    pub max_rel_err: f64,
    /// The bound each output is held to.
    pub bound: f64,
    /// Outputs checked.
    pub checked: usize,
    /// Outputs over the bound (NaN counts as over).
    pub violations: usize,
    /// Set when the check itself could not run.
    pub failure: Option<String>,
}

impl ErrorCheck {
    fn new(bound: f64) -> Self {
        ErrorCheck { max_rel_err: 0.0, bound, checked: 0, violations: 0, failure: None }
    }

    fn failed(why: &str) -> Self {
        ErrorCheck { max_rel_err: f64::NAN, bound: 0.0, checked: 0, violations: 0, failure: Some(why.into()) }
    }

    /// Records one output.
    pub fn add(&mut self, got: f32, want: f64, magnitude: f64) {
        self.checked += 1;
        let err = (f64::from(got) - want).abs();
        let rel = if magnitude > 0.0 {
            err / magnitude
        } else if err == 0.0 {
            0.0
        } else {
            f64::INFINITY
        };
        if rel.is_nan() || rel > self.max_rel_err {
            self.max_rel_err = rel;
        }
        if err.is_nan() || err > self.bound * magnitude + 1e-30 {
            self.violations += 1;
        }
    }

    /// True when every checked output is within the bound (and the check ran).
    #[must_use]
    pub fn ok(&self) -> bool {
        self.failure.is_none() && self.violations == 0 && self.checked > 0
    }
}

/// Timing statistics of one case, per call.
#[derive(Clone, Debug, PartialEq)]
pub struct Timing {
    /// Median over samples, milliseconds per call.
    pub median_ms: f64,
    /// Fastest sample, milliseconds per call.
    pub min_ms: f64,
    /// Samples taken.
    pub samples: usize,
    /// Calls per sample (short calls are batched so the clock's cost does not count).
    pub calls_per_sample: usize,
}

/// Times `f`: a warm-up (at least one call and about a tenth of `min_time`), then samples
/// until `min_time` has passed and at least `min_samples` were taken. Calls shorter than
/// 100 microseconds are batched per sample. The first error stops the timing.
pub fn time<E>(
    mut f: impl FnMut() -> Result<(), E>,
    min_time: Duration,
    min_samples: usize,
) -> Result<Timing, E> {
    let warm = Instant::now();
    let mut calls = 0u32;
    while calls == 0 || warm.elapsed() < min_time / 10 {
        f()?;
        calls += 1;
    }
    let per_call = warm.elapsed() / calls;
    let batch = if per_call < Duration::from_micros(100) {
        (Duration::from_micros(100).as_nanos() / per_call.as_nanos().max(1)).clamp(1, 10_000) as usize
    } else {
        1
    };
    let mut samples = Vec::new();
    let start = Instant::now();
    while samples.len() < min_samples.max(1) || start.elapsed() < min_time {
        let t = Instant::now();
        for _ in 0..batch {
            black_box(f()?);
        }
        samples.push(t.elapsed().as_secs_f64() * 1e3 / batch as f64);
    }
    samples.sort_by(f64::total_cmp);
    let mid = samples.len() / 2;
    let median_ms =
        if samples.len() % 2 == 1 { samples[mid] } else { 0.5 * (samples[mid - 1] + samples[mid]) };
    Ok(Timing { median_ms, min_ms: samples[0], samples: samples.len(), calls_per_sample: batch })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gemm_isa_follows_the_feature() {
        let best = Isa::detect();
        if cfg!(feature = "gemm-avx512") {
            assert_eq!(gemm_isa(), best);
        } else {
            assert_eq!(gemm_isa(), best.min(Isa::Avx2));
            assert_ne!(gemm_isa(), Isa::Avx512);
        }
    }

    #[test]
    fn error_check_bounds() {
        let mut c = ErrorCheck::new(gamma(10));
        c.add(1.0, 1.0, 2.0);
        assert!(c.ok());
        assert_eq!(c.max_rel_err, 0.0);
        c.add(1.0, 1.0 + 1e-7, 1.0);
        assert!(c.ok(), "{c:?}");
        c.add(1.0, 1.001, 1.0);
        assert!(!c.ok());
        assert_eq!(c.violations, 1);
        assert!((c.max_rel_err - 1e-3).abs() < 1e-9);
        let mut n = ErrorCheck::new(1.0);
        n.add(f32::NAN, 0.0, 1.0);
        assert!(!n.ok() && n.max_rel_err.is_nan());
        assert!(!ErrorCheck::new(1.0).ok(), "nothing checked is not a pass");
    }

    #[test]
    fn check_catches_a_wrong_output() {
        for name in ["quick_conv3x3", "quick_bias_relu", "quick_maxpool", "quick_avgpool", "quick_l2pool"] {
            let case = crate::cases::find_case(name).unwrap();
            for layout in [Layout::Nchw, Layout::Nhwc] {
                let mut p = Prepared::new(&case, Exec::new(), layout, Algorithm::Auto).unwrap();
                p.run().unwrap();
                let good = p.check(u64::MAX, 0);
                assert!(good.ok() && good.checked == p.y.len(), "{name}: {good:?}");
                // One output off by far more than the bound allows.
                let i = p.y.len() / 3;
                let old = p.y[i];
                p.y[i] += 1.0;
                let bad = p.check(u64::MAX, 0);
                assert_eq!(bad.violations, 1, "{name}: {bad:?}");
                // The sampled check sees the corners: break one and sample.
                p.y[i] = old;
                if let Geometry::Conv(g) = p.geometry {
                    // The top-left output of every channel (the first sample's position).
                    let st = layout.strides(g.output());
                    for o in 0..g.output().c {
                        p.y[o * st[1]] = f32::NAN;
                    }
                    let sampled = p.check(0, 16);
                    assert_eq!(sampled.checked, 16);
                    assert!(!sampled.ok(), "{name}: {sampled:?}");
                }
            }
        }
    }

    /// A Winograd run is held to Winograd's documented bound, `gamma(C_g + 32)` on the
    /// 48^2-scaled magnitude (a depthwise layer's 9-term `gamma` is far too tight for
    /// it), and that bound still catches a wrong output.
    #[test]
    fn winograd_runs_get_the_winograd_bound() {
        for name in ["quick_conv3x3", "depthwise_3x3"] {
            let case = crate::cases::find_case(name).unwrap();
            let Op::Conv(spec) = case.op else { unreachable!("convolution cases") };
            let g = spec.geometry().unwrap();
            for layout in [Layout::Nchw, Layout::Nhwc] {
                let mut p = Prepared::new(&case, Exec::new(), layout, Algorithm::Winograd).unwrap();
                p.run().unwrap();
                let good = p.check(u64::MAX, 0);
                assert!(good.ok() && good.checked == p.y.len(), "{name}: {good:?}");
                assert_eq!(good.bound, gamma(g.filter().i + 32), "{name}");
                let i = p.y.len() / 3;
                p.y[i] += 1.0;
                let bad = p.check(u64::MAX, 0);
                assert_eq!(bad.violations, 1, "{name}: {bad:?}");
            }
        }
    }

    /// The backward checks pass a correct result both in full (the f64 reference) and
    /// sampled (the direct per-element sums, which must agree with the kernel on the
    /// sampled elements), and catch one wrong element and wrong sampled corners.
    #[test]
    fn backward_check_catches_a_wrong_gradient() {
        for name in ["quick_conv3x3_bwd_data", "quick_conv3x3_bwd_filter", "quick_dilated"] {
            let mut case = crate::cases::find_case(name).unwrap();
            // The dilated, padded layer's data gradient exercises `output_for_tap`.
            if let Op::Conv(spec) = case.op {
                case = crate::cases::backward_cases(name, spec)[0].clone();
            }
            for layout in [Layout::Nchw, Layout::Nhwc] {
                let mut p = Prepared::new(&case, Exec::new(), layout, Algorithm::Auto).unwrap();
                p.run().unwrap();
                let is_data = matches!(p.geometry, Geometry::BwdData(_));
                let len = if is_data { p.x.len() } else { p.w.len() };
                let good = p.check(u64::MAX, 0);
                assert!(good.ok() && good.checked == len, "{name}: {good:?}");
                let sampled = p.check(0, 256);
                assert!(sampled.ok() && sampled.checked == 256, "{name}: {sampled:?}");
                let out = if is_data { &mut p.x } else { &mut p.w };
                let i = len / 3;
                let old = out[i];
                // Far above every bound here, the loose Winograd filter-gradient one included.
                out[i] += 1.0e4;
                let bad = p.check(u64::MAX, 0);
                assert_eq!(bad.violations, 1, "{name}: {bad:?}");
                let out = if is_data { &mut p.x } else { &mut p.w };
                out[i] = old;
                // The first sample is at spatial (0, 0) of a random (n, c) / (o, i).
                match p.geometry {
                    Geometry::BwdData(g) => {
                        let mut dx = TensorViewMut::new(&mut p.x, g.input(), layout).unwrap();
                        for c in 0..g.input().c {
                            *dx.get_mut(0, c, 0, 0) = f32::NAN;
                        }
                    }
                    Geometry::BwdFilter(g) => {
                        let f = g.filter();
                        let mut dw = FilterViewMut::new(&mut p.w, f, filter_layout(layout)).unwrap();
                        for o in 0..f.o {
                            for i in 0..f.i {
                                *dw.get_mut(o, i, 0, 0) = f32::NAN;
                            }
                        }
                    }
                    _ => unreachable!("backward cases only"),
                }
                let sampled = p.check(0, 16);
                assert_eq!(sampled.checked, 16);
                assert!(!sampled.ok(), "{name}: {sampled:?}");
            }
        }
    }

    #[test]
    fn timing_reports_per_call() {
        let t = time(
            || {
                std::thread::sleep(Duration::from_millis(2));
                Ok::<(), ()>(())
            },
            Duration::from_millis(20),
            3,
        )
        .unwrap();
        assert!(t.samples >= 3 && t.calls_per_sample == 1);
        assert!(t.min_ms >= 2.0 && t.median_ms >= t.min_ms, "{t:?}");
        let mut n = 0;
        let e = time(
            || {
                n += 1;
                if n > 3 {
                    Err("boom")
                } else {
                    Ok(())
                }
            },
            Duration::from_secs(10),
            5,
        );
        assert_eq!(e.unwrap_err(), "boom");
    }
}

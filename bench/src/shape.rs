//! The `--shape SPEC` grammar: a custom case on the command line.
//!
//! ```text
//! SPEC  := "conv:" KV ("," KV)*
//!        | "pool:" KIND ("," KV)*
//! KIND  := max | avg | l2 | global_avg | global_max
//! KV    := KEY "=" VALUE
//! ```
//!
//! Keys (sizes are positive integers; defaults in brackets):
//! - both: `n` batch [1], `c` channels, `h` height, `w` width (required), `name` [the spec]
//! - window: `f` square kernel, or `fh` / `fw` [conv: required; pool: required unless
//!   global]; `s` stride or `sh` / `sw` [1; pool: the kernel]; `p` padding on all sides, or
//!   `ph` / `pw` (top = bottom, left = right), or `pt` / `pb` / `pl` / `pr` [0]; `d`
//!   dilation or `dh` / `dw` [1]; `round` = `floor` | `ceil` | `exact` [floor]
//! - conv only: `k` output channels (required), `g` groups [1], `bias` = 0 | 1 [0],
//!   `relu` = 0 | 1 [0] (both fused through the epilogue)
//! - avg pool only: `include_pad` = 0 | 1 [1] (PyTorch's `count_include_pad`)
//!
//! Example: `conv:n=1,c=3,h=128,w=128,k=96,f=11,s=1,p=0,d=1,g=1` and
//! `pool:max,n=1,c=64,h=224,w=224,f=2,s=2,p=0`.

use simdconv::{AvgPoolOptions, Dims, Padding, Rounding};

/// The grammar, as `convbench --help` prints it.
pub const GRAMMAR: &str = "\
SHAPE SPEC (--shape, repeatable):
  conv:KEY=VALUE,...          a forward convolution
  pool:KIND,KEY=VALUE,...     KIND = max | avg | l2 | global_avg | global_max
  sizes and shape:  n (batch, default 1), c, h, w (required)
  window:           f (square kernel) or fh,fw   [conv, window pools: required]
                    s (stride) or sh,sw          [conv: 1; pool: the kernel]
                    p (all sides) or ph,pw or pt,pb,pl,pr   [0]
                    d (dilation) or dh,dw        [1]
                    round = floor | ceil | exact [floor]
  conv only:        k (output channels, required), g (groups) [1],
                    bias = 0|1, relu = 0|1 (fused through the epilogue) [0]
  avg pool only:    include_pad = 0|1 (PyTorch's count_include_pad) [1]
  any:              name = NAME (the row's label; default: the spec itself)
  examples:  conv:n=1,c=3,h=128,w=128,k=96,f=11,s=1,p=0,d=1,g=1
             conv:c=32,h=56,w=56,k=32,f=3,p=1,g=32,bias=1,relu=1,name=dw_block
             pool:max,n=1,c=64,h=224,w=224,f=2,s=2,p=0
             pool:global_avg,c=2048,h=7,w=7
";

use crate::cases::{Case, ConvSpec, Op, PoolKind, PoolSpec};

/// Parses one `--shape` spec into a case (validating its geometry).
pub fn parse_shape(spec: &str) -> Result<Case, String> {
    let spec = spec.trim();
    let (head, rest) =
        spec.split_once(':').ok_or_else(|| format!("{spec:?}: expected conv:... or pool:..."))?;
    let mut items: Vec<&str> = rest.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
    let kind = match head.trim() {
        "conv" => None,
        "pool" => {
            if items.is_empty() {
                return Err(format!("{spec:?}: pool needs a kind (max, avg, l2, global_avg, global_max)"));
            }
            let k = items.remove(0);
            Some(match k {
                "max" => PoolKind::Max,
                "avg" => PoolKind::Avg(AvgPoolOptions::PYTORCH),
                "l2" => PoolKind::L2,
                "global_avg" => PoolKind::GlobalAvg,
                "global_max" => PoolKind::GlobalMax,
                other => {
                    return Err(format!(
                        "{spec:?}: unknown pool kind {other:?} (max, avg, l2, global_avg, global_max)"
                    ))
                }
            })
        }
        other => return Err(format!("{spec:?}: unknown op {other:?} (conv or pool)")),
    };
    let mut kv = Kv::default();
    for item in items {
        let (k, v) = item.split_once('=').ok_or_else(|| format!("{spec:?}: {item:?} is not KEY=VALUE"))?;
        let (k, v) = (k.trim(), v.trim());
        if kv.pairs.iter().any(|(seen, _)| *seen == k) {
            return Err(format!("{spec:?}: key {k:?} given twice"));
        }
        kv.pairs.push((k, v));
    }
    let name = kv.take_str("name").map_or_else(|| spec.to_string(), str::to_string);
    let input = Dims::new(kv.num("n", Some(1))?, kv.num("c", None)?, kv.num("h", None)?, kv.num("w", None)?);
    let op = match kind {
        None => {
            let kernel = kv.pair("f", "fh", "fw", None)?;
            let mut c = ConvSpec::square(input.c, input.h, input.w, kv.num("k", None)?, 1, 1, 0);
            c.input = input;
            c.kernel = kernel;
            c.stride = kv.pair("s", "sh", "sw", Some(1))?;
            c.dilation = kv.pair("d", "dh", "dw", Some(1))?;
            c.padding = kv.padding()?;
            c.rounding = kv.rounding()?;
            c.groups = kv.num("g", Some(1))?;
            c.bias = kv.flag("bias", false)?;
            c.relu = kv.flag("relu", false)?;
            Op::Conv(c)
        }
        Some(mut kind) => {
            let mut p = PoolSpec::global(kind, input.c, input.h, input.w);
            p.input = input;
            if !kind.is_global() {
                p.kernel = kv.pair("f", "fh", "fw", None)?;
                p.stride = kv.pair("s", "sh", "sw", Some(0))?;
                if p.stride[0] == 0 {
                    p.stride[0] = p.kernel[0];
                }
                if p.stride[1] == 0 {
                    p.stride[1] = p.kernel[1];
                }
                p.dilation = kv.pair("d", "dh", "dw", Some(1))?;
                p.padding = kv.padding()?;
                p.rounding = kv.rounding()?;
                if let PoolKind::Avg(_) = kind {
                    let include = kv.flag("include_pad", true)?;
                    kind = PoolKind::Avg(AvgPoolOptions { count_include_pad: include, divisor: None });
                    p.kind = kind;
                }
            }
            Op::Pool(p)
        }
    };
    if let Some((k, _)) = kv.pairs.first() {
        return Err(format!("{spec:?}: unknown or inapplicable key {k:?}"));
    }
    let geometry = match &op {
        Op::Conv(c) | Op::ConvBackwardData(c) | Op::ConvBackwardFilter(c) => c.geometry().map(|_| ()),
        Op::Pool(p) => p.geometry().map(|_| ()),
    };
    geometry.map_err(|e| format!("{spec:?}: invalid geometry: {e}"))?;
    Ok(Case { name, op })
}

#[derive(Default)]
struct Kv<'a> {
    pairs: Vec<(&'a str, &'a str)>,
}

impl<'a> Kv<'a> {
    fn take_str(&mut self, key: &str) -> Option<&'a str> {
        let i = self.pairs.iter().position(|(k, _)| *k == key)?;
        Some(self.pairs.remove(i).1)
    }

    fn take_num(&mut self, key: &str) -> Result<Option<usize>, String> {
        let Some(v) = self.take_str(key) else { return Ok(None) };
        v.parse::<usize>().map(Some).map_err(|_| format!("{key}={v:?}: expected a non-negative integer"))
    }

    fn num(&mut self, key: &str, default: Option<usize>) -> Result<usize, String> {
        self.take_num(key)?.or(default).ok_or_else(|| format!("missing required key {key:?}"))
    }

    /// `both` for both axes, or `h` / `w` per axis (not both forms).
    fn pair(&mut self, both: &str, h: &str, w: &str, default: Option<usize>) -> Result<[usize; 2], String> {
        let b = self.take_num(both)?;
        let (vh, vw) = (self.take_num(h)?, self.take_num(w)?);
        match (b, vh, vw) {
            (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
                Err(format!("give either {both:?} or {h:?}/{w:?}, not both"))
            }
            (Some(v), None, None) => Ok([v, v]),
            (None, a, c) => {
                let get = |v: Option<usize>, k: &str| {
                    v.or(default).ok_or_else(|| format!("missing required key {both:?} (or {k:?})"))
                };
                Ok([get(a, h)?, get(c, w)?])
            }
        }
    }

    fn padding(&mut self) -> Result<Padding, String> {
        let p = self.take_num("p")?;
        let [ph, pw] = [self.take_num("ph")?, self.take_num("pw")?];
        let sides = [self.take_num("pt")?, self.take_num("pb")?, self.take_num("pl")?, self.take_num("pr")?];
        let forms = usize::from(p.is_some())
            + usize::from(ph.is_some() || pw.is_some())
            + usize::from(sides.iter().any(Option::is_some));
        if forms > 1 {
            return Err("give padding as p, or ph/pw, or pt/pb/pl/pr: one form only".into());
        }
        if let Some(p) = p {
            return Ok(Padding::uniform(p));
        }
        if ph.is_some() || pw.is_some() {
            return Ok(Padding::symmetric(ph.unwrap_or(0), pw.unwrap_or(0)));
        }
        let [t, b, l, r] = sides.map(|v| v.unwrap_or(0));
        Ok(Padding::new(t, b, l, r))
    }

    fn rounding(&mut self) -> Result<Rounding, String> {
        match self.take_str("round") {
            None | Some("floor") => Ok(Rounding::Floor),
            Some("ceil") => Ok(Rounding::Ceil),
            Some("exact") => Ok(Rounding::Exact),
            Some(v) => Err(format!("round={v:?}: expected floor, ceil or exact")),
        }
    }

    fn flag(&mut self, key: &str, default: bool) -> Result<bool, String> {
        match self.take_str(key) {
            None => Ok(default),
            Some("1" | "true" | "yes") => Ok(true),
            Some("0" | "false" | "no") => Ok(false),
            Some(v) => Err(format!("{key}={v:?}: expected 0 or 1")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conv_example_from_the_help() {
        let c = parse_shape("conv:n=1,c=3,h=128,w=128,k=96,f=11,s=1,p=0,d=1,g=1").unwrap();
        assert_eq!(c.name, "conv:n=1,c=3,h=128,w=128,k=96,f=11,s=1,p=0,d=1,g=1");
        let Op::Conv(s) = c.op else { panic!("not a conv") };
        assert_eq!(s.input, Dims::new(1, 3, 128, 128));
        assert_eq!((s.k, s.kernel, s.stride, s.dilation, s.groups), (96, [11, 11], [1, 1], [1, 1], 1));
        assert_eq!(s.padding, Padding::ZERO);
        assert!(!s.bias && !s.relu);
        assert_eq!(s.geometry().unwrap().output(), Dims::new(1, 96, 118, 118));
    }

    #[test]
    fn conv_defaults_and_per_axis_keys() {
        let c = parse_shape("conv:c=8,h=10,w=12,k=4,fh=3,fw=1,sh=2,pt=1,pb=0,pl=2,pr=3,dw=2,round=ceil,bias=1,relu=1,name=mine")
            .unwrap();
        assert_eq!(c.name, "mine");
        let Op::Conv(s) = c.op else { panic!("not a conv") };
        assert_eq!(s.input, Dims::new(1, 8, 10, 12));
        assert_eq!((s.kernel, s.stride, s.dilation), ([3, 1], [2, 1], [1, 2]));
        assert_eq!(s.padding, Padding::new(1, 0, 2, 3));
        assert_eq!(s.rounding, Rounding::Ceil);
        assert!(s.bias && s.relu);
        let c = parse_shape("conv: c=4 , h=6, w=6, k=4, f=3, ph=1, pw=0, g=4").unwrap();
        let Op::Conv(s) = c.op else { panic!("not a conv") };
        assert_eq!((s.padding, s.groups), (Padding::symmetric(1, 0), 4));
    }

    #[test]
    fn pool_example_from_the_help() {
        let c = parse_shape("pool:max,n=1,c=64,h=224,w=224,f=2,s=2,p=0").unwrap();
        let Op::Pool(p) = c.op else { panic!("not a pool") };
        assert_eq!(p.kind, PoolKind::Max);
        assert_eq!((p.input, p.kernel, p.stride), (Dims::new(1, 64, 224, 224), [2, 2], [2, 2]));
        assert_eq!(p.geometry().unwrap().output(), Dims::new(1, 64, 112, 112));
    }

    #[test]
    fn pool_kinds_and_defaults() {
        // Stride defaults to the window.
        let Op::Pool(p) = parse_shape("pool:avg,c=2,h=9,w=9,f=3,include_pad=0").unwrap().op else { panic!() };
        assert_eq!(p.stride, [3, 3]);
        assert_eq!(p.kind, PoolKind::Avg(AvgPoolOptions::EXCLUDE_PAD));
        let Op::Pool(p) = parse_shape("pool:l2,c=2,h=9,w=9,f=3,s=2,p=1").unwrap().op else { panic!() };
        assert_eq!((p.kind, p.padding), (PoolKind::L2, Padding::uniform(1)));
        let Op::Pool(p) = parse_shape("pool:global_avg,c=2048,h=7,w=7").unwrap().op else { panic!() };
        assert_eq!(p.geometry().unwrap().output(), Dims::new(1, 2048, 1, 1));
        let Op::Pool(p) = parse_shape("pool:global_max,n=2,c=3,h=4,w=5").unwrap().op else { panic!() };
        assert_eq!((p.kind, p.input), (PoolKind::GlobalMax, Dims::new(2, 3, 4, 5)));
    }

    #[test]
    fn rejects_bad_specs_with_a_reason() {
        let err = |s: &str| parse_shape(s).unwrap_err();
        assert!(err("conv").contains("expected conv:"));
        assert!(err("fc:c=1").contains("unknown op"));
        assert!(err("pool:").contains("needs a kind"));
        assert!(err("pool:median,c=1,h=2,w=2,f=2").contains("unknown pool kind"));
        assert!(err("conv:c=3,h=8,w=8,f=3").contains("\"k\""));
        assert!(err("conv:c=3,h=8,w=8,k=4").contains("\"f\""));
        assert!(err("conv:c=3,h=8,w=8,k=4,f=3,f=5").contains("twice"));
        assert!(err("conv:c=3,h=8,w=8,k=4,f=x").contains("non-negative integer"));
        assert!(err("conv:c=3,h=8,w=8,k=4,f=-1").contains("non-negative integer"));
        assert!(err("conv:c=3,h=8,w=8,k=4,f=3,fh=3").contains("not both"));
        assert!(err("conv:c=3,h=8,w=8,k=4,f=3,p=1,pt=1").contains("one form only"));
        assert!(err("conv:c=3,h=8,w=8,k=4,f=3,bogus=1").contains("\"bogus\""));
        assert!(err("conv:c=3,h=8,w=8,k=4,f=3,c").contains("KEY=VALUE"));
        assert!(err("conv:c=3,h=8,w=8,k=4,f=3,round=up").contains("floor, ceil or exact"));
        assert!(err("conv:c=3,h=8,w=8,k=4,f=3,relu=2").contains("0 or 1"));
        // Geometry errors come from simdconv, with its numbers.
        assert!(err("conv:c=3,h=8,w=8,k=4,f=9").contains("invalid geometry"));
        assert!(err("conv:c=3,h=8,w=8,k=4,f=3,g=2").contains("invalid geometry"));
        assert!(err("conv:c=0,h=8,w=8,k=4,f=3").contains("invalid geometry"));
        assert!(err("conv:c=3,h=10,w=10,k=4,f=3,s=2,round=exact").contains("invalid geometry"));
        // Keys that do not apply to the op are rejected, not ignored.
        assert!(err("pool:max,c=1,h=4,w=4,f=2,k=3").contains("\"k\""));
        assert!(err("pool:global_avg,c=1,h=4,w=4,f=2").contains("\"f\""));
        assert!(err("pool:max,c=1,h=4,w=4,f=2,include_pad=1").contains("\"include_pad\""));
    }
}

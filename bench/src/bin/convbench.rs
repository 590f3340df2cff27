//! `convbench`: measures this machine's limits, then times simdconv's kernels on a suite
//! of convolution and pooling layers, checks each against the reference, and compares
//! with established engines. Run `convbench --help` for the options.

use std::process::ExitCode;
use std::time::Duration;

use simdconv::{Algorithm, Exec, Isa, Layout};
use simdconv_bench::cases::{self, Case, Op};
use simdconv_bench::report::{self, Machine, Row};
use simdconv_bench::{anchors, machine, measure_case, run, shape, Settings};

const USAGE: &str = "\
convbench: time simdconv's convolution and pooling kernels against this machine's limits

USAGE:
  cargo run --release -p simdconv-bench --bin convbench -- [OPTIONS]

OPTIONS:
  --suite standard|quick   cases to run [standard unless --case/--shape is given]
  --case NAME              one case of either suite (repeatable)
  --shape SPEC             a custom case, see SHAPE SPEC below (repeatable)
  --threads N              threads per kernel call [1]; more than one needs the
                           bench crate's `rayon` feature: add `--features rayon`
  --isa auto|scalar|avx2|avx512|neon
                           instruction set; caps simdconv with set_max_isa [auto: best].
                           The gemm crate (im2col, pointwise) picks its own: the best this
                           CPU has, at most AVX2 when built with --no-default-features
                           (rows it runs above the cap are marked *)
  --algo auto|direct|im2col|pointwise|depthwise|winograd|all
                           convolution algorithm (`all`: auto and every named one;
                           one that cannot run a case reports the error in its row) [auto];
                           Winograd is timed with its filter packed before timing (as the
                           anchor engines pack weights at load): `winograd(packed)`
  --layout nchw|nhwc       activation layout (filters: OIHW / OHWI) [nchw]
  --min-time SECONDS       time each case at least this long after warm-up [2]
  --json PATH              write machine and results as JSON: {\"machine\": {cpu, isa,
                           threads, peak_gflops, copy_gbps}, \"results\": [{case, op, layout,
                           algo, isa, threads, median_ms, min_ms, gflops, gbps,
                           peak_fraction, max_rel_err, err_bound, anchor_engine, anchor_ms,
                           speedup, error}]}, null where not applicable
  --markdown PATH          write the results table as Markdown
  --svg PATH               write a bar chart of the peak fraction per case
  --list                   list the cases of both suites and exit
  -h, --help               this text

OUTPUT:
  Machine limits first (peak FMA GFLOP/s and copy GB/s, per thread count), then one row
  per case: median and min ms per call; GFLOP/s = 2 x MACs / median (convolution) or
  GB/s = (input read + output written) / median (pooling); % peak = GFLOP/s over the
  measured FMA peak, or GB/s over the measured copy bandwidth; the fastest engine of
  shared/anchors.md at this thread count and our speed-up against it (above 1x: faster);
  max rel err = max |y - y_ref| / sum|w x| against simdconv::reference in f64 (every
  output, or 4096 sampled ones for large convolutions), held to gamma(terms + 2);
  Winograd runs to the bound simdconv documents for Winograd (magnitude 48^2 x
  sum_c max|w| max|x|, bound gamma(C_g + 32)).
  Progress goes to stderr. Exit status 1 if any case exceeds its error bound, 2 on bad
  arguments.
";

struct Config {
    suite: Option<String>,
    cases: Vec<Case>,
    threads: usize,
    isa: Option<Isa>,
    algos: Vec<Algorithm>,
    layout: Layout,
    min_time: Duration,
    json: Option<String>,
    markdown: Option<String>,
    svg: Option<String>,
}

enum Parsed {
    Run(Config),
    Help,
    List,
}

fn parse_args(args: &[String]) -> Result<Parsed, String> {
    let mut cfg = Config {
        suite: None,
        cases: Vec::new(),
        threads: 1,
        isa: None,
        algos: vec![Algorithm::Auto],
        layout: Layout::Nchw,
        min_time: Duration::from_secs(2),
        json: None,
        markdown: None,
        svg: None,
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        // Accept both `--key value` and `--key=value`.
        let (key, inline) = match arg.split_once('=') {
            Some((k, v)) if k.starts_with("--") => (k, Some(v.to_string())),
            _ => (arg.as_str(), None),
        };
        let mut value = || -> Result<String, String> {
            inline.clone().or_else(|| it.next().cloned()).ok_or_else(|| format!("{key} needs a value"))
        };
        match key {
            "-h" | "--help" => return Ok(Parsed::Help),
            "--list" => return Ok(Parsed::List),
            "--suite" => {
                let v = value()?;
                if cases::suite(&v).is_none() {
                    return Err(format!("--suite {v}: expected standard or quick"));
                }
                cfg.suite = Some(v);
            }
            "--case" => {
                let v = value()?;
                let c =
                    cases::find_case(&v).ok_or_else(|| format!("--case {v}: no such case (see --list)"))?;
                cfg.cases.push(c);
            }
            "--shape" => cfg.cases.push(shape::parse_shape(&value()?).map_err(|e| format!("--shape {e}"))?),
            "--threads" => {
                let v = value()?;
                cfg.threads = v
                    .parse::<usize>()
                    .ok()
                    .filter(|&t| t > 0)
                    .ok_or_else(|| format!("--threads {v}: expected a positive integer"))?;
            }
            "--isa" => {
                let v = value()?;
                cfg.isa =
                    if v.eq_ignore_ascii_case("auto") {
                        None
                    } else {
                        Some(Isa::from_name(&v).ok_or_else(|| {
                            format!("--isa {v}: expected auto, scalar, avx2, avx512 or neon")
                        })?)
                    };
            }
            "--algo" => {
                let v = value()?;
                cfg.algos = if v.eq_ignore_ascii_case("all") {
                    std::iter::once(Algorithm::Auto).chain(Algorithm::NAMED).collect()
                } else {
                    vec![Algorithm::from_name(&v).ok_or_else(|| {
                        format!("--algo {v}: expected auto, direct, im2col, pointwise, depthwise, winograd or all")
                    })?]
                };
            }
            "--layout" => {
                let v = value()?;
                cfg.layout = match v.to_ascii_lowercase().as_str() {
                    "nchw" => Layout::Nchw,
                    "nhwc" => Layout::Nhwc,
                    _ => return Err(format!("--layout {v}: expected nchw or nhwc")),
                };
            }
            "--min-time" => {
                let v = value()?;
                let s = v
                    .parse::<f64>()
                    .ok()
                    .filter(|s| s.is_finite() && *s >= 0.0 && *s < 1e6)
                    .ok_or_else(|| format!("--min-time {v}: expected seconds, e.g. 0.5"))?;
                cfg.min_time = Duration::from_secs_f64(s);
            }
            "--json" => cfg.json = Some(value()?),
            "--markdown" => cfg.markdown = Some(value()?),
            "--svg" => cfg.svg = Some(value()?),
            other => return Err(format!("unknown argument {other:?} (see --help)")),
        }
    }
    Ok(Parsed::Run(cfg))
}

fn selected_cases(cfg: &Config) -> Vec<Case> {
    let explicit = !cfg.cases.is_empty();
    let mut out = match (&cfg.suite, explicit) {
        (Some(s), _) => cases::suite(s).unwrap_or_default(),
        (None, true) => Vec::new(),
        (None, false) => cases::standard_suite(),
    };
    out.extend(cfg.cases.iter().cloned());
    out
}

fn list_per_thread(v: &[(usize, f64)], unit: &str) -> String {
    v.iter()
        .map(|(t, g)| format!("{t} thread{} {g:.1} {unit}", if *t == 1 { "" } else { "s" }))
        .collect::<Vec<_>>()
        .join(", ")
}

fn write_file(path: &str, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("cannot write {path}: {e}"))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cfg = match parse_args(&args) {
        Ok(Parsed::Run(c)) => c,
        Ok(Parsed::Help) => {
            print!("{USAGE}\n{}", shape::GRAMMAR);
            return ExitCode::SUCCESS;
        }
        Ok(Parsed::List) => {
            for (suite, list) in [("standard", cases::standard_suite()), ("quick", cases::quick_suite())] {
                for c in list {
                    println!("{suite:<9} {:<20} {}", c.name, c.op.name());
                }
            }
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("convbench: {e}");
            return ExitCode::from(2);
        }
    };
    match bench(&cfg) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("convbench: {e}");
            ExitCode::from(2)
        }
    }
}

fn bench(cfg: &Config) -> Result<ExitCode, String> {
    // The instruction set: cap the whole process, so every call (and every helper simdconv
    // dispatches internally) stays at or below it.
    let exec = match cfg.isa {
        Some(isa) => {
            if !isa.is_supported() {
                return Err(format!("--isa {isa}: this machine cannot run it (best: {})", Isa::detect()));
            }
            simdconv::set_max_isa(Some(isa));
            Exec::new().with_isa(isa).map_err(|e| e.to_string())?
        }
        None => Exec::new(),
    };
    if cfg.threads > 1 && std::env::var_os("RAYON_NUM_THREADS").is_none() {
        // rayon's global pool is built on first use: size it to the requested threads.
        std::env::set_var("RAYON_NUM_THREADS", cfg.threads.to_string());
    }
    let exec = exec
        .with_threads(cfg.threads)
        .map_err(|e| format!("--threads {}: {e} (build with `--features rayon`)", cfg.threads))?;
    let isa = exec.isa();
    let cases = selected_cases(cfg);
    if cases.is_empty() {
        return Err("no cases selected".into());
    }

    let avail = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut counts: Vec<usize> = (1..=avail.min(8)).collect();
    counts.push(cfg.threads);
    counts.sort_unstable();
    counts.dedup();
    eprintln!("convbench: measuring peak FMA ({isa}) and copy bandwidth at {counts:?} thread(s)...");
    let mut limits = machine::measure(isa, &counts);
    let cpu = machine::cpu_name();
    let mut m = Machine {
        cpu: cpu.clone(),
        isa: isa.name().to_string(),
        threads: cfg.threads,
        peak_gflops: limits.peak_at(cfg.threads).unwrap_or(f64::NAN),
        copy_gbps: limits.copy_at(cfg.threads).unwrap_or(f64::NAN),
    };
    println!(
        "# cpu: {cpu} | kernels: isa {isa}, {} thread(s), {} layout | gemm crate: {}",
        cfg.threads,
        layout_str(cfg.layout),
        run::gemm_isa()
    );
    println!("# peak FMA ({isa}), before the cases: {}", list_per_thread(&limits.peak_gflops, "GFLOP/s"));
    println!(
        "# copy bandwidth (2 x {} MiB buffers, bytes read + written), before the cases: {}",
        limits.copy_buffer_bytes >> 20,
        list_per_thread(&limits.copy_gbps, "GB/s")
    );
    let load = machine::load_average()
        .map_or_else(|| "unknown".to_string(), |l| format!("{:.2} {:.2} {:.2}", l[0], l[1], l[2]));
    println!("# load average before the run (1/5/15 min): {load}");
    println!("# competitors: {}", anchors::SOURCE);
    println!();

    let settings = Settings { min_time: cfg.min_time, ..Settings::default() };
    let mut rows: Vec<Row> = Vec::new();
    let jobs: Vec<(&Case, Algorithm)> = cases
        .iter()
        .flat_map(|c| {
            let algos: Vec<Algorithm> = match c.op {
                Op::Conv(_) => cfg.algos.clone(),
                // Backward cases always run `BackwardAlgorithm::Auto`.
                Op::Pool(_) | Op::ConvBackwardData(_) | Op::ConvBackwardFilter(_) => vec![Algorithm::Auto],
            };
            algos.into_iter().map(move |a| (c, a))
        })
        .collect();
    for (i, (case, algo)) in jobs.iter().enumerate() {
        let algo_name = if case.op.is_backward() { run::BACKWARD_ALGORITHM.name() } else { algo.name() };
        eprint!("[{}/{}] {} ({}) ... ", i + 1, jobs.len(), case.name, algo_name);
        let row = measure_case(case, exec, cfg.layout, *algo, &settings, Some(&limits));
        match (&row.error, row.median_ms) {
            (Some(e), _) => eprintln!("error: {e}"),
            (None, Some(ms)) => {
                eprintln!("{} ms{}", report::sig(ms), if row.over_bound { " (ERROR OVER BOUND)" } else { "" })
            }
            (None, None) => eprintln!("not measured"),
        }
        rows.push(row);
    }

    // Measure the limits again and keep the better of the two, so that one busy moment
    // of a shared machine does not understate the peak.
    eprintln!("convbench: measuring the limits again...");
    limits.keep_best(&machine::measure(isa, &counts));
    m.peak_gflops = limits.peak_at(cfg.threads).unwrap_or(f64::NAN);
    m.copy_gbps = limits.copy_at(cfg.threads).unwrap_or(f64::NAN);
    for r in &mut rows {
        r.peak_fraction = match (r.gflops, r.gbps) {
            (Some(g), _) => Some(g / m.peak_gflops),
            (None, Some(b)) => Some(b / m.copy_gbps),
            _ => None,
        };
    }
    println!(
        "# limits used for % peak (best of the measurements before and after the cases): \
         peak FMA {}; copy {}",
        list_per_thread(&limits.peak_gflops, "GFLOP/s"),
        list_per_thread(&limits.copy_gbps, "GB/s")
    );
    report::fill_fwd_ratios(&mut rows);
    println!();
    print!("{}", report::text_table(&rows));
    let starred = rows.iter().any(|r| r.algo.ends_with('*'));
    if starred {
        println!("{}", run::GEMM_NOTE);
    }
    if let Some(p) = &cfg.json {
        write_file(p, &report::json_report(&m, &rows))?;
    }
    if let Some(p) = &cfg.markdown {
        let head = format!(
            "CPU: {} | ISA: {isa} (gemm crate: {}) | threads: {} | layout: {} | peak FMA {:.1} GFLOP/s | \
             copy {:.1} GB/s | load average at start {load}\n\n",
            cpu,
            run::gemm_isa(),
            cfg.threads,
            layout_str(cfg.layout),
            m.peak_gflops,
            m.copy_gbps
        );
        let note = if starred { format!("\n{}\n", run::GEMM_NOTE) } else { String::new() };
        write_file(p, &(head + &report::markdown_table(&rows) + &note))?;
    }
    if let Some(p) = &cfg.svg {
        write_file(p, &report::svg_chart(&m, &rows))?;
    }
    let over = rows.iter().filter(|r| r.over_bound).count();
    let failed = rows.iter().filter(|r| r.error.is_some()).count();
    if failed > 0 {
        eprintln!("convbench: {failed} case(s) did not run (see their rows)");
    }
    if over > 0 {
        eprintln!("convbench: {over} case(s) exceeded their error bound");
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

fn layout_str(l: Layout) -> &'static str {
    run::layout_name(l)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    fn cfg(s: &str) -> Config {
        match parse_args(&args(s)) {
            Ok(Parsed::Run(c)) => c,
            Ok(_) => panic!("{s}: not a run"),
            Err(e) => panic!("{s}: {e}"),
        }
    }

    #[test]
    fn defaults_run_the_standard_suite() {
        let c = cfg("");
        assert_eq!(selected_cases(&c).len(), cases::standard_suite().len());
        assert_eq!((c.threads, c.isa, c.layout), (1, None, Layout::Nchw));
        assert_eq!(c.algos, vec![Algorithm::Auto]);
        assert_eq!(c.min_time, Duration::from_secs(2));
    }

    #[test]
    fn options_parse() {
        let c = cfg("--suite quick --case vgg_conv5_2 --shape pool:max,c=4,h=8,w=8,f=2 --threads=2 \
                     --isa scalar --algo all --layout nhwc --min-time 0.25 --json a.json --markdown b.md --svg c.svg");
        let names: Vec<String> = selected_cases(&c).into_iter().map(|c| c.name).collect();
        assert_eq!(names.len(), cases::quick_suite().len() + 2);
        assert_eq!(names[names.len() - 2], "vgg_conv5_2");
        assert_eq!(names[names.len() - 1], "pool:max,c=4,h=8,w=8,f=2");
        assert_eq!((c.threads, c.isa, c.layout), (2, Some(Isa::Scalar), Layout::Nhwc));
        assert_eq!(c.algos.len(), 1 + Algorithm::NAMED.len());
        assert_eq!(c.min_time, Duration::from_millis(250));
        assert_eq!(
            (c.json.as_deref(), c.markdown.as_deref(), c.svg.as_deref()),
            (Some("a.json"), Some("b.md"), Some("c.svg"))
        );
        // Only the named cases when no suite is given.
        assert_eq!(selected_cases(&cfg("--case googlenet_1x1")).len(), 1);
        assert_eq!(cfg("--algo im2col").algos, vec![Algorithm::Im2colGemm]);
        assert_eq!(cfg("--algo winograd").algos, vec![Algorithm::Winograd]);
        assert!(matches!(parse_args(&args("--help")), Ok(Parsed::Help)));
    }

    #[test]
    fn bad_arguments_are_reported() {
        for (a, want) in [
            ("--suite big", "standard or quick"),
            ("--case nope", "no such case"),
            ("--shape conv:c=1", "--shape"),
            ("--threads 0", "positive integer"),
            ("--isa sse", "expected auto"),
            ("--algo fft", "expected auto"),
            ("--layout chwn", "nchw or nhwc"),
            ("--min-time -1", "seconds"),
            ("--json", "needs a value"),
            ("--frobnicate", "unknown argument"),
        ] {
            match parse_args(&args(a)) {
                Err(e) => assert!(e.contains(want), "{a}: {e}"),
                Ok(_) => panic!("{a} was accepted"),
            }
        }
    }
}

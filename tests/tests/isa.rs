//! Instruction-set selection: the cap works, requested paths really run, and the
//! element-wise kernels agree with the reference on every available path.

use proptest::prelude::*;
use simdconv::{dispatch_count, Exec, Isa};
use simdconv_tests::{isas, requested_isa, setup};

#[test]
fn requested_isa_is_really_used() {
    setup();
    let exec = Exec::new();
    if let Some(want) = requested_isa() {
        assert_eq!(
            exec.isa(),
            want,
            "SIMDCONV_MAX_ISA asked for {want} but Exec::new() picked {}",
            exec.isa()
        );
    }
    let before = dispatch_count(exec.isa());
    let mut v = vec![-1.0f32; 100];
    simdconv::relu_in_place(&exec, &mut v);
    assert!(dispatch_count(exec.isa()) > before, "no kernel ran on {}", exec.isa());
    assert!(v.iter().all(|&x| x == 0.0));
}

#[test]
fn unavailable_isa_is_an_error() {
    setup();
    for isa in Isa::ALL {
        let r = Exec::new().with_isa(isa);
        assert_eq!(r.is_ok(), isa.is_available(), "{isa}");
        if let Err(e) = r {
            assert_eq!(e, simdconv::Error::IsaUnavailable { requested: isa, available: Isa::best() });
        }
    }
    assert!(Exec::new().with_threads(0).is_err());
}

#[test]
fn this_machine_runs_what_it_claims() {
    setup();
    #[cfg(target_arch = "x86_64")]
    {
        assert!(!Isa::Neon.is_supported());
        assert_eq!(
            Isa::Avx2.is_supported(),
            std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        );
        assert_eq!(
            Isa::Avx512.is_supported(),
            std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("avx512vl")
        );
    }
    #[cfg(target_arch = "aarch64")]
    assert!(Isa::Neon.is_supported());
}

fn values() -> impl Strategy<Value = Vec<f32>> {
    prop::collection::vec(
        prop_oneof![
            8 => -10.0f32..10.0,
            1 => Just(0.0f32),
            1 => Just(-0.0f32),
            1 => Just(f32::NAN),
            1 => Just(f32::INFINITY),
            1 => Just(f32::NEG_INFINITY),
        ],
        0..80,
    )
}

proptest! {
    #[test]
    fn relu_matches_reference(x in values()) {
        for isa in isas() {
            let exec = Exec::new().with_isa(isa).unwrap();
            let mut want = vec![0.0f32; x.len()];
            simdconv::reference::relu(&x, &mut want).unwrap();
            let mut got = vec![0.0f32; x.len()];
            simdconv::relu(&exec, &x, &mut got).unwrap();
            for (a, b) in got.iter().zip(&want) {
                prop_assert!(a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()) || (*a == 0.0 && *b == 0.0), "{isa}: {a} vs {b}");
            }
            let dy: Vec<f32> = (0..x.len()).map(|i| i as f32).collect();
            let mut dwant = vec![0.0f32; x.len()];
            simdconv::reference::relu_backward(&x, &dy, &mut dwant).unwrap();
            let mut dgot = vec![1.0f32; x.len()];
            simdconv::relu_backward(&exec, &x, &dy, &mut dgot).unwrap();
            prop_assert_eq!(&dgot, &dwant);
        }
    }
}

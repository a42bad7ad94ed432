//! Vectorised elementwise math kernels over `f64` slices.
//!
//! Every kernel is written once as a branch-free scalar function (`*_one`) so that LLVM can vectorise the
//! surrounding loop: both sides of each range reduction are computed and the right one is selected per lane.
//! Each kernel is instantiated twice: an AVX2+FMA build chosen at run time, and a baseline build.
//!
//! Accuracy target: at most 2 ulp from Rust's `f64` methods (the platform libm) over the whole domain,
//! with the same special values (signed zeros, infinities, NaN).

#[cfg(target_arch = "x86_64")]
use std::sync::OnceLock;

/// Whether the baseline instance may use `mul_add`: only where it compiles to one instruction, since
/// otherwise it becomes a (slow) libm call.
const BASE_FMA: bool = cfg!(any(target_feature = "fma", target_arch = "aarch64"));

const SIGN: u64 = 0x8000_0000_0000_0000;
// pi/2 and pi split into a double plus the rounding remainder, for results accurate past 53 bits.
const PIO2_HI: f64 = std::f64::consts::FRAC_PI_2;
const PIO2_LO: f64 = 6.123_233_995_736_766e-17;
const PI_HI: f64 = std::f64::consts::PI;
const PI_LO: f64 = 1.224_646_799_147_353_2e-16;

/// `a * b + c`, fused only in instances where FMA is a single instruction.
#[inline(always)]
fn fma<const HW: bool>(a: f64, b: f64, c: f64) -> f64 {
    if HW { a.mul_add(b, c) } else { a * b + c }
}

/// `z - s * s` with (nearly) no rounding error, for `s ≈ sqrt(z)`.
#[inline(always)]
fn sqrt_residual<const HW: bool>(s: f64, z: f64) -> f64 {
    if HW {
        (-s).mul_add(s, z)
    } else {
        // Dekker: split s into 26 + 27 bits so the partial products are exact; the residual only needs a
        // few correct bits, so the small rounding in `sl * sl` does not matter.
        let sh = f64::from_bits(s.to_bits() & 0xFFFF_FFFF_F800_0000);
        let sl = s - sh;
        ((z - sh * sh) - 2.0 * sh * sl) - sl * sl
    }
}

// asin(r) = r + r * z * R(z) with z = r^2, 0 <= z <= 1/4: minimax fit of R for relative error
// (fit error 7.5e-17, 1.1e-16 after rounding the coefficients).
const ASIN_R: [f64; 13] = [
    0.16666666666666669,
    0.07499999999998336,
    0.04464285714654185,
    0.030381944124503006,
    0.022372173486939522,
    0.017352380249267167,
    0.013971393827097188,
    0.01147745211827373,
    0.010333787995341305,
    0.005411426476937927,
    0.017523542083061325,
    -0.015039399201478886,
    0.028883225291311976,
];

/// `R(z)`, so that `asin(r) = r + r * z * asin_r(z)` for `|r| <= 1/2`, `z = r * r`. Estrin's scheme: the
/// loop is latency-bound, and this shortens the dependency chain from 12 FMAs to 4 steps.
#[inline(always)]
fn asin_r<const HW: bool>(z: f64) -> f64 {
    let c = &ASIN_R;
    let z2 = z * z;
    let z4 = z2 * z2;
    let z8 = z4 * z4;
    let a0 = fma::<HW>(c[1], z, c[0]);
    let a1 = fma::<HW>(c[3], z, c[2]);
    let a2 = fma::<HW>(c[5], z, c[4]);
    let a3 = fma::<HW>(c[7], z, c[6]);
    let a4 = fma::<HW>(c[9], z, c[8]);
    let a5 = fma::<HW>(c[11], z, c[10]);
    let b0 = fma::<HW>(a1, z2, a0);
    let b1 = fma::<HW>(a3, z2, a2);
    let b2 = fma::<HW>(a5, z2, a4);
    let d0 = fma::<HW>(b1, z4, b0);
    let d1 = fma::<HW>(c[12], z4, b2);
    fma::<HW>(d1, z8, d0)
}

/// Shared core of asin and acos: `a_hi + a_lo + b * asin(r)` where `r = r_hi + r_lo`, `z = r^2` exact,
/// `b` a power of two, and `br_lo = b * r_lo` (`r_hi + r_lo` accurate well past 53 bits).
/// Needs `|a_hi| >= |b * r|` or `a_hi == 0`.
#[inline(always)]
fn asin_combine<const HW: bool>(a_hi: f64, a_lo: f64, b: f64, r_hi: f64, br_lo: f64, z: f64) -> f64 {
    let rz = asin_r::<HW>(z);
    let q = b * r_hi; // exact
    // Fast2Sum: t + e == a_hi + q exactly.
    let t = a_hi + q;
    let e = (a_hi - t) + q;
    t + fma::<HW>(q * z, rz, (e + a_lo) + br_lo)
}

/// Range reduction shared by asin and acos for `ax = |x|`: returns `(big, z, s_hi, s_lo)` where `big` is
/// `ax > 1/2`, `z` is `ax * ax` if not big and `(1 - ax) / 2` (exact) if big, and `s_hi + s_lo / 2 =
/// sqrt(z)` (only used when big; NaN for `ax > 1`). The low part comes doubled because both users need
/// `2 * s_lo`.
#[inline(always)]
fn asin_reduce<const HW: bool>(ax: f64) -> (bool, f64, f64, f64) {
    let big = ax > 0.5;
    // One multiply-add for both cases, selecting its operands rather than two results: written as a
    // select of results, LLVM pushes the select below the polynomial and evaluates it twice.
    // Exact for 1/2 <= ax <= 1 (Sterbenz); a single rounding of ax^2 otherwise.
    let (m, c) = if big { (-0.5, 0.5) } else { (ax, 0.0) };
    let z = fma::<HW>(m, ax, c);
    let s = z.sqrt();
    // 1 / sqrt(z) to ~5 bits from the exponent-halving bit trick: enough, because it only scales the tiny
    // residual (Newton: sqrt(z) = s + (z - s^2) / 2s). Avoids a second divide/sqrt per element.
    let rsqrt = f64::from_bits(0x5FE6_EB50_C7B5_37A9_u64.wrapping_sub(z.to_bits() >> 1));
    let s_lo2 = sqrt_residual::<HW>(s, z) * rsqrt;
    (big, z, s, s_lo2)
}

#[inline(always)]
fn asin_one<const HW: bool>(x: f64) -> f64 {
    let ax = x.abs();
    let (big, z, s, s_lo2) = asin_reduce::<HW>(ax);
    // |x| <= 1/2: asin(ax) directly. |x| > 1/2: asin(ax) = pi/2 - 2 asin(sqrt((1 - ax) / 2)).
    let (a_hi, a_lo, b, r_hi, br_lo) = if big { (PIO2_HI, PIO2_LO, -2.0, s, -s_lo2) } else { (0.0, 0.0, 1.0, ax, 0.0) };
    let res = asin_combine::<HW>(a_hi, a_lo, b, r_hi, br_lo, z);
    // asin is odd; the magnitude path never produces -0, so or-ing the sign back keeps asin(-0) = -0.
    f64::from_bits(res.to_bits() | (x.to_bits() & SIGN))
}

#[inline(always)]
fn acos_one<const HW: bool>(x: f64) -> f64 {
    let (big, z, s, s_lo2) = asin_reduce::<HW>(x.abs());
    let neg = x < 0.0;
    // |x| <= 1/2: pi/2 - asin(x). x > 1/2: 2 asin(s). x < -1/2: pi - 2 asin(s); s = sqrt((1 - |x|) / 2).
    let (a_hi, a_lo, b) =
        if big { if neg { (PI_HI, PI_LO, -2.0) } else { (0.0, 0.0, 2.0) } } else { (PIO2_HI, PIO2_LO, -1.0) };
    // b * s_lo: b has the sign of x when big.
    let br_lo = if big { f64::from_bits(s_lo2.to_bits() ^ (x.to_bits() & SIGN)) } else { 0.0 };
    let r_hi = if big { s } else { x };
    asin_combine::<HW>(a_hi, a_lo, b, r_hi, br_lo, z)
}

/// Applies `f` elementwise in fixed-width chunks so LLVM emits full-width vector code for the body.
#[inline(always)]
fn map(name: &str, x: &[f64], out: &mut [f64], f: impl Fn(f64) -> f64) {
    assert!(x.len() == out.len(), "vmath::{name}: input has {} elements but output has {}", x.len(), out.len());
    let mut xs = x.chunks_exact(8);
    let mut os = out.chunks_exact_mut(8);
    for (xc, oc) in (&mut xs).zip(&mut os) {
        for (o, &v) in oc.iter_mut().zip(xc) {
            *o = f(v);
        }
    }
    for (o, &v) in os.into_remainder().iter_mut().zip(xs.remainder()) {
        *o = f(v);
    }
}

#[cfg(target_arch = "x86_64")]
fn has_avx2_fma() -> bool {
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
}

/// Defines, for each kernel, the public dispatcher plus its baseline and AVX2+FMA instances.
macro_rules! kernels {
    ($($(#[$doc:meta])* $name:ident => $one:ident;)*) => {
        /// Baseline instances (no run-time CPU features).
        pub(crate) mod baseline {
            $(
                pub(crate) fn $name(x: &[f64], out: &mut [f64]) {
                    super::map(stringify!($name), x, out, super::$one::<{ super::BASE_FMA }>);
                }
            )*
        }

        /// AVX2+FMA instances; callers must check the CPU supports both.
        #[cfg(target_arch = "x86_64")]
        pub(crate) mod avx2 {
            $(
                #[target_feature(enable = "avx2,fma")]
                pub(crate) unsafe fn $name(x: &[f64], out: &mut [f64]) {
                    super::map(stringify!($name), x, out, super::$one::<true>);
                }
            )*
        }

        $(
            $(#[$doc])*
            /// Panics if `x` and `out` differ in length.
            pub(crate) fn $name(x: &[f64], out: &mut [f64]) {
                #[cfg(target_arch = "x86_64")]
                if has_avx2_fma() {
                    // SAFETY: the CPU supports AVX2 and FMA (checked at run time just above).
                    unsafe { avx2::$name(x, out) };
                    return;
                }
                baseline::$name(x, out);
            }
        )*
    };
}

kernels! {
    /// `out[i] = x[i].asin()`, within 2 ulp.
    asin => asin_one;
    /// `out[i] = x[i].acos()`, within 2 ulp.
    acos => acos_one;
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    type Kernel = fn(&[f64], &mut [f64]);

    /// The instances available on this machine, by name (the dispatcher is one of the others, so it is
    /// only checked on the special values).
    fn instances(base: Kernel, avx: Option<Kernel>) -> Vec<(&'static str, Kernel)> {
        let mut v: Vec<(&'static str, Kernel)> = vec![("baseline", base)];
        if let Some(a) = avx {
            v.push(("avx2", a));
        }
        v
    }

    macro_rules! instances_of {
        ($name:ident) => {{
            #[cfg(target_arch = "x86_64")]
            let avx: Option<Kernel> = if has_avx2_fma() {
                // SAFETY: the CPU supports AVX2 and FMA.
                Some(|x: &[f64], o: &mut [f64]| unsafe { avx2::$name(x, o) })
            } else {
                None
            };
            #[cfg(not(target_arch = "x86_64"))]
            let avx: Option<Kernel> = None;
            instances(baseline::$name, avx)
        }};
    }

    /// Maps doubles onto integers so that adjacent doubles differ by one (both zeros map to 0).
    fn ordered(x: f64) -> i64 {
        let b = x.to_bits() as i64;
        if b < 0 { -(b & i64::MAX) } else { b }
    }

    fn ulp_diff(a: f64, b: f64) -> u64 {
        if a.is_nan() || b.is_nan() {
            return if a.is_nan() && b.is_nan() { 0 } else { u64::MAX };
        }
        (i128::from(ordered(a)) - i128::from(ordered(b))).unsigned_abs().min(u128::from(u64::MAX)) as u64
    }

    struct SplitMix(u64);
    impl SplitMix {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }
        fn unit(&mut self) -> f64 {
            (self.next() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
        }
    }

    /// Points per sampling strategy: each kernel gets 8.25 times this (17 million), about 4 s per kernel
    /// even unoptimised. Override with `VMATH_TEST_POINTS` for a longer run.
    fn points() -> usize {
        std::env::var("VMATH_TEST_POINTS").ok().and_then(|s| s.parse().ok()).unwrap_or(1 << 21)
    }

    /// Compares every instance of a kernel against `reference` on `inputs`; returns the max ulp error
    /// and the worst input.
    fn max_ulp(instances: &[(&'static str, Kernel)], reference: fn(f64) -> f64, inputs: &[f64]) -> (u64, f64) {
        let mut out = vec![0.0; inputs.len()];
        let mut worst = (0, 0.0);
        for (name, k) in instances {
            k(inputs, &mut out);
            for (&x, &y) in inputs.iter().zip(&out) {
                let want = reference(x);
                let d = ulp_diff(y, want);
                if d > worst.0 {
                    worst = (d, x);
                }
                if d > 2 {
                    panic!("{name}: f({x:e}) [{:#x}] = {y:e}, want {want:e} ({d} ulp)", x.to_bits());
                }
            }
        }
        worst
    }

    /// Runs `gen` in batches of 4096 for `n` points, tracking the worst error.
    fn sweep(
        label: &str,
        instances: &[(&'static str, Kernel)],
        reference: fn(f64) -> f64,
        n: usize,
        mut generate: impl FnMut(&mut SplitMix) -> f64,
    ) -> u64 {
        let mut rng = SplitMix(0x5EED_0000 ^ label.len() as u64);
        let mut worst = (0, 0.0);
        let mut buf = vec![0.0; 4096];
        let mut done = 0;
        while done < n {
            let m = buf.len().min(n - done);
            for v in &mut buf[..m] {
                *v = generate(&mut rng);
            }
            let w = max_ulp(instances, reference, &buf[..m]);
            if w.0 > worst.0 {
                worst = w;
            }
            done += m;
        }
        println!("{label}: max {} ulp over {n} points (at x = {:e})", worst.0, worst.1);
        worst.0
    }

    /// Values with uniformly random bit patterns, magnitude in `[0, max_bits]`, random sign.
    fn bit_uniform(rng: &mut SplitMix, max_bits: u64) -> f64 {
        let r = rng.next();
        f64::from_bits(((r >> 1) % (max_bits + 1)) | (r << 63))
    }

    fn check_special(instances: &[(&'static str, Kernel)], dispatch: Kernel, reference: fn(f64) -> f64, extra: &[f64]) {
        let mut xs = vec![
            0.0,
            -0.0,
            1.0,
            -1.0,
            0.5,
            -0.5,
            f64::NAN,
            -f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::MIN_POSITIVE,
            -f64::MIN_POSITIVE,
            f64::from_bits(1),
            f64::from_bits(1 | SIGN),
            f64::from_bits(0x000F_FFFF_FFFF_FFFF),
            f64::MAX,
            f64::MIN,
            f64::EPSILON,
            1.0 - f64::EPSILON / 2.0,
            -(1.0 - f64::EPSILON / 2.0),
            1.0 + f64::EPSILON,
            -1.0 - f64::EPSILON,
            0.5 + f64::EPSILON / 2.0,
            0.5 - f64::EPSILON / 4.0,
            -0.5 - f64::EPSILON / 2.0,
            1e-300,
            1e-160,
            1e-8,
            2.0,
            -2.0,
        ];
        xs.extend_from_slice(extra);
        // Odd lengths exercise the remainder path too.
        let all: Vec<(&'static str, Kernel)> = instances.iter().copied().chain([("dispatch", dispatch)]).collect();
        for len in [1, 3, 7, 8, 9, 17, xs.len()] {
            for (name, k) in &all {
                let mut out = vec![0.0; len];
                k(&xs[..len], &mut out);
                for (&x, &y) in xs[..len].iter().zip(&out) {
                    let want = reference(x);
                    if want.is_nan() {
                        assert!(y.is_nan(), "{name}: f({x:e}) = {y:e}, want NaN");
                    } else if want == 0.0 || want.is_infinite() {
                        assert_eq!(y.to_bits(), want.to_bits(), "{name}: f({x:e}) = {y:e}, want {want:e}");
                    } else {
                        assert!(ulp_diff(y, want) <= 2, "{name}: f({x:e}) = {y:e}, want {want:e}");
                    }
                }
            }
        }
    }

    fn check_inverse_trig(
        instances: &[(&'static str, Kernel)],
        dispatch: Kernel,
        reference: fn(f64) -> f64,
        label: &str,
    ) {
        check_special(instances, dispatch, reference, &[]);
        let n = points();
        let mut worst = 0;
        // Uniform in value over the domain.
        worst =
            worst.max(sweep(&format!("{label} uniform [-1,1]"), instances, reference, 3 * n, |r| 2.0 * r.unit() - 1.0));
        // Uniform in bit pattern: every exponent down to subnormals equally often.
        worst = worst.max(sweep(&format!("{label} bit-uniform |x|<=1"), instances, reference, 3 * n, |r| {
            bit_uniform(r, 1.0f64.to_bits())
        }));
        // Close to +-1, where the sqrt reduction matters: 1 - d with d bit-uniform in [2^-60, 1/2].
        worst = worst.max(sweep(&format!("{label} near +-1"), instances, reference, n, |r| {
            let d = f64::from_bits(0x3C30_0000_0000_0000 + r.next() % (0x3FE0_0000_0000_0000 - 0x3C30_0000_0000_0000));
            if r.next() & 1 == 0 { 1.0 - d } else { d - 1.0 }
        }));
        // Around the switch at |x| = 1/2.
        worst = worst.max(sweep(&format!("{label} near +-1/2"), instances, reference, n, |r| {
            let x = 0.5 + (r.unit() - 0.5) * 1e-3;
            if r.next() & 1 == 0 { x } else { -x }
        }));
        // Outside the domain: NaN.
        sweep(&format!("{label} |x|>1"), instances, reference, n / 4, |r| {
            let b = 0x3FF0_0000_0000_0001 + r.next() % (0x7FF0_0000_0000_0000 - 0x3FF0_0000_0000_0000);
            f64::from_bits(b | (r.next() & SIGN))
        });
        println!("{label}: max {worst} ulp overall");
        assert!(worst <= 2);
    }

    #[test]
    fn asin_ulp() {
        check_inverse_trig(&instances_of!(asin), asin, f64::asin, "asin");
    }

    #[test]
    fn acos_ulp() {
        check_inverse_trig(&instances_of!(acos), acos, f64::acos, "acos");
    }

    #[test]
    fn signed_zero_asin() {
        for (name, k) in instances_of!(asin) {
            let mut out = [1.0; 2];
            k(&[0.0, -0.0], &mut out);
            assert_eq!(out[0].to_bits(), 0, "{name}");
            assert_eq!(out[1].to_bits(), SIGN, "{name}");
        }
    }

    #[test]
    #[should_panic(expected = "vmath::asin: input has 3 elements but output has 2")]
    fn length_mismatch_panics() {
        asin(&[0.0; 3], &mut [0.0; 2]);
    }
}

//! Vectorised elementwise math kernels over `f64` slices.
//!
//! Every kernel is written once as a branch-free scalar function (`*_one`) so that LLVM can vectorise the
//! surrounding loop: both sides of each range reduction are computed and the right one is selected per lane.
//! Each kernel is instantiated three times: AVX-512 and AVX2+FMA builds chosen at run time, and a baseline
//! build.
//!
//! Accuracy target: at most 2 ulp from Rust's `f64` methods (the platform libm) over the whole domain,
//! with the same special values (signed zeros, infinities, NaN).
//!
//! Written by hand, not taken from a library, because the libraries measured slower at this accuracy. On
//! the 2-core EPYC (Zen 3, AVX2) development machine, 4 096 uniform inputs in [0, 1) kept in L1, one core:
//!
//! | ns per element | asin | acos |
//! |---|---|---|
//! | these kernels (≤ 2 ulp) | 2.2–2.3 | 2.0–2.1 |
//! | SLEEF 3.5.1 `Sleef_asind4_u10avx2` / `acosd4_u10avx2` (1 ulp) | 3.4–3.6 | 3.9 |
//! | SLEEF 3.5.1 `u35` variants (3.5 ulp: too coarse here) | 1.6–1.7 | 1.8–2.0 |
//! | Rust's `f64::asin` / `acos` (glibc, scalar) | 8.1 | 8.7 |
//!
//! On a 2-core EPYC with AVX-512 (Zen 4), the fused kernel of the tutorial's example (two uniforms, asin,
//! acos, add, sum: `shoal bench array-elementwise`) takes 3.1 ns per element with the AVX-512 instances
//! and 5.0 ns with the AVX2 ones.
//!
//! The kernels map plain element loops: LLVM vectorises them with contiguous loads and stores. Walking
//! 8-element chunks instead made it vectorise across chunks with gathers and scatters on AVX-512, which
//! made acos 1.5 times slower than asin there.

#[cfg(target_arch = "x86_64")]
use std::sync::OnceLock;

/// Whether the baseline instance may use `mul_add`: only where it compiles to one instruction, since
/// otherwise it becomes a (slow) libm call.
const BASE_FMA: bool = cfg!(any(target_feature = "fma", target_arch = "aarch64"));

const SIGN: u64 = 0x8000_0000_0000_0000;
// pi/2 split into a double plus the rounding remainder, for results accurate past 53 bits.
const PIO2_HI: f64 = std::f64::consts::FRAC_PI_2;
const PIO2_LO: f64 = 6.123_233_995_736_766e-17;
const PI_HI: f64 = std::f64::consts::PI;

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

/// `R(z)`, so that `asin(r) = r + r * z * asin_r(z)` for `|r| <= 1/2`, `z = r * r`. Estrin's scheme
/// shortens the dependency chain from 12 FMAs to 4 steps; Horner measured 20% slower in the full kernel.
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
    // The small terms are summed before meeting e: shorter dependency chains after the square root.
    let tail = fma::<HW>(q * z, rz, a_lo + br_lo);
    t + (e + tail)
}

/// Range reduction shared by asin and acos for `ax = |x|`: returns `(big, z, s, s_lo2)` where `big` is
/// `ax > 1/2`, `z` is `ax * ax` if not big and `(1 - ax) / 2` (exact) if big, and `s + s_lo2 / 2 =
/// sqrt((1 - ax) / 2)` to well past 53 bits (only used when big; NaN for `ax > 1`). The low part comes
/// doubled because both users need `2 * s_lo`.
#[inline(always)]
fn asin_reduce<const HW: bool>(ax: f64) -> (bool, f64, f64, f64) {
    let big = ax > 0.5;
    // One multiply-add for both cases, selecting its operands rather than two results: written as a
    // select of results, LLVM pushes the select below the polynomial and evaluates it twice.
    // Exact for 1/2 <= ax <= 1 (Sterbenz); a single rounding of ax^2 otherwise.
    let (m, c) = if big { (-0.5, 0.5) } else { (ax, 0.0) };
    let z = fma::<HW>(m, ax, c);
    // The square root (the longest latency here) is only used when big, so it starts from (1 - ax) / 2
    // directly instead of waiting for the compare and select.
    let zb = fma::<HW>(-0.5, ax, 0.5);
    let s = zb.sqrt();
    // 1 / sqrt(zb) to ~5 bits from the exponent-halving bit trick: enough, because it only scales the tiny
    // residual (Newton: sqrt(zb) = s + (zb - s^2) / 2s). Avoids a second divide/sqrt per element; a full
    // Newton square root from this seed instead of vsqrtpd measured 40% slower.
    let rsqrt = f64::from_bits(0x5FE6_EB50_C7B5_37A9_u64.wrapping_sub(zb.to_bits() >> 1));
    let s_lo2 = sqrt_residual::<HW>(s, zb) * rsqrt;
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

/// acos needs none of asin's extra precision: its results never come from a cancellation near an ulp
/// boundary (`pi/2 - asin(x)` is at least 1 for `|x| <= 1/2`, and `2 asin(s)` is a plain scaling), so the
/// square root's rounding and a one-double pi are within the 2-ulp budget (the tests measure at most 1 ulp
/// from std). That saves the residual and the Fast2Sum of the shared core: about a quarter of the work.
#[inline(always)]
fn acos_one<const HW: bool>(x: f64) -> f64 {
    let ax = x.abs();
    let big = ax > 0.5;
    let (m, c) = if big { (-0.5, 0.5) } else { (ax, 0.0) };
    let z = fma::<HW>(m, ax, c);
    let s = fma::<HW>(-0.5, ax, 0.5).sqrt();
    // |x| <= 1/2: pi/2 - asin(x). x > 1/2: 2 asin(s). x < -1/2: pi - 2 asin(s); s = sqrt((1 - |x|) / 2).
    let r = if big { s } else { x };
    let asin_r = fma::<HW>(r * z, asin_r::<HW>(z), r);
    let (a, b) = if big { if x < 0.0 { (PI_HI, -2.0) } else { (0.0, 2.0) } } else { (PIO2_HI, -1.0) };
    fma::<HW>(b, asin_r, a)
}

// ---------------------------------------------------------------------------------------------------
// exp

/// 1.5 * 2^52: adding it rounds a double of magnitude < 2^51 to an integer, which then sits in the low
/// mantissa bits (two's complement), readable without an f64 -> i64 conversion (which AVX2 lacks).
const SHIFTER: f64 = 6_755_399_441_055_744.0;
const INV_LN2: f64 = std::f64::consts::LOG2_E;
// ln 2 = LN2_HI + LN2_LO (+ 1.2e-26). LN2_HI has 32 significant bits, so k * LN2_HI is exact for |k| < 2^21.
const LN2_HI: f64 = 0.693_147_180_369_123_8;
const LN2_LO: f64 = 1.908_214_929_270_587_7e-10;

// exp(r) = 1 + r + r^2 * Q(r) on |r| <= ln(2)/2: minimax fit of Q for relative error 2.3e-16 (after rounding).
const EXP_Q: [f64; 10] = [
    0.5000000000000001,
    0.16666666666666644,
    0.04166666666662431,
    0.008333333333356197,
    0.001388888891713839,
    0.0001984126978467201,
    2.480152139631764e-05,
    2.755735550195616e-06,
    2.762004666282492e-07,
    2.5068170468471557e-08,
];

#[inline(always)]
fn exp_one<const HW: bool>(x: f64) -> f64 {
    // Beyond these exp over/underflows anyway; clamping keeps k small enough for the scale trick below.
    // Written as comparisons so that NaN passes through.
    let x = if x > 710.0 { 710.0 } else { x };
    let x = if x < -746.0 { -746.0 } else { x };
    // x = k ln2 + r, |r| <= ln2 / 2.
    let ks = fma::<HW>(x, INV_LN2, SHIFTER);
    let kd = ks - SHIFTER;
    let r_hi = x - kd * LN2_HI; // exact: the product is exact and the difference small (Sterbenz)
    let r = fma::<HW>(-kd, LN2_LO, r_hi);
    let dr = fma::<HW>(-kd, LN2_LO, r_hi - r); // what rounding r lost
    let c = &EXP_Q;
    let z = r * r;
    let z2 = z * z;
    let z4 = z2 * z2;
    let q = fma::<HW>(
        fma::<HW>(fma::<HW>(c[7], r, c[6]), z, fma::<HW>(c[5], r, c[4])),
        z2,
        fma::<HW>(fma::<HW>(c[3], r, c[2]), z, fma::<HW>(c[1], r, c[0])),
    );
    let q = fma::<HW>(fma::<HW>(c[9], r, c[8]), z4, q);
    // 1 + r split exactly into t + e (Fast2Sum, |r| < 1); exp(r + dr) ~= exp(r) (1 + dr).
    let t = 1.0 + r;
    let e = (1.0 - t) + r;
    let p = t + fma::<HW>(z, q, fma::<HW>(dr, r, dr) + e);
    // Scale by 2^k as 2^k1 * 2^k2 with k1 = floor(k / 2): both factors stay normal over the whole clamped
    // range, p * 2^k1 is exact, and the last product rounds once, also into the subnormal range.
    let k = ks.to_bits().wrapping_sub(SHIFTER.to_bits()); // k, two's complement
    let h = k.wrapping_add(2048) >> 1; // k1 + 1024, computed on a positive number (k >= -1076)
    let s1 = f64::from_bits(h.wrapping_sub(1) << 52); // 2^(k1), biased exponent k1 + 1023
    let s2 = f64::from_bits(k.wrapping_sub(h).wrapping_add(2047) << 52); // 2^(k - k1)
    p * s1 * s2
}

// ---------------------------------------------------------------------------------------------------
// ln

/// Bits of sqrt(2) / 2: mantissas are reduced into [sqrt(2)/2, sqrt(2)).
const SQRT_HALF_BITS: u64 = 0x3FE6_A09E_667F_3BCD;
const MANTISSA: u64 = 0x000F_FFFF_FFFF_FFFF;

// ln(1 + f) = 2 atanh(s), s = f / (2 + f): 2 atanh(s) = 2s + s * z * T(z), z = s^2 <= 0.0295. Minimax
// fit of T for relative error 4.7e-16; the term is below 1% of the result, so this is ample.
const LN_T: [f64; 7] = [
    0.666666666666667,
    0.3999999999989856,
    0.28571428626385315,
    0.22222211070315867,
    0.18182893681593645,
    0.15331574010330853,
    0.14618234060436225,
];

#[inline(always)]
fn ln_one<const HW: bool>(x: f64) -> f64 {
    // Subnormals: scale into the normal range first.
    let sub = x < f64::MIN_POSITIVE;
    let (xs, bias) = if sub { (x * 18_014_398_509_481_984.0, 1023.0 + 54.0) } else { (x, 1023.0) };
    // x = 2^k m with m in [sqrt(2)/2, sqrt(2)): offsetting the bits moves the binade boundary to sqrt(2).
    let ix = xs.to_bits().wrapping_add(0x3FF0_0000_0000_0000 - SQRT_HALF_BITS);
    let kd = f64::from_bits(0x4330_0000_0000_0000 | (ix >> 52)) - (4_503_599_627_370_496.0 + bias);
    let m = f64::from_bits((ix & MANTISSA).wrapping_add(SQRT_HALF_BITS));
    let f = m - 1.0; // exact (Sterbenz)
    // ln(1 + f) = f - (hfsq - s (hfsq + R)) with hfsq = f^2 / 2, R = z T(z): s only enters the small
    // correction, so the rounding of the division hardly matters.
    let hfsq = 0.5 * f * f;
    let s = f / (2.0 + f);
    let z = s * s;
    let z2 = z * z;
    let c = &LN_T;
    let t = fma::<HW>(
        fma::<HW>(fma::<HW>(c[6], z, c[5]), z2, fma::<HW>(c[4], z, c[3])),
        z2 * z,
        fma::<HW>(fma::<HW>(c[2], z, c[1]), z, c[0]),
    );
    let r = z * t;
    let inner = fma::<HW>(s, hfsq + r, kd * LN2_LO);
    let res = fma::<HW>(kd, LN2_HI, -((hfsq - inner) - f));
    // ln(+-0) = -inf, ln(+inf) = +inf, ln(x < 0) = ln(-inf) = ln(NaN) = NaN.
    let special = if x == 0.0 {
        f64::NEG_INFINITY
    } else if x > 0.0 {
        f64::INFINITY
    } else {
        f64::NAN
    };
    if x > 0.0 && x < f64::INFINITY { res } else { special }
}

// ---------------------------------------------------------------------------------------------------
// sin, cos

// pi/2 = PIO2_1 + PIO2_2 + PIO2_3 (+ 1e-37). PIO2_1 and PIO2_2 have 31 and 32 significant bits, so their
// products with k < 2^21 are exact, with or without FMA.
const PIO2_1: f64 = 1.570_796_326_734_125_6;
const PIO2_2: f64 = 6.077_100_506_303_966e-11;
const PIO2_3: f64 = 2.022_266_248_795_950_6e-21;
/// Beyond this |x| the three-part reduction runs out of bits; such inputs (and inf) go to std.
const TRIG_FAST_LIMIT: f64 = 1_048_576.0;

// sin(r) = r + r^3 S(r^2), cos(r) = 1 - r^2/2 + r^4 C(r^2) on |r| <= pi/4: minimax fits for relative
// error 2.0e-16 and 5.6e-17 (the terms are at most 10% and 2% of the result).
const SIN_S: [f64; 6] = [
    -0.16666666666666666,
    0.008333333333330901,
    -0.0001984126983669136,
    2.7557316069766703e-06,
    -2.505112534891712e-08,
    1.5917680720567384e-10,
];
const COS_C: [f64; 6] = [
    0.041666666666666664,
    -0.0013888888888887372,
    2.4801587298730497e-05,
    -2.755731725431847e-07,
    2.0876142776686854e-09,
    -1.1382388786876327e-11,
];

/// Knuth's TwoSum: `s + e == a + b` exactly, for any magnitudes.
#[inline(always)]
fn two_sum(a: f64, b: f64) -> (f64, f64) {
    let s = a + b;
    let bb = s - a;
    (s, (a - (s - bb)) + (b - bb))
}

/// `r * r - z` exactly, for `z` = `r * r` rounded.
#[inline(always)]
fn square_error<const HW: bool>(r: f64, z: f64) -> f64 {
    -sqrt_residual::<HW>(r, z)
}

#[inline(always)]
fn poly6<const HW: bool>(c: &[f64; 6], z: f64, z2: f64) -> f64 {
    fma::<HW>(fma::<HW>(c[5], z, c[4]), z2 * z2, fma::<HW>(fma::<HW>(c[3], z, c[2]), z2, fma::<HW>(c[1], z, c[0])))
}

/// sin(x) (`COS == false`) or cos(x) for |x| <= TRIG_FAST_LIMIT; NaN stays NaN.
#[inline(always)]
fn sincos<const HW: bool, const COS: bool>(x: f64) -> f64 {
    // Work on |x|: cos is even, and sin odd, so its sign is put back below (which keeps sin(-0) = -0).
    let ax = x.abs();
    let sign = if COS { 0 } else { x.to_bits() & SIGN };
    // |x| = k pi/2 + r, |r| <= pi/4, carried as r + rl.
    let ks = fma::<HW>(ax, std::f64::consts::FRAC_2_PI, SHIFTER);
    let kd = ks - SHIFTER;
    let a = ax - kd * PIO2_1; // exact: exact product, then Sterbenz
    let (r0, e0) = two_sum(a, -(kd * PIO2_2));
    let (r, rl) = two_sum(r0, e0 - kd * PIO2_3);
    let z = r * r;
    let z2 = z * z;
    // sin(r + rl) = r + r^3 S + rl (1 - r^2/2).
    let sin_v = r + fma::<HW>(r * z, poly6::<HW>(&SIN_S, z, z2), fma::<HW>(rl, -0.5 * z, rl));
    // cos(r + rl) = 1 - r^2/2 + r^4 C - r rl, with 1 - r^2/2 carried exactly as t + e (+ the error of z).
    let hz = 0.5 * z;
    let t = 1.0 - hz;
    let e = (1.0 - t) - hz;
    let low = fma::<HW>(z2, poly6::<HW>(&COS_C, z, z2), e - fma::<HW>(r, rl, 0.5 * square_error::<HW>(r, z)));
    let cos_v = t + low;
    // Quadrant k mod 4 (cos(x) = sin(x + pi/2)): odd quadrants swap sin and cos, quadrants 2 and 3 negate.
    let q = ks.to_bits().wrapping_add(u64::from(COS));
    let v = if q & 1 == 0 { sin_v } else { cos_v };
    f64::from_bits(v.to_bits() ^ ((q & 2) << 62) ^ sign)
}

#[inline(always)]
fn sin_one<const HW: bool>(x: f64) -> f64 {
    sincos::<HW, false>(x)
}

#[inline(always)]
fn cos_one<const HW: bool>(x: f64) -> f64 {
    sincos::<HW, true>(x)
}

/// Inputs the vector sin/cos path cannot reduce accurately: huge and infinite. (NaN is handled.)
#[inline(always)]
fn trig_needs_std(x: f64) -> bool {
    x.abs() > TRIG_FAST_LIMIT
}

/// Applies `f` elementwise in fixed-width chunks so LLVM emits full-width vector code for the body.
#[inline(always)]
fn map(name: &str, x: &[f64], out: &mut [f64], f: impl Fn(f64) -> f64) {
    assert!(x.len() == out.len(), "vmath::{name}: input has {} elements but output has {}", x.len(), out.len());
    for (o, &v) in out.iter_mut().zip(x) {
        *o = f(v);
    }
}

/// Like [`map`], then recomputes the (rare) elements for which `slow_case` holds with `slow`. The check is
/// vectorised and branches once per chunk, so the common path stays branch-free.
#[inline(always)]
fn map_fixup(
    name: &str,
    x: &[f64],
    out: &mut [f64],
    f: impl Fn(f64) -> f64,
    slow_case: impl Fn(f64) -> bool,
    slow: impl Fn(f64) -> f64,
) {
    map(name, x, out, f);
    // A separate pass: folded into the main loop, the extra reduction stopped LLVM vectorising sin.
    if x.iter().fold(false, |any, &v| any | slow_case(v)) {
        fix(x, out, &slow_case, &slow);
    }
}

#[cold]
#[inline(never)]
fn fix(x: &[f64], out: &mut [f64], slow_case: &impl Fn(f64) -> bool, slow: &impl Fn(f64) -> f64) {
    for (o, &v) in out.iter_mut().zip(x) {
        if slow_case(v) {
            *o = slow(v);
        }
    }
}

#[cfg(target_arch = "x86_64")]
fn has_avx2_fma() -> bool {
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
}

/// Whether the AVX-512 instances may run: the same kernels in eight lanes, with masked selects.
#[cfg(target_arch = "x86_64")]
pub(crate) fn has_avx512() -> bool {
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| {
        has_avx2_fma()
            && is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512dq")
            && is_x86_feature_detected!("avx512vl")
    })
}

/// Defines, for each kernel, the public dispatcher plus its baseline, AVX2+FMA and AVX-512 instances.
macro_rules! kernels {
    ($($(#[$doc:meta])* $name:ident => $one:ident $(, unless $slow_case:ident use $slow:path)?;)*) => {
        /// Baseline instances (no run-time CPU features).
        pub(crate) mod baseline {
            $(
                pub(crate) fn $name(x: &[f64], out: &mut [f64]) {
                    kernels!(@body $name, x, out, super::$one::<{ super::BASE_FMA }> $(, $slow_case, $slow)?);
                }
            )*
        }

        /// AVX2+FMA instances; callers must check the CPU supports both.
        #[cfg(target_arch = "x86_64")]
        pub(crate) mod avx2 {
            $(
                #[target_feature(enable = "avx2,fma")]
                pub(crate) unsafe fn $name(x: &[f64], out: &mut [f64]) {
                    kernels!(@body $name, x, out, super::$one::<true> $(, $slow_case, $slow)?);
                }
            )*
        }

        /// AVX-512 instances; callers must check the CPU supports them ([`has_avx512`]).
        #[cfg(target_arch = "x86_64")]
        pub(crate) mod avx512 {
            $(
                #[target_feature(enable = "avx512f,avx512dq,avx512vl,avx2,fma")]
                pub(crate) unsafe fn $name(x: &[f64], out: &mut [f64]) {
                    kernels!(@body $name, x, out, super::$one::<true> $(, $slow_case, $slow)?);
                }
            )*
        }

        $(
            $(#[$doc])*
            /// Panics if `x` and `out` differ in length.
            pub(crate) fn $name(x: &[f64], out: &mut [f64]) {
                #[cfg(target_arch = "x86_64")]
                if has_avx512() {
                    // SAFETY: the CPU supports AVX-512 F, DQ and VL, AVX2 and FMA (checked at run time just above).
                    unsafe { avx512::$name(x, out) };
                    return;
                }
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
    (@body $name:ident, $x:ident, $out:ident, $f:expr) => {
        super::map(stringify!($name), $x, $out, $f)
    };
    (@body $name:ident, $x:ident, $out:ident, $f:expr, $slow_case:ident, $slow:path) => {
        super::map_fixup(stringify!($name), $x, $out, $f, super::$slow_case, $slow)
    };
}

kernels! {
    /// `out[i] = x[i].asin()`, within 2 ulp.
    asin => asin_one;
    /// `out[i] = x[i].acos()`, within 2 ulp.
    acos => acos_one;
    /// `out[i] = x[i].exp()`, within 2 ulp (overflow to inf, gradual underflow to 0).
    exp => exp_one;
    /// `out[i] = x[i].ln()`, within 2 ulp.
    ln => ln_one;
    /// `out[i] = x[i].sin()`, within 2 ulp (|x| > 2^20 and inf are passed to std).
    sin => sin_one, unless trig_needs_std use f64::sin;
    /// `out[i] = x[i].cos()`, within 2 ulp (|x| > 2^20 and inf are passed to std).
    cos => cos_one, unless trig_needs_std use f64::cos;
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    type Kernel = fn(&[f64], &mut [f64]);

    /// The instances available on this machine, by name (the dispatcher is one of the others, so it is
    /// only checked on the special values).
    fn instances(base: Kernel, avx: Option<Kernel>, avx512: Option<Kernel>) -> Vec<(&'static str, Kernel)> {
        let mut v: Vec<(&'static str, Kernel)> = vec![("baseline", base)];
        if let Some(a) = avx {
            v.push(("avx2", a));
        }
        if let Some(a) = avx512 {
            v.push(("avx512", a));
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
            #[cfg(target_arch = "x86_64")]
            let avx512: Option<Kernel> = if has_avx512() {
                // SAFETY: the CPU supports AVX-512 F, DQ and VL, AVX2 and FMA.
                Some(|x: &[f64], o: &mut [f64]| unsafe { avx512::$name(x, o) })
            } else {
                None
            };
            #[cfg(not(target_arch = "x86_64"))]
            let (avx, avx512): (Option<Kernel>, Option<Kernel>) = (None, None);
            instances(baseline::$name, avx, avx512)
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

    /// Points per sampling strategy; each kernel gets about 8 times this. Release test builds: 2^21 (17
    /// million per kernel, ~1 s each). Debug builds may be unoptimised, so 2^19 (4 million, ~10 s each
    /// at opt-level 0, well under 1 s at opt-level 3). `VMATH_TEST_POINTS` overrides, for longer runs.
    fn points() -> usize {
        let default = if cfg!(debug_assertions) { 1 << 19 } else { 1 << 21 };
        std::env::var("VMATH_TEST_POINTS").ok().and_then(|s| s.parse().ok()).unwrap_or(default)
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

    /// Values with uniformly random bit patterns over all finite doubles of both signs.
    fn any_finite(rng: &mut SplitMix) -> f64 {
        bit_uniform(rng, f64::MAX.to_bits())
    }

    #[test]
    fn exp_ulp() {
        let inst = instances_of!(exp);
        check_special(
            &inst,
            exp,
            f64::exp,
            &[
                709.782712893384,
                709.7827128933841,
                710.0,
                1e300,
                -708.3964185322641,
                -708.4,
                -745.1332191019411,
                -745.1332191019412,
                -745.2,
                -746.0,
                -1e300,
                1e-20,
                -1e-20,
                0.5 * std::f64::consts::LN_2,
                -0.5 * std::f64::consts::LN_2,
                std::f64::consts::LN_2,
                1.0,
                -1.0,
            ],
        );
        let n = points();
        let mut worst = 0;
        worst = worst.max(sweep("exp uniform [-750, 720]", &inst, f64::exp, 3 * n, |r| -750.0 + 1470.0 * r.unit()));
        worst = worst.max(sweep("exp uniform [-2, 2]", &inst, f64::exp, n, |r| 4.0 * r.unit() - 2.0));
        worst = worst
            .max(sweep("exp bit-uniform |x| <= 1024", &inst, f64::exp, 3 * n, |r| bit_uniform(r, 1024.0f64.to_bits())));
        worst = worst.max(sweep("exp subnormal results", &inst, f64::exp, n / 2, |r| -745.2 + 37.0 * r.unit()));
        worst = worst.max(sweep("exp any finite", &inst, f64::exp, n / 2, any_finite));
        println!("exp: max {worst} ulp overall");
    }

    #[test]
    fn ln_ulp() {
        let inst = instances_of!(ln);
        check_special(
            &inst,
            ln,
            f64::ln,
            &[
                std::f64::consts::E,
                std::f64::consts::SQRT_2,
                std::f64::consts::FRAC_1_SQRT_2,
                1.0 + f64::EPSILON,
                1.0 - f64::EPSILON / 2.0,
                f64::from_bits(2),
                1e-310,
                1e300,
                0.1,
            ],
        );
        let n = points();
        let mut worst = 0;
        worst = worst.max(sweep("ln bit-uniform x > 0", &inst, f64::ln, 3 * n, |r| {
            f64::from_bits(r.next() % f64::INFINITY.to_bits())
        }));
        worst = worst.max(sweep("ln uniform (0, 4]", &inst, f64::ln, 2 * n, |r| 4.0 - 4.0 * r.unit()));
        worst = worst.max(sweep("ln near 1", &inst, f64::ln, n, |r| {
            1.0 + (r.unit() - 0.5) * 2f64.powi(-((r.next() % 50) as i32))
        }));
        worst = worst.max(sweep("ln uniform (0, 1e6]", &inst, f64::ln, n, |r| 1e6 - 1e6 * r.unit()));
        worst = worst.max(sweep("ln any finite", &inst, f64::ln, n, any_finite));
        println!("ln: max {worst} ulp overall");
    }

    /// Doubles next to k pi/2 for k up to the fast-path limit: where argument reduction cancels most.
    fn near_half_pi_multiple(rng: &mut SplitMix) -> f64 {
        let k = (rng.next() % 667_000) as f64;
        let x = k * std::f64::consts::FRAC_PI_2;
        f64::from_bits(x.to_bits().wrapping_add(rng.next() % 7).wrapping_sub(3))
    }

    fn check_trig(label: &str, inst: &[(&'static str, Kernel)], dispatch: Kernel, reference: fn(f64) -> f64) {
        check_special(
            inst,
            dispatch,
            reference,
            &[
                std::f64::consts::FRAC_PI_4,
                std::f64::consts::FRAC_PI_2,
                std::f64::consts::PI,
                -std::f64::consts::PI,
                1e-9,
                -1e-9,
                1e-200,
                TRIG_FAST_LIMIT,
                -TRIG_FAST_LIMIT,
                TRIG_FAST_LIMIT * (1.0 + f64::EPSILON),
                1e22,
                -1e300,
                6_381_956_970_095_103.0 * 2f64.powi(797),
                5_828_864_613_363_013.0,
            ],
        );
        let n = points();
        let mut worst = 0;
        worst =
            worst.max(sweep(&format!("{label} uniform [-10, 10]"), inst, reference, 2 * n, |r| 20.0 * r.unit() - 10.0));
        worst = worst.max(sweep(&format!("{label} uniform |x| <= 2^20"), inst, reference, 2 * n, |r| {
            TRIG_FAST_LIMIT * (2.0 * r.unit() - 1.0)
        }));
        worst = worst.max(sweep(&format!("{label} bit-uniform |x| <= 2^21"), inst, reference, 2 * n, |r| {
            bit_uniform(r, (2.0 * TRIG_FAST_LIMIT).to_bits())
        }));
        worst = worst.max(sweep(&format!("{label} near k pi/2"), inst, reference, n, near_half_pi_multiple));
        worst = worst.max(sweep(&format!("{label} any finite"), inst, reference, n / 4, any_finite));
        println!("{label}: max {worst} ulp overall");
    }

    #[test]
    fn sin_ulp() {
        check_trig("sin", &instances_of!(sin), sin, f64::sin);
    }

    #[test]
    fn cos_ulp() {
        check_trig("cos", &instances_of!(cos), cos, f64::cos);
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

//! The element types bags reduce with built-in kernels: numbers for `sum`,
//! `min`, `max`, `mean`, `var` and `std`, ordered types for `topk`.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

mod sealed {
    pub trait Sealed {}
}

/// A number a bag can sum and average: `i64`, `i32`, `u64`, `u32`,
/// `usize`, `f64`, `f32`.
pub trait Number:
    sealed::Sealed + Copy + PartialOrd + Serialize + DeserializeOwned + Send + Sync + std::fmt::Debug + 'static
{
    /// Zero.
    const ZERO: Self;
    /// The sum of two.
    fn add(self, other: Self) -> Self;
    /// As a float, for means and variances.
    fn to_f64(self) -> f64;
}

/// An ordered type a bag can take the `topk` of: `i64`, `i32`, `u64`,
/// `u32`, `usize`, `String`.
pub trait Ordered: sealed::Sealed + Ord + Clone + Serialize + DeserializeOwned + Send + Sync + 'static {}

macro_rules! numbers {
    ($($t:ty => $zero:expr),*) => {$(
        impl sealed::Sealed for $t {}
        impl Number for $t {
            const ZERO: $t = $zero;
            fn add(self, other: $t) -> $t {
                self + other
            }
            #[allow(clippy::cast_precision_loss, clippy::cast_lossless)]
            fn to_f64(self) -> f64 {
                self as f64
            }
        }
    )*};
}

numbers!(i64 => 0, i32 => 0, u64 => 0, u32 => 0, usize => 0, f64 => 0.0, f32 => 0.0);

impl sealed::Sealed for String {}
impl Ordered for i64 {}
impl Ordered for i32 {}
impl Ordered for u64 {}
impl Ordered for u32 {}
impl Ordered for usize {}
impl Ordered for String {}

/// Count, mean and the sum of squared deviations, merged pairwise (Chan et
/// al.), which stays accurate where sums of squares would cancel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Moments {
    pub(crate) count: u64,
    pub(crate) mean: f64,
    pub(crate) m2: f64,
}

impl Moments {
    pub(crate) fn push(&mut self, x: f64) {
        self.count += 1;
        let delta = x - self.mean;
        self.mean += delta / self.count as f64;
        self.m2 += delta * (x - self.mean);
    }

    pub(crate) fn merge(&mut self, other: &Moments) {
        if other.count == 0 {
            return;
        }
        let count = self.count + other.count;
        let delta = other.mean - self.mean;
        self.mean += delta * other.count as f64 / count as f64;
        self.m2 += other.m2 + delta * delta * (self.count as f64 * other.count as f64 / count as f64);
        self.count = count;
    }

    /// The variance with `ddof` degrees of freedom taken off, as NumPy's.
    pub(crate) fn variance(&self, ddof: u64) -> Option<f64> {
        (self.count > ddof).then(|| self.m2 / (self.count - ddof) as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_moments_equal_one_pass() {
        let xs: Vec<f64> = (0..100).map(|i| f64::from(i) * 0.5 + 1e6).collect();
        let mut whole = Moments::default();
        xs.iter().for_each(|&x| whole.push(x));
        let (mut a, mut b) = (Moments::default(), Moments::default());
        xs[..37].iter().for_each(|&x| a.push(x));
        xs[37..].iter().for_each(|&x| b.push(x));
        a.merge(&b);
        assert_eq!(a.count, 100);
        assert!((a.mean - whole.mean).abs() < 1e-6);
        let (va, vw) = (a.variance(0).unwrap_or(f64::NAN), whole.variance(0).unwrap_or(f64::NAN));
        assert!((va - vw).abs() < 1e-6, "{va} vs {vw}");
        assert_eq!(Moments::default().variance(1), None);
    }
}

//! The float types every computation is generic over (`f32` and `f64`).

use std::fmt::{Debug, Display};
use std::iter::Sum;
use std::ops::{AddAssign, MulAssign, SubAssign};

/// A float type the engine computes in: implemented for `f32` and `f64`.
///
/// The bounds are what ndarray's matrix products and rayon need; you never
/// implement this yourself.
///
/// ```
/// fn total<T: rsp::Float>(values: &[T]) -> T {
///     values.iter().copied().sum()
/// }
/// assert_eq!(total(&[1.0f32, 2.0]), 3.0);
/// ```
pub trait Float:
    num_traits::Float
    + num_traits::FromPrimitive
    + ndarray::LinalgScalar
    + ndarray::ScalarOperand
    + Send
    + Sync
    + Debug
    + Display
    + Default
    + Sum
    + AddAssign
    + SubAssign
    + MulAssign
    + 'static
{
    /// Name of the type (`"f32"` or `"f64"`), for messages and file metadata.
    const NAME: &'static str;

    /// Converts from `f64`, rounding to nearest for `f32`.
    fn of(v: f64) -> Self;

    /// Widens to `f64` (exact).
    fn to_f64_exact(self) -> f64;

    /// The `1e-9` stabiliser of the method page, in this type.
    fn eps9() -> Self {
        Self::of(1e-9)
    }
}

impl Float for f32 {
    const NAME: &'static str = "f32";
    fn of(v: f64) -> Self {
        v as f32
    }
    fn to_f64_exact(self) -> f64 {
        self as f64
    }
}

impl Float for f64 {
    const NAME: &'static str = "f64";
    fn of(v: f64) -> Self {
        v
    }
    fn to_f64_exact(self) -> f64 {
        self
    }
}

/// Safe division of the method page: `a / b` where `b ≠ 0`, exactly `0` where `b = 0`.
#[inline]
pub fn safe_div<T: Float>(a: T, b: T) -> T {
    if b == T::zero() {
        T::zero()
    } else {
        a / b
    }
}

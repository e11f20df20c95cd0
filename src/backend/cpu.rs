//! The default CPU backend: im2col + GEMM, parallel with rayon.

use super::im2col::{col2im, im2col};
use super::matmul::gemm;
use super::{Backend, ConvGeometry};
use crate::float::{safe_div, Float};
use ndarray::{
    concatenate, s, Array2, Array3, Array4, ArrayView2, ArrayView3, ArrayView4, Axis, Zip,
};

/// im2col + blocked GEMM kernels, parallel over output blocks with rayon.
/// Results are bit-identical for any number of threads.
///
/// ```
/// use rsp::backend::{Backend, CpuBackend};
/// let a = ndarray::arr2(&[[1.0f32, 2.0], [3.0, 4.0]]);
/// let id = ndarray::arr2(&[[1.0f32, 0.0], [0.0, 1.0]]);
/// assert_eq!(CpuBackend::default().matmul(a.view(), id.view()), a);
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuBackend;

fn weight_matrix<T: Float>(w: ArrayView4<T>) -> ArrayView2<T> {
    let (o, c, kh, kw) = w.dim();
    w.into_shape_with_order((o, c * kh * kw))
        .expect("weights are contiguous")
}

fn output_hw(
    g: &ConvGeometry,
    input_hw: (usize, usize),
    kernel_hw: (usize, usize),
) -> (usize, usize) {
    g.output_size(input_hw, kernel_hw)
        .expect("validated by the layer")
}

impl<T: Float> Backend<T> for CpuBackend {
    fn name(&self) -> &'static str {
        "cpu"
    }

    fn conv2d(&self, x: ArrayView3<T>, w: ArrayView4<T>, g: &ConvGeometry) -> Array3<T> {
        let (_, h, wd) = x.dim();
        let (o, _, kh, kw) = w.dim();
        let out_hw = output_hw(g, (h, wd), (kh, kw));
        let cols = im2col(x, (kh, kw), g, out_hw);
        let w = w.as_standard_layout();
        let out = gemm(weight_matrix(w.view()), cols.view());
        out.into_shape_with_order((o, out_hw.0, out_hw.1))
            .expect("gemm output is contiguous")
    }

    fn conv2d_input_adjoint(
        &self,
        s: ArrayView3<T>,
        w: ArrayView4<T>,
        g: &ConvGeometry,
        input_hw: (usize, usize),
    ) -> Array3<T> {
        let (o, oh, ow) = s.dim();
        let (_, c, kh, kw) = w.dim();
        let w = w.as_standard_layout();
        let s = s.as_standard_layout();
        let s2 = s
            .view()
            .into_shape_with_order((o, oh * ow))
            .expect("contiguous");
        let cols = gemm(weight_matrix(w.view()).t(), s2);
        col2im(cols.view(), c, input_hw, (kh, kw), g, (oh, ow))
    }

    fn conv2d_weight_grad(
        &self,
        x: ArrayView3<T>,
        r: ArrayView3<T>,
        g: &ConvGeometry,
        kernel_hw: (usize, usize),
    ) -> Array4<T> {
        let (c, h, wd) = x.dim();
        let (o, oh, ow) = r.dim();
        let cols = im2col(x, kernel_hw, g, output_hw(g, (h, wd), kernel_hw));
        let r = r.as_standard_layout();
        let r2 = r
            .view()
            .into_shape_with_order((o, oh * ow))
            .expect("contiguous");
        let grad = gemm(r2, cols.t());
        grad.into_shape_with_order((o, c, kernel_hw.0, kernel_hw.1))
            .expect("contiguous")
    }

    fn matmul(&self, a: ArrayView2<T>, b: ArrayView2<T>) -> Array2<T> {
        gemm(a, b)
    }

    /// Fused sectional rule: one im2col of `x⁺` shared by all products, and the
    /// positive and negative sections stacked so that each step is one GEMM:
    /// `[G⁺; G⁻] = [R⁺; R⁻]·colsᵀ`, `[A⁺; A⁻] = [G⁺; G⁻]·cols`,
    /// `C⁺ − C⁻ = x⁺ ⊙ col2im([G⁺; G⁻]ᵀ·[S⁺; −S⁻])`.
    fn sectional_contributions(
        &self,
        x_pos: ArrayView3<T>,
        r: ArrayView3<T>,
        g: &ConvGeometry,
        kernel_hw: (usize, usize),
    ) -> Array3<T> {
        let (c, h, wd) = x_pos.dim();
        let (o, oh, ow) = r.dim();
        let cols = im2col(x_pos, kernel_hw, g, (oh, ow));
        let r = r.as_standard_layout();
        let r2 = r
            .view()
            .into_shape_with_order((o, oh * ow))
            .expect("contiguous");
        let r_pos = r2.mapv(|v| v.max(T::zero()));
        let r_neg = r2.mapv(|v| (-v).max(T::zero()));
        let sections = concatenate(Axis(0), &[r_pos.view(), r_neg.view()]).expect("same widths");
        let kernels = gemm(sections.view(), cols.t());
        let mut quotients = gemm(kernels.view(), cols.view());
        // S⁺ = R⁺ ⊘ A⁺ on M⁺ and −(R⁻ ⊘ A⁻) on M⁻, in place of A.
        Zip::from(quotients.slice_mut(s![..o, ..]))
            .and(&r_pos)
            .for_each(|a, &rv| {
                *a = if rv > T::zero() {
                    safe_div(rv, *a)
                } else {
                    T::zero()
                };
            });
        Zip::from(quotients.slice_mut(s![o.., ..]))
            .and(&r_neg)
            .for_each(|a, &rv| {
                *a = if rv > T::zero() {
                    -safe_div(rv, *a)
                } else {
                    T::zero()
                };
            });
        let back_cols = gemm(kernels.t(), quotients.view());
        let mut back = col2im(back_cols.view(), c, (h, wd), kernel_hw, g, (oh, ow));
        Zip::from(&mut back)
            .and(&x_pos)
            .par_for_each(|b, &xv| *b = xv * *b);
        back
    }
}

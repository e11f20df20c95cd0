//! The CUDA backend (feature `cuda`, off by default): a batch's activations
//! and relevance stay in device memory from the input's upload to the
//! result's download.
//!
//! * **Libraries at run time.** The driver, cuBLAS and NVRTC are loaded when
//!   [`CudaBackend::new`] runs (`cudarc`'s dynamic loading), so the crate builds
//!   and its tests run on machines without CUDA; there `new` returns a typed
//!   error. `LD_LIBRARY_PATH` must name the folders of `libcublas.so.13` and
//!   `libnvrtc.so.13` (`scripts/device-check.sh` finds them in a Python
//!   environment's `nvidia` packages).
//! * **Matrix products** are cuBLAS's strided-batched GEMMs over per-sample
//!   columns (im2col): the convolution (one weight for the batch), its input
//!   adjoint, and the sectional rule's per-sample kernels `G^±`. No GEMM is
//!   written here.
//! * **Everything else** (element-wise steps, im2col and its adjoint, pooling,
//!   per-sample reductions) is in `kernels.cu`, compiled by NVRTC once per float
//!   type. Its reductions use a fixed tree and no float atomics: two runs give
//!   the same bits. cuBLAS runs in its default math mode (no TF32).
//! * **Not yet on the device** (each runs on the host through a download and
//!   an upload, correct but slow): the starts (a small tensor at the start
//!   layer), average pooling's rules, the batch-norm rule, max pooling with
//!   overlapping windows, and the LRP family's less common steps. The host
//!   rules (RAP, a user's [`Rules`](crate::attribution::Rules)) run through
//!   [`Backend::map_on_host`] as on any device.
//!
//! Results agree with the CPU backend within rounding (sums run in another
//! order); they do not depend on the number of host threads. cuBLAS may pick
//! another algorithm for another batch size, so one sample's bits can differ
//! between batches of different sizes (within rounding).
//!
//! `unsafe`: kernel launches and cuBLAS calls are `unsafe` in `cudarc` (the
//! compiler cannot check a kernel's arguments). Every launch here passes
//! buffers whose lengths were checked against the sizes the kernel reads and
//! writes; each block says so.

use super::{Backend, ConvGeometry, CpuBackend, HostParameter, PoolWindows, RapFlavour, Tensor};
use crate::error::{Result, RspError};
use crate::float::Float;
use cudarc::cublas::{sys::cublasOperation_t, CudaBlas, Gemm, GemmConfig, StridedBatchedConfig};
use cudarc::driver::{
    CudaContext, CudaFunction, CudaSlice, CudaStream, CudaView, CudaViewMut, DeviceRepr, LaunchConfig, PushKernelArg,
    ValidAsZeroBits,
};
use ndarray::{Array2, Array3, Array4, ArrayD, ArrayView2, ArrayView3, ArrayView4, ArrayViewD, IxDyn};
use std::fmt;
use std::sync::{Arc, Mutex};

const NAME: &str = "cuda";
const SOURCE: &str = include_str!("kernels.cu");
/// Threads per block of the element-wise kernels and of `sample_stat` (its
/// shared array has this size).
const THREADS: u32 = 256;

/// A float type the CUDA backend computes in (`f32`, `f64`).
pub trait CudaFloat: Float + DeviceRepr + ValidAsZeroBits + sealed::Sealed {
    #[doc(hidden)]
    fn kernels(backend: &CudaBackend) -> &Kernels;
    #[doc(hidden)]
    fn gemm(
        blas: &CudaBlas,
        cfg: StridedBatchedConfig<Self>,
        a: &CudaView<Self>,
        b: &CudaView<Self>,
        c: &mut CudaViewMut<Self>,
    ) -> Result<()>;
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
}

macro_rules! cuda_float {
    ($t:ty, $field:ident) => {
        impl CudaFloat for $t {
            fn kernels(backend: &CudaBackend) -> &Kernels {
                &backend.inner.$field
            }
            fn gemm(
                blas: &CudaBlas,
                cfg: StridedBatchedConfig<Self>,
                a: &CudaView<Self>,
                b: &CudaView<Self>,
                c: &mut CudaViewMut<Self>,
            ) -> Result<()> {
                // SAFETY: the callers (`CudaBackend::gemm`) check that each
                // operand holds `batch` matrices of the configured sizes at
                // the configured strides.
                unsafe { blas.gemm_strided_batched(cfg, a, b, c) }.map_err(device_error)
            }
        }
    };
}
cuda_float!(f32, f32_kernels);
cuda_float!(f64, f64_kernels);

/// The kernels of `kernels.cu` for one float type.
#[doc(hidden)]
pub struct Kernels {
    ewise: CudaFunction,
    im2col: CudaFunction,
    col2im: CudaFunction,
    section_quotient: CudaFunction,
    sample_stat: CudaFunction,
    double_and_shift: CudaFunction,
    add_bias: CudaFunction,
    channel_affine: CudaFunction,
    fill_per_sample: CudaFunction,
    mul_per_sample: CudaFunction,
    div_per_sample: CudaFunction,
    sum_parts: CudaFunction,
    zb_combine: CudaFunction,
    add_rule: CudaFunction,
    max_pool: CudaFunction,
    max_pool_route: CudaFunction,
    first_non_finite: CudaFunction,
}

impl Kernels {
    fn compile(ctx: &Arc<CudaContext>, real: &str) -> Result<Self> {
        let options = cudarc::nvrtc::CompileOptions {
            options: vec![format!("-DREAL={real}"), "--std=c++17".into()],
            ..Default::default()
        };
        let ptx = cudarc::nvrtc::compile_ptx_with_opts(SOURCE, options).map_err(device_error)?;
        let module = ctx.load_module(ptx).map_err(device_error)?;
        let f = |name: &str| module.load_function(name).map_err(device_error);
        Ok(Kernels {
            ewise: f("ewise")?,
            im2col: f("im2col")?,
            col2im: f("col2im")?,
            section_quotient: f("section_quotient")?,
            sample_stat: f("sample_stat")?,
            double_and_shift: f("double_and_shift")?,
            add_bias: f("add_bias")?,
            channel_affine: f("channel_affine")?,
            fill_per_sample: f("fill_per_sample")?,
            mul_per_sample: f("mul_per_sample")?,
            div_per_sample: f("div_per_sample")?,
            sum_parts: f("sum_parts")?,
            zb_combine: f("zb_combine")?,
            add_rule: f("add_rule")?,
            max_pool: f("max_pool")?,
            max_pool_route: f("max_pool_route")?,
            first_non_finite: f("first_non_finite")?,
        })
    }
}

/// The element-wise operations of the `ewise` kernel.
#[derive(Clone, Copy)]
enum Ewise {
    Relu = 0,
    Add = 1,
    Sub = 2,
    Mul = 3,
    ReluGradient = 4,
    Scale = 5,
    ScaledAdd = 6,
    Abs = 7,
    Fill = 8,
    StabilisedDivide = 9,
    PositivePart = 10,
    NegativePart = 11,
    MinZero = 12,
    DivideBy = 13,
}

/// One operand of a matrix product: `batch` matrices `stride` elements apart,
/// each stored row-major with rows `row_stride` apart (`transposed`: stored as
/// the transpose of the operand).
struct Operand<'v, 'd, T> {
    data: &'v CudaView<'d, T>,
    transposed: bool,
    stride: usize,
    row_stride: usize,
}

/// A typed error for a failure of the driver, cuBLAS or NVRTC.
fn device_error(e: impl fmt::Debug) -> RspError {
    RspError::Backend { backend: NAME.into(), reason: format!("{e:?}") }
}

/// The device memory of a CUDA tensor.
struct CudaStorage<T>(CudaSlice<T>);

/// The CUDA backend on one device. Cloning shares the device context.
///
/// ```no_run
/// use rsp::backend::CudaBackend;
/// // A typed error (not a crash) on a machine without CUDA.
/// match CudaBackend::new(0) {
///     Ok(gpu) => println!("running on {}", gpu.device_name()),
///     Err(e) => println!("no GPU: {e}"),
/// }
/// ```
#[derive(Clone)]
pub struct CudaBackend {
    inner: Arc<Inner>,
    samples_at_once: usize,
}

struct Inner {
    stream: Arc<CudaStream>,
    // cuBLAS handles are not safe to use from two threads at once.
    blas: Mutex<CudaBlas>,
    f32_kernels: Kernels,
    f64_kernels: Kernels,
    device_name: String,
    /// Bytes of scratch memory one operation may hold for its im2col columns
    /// (the batch is taken in chunks that fit).
    workspace_bytes: usize,
    /// Per-operation times when `RSP_CUDA_PROFILE` is set (each timed
    /// operation synchronizes the device: for finding where time goes, not
    /// for the benchmark's own numbers).
    profile: Option<Mutex<Vec<(String, f64)>>>,
    /// Device memory for tensors: what was free at start less the workspace
    /// and a reserve for cuBLAS and the driver.
    tensor_bytes: usize,
}

impl fmt::Debug for CudaBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CudaBackend({})", self.inner.device_name)
    }
}

impl CudaBackend {
    /// The backend on device `ordinal`: loads the CUDA libraries, compiles the
    /// kernels (NVRTC) and creates a cuBLAS handle.
    ///
    /// # Errors
    /// [`RspError::Backend`] when the driver, cuBLAS or NVRTC cannot be
    /// loaded, there is no such device, or compiling the kernels fails.
    pub fn new(ordinal: usize) -> Result<Self> {
        // SAFETY: these only try to open the shared libraries (dlopen); no
        // symbol is called.
        let present = unsafe {
            [
                ("the CUDA driver (libcuda.so)", cudarc::driver::sys::is_culib_present()),
                ("cuBLAS (libcublas.so)", cudarc::cublas::sys::is_culib_present()),
                ("NVRTC (libnvrtc.so)", cudarc::nvrtc::sys::is_culib_present()),
            ]
        };
        if let Some((missing, _)) = present.iter().find(|(_, found)| !found) {
            return Err(RspError::Backend {
                backend: NAME.into(),
                reason: format!("{missing} was not found (set LD_LIBRARY_PATH to its folder)"),
            });
        }
        let ctx = CudaContext::new(ordinal).map_err(device_error)?;
        let stream = ctx.default_stream();
        let blas = CudaBlas::new(Arc::clone(&stream)).map_err(device_error)?;
        let device_name = ctx.name().map_err(device_error)?;
        let (free, _) = ctx.mem_get_info().map_err(device_error)?;
        let workspace_bytes = (free / 8).clamp(64 << 20, 4 << 30);
        Ok(CudaBackend {
            inner: Arc::new(Inner {
                f32_kernels: Kernels::compile(&ctx, "float")?,
                f64_kernels: Kernels::compile(&ctx, "double")?,
                stream,
                blas: Mutex::new(blas),
                device_name,
                workspace_bytes,
                profile: std::env::var_os("RSP_CUDA_PROFILE").map(|_| Mutex::new(Vec::new())),
                tensor_bytes: free.saturating_sub(workspace_bytes).saturating_sub(1 << 30) / 10 * 9,
            }),
            samples_at_once: 64,
        })
    }

    /// The same backend with cuBLAS's TF32 tensor-core mode for its float32
    /// matrix products (float64 is unaffected): several times faster, with
    /// float32 inputs rounded to 10-bit mantissas inside each product, so
    /// results move away from the reference by about 1e-3 relative (measured
    /// per golden case in `docs/performance.md`) instead of about 1e-6. An
    /// explicit opt-in; the default is plain float32. The mode belongs to the
    /// cuBLAS handle, which this backend's clones share.
    ///
    /// # Errors
    /// [`RspError::Backend`] if cuBLAS refuses the mode.
    pub fn with_tf32(self) -> Result<Self> {
        use cudarc::cublas::sys;
        let blas = self.inner.blas.lock().map_err(|_| device_error("the cuBLAS handle's lock was poisoned"))?;
        // SAFETY: the handle is alive (held by the locked `CudaBlas`) and used by one thread at a time.
        let status = unsafe { sys::cublasSetMathMode(*blas.handle(), sys::cublasMath_t::CUBLAS_TF32_TENSOR_OP_MATH) };
        if status != sys::cublasStatus_t::CUBLAS_STATUS_SUCCESS {
            return Err(device_error(status));
        }
        drop(blas);
        Ok(self)
    }

    /// The device's name, as the driver gives it.
    pub fn device_name(&self) -> &str {
        &self.inner.device_name
    }

    /// The same backend running at most `samples` samples of a batch at once
    /// (64 by default; the memory budget may split a batch further).
    pub fn with_samples_at_once(mut self, samples: usize) -> Self {
        self.samples_at_once = samples.max(1);
        self
    }

    /// The device memory in use and the total, in bytes.
    ///
    /// # Errors
    /// [`RspError::Backend`] if the driver fails.
    pub fn memory_in_use(&self) -> Result<(usize, usize)> {
        let (free, total) = self.inner.stream.context().mem_get_info().map_err(device_error)?;
        Ok((total - free, total))
    }

    /// The most device memory this process's allocations have held at once
    /// (the device's default memory pool's high-water mark, which the
    /// backend's tensors and scratch buffers come from; cuBLAS's own
    /// workspace is not counted), in bytes.
    ///
    /// # Errors
    /// [`RspError::Backend`] if the driver fails.
    pub fn peak_memory_bytes(&self) -> Result<usize> {
        use cudarc::driver::sys;
        let ctx = self.inner.stream.context();
        ctx.bind_to_thread().map_err(device_error)?;
        let mut pool: sys::CUmemoryPool = std::ptr::null_mut();
        let mut value: u64 = 0;
        // SAFETY: both out-pointers point to locals of the right types; the
        // device is the context's own.
        unsafe {
            sys::cuDeviceGetDefaultMemPool(&mut pool, ctx.cu_device()).result().map_err(device_error)?;
            sys::cuMemPoolGetAttribute(
                pool,
                sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_HIGH,
                (&mut value as *mut u64).cast(),
            )
            .result()
            .map_err(device_error)?;
        }
        Ok(value as usize)
    }

    /// Waits for the device's queued work (for timing).
    ///
    /// # Errors
    /// [`RspError::Backend`] if the driver reports an earlier failure.
    pub fn synchronize(&self) -> Result<()> {
        self.inner.stream.synchronize().map_err(device_error)
    }

    /// The times of the operations run so far when the environment variable
    /// `RSP_CUDA_PROFILE` was set at [`CudaBackend::new`] (empty otherwise):
    /// per operation and shape, the calls and total milliseconds, the largest
    /// total first. Each timed operation waits for the device before and
    /// after it, so a profiled run is slower than a plain one.
    pub fn profile_report(&self) -> Vec<(String, usize, f64)> {
        let Some(profile) = &self.inner.profile else { return Vec::new() };
        let mut totals: Vec<(String, usize, f64)> = Vec::new();
        for (name, ms) in profile.lock().map(|p| p.clone()).unwrap_or_default() {
            match totals.iter_mut().find(|t| t.0 == name) {
                Some(t) => {
                    t.1 += 1;
                    t.2 += ms;
                }
                None => totals.push((name, 1, ms)),
            }
        }
        totals.sort_by(|a, b| b.2.total_cmp(&a.2));
        totals
    }

    /// A timer for one operation when profiling (see [`CudaBackend::profile_report`]).
    fn profile(&self, name: impl FnOnce() -> String) -> Option<ProfileTimer<'_>> {
        self.inner.profile.as_ref()?;
        let _ = self.inner.stream.synchronize();
        Some(ProfileTimer { backend: self, name: name(), start: std::time::Instant::now() })
    }

    fn stream(&self) -> &Arc<CudaStream> {
        &self.inner.stream
    }

    fn alloc<T: CudaFloat>(&self, len: usize) -> Result<CudaSlice<T>> {
        self.stream().alloc_zeros::<T>(len.max(1)).map_err(device_error)
    }

    fn slice<'t, T: CudaFloat>(&self, t: &'t Tensor<T>) -> Result<&'t CudaSlice<T>> {
        t.storage::<CudaStorage<T>>().map(|s| &s.0).ok_or_else(|| RspError::Backend {
            backend: NAME.into(),
            reason: format!("a tensor of shape {:?} was made by another backend", t.shape()),
        })
    }

    fn tensor<T: CudaFloat>(shape: Vec<usize>, data: CudaSlice<T>) -> Tensor<T> {
        Tensor::from_storage(shape, CudaStorage(data))
    }

    fn upload_slice<T: CudaFloat>(&self, data: &[T]) -> Result<CudaSlice<T>> {
        if data.is_empty() {
            return self.alloc(1);
        }
        self.stream().clone_htod(data).map_err(device_error)
    }

    fn upload_i32(&self, data: &[i32]) -> Result<CudaSlice<i32>> {
        self.stream().clone_htod(data).map_err(device_error)
    }

    /// A grid for `n` elements with grid-stride loops.
    fn grid(n: usize) -> LaunchConfig {
        let blocks = n.div_ceil(THREADS as usize).clamp(1, 1 << 16) as u32;
        LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (THREADS, 1, 1), shared_mem_bytes: 0 }
    }

    fn ewise<T: CudaFloat>(
        &self,
        op: Ewise,
        a: &CudaSlice<T>,
        b: &CudaSlice<T>,
        n: usize,
        p0: T,
        p1: T,
    ) -> Result<CudaSlice<T>> {
        let mut out = self.alloc::<T>(n)?;
        let k = T::kernels(self);
        let (op, len) = (op as i32, n as i64);
        // SAFETY: `a`, `b` and `out` hold at least `n` elements (checked by the callers).
        unsafe {
            self.stream()
                .launch_builder(&k.ewise)
                .arg(&op)
                .arg(&len)
                .arg(a)
                .arg(b)
                .arg(&mut out)
                .arg(&p0)
                .arg(&p1)
                .launch(Self::grid(n))
        }
        .map_err(device_error)?;
        Ok(out)
    }

    fn unary<T: CudaFloat>(&self, op: Ewise, t: &Tensor<T>, p0: T) -> Result<Tensor<T>> {
        let a = self.slice(t)?;
        Ok(Self::tensor(t.shape().to_vec(), self.ewise(op, a, a, t.len(), p0, T::zero())?))
    }

    fn binary<T: CudaFloat>(
        &self,
        op: Ewise,
        a: &Tensor<T>,
        b: &Tensor<T>,
        what: &str,
        p0: T,
        p1: T,
    ) -> Result<Tensor<T>> {
        if a.shape() != b.shape() {
            return Err(RspError::shape(what, format!("{:?}", a.shape()), b.shape()));
        }
        let out = self.ewise(op, self.slice(a)?, self.slice(b)?, a.len(), p0, p1)?;
        Ok(Self::tensor(a.shape().to_vec(), out))
    }

    /// One statistic per sample of `x` (`samples` rows of `per`): see `sample_stat`.
    fn sample_stat<T: CudaFloat>(
        &self,
        x: &CudaSlice<T>,
        samples: usize,
        per: usize,
        what: i32,
    ) -> Result<CudaSlice<T>> {
        let mut out = self.alloc::<T>(samples)?;
        let per_i = per as i64;
        let cfg = LaunchConfig { grid_dim: (samples as u32, 1, 1), block_dim: (THREADS, 1, 1), shared_mem_bytes: 0 };
        // SAFETY: `x` holds `samples × per` elements, `out` `samples`.
        unsafe {
            self.stream()
                .launch_builder(&T::kernels(self).sample_stat)
                .arg(x)
                .arg(&mut out)
                .arg(&per_i)
                .arg(&what)
                .launch(cfg)
        }
        .map_err(device_error)?;
        Ok(out)
    }

    /// `c_s = op(a_s) · op(b_s)` (row-major, `m×n`, inner size `k`) for the
    /// `batch` matrices at the given strides (0: one matrix shared by all).
    /// `a_t`: `a` is stored `k×m`; `b_t`: `b` is stored `n×k`.
    #[allow(clippy::too_many_arguments)]
    fn gemm<T: CudaFloat>(
        &self,
        (a, a_t, stride_a): (&CudaView<T>, bool, usize),
        (b, b_t, stride_b): (&CudaView<T>, bool, usize),
        (c, stride_c): (&mut CudaViewMut<T>, usize),
        (m, n, k): (usize, usize, usize),
        batch: usize,
    ) -> Result<()> {
        let (ld_a, ld_b) = (if a_t { m } else { k }, if b_t { k } else { n });
        self.gemm_strided(
            Operand { data: a, transposed: a_t, stride: stride_a, row_stride: ld_a },
            Operand { data: b, transposed: b_t, stride: stride_b, row_stride: ld_b },
            (c, stride_c, false),
            (m, n, k),
            batch,
        )
    }

    /// [`CudaBackend::gemm`] on sub-matrices: each operand's stored rows are
    /// `row_stride` apart; `accumulate`: `c += a·b` instead of `c = a·b`.
    fn gemm_strided<T: CudaFloat>(
        &self,
        a: Operand<'_, '_, T>,
        b: Operand<'_, '_, T>,
        (c, stride_c, accumulate): (&mut CudaViewMut<T>, usize, bool),
        (m, n, k): (usize, usize, usize),
        batch: usize,
    ) -> Result<()> {
        // The last element each operand's last matrix reads or writes.
        let need = |o: &Operand<'_, '_, T>, rows: usize, cols: usize| {
            let (rows, cols) = if o.transposed { (cols, rows) } else { (rows, cols) };
            if batch == 0 || rows == 0 || cols == 0 {
                0
            } else {
                o.stride * (batch - 1) + (rows - 1) * o.row_stride + cols
            }
        };
        let c_need = if batch == 0 { 0 } else { stride_c * (batch - 1) + m * n };
        if a.data.len() < need(&a, m, k) || b.data.len() < need(&b, k, n) || c.len() < c_need {
            return Err(RspError::Backend {
                backend: NAME.into(),
                reason: "a matrix product's operands are too short".into(),
            });
        }
        let int = |v: usize| {
            i32::try_from(v).map_err(|_| RspError::Backend {
                backend: NAME.into(),
                reason: format!("a matrix size {v} exceeds cuBLAS's int"),
            })
        };
        let op = |t: bool| if t { cublasOperation_t::CUBLAS_OP_T } else { cublasOperation_t::CUBLAS_OP_N };
        // Row-major C = A·B is column-major Cᵀ = Bᵀ·Aᵀ: B comes first.
        let cfg = StridedBatchedConfig {
            gemm: GemmConfig {
                transa: op(b.transposed),
                transb: op(a.transposed),
                m: int(n)?,
                n: int(m)?,
                k: int(k)?,
                alpha: T::one(),
                lda: int(b.row_stride)?,
                ldb: int(a.row_stride)?,
                beta: if accumulate { T::one() } else { T::zero() },
                ldc: int(n)?,
            },
            batch_size: int(batch)?,
            stride_a: b.stride as i64,
            stride_b: a.stride as i64,
            stride_c: stride_c as i64,
        };
        let blas = self.inner.blas.lock().map_err(|_| device_error("the cuBLAS handle's lock was poisoned"))?;
        T::gemm(&blas, cfg, b.data, a.data, c)
    }

    /// The sectional rule's kernels `G_s = R_s · col_sᵀ` (`O×CK`, inner size
    /// `P`) of `samples` samples. `P` is large where `O×CK` is small (the
    /// first layers: 64×576 over 50176 positions), which leaves most of the
    /// device idle, so the inner sum is split into parts that run as one
    /// batch and are then added in a fixed order (split-K, deterministic).
    #[allow(clippy::too_many_arguments)]
    fn kernel_gradients<T: CudaFloat>(
        &self,
        r: &CudaSlice<T>,
        col: &CudaSlice<T>,
        g: &mut CudaSlice<T>,
        samples: usize,
        (o, ck, p): (usize, usize, usize),
    ) -> Result<()> {
        // Parts of at least 1024 positions, up to 64 of them.
        let parts = (p / 1024).clamp(1, 64);
        if parts == 1 {
            return self.gemm(
                (&r.as_view(), false, o * p),
                (&col.as_view(), true, ck * p),
                (&mut g.as_view_mut(), o * ck),
                (o, ck, p),
                samples,
            );
        }
        let part = p / parts;
        let rest = p - part * parts;
        let mut partial = self.alloc::<T>(parts * o * ck)?;
        for s in 0..samples {
            let r_s = r.slice(s * o * p..(s + 1) * o * p);
            let col_s = col.slice(s * ck * p..(s + 1) * ck * p);
            self.gemm_strided(
                Operand { data: &r_s, transposed: false, stride: part, row_stride: p },
                Operand { data: &col_s, transposed: true, stride: part, row_stride: p },
                (&mut partial.as_view_mut(), o * ck, false),
                (o, ck, part),
                parts,
            )?;
            if rest > 0 {
                // The positions left over go into the last part.
                let offset = part * parts;
                let (r_rest, col_rest) = (r_s.slice(offset..), col_s.slice(offset..));
                let mut last = partial.slice_mut((parts - 1) * o * ck..);
                self.gemm_strided(
                    Operand { data: &r_rest, transposed: false, stride: 0, row_stride: p },
                    Operand { data: &col_rest, transposed: true, stride: 0, row_stride: p },
                    (&mut last, 0, true),
                    (o, ck, rest),
                    1,
                )?;
            }
            let (parts_i, per, len) = (parts as i32, (o * ck) as i64, (o * ck) as i64);
            let mut g_s = g.slice_mut(s * o * ck..(s + 1) * o * ck);
            // SAFETY: `partial` holds parts·O·CK elements, `g_s` O·CK.
            unsafe {
                self.stream()
                    .launch_builder(&T::kernels(self).sum_parts)
                    .arg(&partial)
                    .arg(&mut g_s)
                    .arg(&parts_i)
                    .arg(&per)
                    .arg(&len)
                    .launch(Self::grid(o * ck))
            }
            .map_err(device_error)?;
        }
        Ok(())
    }

    /// How many samples of `per_sample` scratch elements fit the workspace.
    fn chunk<T>(&self, per_sample: usize, samples: usize) -> usize {
        (self.inner.workspace_bytes / (per_sample.max(1) * std::mem::size_of::<T>())).clamp(1, samples.max(1))
    }

    /// The columns of `samples` samples of `x` (`C×H×W` each) for a kernel of `kernel_hw`.
    fn im2col<T: CudaFloat>(
        &self,
        x: &CudaView<T>,
        samples: usize,
        chw: [usize; 3],
        kernel_hw: (usize, usize),
        geom: &ConvGeometry,
        out_hw: (usize, usize),
    ) -> Result<CudaSlice<T>> {
        let c = chw[0];
        let total = samples * c * kernel_hw.0 * kernel_hw.1 * out_hw.0 * out_hw.1;
        let mut col = self.alloc::<T>(total)?;
        let ints = unfold_args(chw, kernel_hw, geom, out_hw);
        let total_i = total as i64;
        // SAFETY: `x` holds `samples × C×H×W` elements and `col` `total`; the
        // kernel reads x only inside the unpadded input.
        unsafe {
            let mut l = self.stream().launch_builder(&T::kernels(self).im2col);
            l.arg(x).arg(&mut col);
            for v in &ints {
                l.arg(v);
            }
            l.arg(&total_i).launch(Self::grid(total))
        }
        .map_err(device_error)?;
        Ok(col)
    }

    /// Folds columns back onto `samples` inputs (`C×H×W`): see `col2im` (`mode`, `m`).
    #[allow(clippy::too_many_arguments)]
    fn col2im<T: CudaFloat>(
        &self,
        col: &CudaSlice<T>,
        out: &mut CudaViewMut<T>,
        m: &CudaView<T>,
        mode: i32,
        samples: usize,
        chw: [usize; 3],
        kernel_hw: (usize, usize),
        geom: &ConvGeometry,
        out_hw: (usize, usize),
    ) -> Result<()> {
        let [c, h, w] = chw;
        let total = samples * c * h * w;
        let ints = unfold_args(chw, kernel_hw, geom, out_hw);
        let total_i = total as i64;
        // SAFETY: `col` holds `samples × (C·kh·kw) × (Ho·Wo)` elements, `out`
        // and `m` `total` (checked by the callers).
        unsafe {
            let mut l = self.stream().launch_builder(&T::kernels(self).col2im);
            l.arg(col).arg(out).arg(m).arg(&mode);
            for v in &ints {
                l.arg(v);
            }
            l.arg(&total_i).launch(Self::grid(total))
        }
        .map_err(device_error)?;
        Ok(())
    }

    /// The convolution of `n` samples (`C×H×W` at `x`) with `weight` (`O×C×kh×kw`): `N×O×Ho×Wo`.
    fn conv<T: CudaFloat>(
        &self,
        x: &CudaSlice<T>,
        n: usize,
        chw: [usize; 3],
        weight: &CudaSlice<T>,
        wshape: [usize; 4],
        geom: &ConvGeometry,
    ) -> Result<(CudaSlice<T>, (usize, usize))> {
        let [c, h, w] = chw;
        let [o, _, kh, kw] = wshape;
        let (ho, wo) = geom.output_size((h, w), (kh, kw)).ok_or_else(|| {
            RspError::shape("convolution input", format!("at least the kernel {kh}×{kw}"), &[n, c, h, w])
        })?;
        let (ck, p) = (c * kh * kw, ho * wo);
        let mut out = self.alloc::<T>(n * o * p)?;
        let direct = kh == 1 && kw == 1 && geom.stride == [1, 1] && geom.padding == [0; 4];
        let chunk = if direct { n } else { self.chunk::<T>(ck * p, n) };
        for start in (0..n).step_by(chunk.max(1)) {
            let ns = chunk.min(n - start);
            let xs = x.slice(start * c * h * w..(start + ns) * c * h * w);
            let mut dst = out.slice_mut(start * o * p..(start + ns) * o * p);
            if direct {
                self.gemm((&weight.as_view(), false, 0), (&xs, false, ck * p), (&mut dst, o * p), (o, p, ck), ns)?;
            } else {
                let col = self.im2col(&xs, ns, chw, (kh, kw), geom, (ho, wo))?;
                self.gemm(
                    (&weight.as_view(), false, 0),
                    (&col.as_view(), false, ck * p),
                    (&mut dst, o * p),
                    (o, p, ck),
                    ns,
                )?;
            }
        }
        Ok((out, (ho, wo)))
    }

    /// The input adjoint of the convolution for `n` samples of `g` (`O×Ho×Wo`):
    /// `N×C×H×W`, written by `col2im` in `mode` with `m` (see there) into `out`.
    #[allow(clippy::too_many_arguments)]
    fn conv_adjoint_into<T: CudaFloat>(
        &self,
        g: &CudaSlice<T>,
        n: usize,
        weight: &CudaSlice<T>,
        wshape: [usize; 4],
        geom: &ConvGeometry,
        chw: [usize; 3],
        out: &mut CudaSlice<T>,
        m: Option<&CudaSlice<T>>,
        mode: i32,
    ) -> Result<()> {
        let [c, h, w] = chw;
        let [o, _, kh, kw] = wshape;
        let (ho, wo) = geom.output_size((h, w), (kh, kw)).ok_or_else(|| {
            RspError::shape("convolution adjoint", format!("an input of at least {kh}×{kw}"), &[n, c, h, w])
        })?;
        let (ck, p, per_in) = (c * kh * kw, ho * wo, c * h * w);
        if g.len() < n * o * p || out.len() < n * per_in || m.is_some_and(|m| m.len() < n * per_in) {
            return Err(RspError::shape("convolution adjoint operand", format!("{n}×{o}×{ho}×{wo}"), &[g.len()]));
        }
        // Mode 0 never reads `m`: a one-element stand-in.
        let unused = if m.is_none() { Some(self.alloc::<T>(1)?) } else { None };
        let chunk = self.chunk::<T>(ck * p, n);
        for start in (0..n).step_by(chunk.max(1)) {
            let ns = chunk.min(n - start);
            let gs = g.slice(start * o * p..(start + ns) * o * p);
            let mut col = self.alloc::<T>(ns * ck * p)?;
            self.gemm(
                (&weight.as_view(), true, 0),
                (&gs, false, o * p),
                (&mut col.as_view_mut(), ck * p),
                (ck, p, o),
                ns,
            )?;
            let range = start * per_in..(start + ns) * per_in;
            let ms = match (m, &unused) {
                (Some(m), _) => m.slice(range.clone()),
                (None, Some(u)) => u.slice(..),
                (None, None) => unreachable!("a stand-in is made when m is absent"),
            };
            self.col2im(&col, &mut out.slice_mut(range), &ms, mode, ns, chw, (kh, kw), geom, (ho, wo))?;
        }
        Ok(())
    }

    /// Downloads a tensor into a host tensor of the CPU backend.
    fn to_host<T: CudaFloat>(&self, t: &Tensor<T>) -> Result<Tensor<T>> {
        let a = Backend::<T>::download(self, t)?;
        Backend::<T>::upload(&CpuBackend, a.view())
    }

    /// Uploads a host tensor of the CPU backend.
    fn to_device<T: CudaFloat>(&self, t: &Tensor<T>) -> Result<Tensor<T>> {
        let a = Backend::<T>::download(&CpuBackend, t)?;
        Backend::<T>::upload(self, a.view())
    }

    fn pool_ranges(&self, windows: &PoolWindows) -> Result<[CudaSlice<i32>; 4]> {
        let starts = |r: &[std::ops::Range<usize>]| r.iter().map(|r| r.start as i32).collect::<Vec<_>>();
        let ends = |r: &[std::ops::Range<usize>]| r.iter().map(|r| r.end as i32).collect::<Vec<_>>();
        Ok([
            self.upload_i32(&starts(&windows.rows))?,
            self.upload_i32(&ends(&windows.rows))?,
            self.upload_i32(&starts(&windows.cols))?,
            self.upload_i32(&ends(&windows.cols))?,
        ])
    }
}

/// Records one operation's time when dropped (after waiting for the device).
struct ProfileTimer<'a> {
    backend: &'a CudaBackend,
    name: String,
    start: std::time::Instant,
}

impl Drop for ProfileTimer<'_> {
    fn drop(&mut self) {
        let _ = self.backend.inner.stream.synchronize();
        let ms = self.start.elapsed().as_secs_f64() * 1e3;
        if let Some(Ok(mut p)) = self.backend.inner.profile.as_ref().map(|p| p.lock()) {
            p.push((std::mem::take(&mut self.name), ms));
        }
    }
}

/// The integer arguments im2col and col2im share, in the kernels' order:
/// `C, H, W, kh, kw, sh, sw, pt, pl, Ho, Wo`.
fn unfold_args(chw: [usize; 3], kernel_hw: (usize, usize), geom: &ConvGeometry, out_hw: (usize, usize)) -> [i32; 11] {
    let [c, h, w] = chw;
    [
        c,
        h,
        w,
        kernel_hw.0,
        kernel_hw.1,
        geom.stride[0],
        geom.stride[1],
        geom.padding[0],
        geom.padding[1],
        out_hw.0,
        out_hw.1,
    ]
    .map(|v| v as i32)
}

/// Whether no input element lies in two windows (then routing needs no sums).
fn windows_disjoint(windows: &PoolWindows) -> bool {
    let disjoint = |r: &[std::ops::Range<usize>]| r.windows(2).all(|p| p[0].end <= p[1].start);
    disjoint(&windows.rows) && disjoint(&windows.cols)
}

/// `N×C×H×W` of a 4-D tensor, or a shape error naming `what`.
fn dims4<T: Float>(t: &Tensor<T>, what: &str) -> Result<[usize; 4]> {
    <[usize; 4]>::try_from(t.shape()).map_err(|_| RspError::shape(what, "N×C×H×W", t.shape()))
}

impl<T: CudaFloat> Backend<T> for CudaBackend {
    fn name(&self) -> &'static str {
        NAME
    }

    // The per-sample kernels on host views serve the host rules; they run on
    // the CPU (the data is on the host already).
    fn conv2d(&self, x: ArrayView3<T>, w: ArrayView4<T>, geom: &ConvGeometry) -> Result<Array3<T>> {
        CpuBackend.conv2d(x, w, geom)
    }

    fn conv2d_input_adjoint(
        &self,
        s: ArrayView3<T>,
        w: ArrayView4<T>,
        geom: &ConvGeometry,
        input_hw: (usize, usize),
    ) -> Result<Array3<T>> {
        CpuBackend.conv2d_input_adjoint(s, w, geom, input_hw)
    }

    fn conv2d_weight_grad(
        &self,
        x: ArrayView3<T>,
        r: ArrayView3<T>,
        geom: &ConvGeometry,
        kernel_hw: (usize, usize),
    ) -> Result<Array4<T>> {
        CpuBackend.conv2d_weight_grad(x, r, geom, kernel_hw)
    }

    fn matmul(&self, a: ArrayView2<T>, b: ArrayView2<T>) -> Result<Array2<T>> {
        CpuBackend.matmul(a, b)
    }

    fn samples_at_once(&self) -> Option<usize> {
        Some(self.samples_at_once)
    }

    fn memory_for_tensors(&self) -> Option<u64> {
        Some(self.inner.tensor_bytes as u64)
    }

    fn upload(&self, host: ArrayViewD<T>) -> Result<Tensor<T>> {
        let _timer = self.profile(|| format!("upload {:?}", host.shape()));
        let host = host.as_standard_layout();
        let data = host.as_slice().expect("standard layout");
        Ok(Self::tensor(host.shape().to_vec(), self.upload_slice(data)?))
    }

    fn upload_parameter(&self, parameter: &HostParameter<T>) -> Result<Tensor<T>> {
        let data = parameter.buffer.as_slice();
        let len: usize = parameter.shape.iter().product();
        if data.len() != len {
            return Err(RspError::shape("uploaded parameter", format!("{} elements", data.len()), &parameter.shape));
        }
        Ok(Self::tensor(parameter.shape.clone(), self.upload_slice(data)?))
    }

    fn download(&self, t: &Tensor<T>) -> Result<ArrayD<T>> {
        let _timer = self.profile(|| format!("download {:?}", t.shape()));
        let s = self.slice(t)?;
        let mut data = self.stream().clone_dtoh(s).map_err(device_error)?;
        data.truncate(t.len());
        ArrayD::from_shape_vec(IxDyn(t.shape()), data)
            .map_err(|_| RspError::shape("downloaded tensor", format!("{} elements", t.len()), t.shape()))
    }

    fn conv2d_batch(
        &self,
        x: &Tensor<T>,
        w: &Tensor<T>,
        bias: Option<&Tensor<T>>,
        geom: &ConvGeometry,
    ) -> Result<Tensor<T>> {
        let _timer = self.profile(|| format!("conv2d {:?} -> {:?}", &x.shape()[1..], w.shape()));
        let [n, c, h, wd] = dims4(x, "conv2d input")?;
        let ws = dims4(w, "convolution weight")?;
        if ws[1] != c {
            return Err(RspError::shape("conv2d input", format!("N×{}×H×W", ws[1]), x.shape()));
        }
        let (mut out, (ho, wo)) = self.conv(self.slice(x)?, n, [c, h, wd], self.slice(w)?, ws, geom)?;
        if let Some(b) = bias {
            let b = self.slice(b)?;
            if b.len() < ws[0] {
                return Err(RspError::shape("convolution bias", format!("{}", ws[0]), &[b.len()]));
            }
            let total = n * ws[0] * ho * wo;
            let (o, p, len) = (ws[0] as i32, (ho * wo) as i64, total as i64);
            // SAFETY: `out` holds `total` elements, `b` at least O.
            unsafe {
                self.stream()
                    .launch_builder(&T::kernels(self).add_bias)
                    .arg(&mut out)
                    .arg(b)
                    .arg(&o)
                    .arg(&p)
                    .arg(&len)
                    .launch(Self::grid(total))
            }
            .map_err(device_error)?;
        }
        Ok(Self::tensor(vec![n, ws[0], ho, wo], out))
    }

    fn linear_batch(&self, x: &Tensor<T>, w: &Tensor<T>, bias: Option<&Tensor<T>>) -> Result<Tensor<T>> {
        let _timer = self.profile(|| format!("linear {:?}", w.shape()));
        let (o, i) = match w.shape() {
            [o, i] => (*o, *i),
            other => return Err(RspError::shape("linear weight", "O×I", other)),
        };
        let n = x.shape().first().copied().unwrap_or(0);
        if x.len() != n * i {
            return Err(RspError::shape("linear input", format!("N×{i}"), x.shape()));
        }
        let mut out = self.alloc::<T>(n * o)?;
        self.gemm(
            (&self.slice(x)?.as_view(), false, 0),
            (&self.slice(w)?.as_view(), true, 0),
            (&mut out.as_view_mut(), 0),
            (n, o, i),
            1,
        )?;
        if let Some(b) = bias {
            let b = self.slice(b)?;
            if b.len() < o {
                return Err(RspError::shape("linear bias", format!("{o}"), &[b.len()]));
            }
            let (oi, p, len) = (o as i32, 1i64, (n * o) as i64);
            // SAFETY: `out` holds N·O elements, `b` at least O.
            unsafe {
                self.stream()
                    .launch_builder(&T::kernels(self).add_bias)
                    .arg(&mut out)
                    .arg(b)
                    .arg(&oi)
                    .arg(&p)
                    .arg(&len)
                    .launch(Self::grid(n * o))
            }
            .map_err(device_error)?;
        }
        Ok(Self::tensor(vec![n, o], out))
    }

    fn relu_batch(&self, x: &Tensor<T>) -> Result<Tensor<T>> {
        let _timer = self.profile(|| format!("relu {:?}", &x.shape()[1..]));
        self.unary(Ewise::Relu, x, T::zero())
    }

    fn max_pool_batch(&self, x: &Tensor<T>, windows: &PoolWindows) -> Result<Tensor<T>> {
        let _timer = self.profile(|| format!("max pool {:?}", &x.shape()[1..]));
        let [n, c, h, w] = dims4(x, "max-pool input")?;
        if (h, w) != windows.input_hw {
            return Err(RspError::shape(
                "max-pool input",
                format!("N×C×{}×{}", windows.input_hw.0, windows.input_hw.1),
                x.shape(),
            ));
        }
        let (ho, wo) = windows.output_hw();
        let total = n * c * ho * wo;
        let mut out = self.alloc::<T>(total)?;
        let [r0, r1, c0, c1] = self.pool_ranges(windows)?;
        let ints = [h, w, ho, wo].map(|v| v as i32);
        let len = total as i64;
        // SAFETY: every window lies inside the `H×W` input (PoolWindows' invariant); `out` holds `total`.
        unsafe {
            let mut l = self.stream().launch_builder(&T::kernels(self).max_pool);
            l.arg(self.slice(x)?).arg(&mut out).arg(&r0).arg(&r1).arg(&c0).arg(&c1);
            for v in &ints {
                l.arg(v);
            }
            l.arg(&len).launch(Self::grid(total))
        }
        .map_err(device_error)?;
        Ok(Self::tensor(vec![n, c, ho, wo], out))
    }

    fn avg_pool_batch(&self, x: &Tensor<T>, windows: &PoolWindows) -> Result<Tensor<T>> {
        let out = CpuBackend.avg_pool_batch(&self.to_host(x)?, windows)?;
        self.to_device(&out)
    }

    fn channel_affine_batch(
        &self,
        x: &Tensor<T>,
        mean: &Tensor<T>,
        scale: &Tensor<T>,
        shift: &Tensor<T>,
    ) -> Result<Tensor<T>> {
        let c = x.shape().get(1).copied().unwrap_or(0);
        if x.shape().len() < 2 || [mean, scale, shift].iter().any(|p| p.len() != c) {
            return Err(RspError::shape("channel-wise affine input", format!("N×{}×…", mean.len()), x.shape()));
        }
        let p = x.len() / (x.shape()[0] * c).max(1);
        let mut out = self.alloc::<T>(x.len())?;
        let (ci, pi, len, with_shift) = (c as i32, p as i64, x.len() as i64, 1i32);
        // SAFETY: `x` and `out` hold `len` elements, the parameters C each.
        unsafe {
            self.stream()
                .launch_builder(&T::kernels(self).channel_affine)
                .arg(self.slice(x)?)
                .arg(self.slice(mean)?)
                .arg(self.slice(scale)?)
                .arg(self.slice(shift)?)
                .arg(&with_shift)
                .arg(&mut out)
                .arg(&ci)
                .arg(&pi)
                .arg(&len)
                .launch(Self::grid(x.len()))
        }
        .map_err(device_error)?;
        Ok(Self::tensor(x.shape().to_vec(), out))
    }

    fn add_batch(&self, a: &Tensor<T>, b: &Tensor<T>) -> Result<Tensor<T>> {
        self.binary(Ewise::Add, a, b, "second summand", T::zero(), T::zero())
    }

    fn zeros(&self, shape: &[usize]) -> Result<Tensor<T>> {
        Ok(Self::tensor(shape.to_vec(), self.alloc::<T>(shape.iter().product())?))
    }

    fn one_hot_batch(&self, classes: &[usize], width: usize) -> Result<Tensor<T>> {
        let host = CpuBackend.one_hot_batch(classes, width)?;
        self.to_device(&host)
    }

    fn mul_batch(&self, a: &Tensor<T>, b: &Tensor<T>) -> Result<Tensor<T>> {
        self.binary(Ewise::Mul, a, b, "second factor", T::zero(), T::zero())
    }

    fn clamp(&self, t: &Tensor<T>, low: Option<T>, high: Option<T>) -> Result<Tensor<T>> {
        self.to_device(&CpuBackend.clamp(&self.to_host(t)?, low, high)?)
    }

    fn stabilised_divide_batch(&self, r: &Tensor<T>, z: &Tensor<T>, epsilon: Option<T>) -> Result<Tensor<T>> {
        let flag = if epsilon.is_some() { T::one() } else { T::zero() };
        self.binary(Ewise::StabilisedDivide, r, z, "denominator", epsilon.unwrap_or_else(T::zero), flag)
    }

    fn sub_batch(&self, a: &Tensor<T>, b: &Tensor<T>) -> Result<Tensor<T>> {
        self.binary(Ewise::Sub, a, b, "subtrahend", T::zero(), T::zero())
    }

    fn scale(&self, t: &Tensor<T>, factor: T) -> Result<Tensor<T>> {
        self.unary(Ewise::Scale, t, factor)
    }

    fn scaled_add(&self, a: &Tensor<T>, factor: T, b: &Tensor<T>) -> Result<Tensor<T>> {
        self.binary(Ewise::ScaledAdd, a, b, "second term", factor, T::zero())
    }

    fn full(&self, shape: &[usize], value: T) -> Result<Tensor<T>> {
        let len = shape.iter().product();
        let z = self.alloc::<T>(len)?;
        Ok(Self::tensor(shape.to_vec(), self.ewise(Ewise::Fill, &z, &z, len, value, T::zero())?))
    }

    fn keep_where_sign_batch(&self, t: &Tensor<T>, z: &Tensor<T>, sign: std::cmp::Ordering) -> Result<Tensor<T>> {
        self.to_device(&CpuBackend.keep_where_sign_batch(&self.to_host(t)?, &self.to_host(z)?, sign)?)
    }

    fn channel_shares_sum_batch(&self, r: &Tensor<T>, z: &Tensor<T>, epsilon: Option<T>) -> Result<Tensor<T>> {
        self.to_device(&CpuBackend.channel_shares_sum_batch(&self.to_host(r)?, &self.to_host(z)?, epsilon)?)
    }

    fn abs(&self, t: &Tensor<T>) -> Result<Tensor<T>> {
        self.unary(Ewise::Abs, t, T::zero())
    }

    fn sample_sums_batch(&self, t: &Tensor<T>) -> Result<Tensor<T>> {
        let n = t.shape().first().copied().unwrap_or(0);
        let sums = self.sample_stat(self.slice(t)?, n, t.len() / n.max(1), 0)?;
        Ok(Self::tensor(vec![n], sums))
    }

    fn scaled_add_per_sample(&self, a: &Tensor<T>, factors: &Tensor<T>, b: &Tensor<T>) -> Result<Tensor<T>> {
        let out = CpuBackend.scaled_add_per_sample(&self.to_host(a)?, &self.to_host(factors)?, &self.to_host(b)?)?;
        self.to_device(&out)
    }

    fn softmax_gradient_batch(&self, y: &Tensor<T>, classes: &[usize]) -> Result<Tensor<T>> {
        self.to_device(&CpuBackend.softmax_gradient_batch(&self.to_host(y)?, classes)?)
    }

    fn samples_with_negatives(&self, t: &Tensor<T>) -> Result<Vec<bool>> {
        let n = t.shape().first().copied().unwrap_or(0);
        let counts = self.sample_stat(self.slice(t)?, n, t.len() / n.max(1), 4)?;
        let counts = self.stream().clone_dtoh(&counts).map_err(device_error)?;
        Ok(counts.iter().take(n).map(|&c| c > T::zero()).collect())
    }

    fn class_entries_batch(&self, t: &Tensor<T>, classes: &[usize]) -> Result<Tensor<T>> {
        self.to_device(&CpuBackend.class_entries_batch(&self.to_host(t)?, classes)?)
    }

    fn relu_gradient_batch(&self, x: &Tensor<T>, g: &Tensor<T>) -> Result<Tensor<T>> {
        let _timer = self.profile(|| format!("relu gradient {:?}", &x.shape()[1..]));
        self.binary(Ewise::ReluGradient, x, g, "gradient at a relu", T::zero(), T::zero())
    }

    fn linear_adjoint_batch(&self, g: &Tensor<T>, w: &Tensor<T>) -> Result<Tensor<T>> {
        let _timer = self.profile(|| format!("linear adjoint {:?}", w.shape()));
        let (o, i) = match w.shape() {
            [o, i] => (*o, *i),
            other => return Err(RspError::shape("linear weight", "O×I", other)),
        };
        let n = g.shape().first().copied().unwrap_or(0);
        if g.len() != n * o {
            return Err(RspError::shape("linear gradient", format!("N×{o}"), g.shape()));
        }
        let mut out = self.alloc::<T>(n * i)?;
        self.gemm(
            (&self.slice(g)?.as_view(), false, 0),
            (&self.slice(w)?.as_view(), false, 0),
            (&mut out.as_view_mut(), 0),
            (n, i, o),
            1,
        )?;
        Ok(Self::tensor(vec![n, i], out))
    }

    fn conv2d_input_adjoint_batch(
        &self,
        g: &Tensor<T>,
        w: &Tensor<T>,
        geom: &ConvGeometry,
        input_hw: (usize, usize),
    ) -> Result<Tensor<T>> {
        let _timer = self.profile(|| format!("conv2d input adjoint {:?}", w.shape()));
        let n = g.shape().first().copied().unwrap_or(0);
        let ws = dims4(w, "convolution weight")?;
        let chw = [ws[1], input_hw.0, input_hw.1];
        let mut out = self.alloc::<T>(n * chw.iter().product::<usize>())?;
        self.conv_adjoint_into(self.slice(g)?, n, self.slice(w)?, ws, geom, chw, &mut out, None, 0)?;
        Ok(Self::tensor(vec![n, chw[0], chw[1], chw[2]], out))
    }

    fn max_pool_adjoint_batch(&self, x: &Tensor<T>, g: &Tensor<T>, windows: &PoolWindows) -> Result<Tensor<T>> {
        self.route(x, g, windows, 0)
    }

    fn avg_pool_adjoint_batch(&self, g: &Tensor<T>, windows: &PoolWindows) -> Result<Tensor<T>> {
        self.to_device(&CpuBackend.avg_pool_adjoint_batch(&self.to_host(g)?, windows)?)
    }

    fn channel_scale_batch(&self, g: &Tensor<T>, scale: &Tensor<T>) -> Result<Tensor<T>> {
        let c = g.shape().get(1).copied().unwrap_or(0);
        if g.shape().len() < 2 || scale.len() != c {
            return Err(RspError::shape("channel-wise scale input", format!("N×{}×…", scale.len()), g.shape()));
        }
        let p = g.len() / (g.shape()[0] * c).max(1);
        let mut out = self.alloc::<T>(g.len())?;
        let s = self.slice(scale)?;
        let (ci, pi, len, with_shift) = (c as i32, p as i64, g.len() as i64, 0i32);
        // SAFETY: `g` and `out` hold `len` elements, `scale` C (mean and shift are not read).
        unsafe {
            self.stream()
                .launch_builder(&T::kernels(self).channel_affine)
                .arg(self.slice(g)?)
                .arg(s)
                .arg(s)
                .arg(s)
                .arg(&with_shift)
                .arg(&mut out)
                .arg(&ci)
                .arg(&pi)
                .arg(&len)
                .launch(Self::grid(g.len()))
        }
        .map_err(device_error)?;
        Ok(Self::tensor(g.shape().to_vec(), out))
    }

    fn sectional_rule_batch(
        &self,
        x: &Tensor<T>,
        r: &Tensor<T>,
        geom: &ConvGeometry,
        kernel_hw: (usize, usize),
    ) -> Result<Tensor<T>> {
        let [n, c, h, w] = dims4(x, "sectional rule input")?;
        let [rn, o, ho, wo] = dims4(r, "sectional rule relevance")?;
        let (kh, kw) = kernel_hw;
        if rn != n || geom.output_size((h, w), kernel_hw) != Some((ho, wo)) {
            return Err(RspError::shape("sectional rule relevance", format!("{n}×O×(output of {h}×{w})"), r.shape()));
        }
        let _timer = self.profile(|| format!("sectional rule {kh}x{kw} {c}->{o} at {h}x{w}"));
        let (ck, p, per_in) = (c * kh * kw, ho * wo, c * h * w);
        let xs = self.slice(x)?;
        let rs = self.slice(r)?;
        let x_pos = self.ewise(Ewise::PositivePart, xs, xs, x.len(), T::zero(), T::zero())?;
        if (kh, kw, h, w) == (1, 1, 1, 1) {
            return self.sectional_rule_rank_one(&x_pos, rs, n, c, o);
        }
        let mut contributions = self.alloc::<T>(x.len())?;
        let chunk = self.chunk::<T>(2 * ck * p + 2 * o * p + o * ck, n);
        for start in (0..n).step_by(chunk.max(1)) {
            let ns = chunk.min(n - start);
            let in_range = start * per_in..(start + ns) * per_in;
            let x_chunk = x_pos.slice(in_range.clone());
            let col = self.im2col(&x_chunk, ns, [c, h, w], kernel_hw, geom, (ho, wo))?;
            let r_chunk = rs.slice(start * o * p..(start + ns) * o * p);
            for (mode, negative) in [(1, 0i32), (2, 1i32)] {
                // R^± (as a magnitude), then G^± = R^± · colᵀ per sample.
                let r_part = {
                    let op = if negative == 1 { Ewise::NegativePart } else { Ewise::PositivePart } as i32;
                    let len = ns * o * p;
                    let mut part = self.alloc::<T>(len)?;
                    let (opi, leni, zero) = (op, len as i64, T::zero());
                    // SAFETY: `r_chunk` and `part` hold `len` elements.
                    unsafe {
                        self.stream()
                            .launch_builder(&T::kernels(self).ewise)
                            .arg(&opi)
                            .arg(&leni)
                            .arg(&r_chunk)
                            .arg(&r_chunk)
                            .arg(&mut part)
                            .arg(&zero)
                            .arg(&zero)
                            .launch(Self::grid(len))
                    }
                    .map_err(device_error)?;
                    part
                };
                let mut g = self.alloc::<T>(ns * o * ck)?;
                self.kernel_gradients(&r_part, &col, &mut g, ns, (o, ck, p))?;
                // A^± = G^± · col; S^± = R^± ⊘ A^± where R^± > 0.
                let mut a = self.alloc::<T>(ns * o * p)?;
                self.gemm(
                    (&g.as_view(), false, o * ck),
                    (&col.as_view(), false, ck * p),
                    (&mut a.as_view_mut(), o * p),
                    (o, p, ck),
                    ns,
                )?;
                let len = (ns * o * p) as i64;
                let mut s = self.alloc::<T>(ns * o * p)?;
                // SAFETY: `r_chunk`, `a` and `s` hold `len` elements.
                unsafe {
                    self.stream()
                        .launch_builder(&T::kernels(self).section_quotient)
                        .arg(&r_chunk)
                        .arg(&a)
                        .arg(&mut s)
                        .arg(&negative)
                        .arg(&len)
                        .launch(Self::grid(ns * o * p))
                }
                .map_err(device_error)?;
                drop(a);
                // x⁺ ⊙ convᵀ(S^±, G^±): C⁺ first (mode 1), then C⁺ − C⁻ (mode 2).
                let mut back = self.alloc::<T>(ns * ck * p)?;
                self.gemm(
                    (&g.as_view(), true, o * ck),
                    (&s.as_view(), false, o * p),
                    (&mut back.as_view_mut(), ck * p),
                    (ck, p, o),
                    ns,
                )?;
                self.col2im(
                    &back,
                    &mut contributions.slice_mut(in_range.clone()),
                    &x_chunk,
                    mode,
                    ns,
                    [c, h, w],
                    kernel_hw,
                    geom,
                    (ho, wo),
                )?;
            }
        }
        if kh != 1 {
            let totals = self.sample_stat(rs, n, o * p, 0)?;
            let counts = self.sample_stat(&contributions, n, per_in, 1)?;
            let (per, len) = (per_in as i64, (n * per_in) as i64);
            // SAFETY: `contributions` holds N·per elements, the statistics N.
            unsafe {
                self.stream()
                    .launch_builder(&T::kernels(self).double_and_shift)
                    .arg(&mut contributions)
                    .arg(&totals)
                    .arg(&counts)
                    .arg(&per)
                    .arg(&len)
                    .launch(Self::grid(n * per_in))
            }
            .map_err(device_error)?;
        }
        Ok(Self::tensor(vec![n, c, h, w], contributions))
    }

    fn zb_rule_batch(&self, x: &Tensor<T>, r: &Tensor<T>, w: &Tensor<T>, geom: &ConvGeometry) -> Result<Tensor<T>> {
        let _timer = self.profile(|| format!("z^B rule {:?}", w.shape()));
        let [n, c, h, wd] = dims4(x, "z^B rule input")?;
        let ws = dims4(w, "convolution weight")?;
        if ws[1] != c {
            return Err(RspError::shape("z^B rule input", format!("N×{}×H×W", ws[1]), x.shape()));
        }
        let per = c * h * wd;
        let xs = self.slice(x)?;
        let wt = self.slice(w)?;
        let low = self.sample_stat(xs, n, per, 2)?;
        let high = self.sample_stat(xs, n, per, 3)?;
        let w_pos = self.ewise(Ewise::PositivePart, wt, wt, w.len(), T::zero(), T::zero())?;
        let w_neg = self.ewise(Ewise::MinZero, wt, wt, w.len(), T::zero(), T::zero())?;
        let filled = |values: &CudaSlice<T>| -> Result<CudaSlice<T>> {
            let mut out = self.alloc::<T>(n * per)?;
            let (p, len) = (per as i64, (n * per) as i64);
            // SAFETY: `out` holds N·per elements, `values` N.
            unsafe {
                self.stream()
                    .launch_builder(&T::kernels(self).fill_per_sample)
                    .arg(&mut out)
                    .arg(values)
                    .arg(&p)
                    .arg(&len)
                    .launch(Self::grid(n * per))
            }
            .map_err(device_error)?;
            Ok(out)
        };
        let (lows, highs) = (filled(&low)?, filled(&high)?);
        let (zx, (ho, wo)) = self.conv(xs, n, [c, h, wd], wt, ws, geom)?;
        let (zl, _) = self.conv(&lows, n, [c, h, wd], &w_pos, ws, geom)?;
        let (zh, _) = self.conv(&highs, n, [c, h, wd], &w_neg, ws, geom)?;
        let out_len = n * ws[0] * ho * wo;
        if r.len() != out_len {
            return Err(RspError::shape("z^B rule relevance", format!("{n}×{}×{ho}×{wo}", ws[0]), r.shape()));
        }
        let z = self.ewise(Ewise::Sub, &zx, &zl, out_len, T::zero(), T::zero())?;
        let z = self.ewise(Ewise::Sub, &z, &zh, out_len, T::zero(), T::zero())?;
        let s = self.ewise(Ewise::StabilisedDivide, self.slice(r)?, &z, out_len, T::zero(), T::zero())?;
        let chw = [c, h, wd];
        let through = |weight: &CudaSlice<T>| -> Result<CudaSlice<T>> {
            let mut out = self.alloc::<T>(n * per)?;
            self.conv_adjoint_into(&s, n, weight, ws, geom, chw, &mut out, None, 0)?;
            Ok(out)
        };
        let (tw, tp, tn) = (through(wt)?, through(&w_pos)?, through(&w_neg)?);
        let mut out = self.alloc::<T>(n * per)?;
        let (p, len) = (per as i64, (n * per) as i64);
        // SAFETY: every operand holds N·per elements, `low` and `high` N.
        unsafe {
            self.stream()
                .launch_builder(&T::kernels(self).zb_combine)
                .arg(xs)
                .arg(&tw)
                .arg(&tp)
                .arg(&tn)
                .arg(&low)
                .arg(&high)
                .arg(&mut out)
                .arg(&p)
                .arg(&len)
                .launch(Self::grid(n * per))
        }
        .map_err(device_error)?;
        Ok(Self::tensor(vec![n, c, h, wd], out))
    }

    fn max_pool_rule_batch(&self, x: &Tensor<T>, r: &Tensor<T>, windows: &PoolWindows) -> Result<Tensor<T>> {
        self.route(x, r, windows, 1)
    }

    fn avg_pool_rule_batch(&self, x: &Tensor<T>, r: &Tensor<T>, windows: &PoolWindows) -> Result<Tensor<T>> {
        self.to_device(&CpuBackend.avg_pool_rule_batch(&self.to_host(x)?, &self.to_host(r)?, windows)?)
    }

    // The primitives of the composed rules: this backend runs its own fused
    // rules, so these serve a caller of `composed` only (on the host).

    fn conv2d_weight_grad_batch(
        &self,
        x: &Tensor<T>,
        r: &Tensor<T>,
        geom: &ConvGeometry,
        kernel_hw: (usize, usize),
    ) -> Result<Tensor<T>> {
        self.to_device(&CpuBackend.conv2d_weight_grad_batch(&self.to_host(x)?, &self.to_host(r)?, geom, kernel_hw)?)
    }

    fn conv2d_sample_weights_batch(&self, x: &Tensor<T>, w: &Tensor<T>, geom: &ConvGeometry) -> Result<Tensor<T>> {
        self.to_device(&CpuBackend.conv2d_sample_weights_batch(&self.to_host(x)?, &self.to_host(w)?, geom)?)
    }

    fn conv2d_input_adjoint_sample_weights_batch(
        &self,
        s: &Tensor<T>,
        w: &Tensor<T>,
        geom: &ConvGeometry,
        input_hw: (usize, usize),
    ) -> Result<Tensor<T>> {
        let (s, w) = (self.to_host(s)?, self.to_host(w)?);
        self.to_device(&CpuBackend.conv2d_input_adjoint_sample_weights_batch(&s, &w, geom, input_hw)?)
    }

    fn nonzero_counts_batch(&self, t: &Tensor<T>) -> Result<Tensor<T>> {
        self.to_device(&CpuBackend.nonzero_counts_batch(&self.to_host(t)?)?)
    }

    fn shift_nonzero_batch(&self, c: &Tensor<T>, factor: T, shifts: &Tensor<T>) -> Result<Tensor<T>> {
        self.to_device(&CpuBackend.shift_nonzero_batch(&self.to_host(c)?, factor, &self.to_host(shifts)?)?)
    }

    fn rap_relative_rule_batch(
        &self,
        x: &Tensor<T>,
        r: &Tensor<T>,
        w: &Tensor<T>,
        geom: &ConvGeometry,
        flavour: RapFlavour,
    ) -> Result<Tensor<T>> {
        let (x, r, w) = (self.to_host(x)?, self.to_host(r)?, self.to_host(w)?);
        self.to_device(&CpuBackend.rap_relative_rule_batch(&x, &r, &w, geom, flavour)?)
    }

    fn rap_first_propagation_batch(
        &self,
        x: &Tensor<T>,
        r: &Tensor<T>,
        w: &Tensor<T>,
        bias: Option<&Tensor<T>>,
    ) -> Result<Tensor<T>> {
        let bias = bias.map(|b| self.to_host(b)).transpose()?;
        let (x, r, w) = (self.to_host(x)?, self.to_host(r)?, self.to_host(w)?);
        self.to_device(&CpuBackend.rap_first_propagation_batch(&x, &r, &w, bias.as_ref())?)
    }

    fn batch_norm_rule_batch(
        &self,
        x: &Tensor<T>,
        r: &Tensor<T>,
        w: &Tensor<T>,
        beta: &Tensor<T>,
    ) -> Result<Tensor<T>> {
        let out = CpuBackend.batch_norm_rule_batch(
            &self.to_host(x)?,
            &self.to_host(r)?,
            &self.to_host(w)?,
            &self.to_host(beta)?,
        )?;
        self.to_device(&out)
    }

    fn add_rule_batch(&self, a: &Tensor<T>, b: &Tensor<T>, r: &Tensor<T>) -> Result<(Tensor<T>, Tensor<T>)> {
        if a.shape() != r.shape() || b.shape() != r.shape() {
            return Err(RspError::shape("summands of a residual sum", format!("{:?}", r.shape()), a.shape()));
        }
        let len = r.len();
        let (mut ra, mut rb) = (self.alloc::<T>(len)?, self.alloc::<T>(len)?);
        let len_i = len as i64;
        // SAFETY: all five buffers hold `len` elements.
        unsafe {
            self.stream()
                .launch_builder(&T::kernels(self).add_rule)
                .arg(self.slice(a)?)
                .arg(self.slice(b)?)
                .arg(self.slice(r)?)
                .arg(&mut ra)
                .arg(&mut rb)
                .arg(&len_i)
                .launch(Self::grid(len))
        }
        .map_err(device_error)?;
        Ok((Self::tensor(r.shape().to_vec(), ra), Self::tensor(r.shape().to_vec(), rb)))
    }

    fn weighted_activation_batch(&self, a: &Tensor<T>, g: &Tensor<T>) -> Result<Tensor<T>> {
        self.to_device(&CpuBackend.weighted_activation_batch(&self.to_host(a)?, &self.to_host(g)?)?)
    }

    fn comparative_start_batch(&self, a: &Tensor<T>, grads: &Tensor<T>, groups: &[usize]) -> Result<Tensor<T>> {
        let _timer = self.profile(|| format!("comparative start (on the host) {:?}", &a.shape()[1..]));
        self.to_device(&CpuBackend.comparative_start_batch(&self.to_host(a)?, &self.to_host(grads)?, groups)?)
    }

    fn gather_samples(&self, t: &Tensor<T>, rows: &[usize]) -> Result<Tensor<T>> {
        let _timer = self.profile(|| format!("gather {:?}", &t.shape()[1..]));
        let n = t.shape().first().copied().unwrap_or(0);
        let per = t.len() / n.max(1);
        let src = self.slice(t)?;
        let mut out = self.alloc::<T>(rows.len() * per)?;
        for (i, &row) in rows.iter().enumerate() {
            if row >= n {
                return Err(RspError::InvalidArgument(format!("sample {row} gathered from a batch of {n}")));
            }
            self.stream()
                .memcpy_dtod(&src.slice(row * per..(row + 1) * per), &mut out.slice_mut(i * per..(i + 1) * per))
                .map_err(device_error)?;
        }
        let mut shape = t.shape().to_vec();
        if let Some(first) = shape.first_mut() {
            *first = rows.len();
        }
        Ok(Self::tensor(shape, out))
    }

    fn linear_adjoint_grouped(&self, g: &Tensor<T>, w: &Tensor<T>, groups: &[usize]) -> Result<Tensor<T>> {
        // On the device one product over all rows reads the weights once anyway.
        let _ = groups;
        self.linear_adjoint_batch(g, w)
    }

    fn single_class_start_batch(&self, a: &Tensor<T>, g: &Tensor<T>) -> Result<Tensor<T>> {
        let _timer = self.profile(|| format!("single-class start {:?}", &a.shape()[1..]));
        let [n, c, h, w] = dims4(a, "start layer activation")?;
        if g.shape() != a.shape() {
            return Err(RspError::shape("gradient at the start layer", format!("{:?}", a.shape()), g.shape()));
        }
        let k = T::kernels(self);
        let (area, per) = (h * w, c * h * w);
        // A ⊙ α with α the spatial mean of the gradient, per sample and channel.
        let sums = self.sample_stat(self.slice(g)?, n * c, area, 0)?;
        let alpha = self.ewise(Ewise::DivideBy, &sums, &sums, n * c, T::of(area as f64), T::zero())?;
        let mut weighted = self.alloc::<T>(n * per)?;
        let (area_i, len) = (area as i64, (n * per) as i64);
        // SAFETY: `a` and `weighted` hold N·C·H·W elements, `alpha` N·C.
        unsafe {
            self.stream()
                .launch_builder(&k.mul_per_sample)
                .arg(self.slice(a)?)
                .arg(&alpha)
                .arg(&mut weighted)
                .arg(&area_i)
                .arg(&len)
                .launch(Self::grid(n * per))
        }
        .map_err(device_error)?;
        // Divided by max + 1e-9, or by max |·| where the maximum is ≤ 0 (start.rs).
        let maxima = self.stream().clone_dtoh(&self.sample_stat(&weighted, n, per, 3)?).map_err(device_error)?;
        let magnitudes = self.stream().clone_dtoh(&self.sample_stat(&weighted, n, per, 6)?).map_err(device_error)?;
        let denominators: Vec<T> = maxima
            .iter()
            .zip(&magnitudes)
            .take(n)
            .map(|(&max, &magnitude)| if max > T::zero() { max + T::eps9() } else { magnitude })
            .collect();
        let denominators = self.upload_slice(&denominators)?;
        let mut out = self.alloc::<T>(n * per)?;
        let per_i = per as i64;
        // SAFETY: `weighted` and `out` hold N·per elements, `denominators` N.
        unsafe {
            self.stream()
                .launch_builder(&k.div_per_sample)
                .arg(&weighted)
                .arg(&denominators)
                .arg(&mut out)
                .arg(&per_i)
                .arg(&len)
                .launch(Self::grid(n * per))
        }
        .map_err(device_error)?;
        Ok(Self::tensor(a.shape().to_vec(), out))
    }

    fn first_non_finite(&self, t: &Tensor<T>) -> Result<Option<usize>> {
        let _timer = self.profile(|| format!("finiteness check {:?}", &t.shape()[1..]));
        let mut first = self.stream().clone_htod(&[u64::MAX]).map_err(device_error)?;
        let len = t.len() as i64;
        // SAFETY: `t` holds `len` elements, `first` one.
        unsafe {
            self.stream()
                .launch_builder(&T::kernels(self).first_non_finite)
                .arg(self.slice(t)?)
                .arg(&len)
                .arg(&mut first)
                .launch(Self::grid(t.len()))
        }
        .map_err(device_error)?;
        let first = self.stream().clone_dtoh(&first).map_err(device_error)?;
        Ok(first.first().filter(|&&i| i != u64::MAX).map(|&i| i as usize))
    }
}

impl CudaBackend {
    /// The sectional rule of a linear layer (a 1×1 convolution on a 1×1 map):
    /// there `G^± = R^± x⁺ᵀ` has rank one, so `A^± = R^± (x⁺·x⁺)` and
    /// `convᵀ(S^±, G^±) = x⁺ (R^±·S^±)`, without the `O×I` matrix per sample
    /// (411 MB for VGG16's first linear layer in f32). The same formula,
    /// summed in another order.
    fn sectional_rule_rank_one<T: CudaFloat>(
        &self,
        x_pos: &CudaSlice<T>,
        r: &CudaSlice<T>,
        n: usize,
        i: usize,
        o: usize,
    ) -> Result<Tensor<T>> {
        let k = T::kernels(self);
        let norms = self.sample_stat(x_pos, n, i, 5)?;
        let mut contributions = self.alloc::<T>(n * i)?;
        let unit = ConvGeometry::square(1, 0);
        for (mode, negative, part_op) in [(1, 0i32, Ewise::PositivePart), (2, 1i32, Ewise::NegativePart)] {
            let r_part = self.ewise(part_op, r, r, n * o, T::zero(), T::zero())?;
            let mut a = self.alloc::<T>(n * o)?;
            let (per_o, len_o) = (o as i64, (n * o) as i64);
            // SAFETY: `r_part` and `a` hold N·O elements, `norms` N.
            unsafe {
                self.stream()
                    .launch_builder(&k.mul_per_sample)
                    .arg(&r_part)
                    .arg(&norms)
                    .arg(&mut a)
                    .arg(&per_o)
                    .arg(&len_o)
                    .launch(Self::grid(n * o))
            }
            .map_err(device_error)?;
            let mut s = self.alloc::<T>(n * o)?;
            // SAFETY: `r`, `a` and `s` hold N·O elements.
            unsafe {
                self.stream()
                    .launch_builder(&k.section_quotient)
                    .arg(r)
                    .arg(&a)
                    .arg(&mut s)
                    .arg(&negative)
                    .arg(&len_o)
                    .launch(Self::grid(n * o))
            }
            .map_err(device_error)?;
            let weighted = self.ewise(Ewise::Mul, &r_part, &s, n * o, T::zero(), T::zero())?;
            let dots = self.sample_stat(&weighted, n, o, 0)?;
            let mut back = self.alloc::<T>(n * i)?;
            let (per_i, len_i) = (i as i64, (n * i) as i64);
            // SAFETY: `x_pos` and `back` hold N·I elements, `dots` N.
            unsafe {
                self.stream()
                    .launch_builder(&k.mul_per_sample)
                    .arg(x_pos)
                    .arg(&dots)
                    .arg(&mut back)
                    .arg(&per_i)
                    .arg(&len_i)
                    .launch(Self::grid(n * i))
            }
            .map_err(device_error)?;
            let mut out = contributions.slice_mut(..);
            self.col2im(&back, &mut out, &x_pos.slice(..), mode, n, [i, 1, 1], (1, 1), &unit, (1, 1))?;
        }
        Ok(Self::tensor(vec![n, i, 1, 1], contributions))
    }

    /// Routing through max pooling (`mode` 0: the adjoint of `g`; 1: RSP's
    /// rule with relevance `g`), on the device for windows that do not overlap.
    fn route<T: CudaFloat>(&self, x: &Tensor<T>, g: &Tensor<T>, windows: &PoolWindows, mode: i32) -> Result<Tensor<T>> {
        let _timer = self.profile(|| format!("max pool routing (mode {mode}) {:?}", &x.shape()[1..]));
        if !windows_disjoint(windows) {
            let (hx, hg) = (self.to_host(x)?, self.to_host(g)?);
            let out = if mode == 0 {
                CpuBackend.max_pool_adjoint_batch(&hx, &hg, windows)?
            } else {
                CpuBackend.max_pool_rule_batch(&hx, &hg, windows)?
            };
            return self.to_device(&out);
        }
        let [n, c, h, w] = dims4(x, "max-pool input")?;
        let (ho, wo) = windows.output_hw();
        if (h, w) != windows.input_hw || g.shape() != [n, c, ho, wo] {
            return Err(RspError::shape("max-pool relevance", format!("{n}×{c}×{ho}×{wo}"), g.shape()));
        }
        let mut out = self.alloc::<T>(x.len())?;
        let [r0, r1, c0, c1] = self.pool_ranges(windows)?;
        let ints = [h, w, ho, wo].map(|v| v as i32);
        let total = n * c * ho * wo;
        let len = total as i64;
        // SAFETY: windows lie inside the input; `g` holds `total` elements, `x` and `out` N·C·H·W.
        unsafe {
            let mut l = self.stream().launch_builder(&T::kernels(self).max_pool_route);
            l.arg(self.slice(x)?).arg(self.slice(g)?).arg(&mut out).arg(&mode).arg(&r0).arg(&r1).arg(&c0).arg(&c1);
            for v in &ints {
                l.arg(v);
            }
            l.arg(&len).launch(Self::grid(total))
        }
        .map_err(device_error)?;
        Ok(Self::tensor(x.shape().to_vec(), out))
    }
}

//! Backend-owned tensors: a batch-first shape and an opaque storage that only
//! the backend that made it can read.
//!
//! A [`Tensor`] is a handle, not an array: the network's batch forward pass
//! keeps every activation in tensors of its backend, and the host sees the
//! numbers only through [`Backend::download`](super::Backend::download). A
//! device backend's storage is device memory; the host backends (CPU and
//! reference) store a [`HostStorage`], one contiguous row-major buffer shared
//! by reference counting, so that uploading a layer's weights to them copies
//! nothing.

use crate::error::{Result, RspError};
use crate::float::Float;
use ndarray::{Array, ArrayD, ArrayViewD, Dimension, IxDyn};
use std::any::Any;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

/// A tensor owned by a backend: its shape (batch first where it has a batch)
/// and the backend's storage, which every backend keeps as one contiguous
/// row-major buffer of [`Tensor::len`] elements (so [`Tensor::reshaped`] needs
/// no backend). Cloning a tensor clones the handle, not the data.
///
/// ```
/// use rsp::backend::{Backend, CpuBackend, Tensor};
/// let x = ndarray::Array::from_shape_fn((2, 3), |(i, j)| (i * 3 + j) as f32).into_dyn();
/// let cpu = CpuBackend;
/// let t: Tensor<f32> = Backend::<f32>::upload(&cpu, x.view())?;
/// assert_eq!(t.shape(), &[2, 3]);
/// let flat = t.reshaped(vec![6])?;
/// assert_eq!(Backend::<f32>::download(&cpu, &flat)?.as_slice().unwrap(), &[0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
/// # Ok::<(), rsp::RspError>(())
/// ```
pub struct Tensor<T> {
    shape: Vec<usize>,
    storage: Arc<dyn Any + Send + Sync>,
    _float: PhantomData<fn() -> T>,
}

impl<T> Clone for Tensor<T> {
    fn clone(&self) -> Self {
        Tensor { shape: self.shape.clone(), storage: Arc::clone(&self.storage), _float: PhantomData }
    }
}

impl<T> fmt::Debug for Tensor<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tensor{:?}", self.shape)
    }
}

impl<T: Float> Tensor<T> {
    /// A tensor of `shape` stored in `storage` (for backend implementations).
    pub fn from_storage<S: Any + Send + Sync>(shape: Vec<usize>, storage: S) -> Self {
        Tensor { shape, storage: Arc::new(storage), _float: PhantomData }
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// True when the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The storage, if it is an `S` (a backend reads its own tensors this way;
    /// a tensor of another backend gives `None`).
    pub fn storage<S: Any>(&self) -> Option<&S> {
        self.storage.downcast_ref::<S>()
    }

    /// The same data seen with another shape of as many elements (no copy).
    ///
    /// # Errors
    /// [`RspError::Shape`] if the element counts differ.
    pub fn reshaped(&self, shape: Vec<usize>) -> Result<Self> {
        let len: usize = shape.iter().product();
        if len != self.len() {
            return Err(RspError::shape("reshaped tensor", format!("{} elements", self.len()), &shape));
        }
        Ok(Tensor { shape, storage: Arc::clone(&self.storage), _float: PhantomData })
    }
}

/// A contiguous row-major buffer on the host: what [`HostStorage`] shares.
/// Implemented for `Vec<T>` and for standard-layout ndarrays (a layer's own
/// weight arrays, shared without a copy).
pub trait HostBuffer<T>: Send + Sync {
    /// The elements in row-major order.
    fn as_slice(&self) -> &[T];
}

impl<T: Float> HostBuffer<T> for Vec<T> {
    fn as_slice(&self) -> &[T] {
        self
    }
}

impl<T: Float, D: Dimension> HostBuffer<T> for Array<T, D> {
    fn as_slice(&self) -> &[T] {
        // Layers keep their parameters in standard layout (their constructors
        // convert). Any other layout reads as empty, which the element count
        // check of every upload refuses with a shape error.
        if self.is_standard_layout() {
            self.as_slice_memory_order().unwrap_or(&[])
        } else {
            &[]
        }
    }
}

/// A layer's parameter as it lives on the host: its shape and its buffer,
/// shared with the layer ([`Layer::backend_parameters`](crate::layers::Layer::backend_parameters)).
#[derive(Clone)]
pub struct HostParameter<T> {
    /// The shape.
    pub shape: Vec<usize>,
    /// The elements, row-major.
    pub buffer: Arc<dyn HostBuffer<T>>,
}

impl<T> fmt::Debug for HostParameter<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HostParameter{:?}", self.shape)
    }
}

impl<T: Float> HostParameter<T> {
    /// A parameter sharing `array` (kept in standard layout by its owner).
    pub fn shared<D: Dimension + 'static>(array: &Arc<Array<T, D>>) -> Self {
        HostParameter { shape: array.shape().to_vec(), buffer: Arc::clone(array) as Arc<dyn HostBuffer<T>> }
    }
}

/// The storage of the host backends ([`CpuBackend`](super::CpuBackend),
/// [`ReferenceBackend`](super::ReferenceBackend)): a shared host buffer, or
/// one buffer per sample (what the per-sample kernels return: stacking them
/// would copy every activation of a batch once more).
pub struct HostStorage<T> {
    data: HostData<T>,
}

enum HostData<T> {
    Whole(Arc<dyn HostBuffer<T>>),
    Samples(Vec<ArrayD<T>>),
}

/// A host tensor of `shape` sharing `buffer` (which must hold exactly as many elements).
pub(crate) fn host_tensor_shared<T: Float>(shape: &[usize], buffer: Arc<dyn HostBuffer<T>>) -> Result<Tensor<T>> {
    let len: usize = shape.iter().product();
    if buffer.as_slice().len() != len {
        return Err(RspError::shape("uploaded tensor", format!("{} elements", buffer.as_slice().len()), shape));
    }
    Ok(Tensor::from_storage(shape.to_vec(), HostStorage { data: HostData::Whole(buffer) }))
}

/// A host tensor owning `array`.
pub(crate) fn host_tensor<T: Float>(array: ArrayD<T>) -> Tensor<T> {
    let shape = array.shape().to_vec();
    let len = array.len();
    let data = if array.is_standard_layout() {
        // The array's own buffer when it holds exactly the elements, in order.
        let (data, offset) = array.into_raw_vec_and_offset();
        if offset.unwrap_or(0) == 0 && data.len() == len {
            data
        } else {
            let start = offset.unwrap_or(0);
            data[start..start + len].to_vec()
        }
    } else {
        array.iter().copied().collect()
    };
    Tensor::from_storage(shape, HostStorage { data: HostData::Whole(Arc::new(data) as Arc<dyn HostBuffer<T>>) })
}

/// A host tensor of the samples `samples` (of equal shapes, standard layout), kept apart.
pub(crate) fn host_tensor_samples<T: Float>(samples: Vec<ArrayD<T>>) -> Result<Tensor<T>> {
    let sample_shape = samples.first().map(|s| s.shape().to_vec()).unwrap_or_default();
    let mut samples = samples;
    for s in &mut samples {
        if s.shape() != sample_shape.as_slice() {
            return Err(RspError::shape("sample of a batch", format!("{sample_shape:?}"), s.shape()));
        }
        if !s.is_standard_layout() {
            *s = s.as_standard_layout().into_owned();
        }
    }
    let mut shape = vec![samples.len()];
    shape.extend(sample_shape);
    Ok(Tensor::from_storage(shape, HostStorage { data: HostData::Samples(samples) }))
}

fn storage<'t, T: Float>(backend: &str, t: &'t Tensor<T>) -> Result<&'t HostData<T>> {
    t.storage::<HostStorage<T>>().map(|s| &s.data).ok_or_else(|| RspError::Backend {
        backend: backend.to_string(),
        reason: format!("a tensor of shape {:?} was made by another backend", t.shape()),
    })
}

/// The host view of a host backend's tensor stored whole (uploads,
/// parameters, element-wise results), or a typed error for a tensor another
/// backend made. A tensor kept per sample is viewed with [`host_samples`].
pub(crate) fn host_view<'t, T: Float>(backend: &str, t: &'t Tensor<T>) -> Result<ArrayViewD<'t, T>> {
    match storage(backend, t)? {
        HostData::Whole(buffer) => {
            Ok(ArrayViewD::from_shape(IxDyn(t.shape()), buffer.as_slice()).expect("checked element count"))
        }
        HostData::Samples(samples) if samples.len() == 1 && t.shape().first() == Some(&1) => {
            Ok(sample_view(&samples[0], t.shape())?)
        }
        HostData::Samples(_) => Err(RspError::Backend {
            backend: backend.to_string(),
            reason: format!("a batch tensor of shape {:?} kept per sample read whole", t.shape()),
        }),
    }
}

/// A sample's buffer seen with the tensor's `shape` (the first axis being the sample's own).
fn sample_view<'t, T: Float>(sample: &'t ArrayD<T>, shape: &[usize]) -> Result<ArrayViewD<'t, T>> {
    let slice = sample.as_slice_memory_order().filter(|_| sample.is_standard_layout()).unwrap_or(&[]);
    ArrayViewD::from_shape(IxDyn(shape), slice)
        .map_err(|_| RspError::shape("a sample of a batch tensor", format!("{} elements", slice.len()), shape))
}

/// The views of the samples (the first axis) of a host backend's tensor,
/// however it is stored.
pub(crate) fn host_samples<'t, T: Float>(backend: &str, t: &'t Tensor<T>) -> Result<Vec<ArrayViewD<'t, T>>> {
    let n = t.shape().first().copied().unwrap_or(0);
    match storage(backend, t)? {
        HostData::Whole(_) => {
            let whole = host_view(backend, t)?;
            Ok((0..n).map(|i| whole.clone().index_axis_move(ndarray::Axis(0), i)).collect())
        }
        HostData::Samples(samples) => {
            if samples.len() != n {
                return Err(RspError::Backend {
                    backend: backend.to_string(),
                    reason: format!(
                        "a tensor of {} samples reshaped to {:?} across its batch axis",
                        samples.len(),
                        t.shape()
                    ),
                });
            }
            samples.iter().map(|s| sample_view(s, &t.shape()[1..])).collect()
        }
    }
}

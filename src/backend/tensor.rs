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
/// [`ReferenceBackend`](super::ReferenceBackend)): a shared host buffer.
pub struct HostStorage<T> {
    buffer: Arc<dyn HostBuffer<T>>,
}

/// A host tensor of `shape` sharing `buffer` (which must hold exactly as many elements).
pub(crate) fn host_tensor_shared<T: Float>(shape: &[usize], buffer: Arc<dyn HostBuffer<T>>) -> Result<Tensor<T>> {
    let len: usize = shape.iter().product();
    if buffer.as_slice().len() != len {
        return Err(RspError::shape("uploaded tensor", format!("{} elements", buffer.as_slice().len()), shape));
    }
    Ok(Tensor::from_storage(shape.to_vec(), HostStorage { buffer }))
}

/// A host tensor owning `array`.
pub(crate) fn host_tensor<T: Float>(array: ArrayD<T>) -> Tensor<T> {
    let shape = array.shape().to_vec();
    let data = if array.is_standard_layout() {
        let (data, offset) = array.into_raw_vec_and_offset();
        debug_assert_eq!(offset.unwrap_or(0), 0);
        data
    } else {
        array.iter().copied().collect()
    };
    Tensor::from_storage(shape, HostStorage { buffer: Arc::new(data) as Arc<dyn HostBuffer<T>> })
}

/// The host view of a host backend's tensor, or a typed error for a tensor
/// another backend made.
pub(crate) fn host_view<'t, T: Float>(backend: &str, t: &'t Tensor<T>) -> Result<ArrayViewD<'t, T>> {
    let storage = t.storage::<HostStorage<T>>().ok_or_else(|| RspError::Backend {
        backend: backend.to_string(),
        reason: format!("a tensor of shape {:?} was made by another backend", t.shape()),
    })?;
    Ok(ArrayViewD::from_shape(IxDyn(t.shape()), storage.buffer.as_slice()).expect("checked element count"))
}

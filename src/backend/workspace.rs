//! Reusable scratch buffers: the im2col matrices and GEMM intermediates of a
//! layer are tens of megabytes; allocating them afresh for every call costs
//! page faults and zeroing (~7% of a VGG16 attribution), so each thread keeps
//! a few and hands them out again.
//!
//! A buffer is taken out of the calling thread's pool (or allocated) and goes
//! back to the pool of the thread that drops it. Taking never borrows the
//! pool across a call, so re-entrant use (rayon running another sample's
//! kernel on this thread while it waits) is safe: that call simply gets
//! another buffer.

use std::any::Any;
use std::cell::RefCell;
use std::ops::{Deref, DerefMut};

/// At most this many spare buffers per thread (the smallest are dropped).
pub(crate) const MAX_SPARE: usize = 6;

thread_local! {
    static SPARE: RefCell<Vec<(usize, Box<dyn Any>)>> = const { RefCell::new(Vec::new()) };
}

/// A scratch vector of `len` elements with **unspecified contents** (whatever
/// an earlier user left, or zeros): users must write before they read.
pub(crate) struct Scratch<T: Copy + Default + 'static> {
    data: Vec<T>,
}

impl<T: Copy + Default + 'static> Scratch<T> {
    /// A buffer of `len` elements from this thread's pool, or a new one.
    pub(crate) fn take(len: usize) -> Self {
        let reused = SPARE.with(|spare| {
            let mut spare = spare.borrow_mut();
            // The smallest spare buffer of this type that is large enough.
            let best = spare
                .iter()
                .enumerate()
                .filter_map(|(i, (_, b))| b.downcast_ref::<Vec<T>>().map(|v| (i, v.capacity())))
                .filter(|&(_, cap)| cap >= len)
                .min_by_key(|&(_, cap)| cap)
                .map(|(i, _)| i);
            best.map(|i| *spare.swap_remove(i).1.downcast::<Vec<T>>().expect("checked type"))
        });
        let data = match reused {
            Some(mut v) => {
                // Only the part beyond the old length is written here.
                v.resize(len, T::default());
                v
            }
            // `vec![0; n]` maps fresh zero pages lazily instead of writing them.
            None => vec![T::default(); len],
        };
        Scratch { data }
    }
}

impl<T: Copy + Default + 'static> Drop for Scratch<T> {
    fn drop(&mut self) {
        let data = std::mem::take(&mut self.data);
        if data.capacity() == 0 {
            return;
        }
        // `try_with`: during thread teardown the pool may be gone; then just free.
        let _ = SPARE.try_with(|spare| {
            let mut spare = spare.borrow_mut();
            spare.push((data.capacity() * std::mem::size_of::<T>(), Box::new(data)));
            if spare.len() > MAX_SPARE {
                let smallest =
                    spare.iter().enumerate().min_by_key(|(_, (bytes, _))| *bytes).map(|(i, _)| i).expect("non-empty");
                spare.swap_remove(smallest);
            }
        });
    }
}

impl<T: Copy + Default + 'static> Deref for Scratch<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.data
    }
}

impl<T: Copy + Default + 'static> DerefMut for Scratch<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        &mut self.data
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_reused_and_sized() {
        let ptr = {
            let mut a = Scratch::<f32>::take(1000);
            a[999] = 1.0;
            a.as_ptr()
        };
        let b = Scratch::<f32>::take(500);
        assert_eq!(b.len(), 500);
        assert_eq!(b.as_ptr(), ptr, "the spare buffer is handed out again");
        let c = Scratch::<f64>::take(10);
        assert_eq!(c.len(), 10);
        let nested = Scratch::<f32>::take(100);
        assert_ne!(nested.as_ptr(), b.as_ptr());
    }
}

//! The memory estimate of the pre-flight check against the real peak: a
//! counting global allocator measures the bytes each call holds at its peak,
//! independently of the estimate's model of the code. This binary has one
//! test, so no other test allocates while it measures.

use ndarray::Array4;
use rsp::budget::Pass;
use rsp::{Method, Network, RspOptions};
use std::alloc::{GlobalAlloc, Layout, System};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The system allocator, counting the live bytes and their peak.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(bytes: usize) {
    let now = LIVE.fetch_add(bytes, Ordering::SeqCst) + bytes;
    PEAK.fetch_max(now, Ordering::SeqCst);
}

// SAFETY: every call is forwarded unchanged to `System`, which upholds the
// `GlobalAlloc` contract; the counters only observe the sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract is passed on unchanged.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as above.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::SeqCst);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as above.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::SeqCst);
            grew(new_size);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The peak bytes held by `f` beyond what was live when it started.
fn peak_of<R>(f: impl FnOnce() -> R) -> (usize, R) {
    let base = LIVE.load(Ordering::SeqCst);
    PEAK.store(base, Ordering::SeqCst);
    let r = f();
    (PEAK.load(Ordering::SeqCst) - base, r)
}

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn image<T: rsp::Float>(shape: [usize; 4]) -> Array4<T> {
    Array4::from_shape_fn(shape, |(n, c, i, j)| T::of(((n + c * 3 + i * 5 + j * 7) % 11) as f64 / 11.0 - 0.3))
}

/// Every call of `net` on `shape` (forward pass, RSP with and without the
/// layer trace, each baseline) holds at most the estimated bytes.
fn check<T: rsp::Float>(what: &str, net: &Network<T>, shape: [usize; 4]) {
    let x = image::<T>(shape);
    let estimate = |pass| net.estimate(&shape, pass).unwrap().memory as usize;
    let (peak, r) = peak_of(|| net.forward(x.view()));
    r.unwrap();
    let forward = estimate(Pass::Forward);
    println!("{what} {shape:?} {}: forward peak {peak} ≤ estimate {forward}", T::NAME);
    assert!(peak <= forward, "{what} {shape:?}: forward peak {peak} > estimate {forward}");
    let attribution = estimate(Pass::Attribution);
    for method in Method::ALL {
        let (peak, r) = peak_of(|| net.explain(x.view(), 1, &method));
        r.unwrap();
        println!(
            "{what} {shape:?} {}: {method} peak {peak} ≤ estimate {attribution} ({:.1}×)",
            T::NAME,
            attribution as f64 / peak as f64
        );
        assert!(peak <= attribution, "{what} {shape:?} {method}: peak {peak} > estimate {attribution}");
    }
    let options = RspOptions { keep_layer_relevances: true, ..Default::default() };
    let (peak, r) = peak_of(|| net.explain(x.view(), 1, &options));
    r.unwrap();
    let traced = estimate(Pass::AttributionWithTrace);
    assert!(peak <= traced, "{what} {shape:?} trace: peak {peak} > estimate {traced}");
    let (peak, r) = peak_of(|| rsp::attribution::explain_timed(net, x.view(), 1, &RspOptions::default()));
    r.unwrap();
    // All samples at once: the in-flight count is the batch.
    let all = net.estimate(&shape, Pass::Attribution).unwrap();
    let all_at_once = all.memory as usize + (shape[0] - all.samples_in_flight) * all.memory_per_sample as usize;
    assert!(peak <= all_at_once, "{what} {shape:?} timed: peak {peak} > estimate {all_at_once}");
}

#[test]
fn every_call_holds_at_most_its_estimate() {
    let digits = repo("data/digits_vgg.safetensors");
    let golden = |name: &str| repo(&format!("tests/data/golden/{name}.safetensors"));
    // Three threads, so that batches run several samples at once.
    let pool = rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap();
    pool.install(|| {
        let net = Network::<f32>::load(&digits).unwrap();
        check("digits", &net, [1, 3, 64, 64]);
        check("digits", &net, [1, 3, 256, 256]);
        check("digits", &net, [5, 3, 96, 96]);
        check("digits", &Network::<f64>::load(&digits).unwrap(), [4, 3, 128, 128]);
        check("vgg_tiny_bn", &Network::<f64>::load(golden("vgg_tiny_bn")).unwrap(), [3, 3, 32, 32]);
        check("avgpool_stride_rect", &Network::<f32>::load(golden("avgpool_stride_rect")).unwrap(), [2, 3, 40, 48]);
        check("resnet_bottleneck", &Network::<f32>::load(golden("resnet_bottleneck_tiny")).unwrap(), [2, 3, 64, 64]);
    });
}

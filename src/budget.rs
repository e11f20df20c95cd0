//! The pre-flight check of every call: before a forward pass or an
//! attribution runs, [`Network::estimate`] adds up what it will allocate and
//! how much work it will do, and the call is refused with
//! [`RspError::MemoryBudget`] or [`RspError::WorkBound`] when either exceeds
//! the network's limits, instead of aborting on a failed allocation or running
//! for an hour.
//!
//! **Memory.** Per sample in flight: every node's output (kept for the
//! backward pass), as much again for the relevances and gradients of the
//! backward pass, the largest temporary set of any layer
//! ([`LayerCost::scratch_elements`]) and the buffers the backend's scratch pool
//! may keep; per sample of the batch: its results; per thread: the GEMM
//! packing buffers. An attribution runs its samples in parallel, at most as
//! many at once as the rayon pool has threads (a device backend: as many as
//! it asks for). The forward pass ([`Network::forward`]) runs the whole batch
//! at once on the backend. When that many samples at once would exceed the
//! budget, either call splits the batch into the largest parts that fit, and
//! refuses only when one sample does not (the phase-timed
//! [`explain_timed`](crate::attribution::explain_timed) holds every sample at
//! once, so it refuses instead). With a device backend
//! ([`Backend::memory_for_tensors`](crate::backend::Backend::memory_for_tensors))
//! the host kernels' scratch is left out and the budget is also bounded by the
//! device memory for tensors. RSP's comparative
//! start, whose hostile classes are known only after the forward pass, checks
//! its class gradients then (one row per sample and class, holding the
//! activations after the start layer) against the same budget, on top of the
//! attribution's estimate; a part of the batch whose rows do not fit is
//! halved until they do, and only a single sample whose rows do not fit is
//! refused. The budget defaults to
//! [`default_memory_budget`]: 3/4 of the smallest of physical memory,
//! `RLIMIT_AS` and the cgroup's memory limit.
//!
//! **Work.** The sum over the layers of [`LayerCost::work`], per sample,
//! bounded by [`DEFAULT_MAX_WORK`] unless set otherwise.
//!
//! ```
//! use rsp::layers::{Flatten, Layer, Linear};
//! let fc = Linear::new("fc", ndarray::Array2::<f32>::zeros((10, 3 * 64 * 64)), None).unwrap();
//! let mut net = rsp::Network::sequential(vec![Box::new(Flatten) as Box<dyn Layer<f32>>, Box::new(fc)]);
//! let estimate = net.estimate(&[1, 3, 64, 64], rsp::budget::Pass::Attribution).unwrap();
//! assert!(estimate.memory > 0 && estimate.work > 0);
//! net.set_memory_budget(Some(1024)); // 1 KiB: far too little
//! let err = net.attribute(ndarray::Array4::zeros((1, 3, 64, 64)).view(), 0).unwrap_err();
//! assert!(matches!(err, rsp::RspError::MemoryBudget { .. }));
//! ```

use crate::error::{format_bytes, Result, RspError};
use crate::float::Float;
use crate::layers::{elements, LayerCost};
use crate::limits::{DEFAULT_MAX_WORK, FALLBACK_MEMORY_LIMIT, GEMM_WORKSPACE_PER_THREAD, MEMORY_BUDGET_SHARE};
use crate::network::{Network, NodeOp, Source};
use std::sync::OnceLock;

pub use crate::network::Pass;

/// The estimate of one call, from [`Network::estimate`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Estimate {
    /// Bytes the call may hold at its peak.
    pub memory: u64,
    /// Bytes per sample in flight (its working set, without the results).
    pub memory_per_sample: u64,
    /// Samples computed at once: `min(batch, rayon threads)`.
    pub samples_in_flight: usize,
    /// Work per sample, in multiply–add equivalents, summed over the nodes.
    pub work: u64,
    /// The node with the most work, and its work.
    pub heaviest_node: (usize, u64),
}

/// The default memory budget of a call: [`MEMORY_BUDGET_SHARE`] of
/// [`process_memory_limit`] (read once per process).
///
/// ```
/// assert!(rsp::budget::default_memory_budget() <= rsp::budget::process_memory_limit());
/// ```
pub fn default_memory_budget() -> u64 {
    static BUDGET: OnceLock<u64> = OnceLock::new();
    *BUDGET.get_or_init(|| {
        let (num, den) = MEMORY_BUDGET_SHARE;
        (process_memory_limit() as u128 * num as u128 / den as u128) as u64
    })
}

/// The memory this process may use: the smallest of physical memory
/// (`MemTotal` in `/proc/meminfo`), the address-space limit (`RLIMIT_AS`, from
/// `/proc/self/limits`) and the cgroup's limit (v2 `memory.max` of the
/// process's cgroup and its ancestors, v1 `memory.limit_in_bytes`);
/// [`FALLBACK_MEMORY_LIMIT`] where none can be read.
pub fn process_memory_limit() -> u64 {
    let read = |path: &str| std::fs::read_to_string(path).ok();
    let mut limits = Vec::new();
    limits.extend(read("/proc/meminfo").as_deref().and_then(parse_meminfo_total));
    limits.extend(read("/proc/self/limits").as_deref().and_then(parse_address_space_limit));
    if let Some(cgroups) = read("/proc/self/cgroup") {
        for file in cgroup_limit_files(&cgroups) {
            limits.extend(read(&file).as_deref().and_then(parse_cgroup_limit));
        }
    }
    limits.into_iter().min().unwrap_or(FALLBACK_MEMORY_LIMIT)
}

/// `MemTotal` of `/proc/meminfo`, in bytes.
fn parse_meminfo_total(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// The soft `Max address space` of `/proc/self/limits` (`None` if unlimited).
fn parse_address_space_limit(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("Max address space"))?;
    line["Max address space".len()..].split_whitespace().next()?.parse().ok()
}

/// A cgroup memory limit file's value (`None` for `max` or v1's "unlimited"
/// values near `i64::MAX`).
fn parse_cgroup_limit(text: &str) -> Option<u64> {
    let v: u64 = text.trim().parse().ok()?;
    (v < 1 << 62).then_some(v)
}

/// The limit files of the cgroups in `/proc/self/cgroup`: v2 `memory.max` of
/// the cgroup and every ancestor (and of the namespace root, where the path
/// does not resolve), v1 `memory.limit_in_bytes`.
fn cgroup_limit_files(cgroups: &str) -> Vec<String> {
    let mut files = vec!["/sys/fs/cgroup/memory.max".to_string(), "/sys/fs/cgroup/memory/memory.limit_in_bytes".into()];
    for line in cgroups.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next()) else { continue };
        let path = path.trim_end_matches('/');
        if controllers.is_empty() {
            let mut dir = path.to_string();
            while !dir.is_empty() {
                files.push(format!("/sys/fs/cgroup{dir}/memory.max"));
                dir.truncate(dir.rfind('/').unwrap_or(0));
            }
        } else if controllers.split(',').any(|c| c == "memory") {
            files.push(format!("/sys/fs/cgroup/memory{path}/memory.limit_in_bytes"));
        }
    }
    files
}

/// Parses a size in bytes: a number with an optional binary unit `K`, `M`,
/// `G`, `T` (also `KB`, `KiB`, …; any case), e.g. `8G`, `512M`, `1.5G`,
/// `1000000`.
///
/// ```
/// use rsp::budget::parse_size;
/// assert_eq!(parse_size("8G").unwrap(), 8 << 30);
/// assert_eq!(parse_size("512MiB").unwrap(), 512 << 20);
/// assert_eq!(parse_size("1.5k").unwrap(), 1536);
/// assert_eq!(parse_size("4096").unwrap(), 4096);
/// assert!(parse_size("8X").is_err() && parse_size("-1G").is_err() && parse_size("").is_err());
/// ```
pub fn parse_size(text: &str) -> Result<u64> {
    let bad = || {
        RspError::InvalidArgument(format!(
            "`{}` is not a size: expected bytes or a number with K, M, G or T (e.g. 8G, 512M)",
            text.chars().take(40).collect::<String>()
        ))
    };
    let t = text.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return Err(bad()),
    };
    let value: f64 = number.parse().map_err(|_| bad())?;
    let bytes = value * (1u64 << shift) as f64;
    if !bytes.is_finite() || bytes < 1.0 || bytes >= u64::MAX as f64 {
        return Err(bad());
    }
    Ok(bytes as u64)
}

impl<T: Float> Network<T> {
    /// Sets the memory budget of every call on this network, in bytes
    /// (`None`: [`default_memory_budget`]). A call whose estimate exceeds it
    /// is refused with [`RspError::MemoryBudget`] before it allocates.
    pub fn set_memory_budget(&mut self, bytes: Option<u64>) {
        self.uploaded.forget_canonized();
        self.memory_budget = bytes;
    }

    /// The memory budget in force, in bytes.
    pub fn memory_budget(&self) -> u64 {
        self.memory_budget.unwrap_or_else(default_memory_budget)
    }

    /// Sets the bound on the work per sample of every call, in multiply–add
    /// equivalents (`None`: [`DEFAULT_MAX_WORK`]). A call whose estimate
    /// exceeds it is refused with [`RspError::WorkBound`] before it runs.
    pub fn set_work_bound(&mut self, work: Option<u64>) {
        self.uploaded.forget_canonized();
        self.work_bound = work;
    }

    /// The work bound in force.
    pub fn work_bound(&self) -> u64 {
        self.work_bound.unwrap_or(DEFAULT_MAX_WORK)
    }

    /// Estimates the memory and work of `pass` on a batch of shape
    /// `(N, C, H, W)` (see the [module documentation](crate::budget)).
    pub fn estimate(&self, input_shape: &[usize], pass: Pass) -> Result<Estimate> {
        let [n, c, h, w] = input_shape else {
            return Err(RspError::shape("input", "(N, C, H, W)", input_shape));
        };
        let shapes = self.check(&[*c, *h, *w])?;
        // The forward pass runs the whole batch at once on the backend; an
        // attribution runs as many samples at once as the pool has threads.
        let in_flight = if pass == Pass::Forward { (*n).max(1) } else { self.samples_at_once(*n) };
        Ok(self.estimate_from(&[*c, *h, *w], &shapes, *n, in_flight, pass))
    }

    /// The estimate for a checked sample shape and node shapes.
    fn estimate_from(
        &self,
        sample: &[usize],
        shapes: &[Vec<usize>],
        batch: usize,
        in_flight: usize,
        pass: Pass,
    ) -> Estimate {
        let input_of = |s: Source| match s {
            Source::Input => sample,
            Source::Node(j) => shapes[j].as_slice(),
        };
        let (mut outputs, mut largest, mut scratch, mut pooled, mut work, mut trace) =
            (0u128, 0u128, 0u128, 0u128, 0u128, 0u128);
        let mut heaviest = (0, 0u64);
        for (k, node) in self.nodes().iter().enumerate() {
            let input = input_of(node.inputs[0]);
            let cost = match &node.op {
                NodeOp::Layer(l) => l.cost(input, &shapes[k]),
                NodeOp::Add => LayerCost::elementwise(input, &shapes[k]),
            };
            let out = elements(&shapes[k]) as u128;
            outputs += out;
            largest = largest.max(out).max(elements(input) as u128);
            trace += elements(input) as u128;
            scratch = scratch.max(cost.scratch_elements as u128);
            pooled = pooled.max(cost.pooled_buffer_elements as u128);
            work += cost.work as u128;
            if cost.work > heaviest.1 {
                heaviest = (k, cost.work);
            }
        }
        let x0 = elements(sample) as u128;
        let classes = shapes.last().map_or(1, |s| elements(s)) as u128;
        let pool = pooled * crate::backend::workspace::MAX_SPARE as u128;
        let (working, results) = match pass {
            Pass::Forward => (outputs + scratch + pool, 2 * classes),
            Pass::Attribution | Pass::AttributionWithTrace => {
                let trace = if pass == Pass::AttributionWithTrace { 2 * trace } else { 0 };
                // Activations, the backward pass's pending relevances and gradients
                // (at most one per node, plus the two tensors of the current step).
                let working = outputs + (outputs + 2 * largest) + scratch + pool + trace;
                // Per sample: its relevance, start relevance and logits, then the
                // batch's stacked copies and the positive and hostile parts.
                (working, 4 * x0 + 2 * largest + 2 * classes + trace)
            }
        };
        // A device backend's kernels keep no per-sample host scratch (their
        // scratch is the device's own workspace, outside its tensors' memory).
        let on_device = self.backend().memory_for_tensors().is_some();
        let working = if on_device { working - scratch - pool } else { working };
        let size = std::mem::size_of::<T>().max(4) as u128;
        let per_sample = working * size;
        let gemm_workspace =
            if on_device { 0 } else { rayon::current_num_threads() as u128 * GEMM_WORKSPACE_PER_THREAD as u128 };
        let total = in_flight as u128 * per_sample + batch as u128 * results * size + gemm_workspace;
        let clamp = |v: u128| v.min(u64::MAX as u128) as u64;
        Estimate {
            memory: clamp(total),
            memory_per_sample: clamp(per_sample),
            samples_in_flight: in_flight,
            work: clamp(work),
            heaviest_node: heaviest,
        }
    }

    /// The pre-flight check of a call on a validated batch: how many samples
    /// it runs at once, the backend's choice or the most that fit the memory
    /// budget; refused when not even one sample fits (checked first) or the
    /// estimate exceeds the work bound. `all_at_once`: every sample is in
    /// flight at once (the phase-timed attribution), or the call is refused.
    pub(crate) fn preflight(
        &self,
        shapes: &[Vec<usize>],
        input_shape: &[usize],
        pass: Pass,
        all_at_once: bool,
    ) -> Result<usize> {
        let batch = input_shape[0];
        let in_flight = if all_at_once {
            batch
        } else {
            let budget = self.effective_budget();
            let fits = |m: usize| self.estimate_from(&input_shape[1..], shapes, batch, m, pass).memory <= budget;
            largest_fitting(self.samples_at_once(batch), fits)
        };
        self.preflight_in_flight(shapes, input_shape, pass, in_flight)?;
        Ok(in_flight)
    }

    /// The budget a call is checked against: the network's memory budget,
    /// and with a device backend also the device memory its tensors may take
    /// ([`Backend::memory_for_tensors`](crate::backend::Backend::memory_for_tensors)).
    pub(crate) fn effective_budget(&self) -> u64 {
        let host = self.memory_budget();
        self.backend().memory_for_tensors().map_or(host, |device| host.min(device))
    }

    /// How many samples of a batch of `n` an attribution runs at once: what
    /// the backend asks for ([`Backend::samples_at_once`](crate::backend::Backend::samples_at_once)),
    /// by default as many as the rayon pool has threads.
    pub(crate) fn samples_at_once(&self, n: usize) -> usize {
        self.backend().samples_at_once().unwrap_or_else(rayon::current_num_threads).min(n).max(1)
    }

    /// How many samples of a batch the forward pass runs at once: all of them
    /// when their estimate fits the memory budget, else the most that fit
    /// (the batch is split); refused as [`Network::preflight`] refuses when not
    /// even one sample fits or the work bound is exceeded.
    pub(crate) fn forward_chunk(&self, shapes: &[Vec<usize>], input_shape: &[usize]) -> Result<usize> {
        let batch = input_shape[0].max(1);
        let budget = self.effective_budget();
        let fits = |m: usize| self.estimate_from(&input_shape[1..], shapes, batch, m, Pass::Forward).memory <= budget;
        let chunk = largest_fitting(batch, fits);
        self.preflight_in_flight(shapes, input_shape, Pass::Forward, chunk)?;
        Ok(chunk)
    }

    /// [`Network::preflight`] with `in_flight` samples at once.
    fn preflight_in_flight(
        &self,
        shapes: &[Vec<usize>],
        input_shape: &[usize],
        pass: Pass,
        in_flight: usize,
    ) -> Result<()> {
        let batch = input_shape[0];
        let e = self.estimate_from(&input_shape[1..], shapes, batch, in_flight, pass);
        let what = match pass {
            Pass::Forward => "the forward pass",
            Pass::Attribution | Pass::AttributionWithTrace => "the attribution",
        };
        let dims: Vec<String> = input_shape.iter().map(usize::to_string).collect();
        let budget = self.effective_budget();
        if e.memory > budget {
            return Err(RspError::MemoryBudget {
                estimate: e.memory,
                budget,
                what: format!(
                    "{what} of a {} input ({} sample{} in flight, {} each)",
                    dims.join("×"),
                    e.samples_in_flight,
                    if e.samples_in_flight == 1 { "" } else { "s" },
                    format_bytes(e.memory_per_sample)
                ),
            });
        }
        let bound = self.work_bound();
        if e.work > bound {
            let (k, node_work) = e.heaviest_node;
            return Err(RspError::WorkBound {
                estimate: e.work,
                bound,
                what: format!(
                    "{what} of a {} input (the most, {node_work:.3e}, at node #{k}: {})",
                    dims.join("×"),
                    self.nodes()[k].describe()
                ),
            });
        }
        Ok(())
    }
}

/// The largest `m` in `1..=most` with `fits(m)` (the estimate grows with
/// `m`), or 1 when none fits (the pre-flight check then refuses).
fn largest_fitting(most: usize, fits: impl Fn(usize) -> bool) -> usize {
    let most = most.max(1);
    if fits(most) {
        return most;
    }
    let (mut lo, mut hi) = (1, most);
    while lo + 1 < hi {
        let mid = lo + (hi - lo) / 2;
        if fits(mid) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    lo
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_read_from_proc_and_cgroup_text() {
        assert_eq!(parse_meminfo_total("MemTotal:       16303412 kB\nMemFree: 1 kB\n"), Some(16303412 * 1024));
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max address space         8589934592           unlimited            bytes     \n";
        assert_eq!(parse_address_space_limit(limits), Some(8 << 30));
        let unlimited = "Max address space         unlimited            unlimited            bytes     \n";
        assert_eq!(parse_address_space_limit(unlimited), None);
        assert_eq!(parse_cgroup_limit("8589934592\n"), Some(8 << 30));
        assert_eq!(parse_cgroup_limit("max\n"), None);
        assert_eq!(parse_cgroup_limit("9223372036854771712\n"), None); // v1 "unlimited"
        let files = cgroup_limit_files("0::/user.slice/job\n");
        assert!(files.contains(&"/sys/fs/cgroup/user.slice/job/memory.max".to_string()), "{files:?}");
        assert!(files.contains(&"/sys/fs/cgroup/user.slice/memory.max".to_string()), "{files:?}");
        let v1 = cgroup_limit_files("4:memory:/docker/abc\n3:cpu,cpuacct:/docker/abc\n");
        assert!(v1.contains(&"/sys/fs/cgroup/memory/docker/abc/memory.limit_in_bytes".to_string()), "{v1:?}");
    }

    #[test]
    fn the_default_budget_is_a_share_of_the_smallest_limit() {
        let limit = process_memory_limit();
        assert!(limit > 0);
        let (num, den) = MEMORY_BUDGET_SHARE;
        assert_eq!(default_memory_budget() as u128, limit as u128 * num as u128 / den as u128);
    }

    #[test]
    fn bytes_are_formatted_in_binary_units() {
        assert_eq!(format_bytes(512), "512 B");
        assert_eq!(format_bytes(3 << 20), "3.0 MiB");
        assert_eq!(format_bytes((4831838208u64 * 10) / 10), "4.5 GiB");
    }
}

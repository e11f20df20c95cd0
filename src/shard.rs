//! Deterministic shares of a run ("shards") for running one job as many
//! processes, on one machine or under a scheduler.
//!
//! Shard `I/N` (1-based) owns the items whose position `k` (0-based) in the
//! run's stable order satisfies `k mod N = I − 1`: round robin, so every share
//! has ⌊n/N⌋ or ⌈n/N⌉ items and neighbouring (often similar) items spread over
//! the shards. Which shard owns an item depends only on its position, `I` and
//! `N`: never on the machine, the thread count or the other shards.
//!
//! Without an explicit `--shard`, [`Shard::from_env`] reads the share from
//! the scheduler: a Slurm job array (`SLURM_ARRAY_TASK_ID`,
//! `SLURM_ARRAY_TASK_COUNT`, `SLURM_ARRAY_TASK_MIN`, and
//! `SLURM_ARRAY_TASK_STEP` when the array has a step) or a Kubernetes Indexed
//! Job (`JOB_COMPLETION_INDEX`, 0-based, with the count in `RSP_SHARD_COUNT`,
//! since Kubernetes does not pass the job's completion count to the pod).
//! Recipes: `docs/scaling.md`.

use crate::error::{Result, RspError};
use std::fmt;

/// The largest shard count accepted.
pub const MAX_SHARDS: usize = 1_000_000;

/// One share of a run: shard `index` of `count`, 1-based.
///
/// ```
/// use rsp::shard::Shard;
/// let s: Shard = "2/3".parse()?;
/// assert_eq!((s.index(), s.count()), (2, 3));
/// let mine: Vec<usize> = (0..8).filter(|&k| s.owns(k)).collect();
/// assert_eq!(mine, [1, 4, 7]);
/// assert_eq!(s.share_of(8), 3);
/// # Ok::<(), rsp::RspError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Shard {
    index: usize,
    count: usize,
}

impl Shard {
    /// Shard `index` of `count` (1 ≤ index ≤ count ≤ [`MAX_SHARDS`]).
    ///
    /// # Errors
    /// [`RspError::InvalidArgument`] outside those bounds.
    pub fn new(index: usize, count: usize) -> Result<Self> {
        if count == 0 || count > MAX_SHARDS || index == 0 || index > count {
            return Err(RspError::InvalidArgument(format!(
                "a shard is I/N with 1 ≤ I ≤ N ≤ {MAX_SHARDS}, got {index}/{count}"
            )));
        }
        Ok(Shard { index, count })
    }

    /// The whole run as one shard, `1/1`.
    pub const WHOLE: Shard = Shard { index: 1, count: 1 };

    /// The 1-based index.
    pub fn index(&self) -> usize {
        self.index
    }

    /// The number of shards.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Whether this is the whole run (`1/1`).
    pub fn is_whole(&self) -> bool {
        self.count == 1
    }

    /// Whether the item at position `k` (0-based, in the run's stable order)
    /// belongs to this shard.
    pub fn owns(&self, k: usize) -> bool {
        k % self.count == self.index - 1
    }

    /// How many of `n` items this shard owns.
    pub fn share_of(&self, n: usize) -> usize {
        n.saturating_sub(self.index - 1).div_ceil(self.count)
    }

    /// The shard the scheduler's environment gives, read through `var`
    /// (pass `|k| std::env::var(k).ok()`), or `None` when no scheduler
    /// variable is set.
    ///
    /// # Errors
    /// [`RspError::InvalidArgument`] when the variables are incomplete,
    /// inconsistent or not numbers, or when both Slurm's and Kubernetes'
    /// are set.
    ///
    /// ```
    /// use rsp::shard::Shard;
    /// let slurm = |k: &str| match k {
    ///     "SLURM_ARRAY_TASK_ID" => Some("12".to_string()),
    ///     "SLURM_ARRAY_TASK_MIN" => Some("10".to_string()),
    ///     "SLURM_ARRAY_TASK_COUNT" => Some("4".to_string()),
    ///     _ => None,
    /// };
    /// assert_eq!(Shard::from_env(slurm)?, Some("3/4".parse()?));
    /// let k8s = |k: &str| match k {
    ///     "JOB_COMPLETION_INDEX" => Some("0".to_string()),
    ///     "RSP_SHARD_COUNT" => Some("5".to_string()),
    ///     _ => None,
    /// };
    /// assert_eq!(Shard::from_env(k8s)?, Some("1/5".parse()?));
    /// assert_eq!(Shard::from_env(|_| None)?, None);
    /// # Ok::<(), rsp::RspError>(())
    /// ```
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> Result<Option<Shard>> {
        let number = |key: &str| -> Result<Option<usize>> {
            var(key)
                .map(|v| {
                    v.trim().parse::<usize>().map_err(|_| {
                        RspError::InvalidArgument(format!(
                            "environment variable {key} must be a non-negative integer, got `{}`",
                            v.chars().take(40).collect::<String>()
                        ))
                    })
                })
                .transpose()
        };
        let slurm = number("SLURM_ARRAY_TASK_ID")?;
        let k8s = number("JOB_COMPLETION_INDEX")?;
        match (slurm, k8s) {
            (None, None) => Ok(None),
            (Some(_), Some(_)) => Err(RspError::InvalidArgument(
                "both SLURM_ARRAY_TASK_ID and JOB_COMPLETION_INDEX are set: pass --shard I/N to say which share to run"
                    .into(),
            )),
            (Some(id), None) => {
                let missing = |key: &str| {
                    RspError::InvalidArgument(format!(
                        "SLURM_ARRAY_TASK_ID is set but {key} is not (a Slurm job array sets both)"
                    ))
                };
                let count = number("SLURM_ARRAY_TASK_COUNT")?.ok_or_else(|| missing("SLURM_ARRAY_TASK_COUNT"))?;
                let min = number("SLURM_ARRAY_TASK_MIN")?.ok_or_else(|| missing("SLURM_ARRAY_TASK_MIN"))?;
                let step = number("SLURM_ARRAY_TASK_STEP")?.unwrap_or(1).max(1);
                let offset = id.checked_sub(min).filter(|o| o % step == 0).ok_or_else(|| {
                    RspError::InvalidArgument(format!(
                        "SLURM_ARRAY_TASK_ID {id} is not on the array's grid (min {min}, step {step})"
                    ))
                })?;
                Shard::new(offset / step + 1, count).map(Some)
            }
            (None, Some(index)) => {
                let count = number("RSP_SHARD_COUNT")?.ok_or_else(|| {
                    RspError::InvalidArgument(
                        "JOB_COMPLETION_INDEX is set but RSP_SHARD_COUNT is not: set it to the Job's `completions`"
                            .into(),
                    )
                })?;
                Shard::new(index + 1, count).map(Some)
            }
        }
    }

    /// The shard a command runs: `flag` (`I/N`) if given, else the
    /// scheduler's ([`Shard::from_env`] on the process environment), else the
    /// whole run.
    ///
    /// # Errors
    /// As [`Shard::from_str`](std::str::FromStr) and [`Shard::from_env`].
    pub fn resolve(flag: Option<&str>) -> Result<Shard> {
        match flag {
            Some(text) => text.parse(),
            None => Ok(Shard::from_env(|k| std::env::var(k).ok())?.unwrap_or(Shard::WHOLE)),
        }
    }
}

impl Default for Shard {
    /// The whole run, `1/1`.
    fn default() -> Self {
        Shard::WHOLE
    }
}

impl std::str::FromStr for Shard {
    type Err = RspError;

    /// Parses `I/N`.
    fn from_str(text: &str) -> Result<Self> {
        let bad = || {
            RspError::InvalidArgument(format!(
                "--shard must be I/N with 1 ≤ I ≤ N (e.g. 2/8), got `{}`",
                text.chars().take(40).collect::<String>()
            ))
        };
        let (i, n) = text.trim().split_once('/').ok_or_else(bad)?;
        let i = i.trim().parse::<usize>().map_err(|_| bad())?;
        let n = n.trim().parse::<usize>().map_err(|_| bad())?;
        Shard::new(i, n)
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shards_partition_every_run() {
        for n in [0, 1, 2, 7, 100] {
            for count in 1..=9 {
                let mut owners = vec![0; n];
                for i in 1..=count {
                    let s = Shard::new(i, count).unwrap();
                    let mine: Vec<usize> = (0..n).filter(|&k| s.owns(k)).collect();
                    assert_eq!(mine.len(), s.share_of(n), "{s} of {n}");
                    for k in mine {
                        owners[k] += 1;
                    }
                }
                assert!(owners.iter().all(|&o| o == 1), "{n} items, {count} shards");
            }
        }
    }

    #[test]
    fn bad_shards_are_refused() {
        for text in ["0/3", "4/3", "1/0", "3", "a/b", "-1/2", "1/2/3", ""] {
            assert!(text.parse::<Shard>().is_err(), "{text}");
        }
        assert!(Shard::new(1, MAX_SHARDS + 1).is_err());
        assert_eq!(" 2 / 5 ".parse::<Shard>().unwrap(), Shard::new(2, 5).unwrap());
    }

    #[test]
    fn slurm_arrays_with_an_offset_and_a_step() {
        let env = |id: &'static str, step: Option<&'static str>| {
            move |k: &str| match k {
                "SLURM_ARRAY_TASK_ID" => Some(id.to_string()),
                "SLURM_ARRAY_TASK_MIN" => Some("1".to_string()),
                "SLURM_ARRAY_TASK_COUNT" => Some("3".to_string()),
                "SLURM_ARRAY_TASK_STEP" => step.map(str::to_string),
                _ => None,
            }
        };
        // --array=1-3
        assert_eq!(Shard::from_env(env("1", None)).unwrap(), Some(Shard::new(1, 3).unwrap()));
        assert_eq!(Shard::from_env(env("3", None)).unwrap(), Some(Shard::new(3, 3).unwrap()));
        // --array=1-5:2 (tasks 1, 3, 5)
        assert_eq!(Shard::from_env(env("5", Some("2"))).unwrap(), Some(Shard::new(3, 3).unwrap()));
        assert!(Shard::from_env(env("4", Some("2"))).is_err());
        assert!(Shard::from_env(env("0", None)).is_err());
        assert!(Shard::from_env(env("4", None)).is_err());
        assert!(Shard::from_env(env("x", None)).is_err());
    }

    #[test]
    fn incomplete_or_ambiguous_environments_are_refused() {
        let only_id = |k: &str| (k == "SLURM_ARRAY_TASK_ID").then(|| "0".to_string());
        assert!(Shard::from_env(only_id).is_err());
        let k8s_without_count = |k: &str| (k == "JOB_COMPLETION_INDEX").then(|| "0".to_string());
        assert!(Shard::from_env(k8s_without_count).is_err());
        let both = |k: &str| match k {
            "SLURM_ARRAY_TASK_ID" | "JOB_COMPLETION_INDEX" | "SLURM_ARRAY_TASK_MIN" => Some("0".to_string()),
            "SLURM_ARRAY_TASK_COUNT" | "RSP_SHARD_COUNT" => Some("2".to_string()),
            _ => None,
        };
        assert!(Shard::from_env(both).is_err());
        let k8s_past_count = |k: &str| match k {
            "JOB_COMPLETION_INDEX" => Some("2".to_string()),
            "RSP_SHARD_COUNT" => Some("2".to_string()),
            _ => None,
        };
        assert!(Shard::from_env(k8s_past_count).is_err());
    }
}

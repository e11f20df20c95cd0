//! Writing files so that a failure never destroys what was there: every file
//! the crate, the CLI and the examples write (`.npy`, PNG, safetensors) goes
//! through [`write_atomic`], and the CLI refuses an output path that is one of
//! its inputs ([`check_not_an_input`]).

use crate::error::{Result, RspError};
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Writes `path` through `write` (encoders wrap their own errors in
/// `std::io::Error::other`; the result is [`RspError::Io`] naming `path`): the bytes go to a new temporary file beside
/// `path` (same directory, so the rename cannot cross file systems), which is
/// flushed, synced and renamed over `path` only when everything succeeded.
/// On any failure (a full disk, an encoder error) the temporary file is
/// removed and `path` keeps its previous contents, or stays absent.
///
/// ```
/// use std::io::Write;
/// let path = std::env::temp_dir().join(format!("rsp-doc-atomic-{}.txt", std::process::id()));
/// rsp::io::atomic::write_atomic(&path, |w| w.write_all(b"first")).unwrap();
/// // A writer that fails halfway (a full disk, an encoder error) leaves the old file as it was.
/// let failed = rsp::io::atomic::write_atomic(&path, |w| {
///     w.write_all(b"half of the new")?;
///     Err(std::io::Error::other("the encoder gave up"))
/// });
/// assert!(failed.is_err());
/// assert_eq!(std::fs::read(&path).unwrap(), b"first");
/// # std::fs::remove_file(&path).unwrap();
/// ```
pub fn write_atomic(path: &Path, write: impl FnOnce(&mut BufWriter<File>) -> std::io::Result<()>) -> Result<()> {
    let shown = path.display().to_string();
    let io_error = |source: std::io::Error| RspError::Io { path: shown.clone(), source };
    let name = path
        .file_name()
        .ok_or_else(|| RspError::InvalidArgument(format!("cannot write to {shown}: the path does not name a file")))?;
    // Renaming over a device, a pipe or a directory would replace it, not write to it.
    if std::fs::metadata(path).is_ok_and(|m| !m.is_file()) {
        return Err(RspError::InvalidArgument(format!("cannot write to {shown}: it exists and is not a regular file")));
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let (tmp, file) = create_temporary(&dir, &name.to_string_lossy()).map_err(io_error)?;
    let result = (|| {
        let mut w = BufWriter::new(file);
        write(&mut w).map_err(io_error)?;
        w.flush().map_err(io_error)?;
        let file = w.into_inner().map_err(|e| io_error(e.into_error()))?;
        file.sync_all().map_err(io_error)?;
        drop(file);
        std::fs::rename(&tmp, path).map_err(io_error)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// A new file `.{name}.rsp-tmp-{pid}-{n}` in `dir`, never an existing one.
fn create_temporary(dir: &Path, name: &str) -> std::io::Result<(PathBuf, File)> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    loop {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!(".{name}.rsp-tmp-{}-{n}", std::process::id()));
        match OpenOptions::new().write(true).create_new(true).open(&tmp) {
            Ok(file) => return Ok((tmp, file)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Refuses to write `output` when it is one of `inputs`: the same path after
/// resolving symbolic links and `..`, or (on Unix, when both exist) the same
/// file under another name (a hard link: same device and inode).
/// `option` names the output in the message (e.g. `--out`).
///
/// ```
/// use rsp::io::atomic::check_not_an_input;
/// let dir = std::env::temp_dir();
/// let model = dir.join("rsp-doc-model.safetensors");
/// std::fs::write(&model, b"x").unwrap();
/// assert!(check_not_an_input(&model, &[&model], "--out").is_err());
/// assert!(check_not_an_input(&dir.join("rsp-doc-relevance.npy"), &[&model], "--out").is_ok());
/// ```
pub fn check_not_an_input(output: &Path, inputs: &[&Path], option: &str) -> Result<()> {
    let out_resolved = resolve(output);
    for input in inputs {
        let same_path = out_resolved.is_some() && out_resolved == resolve(input);
        if same_path || same_file(output, input) {
            return Err(RspError::InvalidArgument(format!(
                "{option} {} is the input file {}; refusing to overwrite an input",
                output.display(),
                input.display()
            )));
        }
    }
    Ok(())
}

/// The canonical path of `path`, or of its directory joined with its name when
/// the file does not exist yet.
fn resolve(path: &Path) -> Option<PathBuf> {
    if let Ok(p) = path.canonicalize() {
        return Some(p);
    }
    let name = path.file_name()?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    Some(dir.canonicalize().ok()?.join(name))
}

#[cfg(unix)]
fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

#[cfg(not(unix))]
fn same_file(_: &Path, _: &Path) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Removed when the guard drops, also when the test panics.
    fn scratch(name: &str) -> tempfile::TempDir {
        tempfile::Builder::new().prefix(&format!("rsp-atomic-{name}-")).tempdir().unwrap()
    }

    fn leftovers(dir: &Path) -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("rsp-tmp"))
            .collect()
    }

    #[test]
    fn a_failed_write_keeps_the_old_file_and_leaves_no_temporary() {
        let scratch_dir = scratch("fail");
        let dir = scratch_dir.path();
        let path = dir.join("out.npy");
        write_atomic(&path, |w| w.write_all(&[7u8; 100_000])).unwrap();
        let err = write_atomic(&path, |w| {
            w.write_all(&[1u8; 300_000])?; // past the buffer: bytes reach the temporary file
            Err(std::io::Error::other("no space left on device"))
        })
        .unwrap_err();
        assert!(err.to_string().contains("no space left"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), vec![7u8; 100_000]);
        assert!(leftovers(dir).is_empty(), "{:?}", leftovers(dir));
        // A new file that fails is not created at all.
        let fresh = dir.join("fresh.npy");
        assert!(write_atomic(&fresh, |_| Err(std::io::Error::other("no"))).is_err());
        assert!(!fresh.exists() && leftovers(dir).is_empty());
        // Success replaces the contents.
        write_atomic(&path, |w| w.write_all(b"new")).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        assert!(leftovers(dir).is_empty());
    }

    #[test]
    fn an_unwritable_directory_is_an_io_error_naming_the_target() {
        let err = write_atomic(Path::new("/no/such/dir/out.npy"), |_| Ok(())).unwrap_err();
        assert!(matches!(&err, RspError::Io { path, .. } if path == "/no/such/dir/out.npy"), "{err}");
    }

    #[test]
    fn an_input_is_recognised_by_path_symlink_and_hard_link() {
        let scratch_dir = scratch("same");
        let dir = scratch_dir.path();
        let input = dir.join("input.npy");
        std::fs::write(&input, b"data").unwrap();
        let dotted = dir.join(".").join("input.npy");
        assert!(check_not_an_input(&dotted, &[&input], "--out").is_err());
        #[cfg(unix)]
        {
            let link = dir.join("link.npy");
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink(&input, &link).unwrap();
            assert!(check_not_an_input(&link, &[&input], "--out").is_err());
            let hard = dir.join("hard.npy");
            let _ = std::fs::remove_file(&hard);
            std::fs::hard_link(&input, &hard).unwrap();
            let err = check_not_an_input(&hard, &[Path::new("other.npy"), &input], "--out").unwrap_err();
            assert!(err.to_string().contains("--out") && err.to_string().contains("input.npy"), "{err}");
        }
        assert!(check_not_an_input(&dir.join("new.npy"), &[&input], "--out").is_ok());
        std::fs::write(dir.join("other.npy"), b"x").unwrap();
        assert!(check_not_an_input(&dir.join("other.npy"), &[&input], "--out").is_ok());
    }
}

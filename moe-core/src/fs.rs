//! Files written so that a crash never leaves a half-written one.

use std::path::{Path, PathBuf};

use crate::error::{MoeError, Result};

/// Writes `path` by calling `write` on a temporary file in the same folder and renaming it
/// into place (an atomic replace on POSIX file systems): readers see the old file or the new
/// one, never a part. Creates the folder if needed.
pub fn write_atomic_with(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let tmp = temp_path(path);
    if let Some(dir) = tmp.parent() {
        std::fs::create_dir_all(dir).map_err(|e| MoeError::io(dir, e))?;
    }
    if let Err(e) = write(&tmp) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, path).map_err(|e| MoeError::io(path, e))
}

/// [`write_atomic_with`] for bytes already in memory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |tmp| std::fs::write(tmp, bytes).map_err(|e| MoeError::io(tmp, e)))
}

/// `dir/.name.tmp` beside `dir/name` (hidden, so a folder listing does not show it as a result).
fn temp_path(path: &Path) -> PathBuf {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    dir.join(format!(".{name}.tmp"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_file_and_leaves_no_temporary_behind() {
        let dir = std::env::temp_dir().join(format!("moe-core-fs-{}", std::process::id()));
        let path = dir.join("sub/a.json");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let failed = write_atomic_with(&path, |_| Err(MoeError::Unsupported("no".into())));
        assert!(failed.is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"two", "a failed write keeps the old file");
        let names: Vec<_> = std::fs::read_dir(dir.join("sub")).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("a.json")]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

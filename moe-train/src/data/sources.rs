//! The user's data: text files, folders of them, JSONL with a `text` field.

use std::path::{Path, PathBuf};

use super::Document;
use crate::error::{Result, TrainError};

/// File extensions read from folders; anything else in a folder is skipped.
const TEXT_EXTENSIONS: &[&str] = &["txt", "md", "text", "jsonl"];

/// Reads every path: a `.jsonl` file gives one document per line (its `text` field), any other
/// file gives one document per paragraph (blank-line separated), a folder is walked for
/// `.txt`, `.md`, `.text` and `.jsonl` files in name order.
pub fn load_documents(paths: &[PathBuf]) -> Result<Vec<Document>> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            collect_dir(path, &mut files)?;
        } else if path.is_file() {
            files.push(path.clone());
        } else {
            return Err(TrainError::BadData { path: path.clone(), reason: "no such file or folder".into() });
        }
    }
    let mut docs = Vec::new();
    for file in &files {
        let before = docs.len();
        read_file(file, &mut docs)?;
        if docs.len() == before {
            log::warn!("{} holds no text", file.display());
        }
    }
    if docs.is_empty() {
        let path = paths.first().cloned().unwrap_or_default();
        return Err(TrainError::BadData { path, reason: "no text found in the given data".into() });
    }
    Ok(docs)
}

fn collect_dir(dir: &Path, files: &mut Vec<PathBuf>) -> Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| TrainError::io(dir, e))?
        .map(|entry| entry.map(|e| e.path()).map_err(|e| TrainError::io(dir, e)))
        .collect::<Result<_>>()?;
    entries.sort();
    for path in entries {
        if path.is_dir() {
            collect_dir(&path, files)?;
        } else if path.extension().and_then(|e| e.to_str()).is_some_and(|e| TEXT_EXTENSIONS.contains(&e)) {
            files.push(path);
        }
    }
    Ok(())
}

fn read_file(path: &Path, docs: &mut Vec<Document>) -> Result<()> {
    let bytes = std::fs::read(path).map_err(|e| TrainError::io(path, e))?;
    let text = String::from_utf8(bytes).map_err(|e| TrainError::BadData {
        path: path.into(),
        reason: format!("not UTF-8 text (invalid byte at offset {})", e.utf8_error().valid_up_to()),
    })?;
    if path.extension().is_some_and(|e| e == "jsonl") {
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let bad =
                |reason: String| TrainError::BadData { path: path.into(), reason: format!("line {}: {reason}", i + 1) };
            let value: serde_json::Value = serde_json::from_str(line).map_err(|e| bad(e.to_string()))?;
            let text =
                value.get("text").and_then(|t| t.as_str()).ok_or_else(|| bad("no string field `text`".into()))?;
            if !text.is_empty() {
                docs.push(Document { text: text.to_string(), task: None });
            }
        }
    } else {
        for paragraph in text.split("\n\n") {
            let paragraph = paragraph.trim();
            if !paragraph.is_empty() {
                docs.push(Document { text: paragraph.to_string(), task: None });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_text_jsonl_and_folders_and_names_bad_lines() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.txt"), "one para\n\nsecond para\n").unwrap();
        std::fs::write(dir.path().join("b.jsonl"), "{\"text\": \"x y\"}\n\n{\"text\": \"z\"}\n").unwrap();
        std::fs::write(dir.path().join("skip.bin"), [0u8, 159]).unwrap();
        let docs = load_documents(&[dir.path().into()]).unwrap();
        let texts: Vec<&str> = docs.iter().map(|d| d.text.as_str()).collect();
        assert_eq!(texts, ["one para", "second para", "x y", "z"]);

        std::fs::write(dir.path().join("c.jsonl"), "{\"text\": 1}\n").unwrap();
        let err = load_documents(&[dir.path().join("c.jsonl")]).unwrap_err().to_string();
        assert!(err.contains("c.jsonl") && err.contains("line 1") && err.contains("`text`"), "{err}");
        let err = load_documents(&[dir.path().join("missing")]).unwrap_err().to_string();
        assert!(err.contains("no such file"), "{err}");
    }
}

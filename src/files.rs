//! Reading files named by a caller or found inside a model directory, without
//! trusting them: only regular files are opened (a FIFO, a socket or a device
//! named `config.json` or `x.gguf` would block `open` or `read` forever), and
//! text files are read up to a size limit, checked before anything is
//! allocated. Every error names the file. Used by every layer that reads a
//! model's files (no MLX here).

use crate::{Error, Result};
use std::io::Read;
use std::path::Path;

/// The largest JSON or template file gomlx reads whole (config.json,
/// tokenizer_config.json, chat templates, adapter_config.json, the shard
/// index). `tokenizer.json` files reach 33 MB; 256 MiB leaves room without
/// letting a file size an allocation the process cannot make.
pub const MAX_TEXT_FILE: u64 = 256 << 20;

/// Checks that `path` names a regular file (symlinks followed), so that
/// opening it cannot block; the error reads `<path>: not a regular file (a FIFO)`.
pub fn check_regular(path: &Path) -> Result<std::fs::Metadata> {
    if path.as_os_str().is_empty() {
        return Err(Error::InvalidArgument("the path is empty".into()));
    }
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if !meta.is_file() {
        return Err(Error::io(path, std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("not a regular file ({})", kind(&meta)))));
    }
    Ok(meta)
}

/// What a non-regular file is, for error messages.
pub fn kind(meta: &std::fs::Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_dir() {
        return "a directory";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return "a FIFO";
        }
        if t.is_socket() {
            return "a socket";
        }
        if t.is_block_device() || t.is_char_device() {
            return "a device";
        }
    }
    "not a file"
}

/// Opens a regular file for reading (see `check_regular`).
pub fn open_regular(path: &Path) -> Result<(std::fs::File, u64)> {
    check_regular(path)?;
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    // The path may have been swapped between the check and the open: check the
    // file that was opened.
    let meta = file.metadata().map_err(|e| Error::io(path, e))?;
    if !meta.is_file() {
        return Err(Error::io(path, std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a regular file")));
    }
    Ok((file, meta.len()))
}

/// Reads a whole UTF-8 text file of at most `max` bytes.
pub fn read_text(path: &Path, max: u64) -> Result<String> {
    let (file, len) = open_regular(path)?;
    if len > max {
        return Err(Error::io(path, std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{len} bytes, more than the {max} this file may have"))));
    }
    let mut text = String::with_capacity(len as usize);
    // `take` bounds the read even if the file grows meanwhile.
    file.take(max + 1).read_to_string(&mut text).map_err(|e| Error::io(path, e))?;
    if text.len() as u64 > max {
        return Err(Error::io(path, std::io::Error::new(std::io::ErrorKind::InvalidData, format!("more than the {max} bytes this file may have"))));
    }
    Ok(text)
}

/// `read_text` that treats a missing file as `None`.
pub fn read_text_if_exists(path: &Path, max: u64) -> Result<Option<String>> {
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        _ => read_text(path, max).map(Some),
    }
}

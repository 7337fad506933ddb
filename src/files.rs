//! Reading the files a user names (rules, rule tests, the config), safely: only regular files,
//! and only up to a size. A FIFO, a device or a directory named `*.yaml` would otherwise block
//! the reader forever (a FIFO with no writer) or never end (`/dev/zero`), stopping the agent's
//! loop while its health endpoints still answer.

use std::io::Read;
use std::path::Path;

/// The largest rule, rule-test or config file read.
pub const MAX_TEXT_FILE: u64 = 8 << 20;

/// The text of the regular file at `path` (links followed), at most `max` bytes. Anything else
/// is an error that says what the path is instead.
pub fn read_regular(path: &Path, max: u64) -> std::io::Result<String> {
    let meta = std::fs::metadata(path)?;
    if !meta.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("not a regular file (it is {})", kind(&meta)),
        ));
    }
    // Checked again on what was opened: the path may have changed in between.
    let file = std::fs::File::open(path)?;
    let opened = file.metadata()?;
    if !opened.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("not a regular file (it is {})", kind(&opened)),
        ));
    }
    let mut text = String::new();
    file.take(max.saturating_add(1)).read_to_string(&mut text)?;
    if text.len() as u64 > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than {} MiB", max >> 20),
        ));
    }
    Ok(text)
}

fn kind(meta: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_char_device() || t.is_block_device() {
        "a device"
    } else {
        "not a file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fifo_is_refused_at_once_not_waited_on() {
        let dir = std::env::temp_dir().join(format!("poolpilot-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("zz.yaml");
        let _ = std::fs::remove_file(&fifo);
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let e = read_regular(&fifo, MAX_TEXT_FILE).unwrap_err();
        assert!(e.to_string().contains("a FIFO"), "{e}");
        let e = read_regular(Path::new("/dev/zero"), MAX_TEXT_FILE).unwrap_err();
        assert!(e.to_string().contains("a device"), "{e}");
        std::fs::write(dir.join("big.yaml"), vec![b'#'; 2048]).unwrap();
        let e = read_regular(&dir.join("big.yaml"), 1024).unwrap_err();
        assert!(e.to_string().contains("larger than"), "{e}");
        std::fs::remove_dir_all(&dir).ok();
    }
}

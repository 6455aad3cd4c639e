//! Serial console output: the tail of a log, by lines, and the cap on the
//! log's size on disk.

use std::io::SeekFrom;
use std::path::Path;

use tokio::io::{AsyncReadExt, AsyncSeekExt};

/// The last `max_lines` lines of `text` (all of it for `None`). A final line without
/// a newline counts as a line.
pub(crate) fn last_lines(text: &str, max_lines: Option<usize>) -> &str {
    let Some(max) = max_lines else {
        return text;
    };
    if max == 0 {
        return "";
    }
    let body = text.strip_suffix('\n').unwrap_or(text);
    match body.rmatch_indices('\n').nth(max - 1) {
        Some((newline, _)) => &text[newline + 1..],
        None => text,
    }
}

/// The last `max_bytes` of a file as text (invalid UTF-8 replaced), starting at a line
/// boundary when the file is longer; an empty string when the file does not exist.
pub(crate) async fn read_tail(path: &Path, max_bytes: u64) -> std::io::Result<String> {
    let mut file = match tokio::fs::File::open(path).await {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(String::new()),
        Err(error) => return Err(error),
    };
    let len = file.metadata().await?.len();
    let start = len.saturating_sub(max_bytes);
    file.seek(SeekFrom::Start(start)).await?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).await?;
    if start > 0 {
        let first_line_end = bytes.iter().position(|&b| b == b'\n').map_or(0, |i| i + 1);
        bytes.drain(..first_line_end);
    }
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Block size the head of a log is freed by.
const TRIM_BLOCK: u64 = 4096;

/// Frees the head of a log so that at most `cap` bytes (plus part of one
/// block) stay on disk, keeping the tail: the bytes before are punched out
/// (`fallocate` PUNCH_HOLE, KEEP_SIZE). QEMU appends to the file (`append=on`),
/// so its writes are never lost or overwritten; the file's size goes on
/// growing, its blocks do not. A missing file is fine.
pub(crate) async fn trim_head(path: &Path, cap: u64) -> std::io::Result<()> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        use std::os::fd::AsRawFd;
        let file = match std::fs::OpenOptions::new().write(true).open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let len = file.metadata()?.len();
        let end = len.saturating_sub(cap) / TRIM_BLOCK * TRIM_BLOCK;
        if end == 0 {
            return Ok(());
        }
        let length = libc::off_t::try_from(end).map_err(std::io::Error::other)?;
        // SAFETY: `file` is an open descriptor for the whole call; fallocate
        // only changes the file's blocks in [0, end).
        let rc = unsafe {
            libc::fallocate(
                file.as_raw_fd(),
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                0,
                length,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    })
    .await
    .map_err(std::io::Error::other)?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_lines_when_more_lines_than_asked_then_keeps_the_last_ones() {
        let text = "one\ntwo\nthree\n";

        let tail = last_lines(text, Some(2));

        assert_eq!(tail, "two\nthree\n");
    }

    #[test]
    fn last_lines_when_last_line_unterminated_then_it_counts() {
        let text = "one\ntwo\nthree";

        let tail = last_lines(text, Some(1));

        assert_eq!(tail, "three");
    }

    #[test]
    fn last_lines_when_fewer_lines_than_asked_then_everything() {
        let text = "one\ntwo\n";

        let tail = last_lines(text, Some(5));

        assert_eq!(tail, text);
    }

    #[tokio::test]
    async fn read_tail_when_file_longer_than_limit_then_starts_at_a_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.log");
        std::fs::write(&path, "first line\nsecond\nthird\n").unwrap();

        let tail = read_tail(&path, 10).await.unwrap();

        assert_eq!(tail, "third\n");
    }

    #[tokio::test]
    async fn trim_head_when_log_over_cap_then_blocks_freed_and_tail_kept() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.log");
        let mut text = String::new();
        for i in 0..20_000 {
            text.push_str(&format!("line {i}\n"));
        }
        std::fs::write(&path, &text).unwrap();

        trim_head(&path, 8192).await.unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        let tail = read_tail(&path, 8192).await.unwrap();

        assert_eq!(meta.len(), text.len() as u64);
        assert!(
            meta.blocks() * 512 <= 8192 + 2 * TRIM_BLOCK,
            "{}",
            meta.blocks()
        );
        assert!(tail.ends_with("line 19999\n"));
        assert!(!tail.contains('\0'));
    }
}

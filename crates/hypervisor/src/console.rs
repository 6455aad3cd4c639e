//! Serial console output: the tail of a log, by lines.

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
}

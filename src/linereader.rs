//! Reading lines of untrusted input with a cap on their length, so that a file without newlines
//! cannot make armorwatch buffer it whole.

use std::io::{self, BufRead};

/// The longest line kept. The kernel's audit records are at most 8 970 bytes
/// (`MAX_AUDIT_MESSAGE_LENGTH`) and a journald message is capped similarly; 64 KiB leaves room for
/// prefixes and hex-encoded values while bounding memory.
pub const MAX_LINE: usize = 64 * 1024;

/// One line read by [`read_line_capped`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineRead {
    /// Bytes consumed from the reader, newline included (0 at end of input).
    pub consumed: usize,
    /// True when the line was longer than the cap and its tail was discarded.
    pub truncated: bool,
    /// True when the line ended with a newline (false for a final partial line).
    pub complete: bool,
}

/// Read one line into `buf` (cleared first, newline removed), keeping at most `max` bytes.
pub fn read_line_capped<R: BufRead + ?Sized>(
    reader: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
) -> io::Result<LineRead> {
    buf.clear();
    let mut consumed = 0;
    let mut truncated = false;
    loop {
        let available = match reader.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if available.is_empty() {
            return Ok(LineRead {
                consumed,
                truncated,
                complete: false,
            });
        }
        let (chunk, done) = match memchr::memchr(b'\n', available) {
            Some(i) => (&available[..i], i + 1),
            None => (available, 0),
        };
        let room = max.saturating_sub(buf.len());
        if chunk.len() > room {
            truncated = true;
        }
        buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if done > 0 {
            reader.consume(done);
            consumed += done;
            return Ok(LineRead {
                consumed,
                truncated,
                complete: true,
            });
        }
        let n = available.len();
        reader.consume(n);
        consumed += n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufReader;

    #[test]
    fn lines_partial_and_capped() {
        let data = b"short\nthis line is too long\nlast";
        let mut r = BufReader::with_capacity(4, &data[..]);
        let mut buf = Vec::new();
        let a = read_line_capped(&mut r, &mut buf, 8).unwrap();
        assert_eq!(
            (buf.as_slice(), a.truncated, a.complete),
            (&b"short"[..], false, true)
        );
        let b = read_line_capped(&mut r, &mut buf, 8).unwrap();
        assert_eq!(
            (buf.as_slice(), b.truncated, b.consumed),
            (&b"this lin"[..], true, 22)
        );
        let c = read_line_capped(&mut r, &mut buf, 8).unwrap();
        assert_eq!((buf.as_slice(), c.complete), (&b"last"[..], false));
        let d = read_line_capped(&mut r, &mut buf, 8).unwrap();
        assert_eq!(d.consumed, 0);
    }
}

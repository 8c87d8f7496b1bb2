//! A NATS message's header block read from the bytes its publisher sent, leniently: the
//! headers that can be read, and the first fault of those that cannot. nats-server stores a
//! header block as written (it checks neither UTF-8 nor the `Name: value` shape), so a
//! submission's headers are outside input down to the byte. Pure.

use crate::core::submission::{field_error, FieldError};

/// Field that names the block as a whole, when a fault is not in one header.
pub const BLOCK: &str = "headers";

/// Longest header name or line quoted in an error: enough to recognise it, not a copy of a
/// 100 KB header.
const QUOTE_MAX: usize = 64;

/// What could be read of a header block.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct HeaderBlock {
    /// The headers that are valid as they are, in order.
    pub headers: Vec<(String, String)>,
    /// The first header (or line) that is not, with the reason.
    pub fault: Option<FieldError>,
}

impl HeaderBlock {
    /// The first value of header `name` (names compare as NATS compares them, exactly).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    fn fault(&mut self, e: FieldError) {
        self.fault.get_or_insert(e);
    }
}

/// `bytes` shown in an error: lossy UTF-8, control characters escaped, at most [`QUOTE_MAX`]
/// characters.
fn quote(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out: String = text.chars().take(QUOTE_MAX).flat_map(char::escape_debug).collect();
    if text.chars().nth(QUOTE_MAX).is_some() {
        out.push('…');
    }
    out
}

fn not_utf8(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(_) => "is valid UTF-8".into(),
        Err(e) => {
            let at = e.valid_up_to();
            format!("is not valid UTF-8 (byte 0x{:02X} at offset {at})", bytes[at])
        }
    }
}

/// Reads a header block (`NATS/1.0\r\nName: value\r\n…\r\n\r\n`), as async-nats would, but
/// without failing: a header async-nats would refuse is left out and named in `fault`.
pub fn read(block: &[u8]) -> HeaderBlock {
    let mut out = HeaderBlock::default();
    let mut lines = block.split(|b| *b == b'\n').map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    read_version(&mut out, lines.next());
    // Whether the last header was kept, so that its continuation lines join it.
    let mut kept = false;
    for line in lines {
        if line.is_empty() {
            continue;
        }
        kept = if line[0].is_ascii_whitespace() {
            // A folded continuation of the header before it.
            kept && fold(&mut out, line)
        } else {
            read_header(&mut out, line)
        };
    }
    out
}

/// Checks the version line: a submission is a plain `NATS/1.0`, never a status.
fn read_version(out: &mut HeaderBlock, first: Option<&[u8]>) {
    match first.map(|l| l.strip_prefix(b"NATS/1.0")) {
        Some(Some(rest)) if rest.trim_ascii().is_empty() => {}
        Some(Some(rest)) => out.fault(field_error(
            BLOCK,
            format!(
                "a submission carries no status, but its version line has {:?}",
                quote(rest.trim_ascii())
            ),
        )),
        _ => out.fault(field_error(BLOCK, "the header block does not begin with NATS/1.0")),
    }
}

/// Joins a continuation `line` to the header kept before it; whether that header is still kept
/// (a line that is not UTF-8 takes it out).
fn fold(out: &mut HeaderBlock, line: &[u8]) -> bool {
    match std::str::from_utf8(line) {
        Ok(more) => {
            if let Some((_, v)) = out.headers.last_mut() {
                v.push_str(more.trim_end());
            }
            true
        }
        Err(_) => {
            let name = out.headers.pop().map(|(k, _)| k).unwrap_or_default();
            out.fault(field_error(&name, format!("value {}", not_utf8(line))));
            false
        }
    }
}

/// Reads one `Name: value` line into `out`; whether it was kept.
fn read_header(out: &mut HeaderBlock, line: &[u8]) -> bool {
    let Some(colon) = line.iter().position(|b| *b == b':') else {
        out.fault(field_error(
            BLOCK,
            format!("the header line \"{}\" has no colon", quote(line)),
        ));
        return false;
    };
    let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
    let name = match header_name(name) {
        Ok(n) => n,
        Err(e) => {
            out.fault(e);
            return false;
        }
    };
    match std::str::from_utf8(value) {
        Ok(v) => {
            out.headers.push((name.to_string(), v.to_string()));
            true
        }
        Err(_) => {
            out.fault(field_error(
                &quote(name.as_bytes()),
                format!("value {}", not_utf8(value)),
            ));
            false
        }
    }
}

/// A header name as async-nats accepts it: UTF-8, not empty, no space or control character.
fn header_name(name: &[u8]) -> Result<&str, FieldError> {
    match std::str::from_utf8(name) {
        Ok(n) if !n.is_empty() && n.chars().all(|c| c.is_ascii_graphic()) => Ok(n),
        Ok("") => Err(field_error(BLOCK, "a header line has an empty name")),
        _ => {
            let shown = quote(name);
            let why = if std::str::from_utf8(name).is_err() {
                format!("header name {}", not_utf8(name))
            } else {
                "header name has a space or control character".to_string()
            };
            Err(field_error(&shown, why))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fault(block: &[u8]) -> String {
        read(block).fault.map(|f| f.to_string()).unwrap_or_default()
    }

    #[test]
    fn a_well_formed_block_reads_every_header() {
        let b = read(b"NATS/1.0\r\nNats-Msg-Id: a\r\nJetask-User:  bob \r\nX: one\r\n  two\r\n\r\n");
        assert_eq!(b.fault, None);
        assert_eq!(b.get("Nats-Msg-Id"), Some("a"));
        assert_eq!(b.get("Jetask-User"), Some("bob"));
        assert_eq!(b.get("X"), Some("one  two"), "as async-nats joins a folded line");
    }

    #[test]
    fn a_bad_byte_names_its_header_and_spares_the_others() {
        let b = read(b"NATS/1.0\r\nNats-Msg-Id: a\r\nJetask-User: caf\xe9\r\n\r\n");
        assert_eq!(b.get("Nats-Msg-Id"), Some("a"));
        assert_eq!(b.get("Jetask-User"), None);
        let f = b.fault.unwrap().to_string();
        assert!(f.starts_with("Jetask-User: value is not valid UTF-8 (byte 0xE9"), "{f}");
    }

    #[test]
    fn malformed_lines_are_named() {
        assert!(fault(b"NATS/1.0\r\nJetask-User alice\r\n\r\n").contains("\"Jetask-User alice\" has no colon"));
        assert!(
            fault(b"NATS/1.0\r\nBad\xffName: x\r\n\r\n").starts_with("Bad\u{FFFD}Name: header name is not valid UTF-8")
        );
        assert!(fault(b"NATS/1.0\r\nA B: x\r\n\r\n").starts_with("A B: header name"));
        assert!(fault(b"NATS/1.0\r\n: x\r\n\r\n").starts_with("headers: "));
        assert!(fault(b"NATS/1.0 408 Timeout\r\n\r\n").starts_with("headers: "));
        assert!(fault(b"HTTP/1.1\r\n\r\n").starts_with("headers: "));
        assert!(fault(b"NATS/1.0\r\nX: a\r\n \xff\r\n\r\n").starts_with("X: value"));
    }

    #[test]
    fn a_huge_name_is_quoted_short() {
        let mut block = b"NATS/1.0\r\n".to_vec();
        block.extend(std::iter::repeat_n(b'A', 100_000));
        block.extend(b" x\r\n\r\n");
        assert!(fault(&block).len() < 200);
    }
}

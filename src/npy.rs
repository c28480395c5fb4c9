//! The header of a `.npy` file, read as numpy's `format.py` writes it: the magic
//! `\x93NUMPY`, a version, the header's length (2 bytes in version 1.0, 4 in 2.0 and 3.0),
//! then a Python dict literal `{'descr': ..., 'fortran_order': ..., 'shape': (...), }`.
//!
//! Only what npzfs shows is kept: `descr` as numpy wrote it (`<f4`, `|b1`, or the list repr of
//! a structured dtype), the shape and the memory order. Anything else, or anything malformed,
//! means "not a valid .npy" and nothing is shown.

/// numpy's magic string.
pub const MAGIC: &[u8; 6] = b"\x93NUMPY";

/// The longest header read: numpy refuses headers over 10,000 bytes unless told otherwise;
/// this allows a wide margin for large structured dtypes.
pub const MAX_HEADER: usize = 1 << 20;

/// What a `.npy` header says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// The `descr` field as numpy wrote it: a dtype string without its quotes (`<f4`), or the
    /// repr of a structured dtype's list (`[('x', '<f8'), ('n', '<i4')]`).
    pub descr: String,
    /// Whether the data is in Fortran (column-major) order.
    pub fortran_order: bool,
    /// The array's shape (empty for a 0-d array).
    pub shape: Vec<u64>,
    /// Bytes before the data: magic, version, length field and the header itself.
    pub len: usize,
}

impl Header {
    /// The shape as a JSON array: `[300,7]`, `[]` for 0-d.
    pub fn shape_json(&self) -> String {
        let dims: Vec<String> = self.shape.iter().map(u64::to_string).collect();
        format!("[{}]", dims.join(","))
    }
}

/// How many leading bytes hold the header, from its first 12 (None: not an `.npy`).
pub fn header_len(prefix: &[u8]) -> Option<usize> {
    if prefix.get(..6)? != MAGIC {
        return None;
    }
    let len = match prefix.get(6)? {
        1 => 10 + usize::from(u16::from_le_bytes([*prefix.get(8)?, *prefix.get(9)?])),
        2 | 3 => {
            let b: [u8; 4] = prefix.get(8..12)?.try_into().ok()?;
            12 + usize::try_from(u32::from_le_bytes(b)).ok()?
        }
        _ => return None,
    };
    (len <= MAX_HEADER).then_some(len)
}

/// Parses the header at the start of `bytes`, which must hold all of it.
pub fn parse(bytes: &[u8]) -> Option<Header> {
    let len = header_len(bytes)?;
    let start = if bytes[6] == 1 { 10 } else { 12 };
    let text = bytes.get(start..len)?;
    // Version 3.0 is utf-8; 1.0 and 2.0 are latin-1, which for numpy's own headers is ASCII.
    let text = std::str::from_utf8(text).ok()?.trim_end();
    let fields = dict(text)?;
    let (mut descr, mut fortran_order, mut shape) = (None, None, None);
    for (key, value) in fields {
        match key.as_str() {
            "descr" => descr = Some(descr_of(value)?),
            "fortran_order" => {
                fortran_order = Some(match value {
                    "True" => true,
                    "False" => false,
                    _ => return None,
                })
            }
            "shape" => shape = Some(shape_of(value)?),
            _ => return None,
        }
    }
    Some(Header {
        descr: descr?,
        fortran_order: fortran_order?,
        shape: shape?,
        len,
    })
}

/// The `descr` value: a quoted dtype string loses its quotes; a list stays as written.
fn descr_of(value: &str) -> Option<String> {
    if value.starts_with('[') {
        return Some(value.to_string());
    }
    string_of(value)
}

/// The contents of a quoted string literal without escapes.
fn string_of(value: &str) -> Option<String> {
    let quote = value.chars().next().filter(|c| *c == '\'' || *c == '"')?;
    let inner = value.strip_prefix(quote)?.strip_suffix(quote)?;
    (!inner.contains(quote) && !inner.contains('\\')).then(|| inner.to_string())
}

/// A tuple of non-negative integers: `()`, `(5,)`, `(300, 7)`.
fn shape_of(value: &str) -> Option<Vec<u64>> {
    let inner = value.strip_prefix('(')?.strip_suffix(')')?;
    inner
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(|d| d.parse().ok())
        .collect()
}

/// The `key: value` pairs of a dict literal, values as raw text.
fn dict(text: &str) -> Option<Vec<(String, &str)>> {
    let inner = text.strip_prefix('{')?.strip_suffix('}')?;
    let b = inner.as_bytes();
    let mut out = Vec::new();
    let mut i = skip_ws(b, 0);
    while i < b.len() {
        let key_end = literal_end(b, i)?;
        let key = string_of(&inner[i..key_end])?;
        i = skip_ws(b, key_end);
        if b.get(i) != Some(&b':') {
            return None;
        }
        let start = skip_ws(b, i + 1);
        let end = literal_end(b, start)?;
        out.push((key, &inner[start..end]));
        i = skip_ws(b, end);
        match b.get(i) {
            Some(b',') => i = skip_ws(b, i + 1),
            None => break,
            _ => return None,
        }
    }
    Some(out)
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while b.get(i).is_some_and(u8::is_ascii_whitespace) {
        i += 1;
    }
    i
}

/// Where the Python literal starting at `start` ends: a quoted string, a bracketed group
/// (nesting, with strings inside), or a bare word up to a delimiter.
fn literal_end(b: &[u8], start: usize) -> Option<usize> {
    let first = *b.get(start)?;
    match first {
        b'\'' | b'"' => {
            let close = b.get(start + 1..)?.iter().position(|&c| c == first)?;
            Some(start + 1 + close + 1)
        }
        b'[' | b'(' | b'{' => {
            let mut depth = 0usize;
            let mut i = start;
            while i < b.len() {
                match b[i] {
                    b'\'' | b'"' => {
                        i = literal_end(b, i)?;
                        continue;
                    }
                    b'[' | b'(' | b'{' => depth += 1,
                    b']' | b')' | b'}' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
            None
        }
        _ => {
            let len = b[start..]
                .iter()
                .position(|c| {
                    matches!(c, b',' | b':' | b'}' | b']' | b')') || c.is_ascii_whitespace()
                })
                .unwrap_or(b.len() - start);
            (len > 0).then_some(start + len)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v1(dict: &str) -> Vec<u8> {
        let mut text = dict.to_string();
        while !(10 + text.len() + 1).is_multiple_of(64) {
            text.push(' ');
        }
        text.push('\n');
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&[1, 0]);
        out.extend_from_slice(&(text.len() as u16).to_le_bytes());
        out.extend_from_slice(text.as_bytes());
        out
    }

    #[test]
    fn numpys_own_headers() {
        let bytes = v1("{'descr': '<f4', 'fortran_order': False, 'shape': (300, 7), }");
        let h = parse(&bytes).unwrap();
        assert_eq!(
            (h.descr.as_str(), h.fortran_order, h.shape.clone()),
            ("<f4", false, vec![300, 7])
        );
        assert_eq!(
            (h.len, h.shape_json()),
            (bytes.len(), "[300,7]".to_string())
        );
        let h = parse(&v1(
            "{'descr': '|b1', 'fortran_order': True, 'shape': (5,), }",
        ))
        .unwrap();
        assert_eq!(
            (h.descr.as_str(), h.fortran_order, h.shape_json()),
            ("|b1", true, "[5]".into())
        );
        let h = parse(&v1(
            "{'descr': '<f8', 'fortran_order': False, 'shape': (), }",
        ))
        .unwrap();
        assert_eq!(h.shape_json(), "[]");
        let s = "{'descr': [('id', '<i4'), ('x', '<f8'), ('name', '<U8')], 'fortran_order': False, 'shape': (50,), }";
        let h = parse(&v1(s)).unwrap();
        assert_eq!(h.descr, "[('id', '<i4'), ('x', '<f8'), ('name', '<U8')]");
    }

    #[test]
    fn anything_else_is_not_an_npy() {
        assert!(parse(b"PK\x03\x04").is_none());
        assert!(
            parse(&v1("{'descr': '<f4', 'shape': (3,), }")).is_none(),
            "a key missing"
        );
        assert!(parse(&v1("{'descr': '<f4', 'fortran_order': 0, 'shape': (3,), }")).is_none());
        assert!(
            parse(&v1(
                "{'descr': '<f4', 'fortran_order': False, 'shape': (-3,), }"
            ))
            .is_none()
        );
        assert!(
            parse(&v1(
                "{'descr': '<f4', 'fortran_order': False, 'shape': (3,), 'x': 1}"
            ))
            .is_none()
        );
        let mut truncated = v1("{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }");
        let whole = truncated.len();
        truncated.truncate(40);
        assert!(parse(&truncated).is_none());
        assert_eq!(
            header_len(&truncated),
            Some(whole),
            "the length is known from 10 bytes"
        );
    }
}

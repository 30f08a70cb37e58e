//! Syntax of cart ids, skus and idempotency keys, and quantity ranges.

/// Longest cart id or sku.
pub const ID_BYTES_MAX: usize = 128;
/// Largest quantity for add and set.
pub const QUANTITY_MAX: u32 = 10_000;
/// Longest `Idempotency-Key` header value.
pub const IDEMPOTENCY_KEY_BYTES_MAX: usize = 255;

/// `true` iff `s` is 1–128 characters of `[A-Za-z0-9._:-]` and not `.` or `..`.
pub fn is_id(s: &str) -> bool {
    (1..=ID_BYTES_MAX).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
        && s != "."
        && s != ".."
}

/// Why an id is refused, for the error message.
pub fn id_problem(what: &str, s: &str) -> String {
    let shown: String = s.chars().take(40).collect();
    if s.is_empty() {
        format!("{what} is empty; expected 1-128 characters of [A-Za-z0-9._:-]")
    } else if s.len() > ID_BYTES_MAX {
        format!(
            "{what} is {} bytes long; the maximum is {ID_BYTES_MAX}",
            s.len()
        )
    } else if s == "." || s == ".." {
        format!("{what} {s:?} is a path segment, not an id")
    } else if s.contains('%') {
        format!(
            "{what} {shown:?} contains percent-encoding; ids are 1-128 characters of \
             [A-Za-z0-9._:-] and never need escaping"
        )
    } else {
        format!("{what} {shown:?} has characters outside [A-Za-z0-9._:-]")
    }
}

/// `true` iff `s` is a usable `Idempotency-Key`: 1–255 visible ASCII characters.
pub fn is_idempotency_key(s: &str) -> bool {
    (1..=IDEMPOTENCY_KEY_BYTES_MAX).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_graphic())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        for ok in ["a", "cart-1", "A.b_c:d-9", &"x".repeat(128), "..."] {
            assert!(is_id(ok), "{ok}");
        }
        for bad in ["", ".", "..", "a/b", "a b", "é", "%2e", &"x".repeat(129)] {
            assert!(!is_id(bad), "{bad}");
        }
        assert!(id_problem("cart id", "%2e%2e").contains("percent-encoding"));
        assert!(id_problem("sku", "..").contains("path segment"));
        assert!(id_problem("sku", &"y".repeat(200)).contains("200 bytes"));
    }

    #[test]
    fn idempotency_keys() {
        assert!(is_idempotency_key("3f2c-uuid"));
        assert!(!is_idempotency_key(""));
        assert!(!is_idempotency_key("has space"));
        assert!(!is_idempotency_key(&"k".repeat(256)));
    }
}

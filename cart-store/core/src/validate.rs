//! Client input parsed at the boundary into types that cannot hold a bad value: [`CartId`]
//! and [`Sku`] (1–128 characters of `[A-Za-z0-9._:-]`), [`Increment`] (1–10000, what `add`
//! takes), [`Quantity`] (0–10000, what `set` takes; 0 removes the line) and
//! [`IdempotencyKey`] (1–255 visible ASCII characters). Past the boundary, the write path
//! uses them without checking again.

use std::fmt;

/// Longest cart id or sku.
pub const ID_BYTES_MAX: usize = 128;
/// Largest quantity for add and set, and the largest a line can reach by adds in one region
/// (an add past it gets [`NodeError::LineFull`](crate::NodeError::LineFull)).
pub const QUANTITY_MAX: u32 = 10_000;
/// Longest `Idempotency-Key` header value.
pub const IDEMPOTENCY_KEY_BYTES_MAX: usize = 255;

/// Which input was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum InputErrorKind {
    /// A cart id or sku has the wrong syntax.
    Id,
    /// A quantity is out of range.
    Quantity,
    /// An `Idempotency-Key` has the wrong syntax.
    IdempotencyKey,
}

/// Client input that was refused. The message says what to change.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct InputError {
    kind: InputErrorKind,
    message: String,
}

impl InputError {
    /// What was refused.
    pub fn kind(&self) -> InputErrorKind {
        self.kind
    }
}

/// `true` iff `s` is 1–128 characters of `[A-Za-z0-9._:-]` and not `.` or `..`.
pub fn is_id(s: &str) -> bool {
    (1..=ID_BYTES_MAX).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
        && s != "."
        && s != ".."
}

fn id_problem(what: &str, s: &str) -> InputError {
    let shown: String = s.chars().take(40).collect();
    let message = if s.is_empty() {
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
    };
    InputError {
        kind: InputErrorKind::Id,
        message,
    }
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// Parses `s`, or says what is wrong with it.
            pub fn parse(s: &str) -> Result<Self, InputError> {
                if is_id(s) {
                    Ok($name(s.to_owned()))
                } else {
                    Err(id_problem($what, s))
                }
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }
    };
}

id_type!(
    /// A cart id: 1–128 characters of `[A-Za-z0-9._:-]`, not `.` or `..`.
    CartId,
    "cart id"
);
id_type!(
    /// A sku: 1–128 characters of `[A-Za-z0-9._:-]`, not `.` or `..`.
    Sku,
    "sku"
);

/// What `add` takes: 1 to [`QUANTITY_MAX`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Increment(u32);

impl Increment {
    /// Parses a client's number, or says the range.
    pub fn new(n: u64) -> Result<Self, InputError> {
        match u32::try_from(n) {
            Ok(q @ 1..=QUANTITY_MAX) => Ok(Increment(q)),
            _ => Err(InputError {
                kind: InputErrorKind::Quantity,
                message: format!("quantity {n} is out of range: add takes 1..={QUANTITY_MAX}"),
            }),
        }
    }

    /// The number, 1 to [`QUANTITY_MAX`].
    pub fn get(self) -> u32 {
        self.0
    }
}

/// What `set` takes: 0 to [`QUANTITY_MAX`], where 0 removes the line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Quantity(u32);

impl Quantity {
    /// Parses a client's number, or says the range.
    pub fn new(n: u64) -> Result<Self, InputError> {
        match u32::try_from(n) {
            Ok(q @ 0..=QUANTITY_MAX) => Ok(Quantity(q)),
            _ => Err(InputError {
                kind: InputErrorKind::Quantity,
                message: format!(
                    "quantity {n} is out of range: set takes 0..={QUANTITY_MAX} (0 removes the line)"
                ),
            }),
        }
    }

    /// The number, 0 to [`QUANTITY_MAX`].
    pub fn get(self) -> u32 {
        self.0
    }
}

/// An `Idempotency-Key`: 1–255 visible ASCII characters.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// Parses a header value, or says what is wrong with it.
    pub fn parse(s: &str) -> Result<Self, InputError> {
        if (1..=IDEMPOTENCY_KEY_BYTES_MAX).contains(&s.len())
            && s.bytes().all(|b| b.is_ascii_graphic())
        {
            Ok(IdempotencyKey(s.to_owned()))
        } else {
            Err(InputError {
                kind: InputErrorKind::IdempotencyKey,
                message: format!(
                    "Idempotency-Key must be 1-{IDEMPOTENCY_KEY_BYTES_MAX} visible ASCII characters, e.g. a UUID"
                ),
            })
        }
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        for ok in ["a", "cart-1", "A.b_c:d-9", &"x".repeat(128), "..."] {
            assert!(CartId::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".", "..", "a/b", "a b", "é", "%2e", &"x".repeat(129)] {
            assert_eq!(
                Sku::parse(bad).unwrap_err().kind(),
                InputErrorKind::Id,
                "{bad}"
            );
        }
        let msg = |s: &str| CartId::parse(s).unwrap_err().to_string();
        assert!(msg("%2e%2e").contains("percent-encoding"));
        assert!(msg("..").contains("path segment"));
        assert!(msg(&"y".repeat(200)).contains("200 bytes"));
    }

    #[test]
    fn quantities() {
        assert_eq!(Increment::new(1).map(Increment::get), Ok(1));
        assert_eq!(Increment::new(10_000).map(Increment::get), Ok(10_000));
        for bad in [0, 10_001, u64::from(u32::MAX) + 1, u64::MAX] {
            assert!(Increment::new(bad).is_err(), "{bad}");
        }
        assert_eq!(Quantity::new(0).map(Quantity::get), Ok(0));
        assert!(Quantity::new(10_001).is_err());
        // Past u32: the range check is on the client's number, not a truncated copy.
        assert!(Quantity::new(1 << 32).is_err());
    }

    #[test]
    fn idempotency_keys() {
        assert!(IdempotencyKey::parse("3f2c-uuid").is_ok());
        assert!(IdempotencyKey::parse("").is_err());
        assert!(IdempotencyKey::parse("has space").is_err());
        assert!(IdempotencyKey::parse(&"k".repeat(256)).is_err());
    }
}

//! The `+sip.instance` of RFC 5626 §4.1: a UUID URN (RFC 4122) that names
//! one installation of the app. Generate it once, persist it, and hand the
//! same value to every start; a new one on every start would leave stale
//! bindings at the registrar until they expire.

use std::fmt;
use std::str::FromStr;

use rand::CryptoRng;

/// An installation's instance ID, a version 4 UUID.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct InstanceId([u8; 16]);

/// Why text is not an instance ID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InstanceIdError {
    /// Not `urn:uuid:` followed by 8-4-4-4-12 hex digits.
    #[error("not a UUID URN: {0:?}")]
    Malformed(String),
}

impl InstanceId {
    /// A fresh random (version 4) UUID from a cryptographic RNG. Call once
    /// per installation and store the [`Display`](fmt::Display) form.
    pub fn generate(rng: &mut impl CryptoRng) -> InstanceId {
        let mut b = [0u8; 16];
        rng.fill_bytes(&mut b);
        b[6] = (b[6] & 0x0F) | 0x40; // version 4
        b[8] = (b[8] & 0x3F) | 0x80; // RFC 4122 variant
        InstanceId(b)
    }

    /// An ID from its 16 bytes.
    #[must_use]
    pub fn from_bytes(bytes: [u8; 16]) -> InstanceId {
        InstanceId(bytes)
    }

    /// The 16 bytes.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// Parses `urn:uuid:…`, `<urn:uuid:…>` (as in the Contact parameter) or
    /// a bare UUID, in any case.
    ///
    /// # Errors
    ///
    /// [`InstanceIdError::Malformed`].
    pub fn parse(text: &str) -> Result<InstanceId, InstanceIdError> {
        let bad = || InstanceIdError::Malformed(text.chars().take(64).collect());
        let t = text.trim();
        let t = t
            .strip_prefix('"')
            .and_then(|t| t.strip_suffix('"'))
            .unwrap_or(t);
        let t = t
            .strip_prefix('<')
            .and_then(|t| t.strip_suffix('>'))
            .unwrap_or(t);
        let t = match t.get(..9) {
            Some(p) if p.eq_ignore_ascii_case("urn:uuid:") => &t[9..],
            _ => t,
        };
        let groups: Vec<&str> = t.split('-').collect();
        let lengths: Vec<usize> = groups.iter().map(|g| g.len()).collect();
        if lengths != [8, 4, 4, 4, 12] {
            return Err(bad());
        }
        let hex: String = groups.concat();
        let mut b = [0u8; 16];
        for (i, byte) in b.iter_mut().enumerate() {
            let pair = hex.get(2 * i..2 * i + 2).ok_or_else(bad)?;
            *byte = u8::from_str_radix(pair, 16).map_err(|_| bad())?;
        }
        Ok(InstanceId(b))
    }

    /// The URN, `urn:uuid:xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` (lower case).
    #[must_use]
    pub fn urn(&self) -> String {
        self.to_string()
    }

    /// The Contact header parameter, `+sip.instance="<urn:uuid:…>"`.
    #[must_use]
    pub fn contact_param(&self) -> String {
        format!("+sip.instance=\"<{self}>\"")
    }
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("urn:uuid:")?;
        for (i, b) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "InstanceId({self})")
    }
}

impl FromStr for InstanceId {
    type Err = InstanceIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        InstanceId::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    #[test]
    fn rfc5626_4_1_instance_is_a_v4_uuid_urn_that_round_trips() {
        let mut rng = StdRng::seed_from_u64(9);
        let id = InstanceId::generate(&mut rng);
        let text = id.to_string();
        assert!(text.starts_with("urn:uuid:"));
        assert_eq!(text.len(), 45);
        assert_eq!(&text[23..24], "4", "version nibble: {text}");
        assert!(
            matches!(&text[28..29], "8" | "9" | "a" | "b"),
            "variant: {text}"
        );
        assert_eq!(InstanceId::parse(&text).unwrap(), id);
        assert_eq!(InstanceId::parse(&text.to_uppercase()).unwrap(), id);
        let param = id.contact_param();
        assert_eq!(param, format!("+sip.instance=\"<{text}>\""));
        assert_eq!(InstanceId::parse(&param[14..]).unwrap(), id);
        assert_ne!(InstanceId::generate(&mut rng), id);
    }

    #[test]
    fn rfc4122_example_parses() {
        let id = InstanceId::parse("urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6").unwrap();
        assert_eq!(id.as_bytes()[0], 0xf8);
        assert_eq!(id.urn(), "urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6");
        for bad in [
            "",
            "urn:uuid:",
            "f81d4fae7dec11d0a76500a0c91e6bf6",
            "urn:uuid:g81d4fae-7dec-11d0-a765-00a0c91e6bf6",
            "urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6x",
        ] {
            assert!(InstanceId::parse(bad).is_err(), "{bad}");
        }
    }
}

//! Money is integer minor units with a lowercase ISO currency; parsing happens once, here.

use std::fmt;

/// Currencies whose minor unit is the whole unit (Stripe's zero-decimal list).
const ZERO_DECIMAL: &[&str] = &[
    "bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx", "vnd", "vuv",
    "xaf", "xof", "xpf",
];

/// A three-letter ISO 4217 code, lowercase as Stripe writes it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct Currency(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("currency must be a three-letter ISO code such as usd")]
    Currency,
    #[error("invalid email address")]
    Email,
}

impl Currency {
    pub fn parse(s: &str) -> Result<Self, MoneyError> {
        let lower = s.trim().to_ascii_lowercase();
        if lower.len() == 3 && lower.bytes().all(|b| b.is_ascii_lowercase()) {
            Ok(Self(lower))
        } else {
            Err(MoneyError::Currency)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True for currencies such as JPY whose amounts have no minor unit.
    pub fn is_zero_decimal(&self) -> bool {
        ZERO_DECIMAL.contains(&self.0.as_str())
    }

    /// An amount as a person reads it: `12.50 USD`, `500 JPY`.
    pub fn display(&self, amount: i64) -> String {
        let code = self.0.to_uppercase();
        if self.is_zero_decimal() {
            format!("{amount} {code}")
        } else {
            let sign = if amount < 0 { "-" } else { "" };
            let a = amount.unsigned_abs();
            format!("{sign}{}.{:02} {code}", a / 100, a % 100)
        }
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An email address, checked for the shape `local@domain.tld` (deliverability is the
/// mail server's business).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(transparent)]
pub struct Email(String);

impl Email {
    pub fn parse(s: &str) -> Result<Self, MoneyError> {
        let s = s.trim();
        let (local, domain) = s.split_once('@').ok_or(MoneyError::Email)?;
        let ok = !local.is_empty()
            && s.len() <= 254
            && domain.contains('.')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
            && !domain.contains('@')
            && !s.chars().any(|c| c.is_whitespace() || c.is_control());
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(MoneyError::Email)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn currencies_are_lowercased_and_zero_decimal_ones_display_whole() {
        assert_eq!(Currency::parse("USD").unwrap().as_str(), "usd");
        assert!(Currency::parse("us").is_err());
        assert!(Currency::parse("u$d").is_err());
        assert_eq!(Currency::parse("usd").unwrap().display(1250), "12.50 USD");
        assert_eq!(Currency::parse("jpy").unwrap().display(500), "500 JPY");
    }

    #[test]
    fn emails_need_a_local_part_and_a_dotted_domain() {
        assert!(Email::parse("jenny@example.com").is_ok());
        for bad in [
            "",
            "jenny",
            "@example.com",
            "jenny@",
            "jenny@example",
            "a b@example.com",
            "a@b@c.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad}");
        }
    }
}

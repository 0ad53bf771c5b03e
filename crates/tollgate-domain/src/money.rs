//! Money is an [`Amount`] of integer minor units with a [`Currency`] Stripe charges in;
//! parsing happens once, here. Arithmetic on amounts is checked: an overflow is an error,
//! never a wrap.

use std::fmt;

/// Currencies Stripe charges in: the codes of async-stripe's generated `Currency` list
/// (from Stripe's spec), less the retired ones (EEK, LTL, LVL, MRO, VEF, HRK, STD, SLL),
/// plus SLE, Sierra Leone's current leone. Anything else Stripe refuses, so Tollgate
/// refuses it first.
const SUPPORTED: &[&str] = &[
    "aed", "afn", "all", "amd", "ang", "aoa", "ars", "aud", "awg", "azn", "bam", "bbd", "bdt",
    "bgn", "bif", "bmd", "bnd", "bob", "brl", "bsd", "bwp", "byn", "bzd", "cad", "cdf", "chf",
    "clp", "cny", "cop", "crc", "cve", "czk", "djf", "dkk", "dop", "dzd", "egp", "etb", "eur",
    "fjd", "fkp", "gbp", "gel", "gip", "gmd", "gnf", "gtq", "gyd", "hkd", "hnl", "htg", "huf",
    "idr", "ils", "inr", "isk", "jmd", "jpy", "kes", "kgs", "khr", "kmf", "krw", "kyd", "kzt",
    "lak", "lbp", "lkr", "lrd", "lsl", "mad", "mdl", "mga", "mkd", "mmk", "mnt", "mop", "mur",
    "mvr", "mwk", "mxn", "myr", "mzn", "nad", "ngn", "nio", "nok", "npr", "nzd", "pab", "pen",
    "pgk", "php", "pkr", "pln", "pyg", "qar", "ron", "rsd", "rub", "rwf", "sar", "sbd", "scr",
    "sek", "sgd", "shp", "sle", "sos", "srd", "svc", "szl", "thb", "tjs", "top", "try", "ttd",
    "twd", "tzs", "uah", "ugx", "usd", "uyu", "uzs", "vnd", "vuv", "wst", "xaf", "xcd", "xof",
    "xpf", "yer", "zar", "zmw",
];

/// Currencies whose minor unit is the whole unit (Stripe's zero-decimal list).
const ZERO_DECIMAL: &[&str] = &[
    "bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx", "vnd", "vuv",
    "xaf", "xof", "xpf",
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("currency must be a three-letter ISO code of a currency Stripe supports, such as usd")]
    Currency,
    #[error("invalid email address")]
    Email,
    #[error("amounts must not be negative")]
    Negative,
    #[error("the amount is larger than Stripe accepts ({max} minor units)", max = Amount::STRIPE_MAX.0)]
    TooLarge,
}

/// A three-letter ISO 4217 code that Stripe charges in, lowercase as Stripe writes it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct Currency(String);

impl Currency {
    pub fn parse(s: &str) -> Result<Self, MoneyError> {
        let lower = s.trim().to_ascii_lowercase();
        if SUPPORTED.contains(&lower.as_str()) {
            Ok(Self(lower))
        } else {
            Err(MoneyError::Currency)
        }
    }

    /// Wraps a stored code without checking it.
    pub fn from_db(s: String) -> Self {
        Self(s)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True for currencies such as JPY whose amounts have no minor unit.
    pub fn is_zero_decimal(&self) -> bool {
        ZERO_DECIMAL.contains(&self.0.as_str())
    }

    /// An amount as a person reads it: `12.50 USD`, `500 JPY`.
    pub fn display(&self, amount: Amount) -> String {
        let code = self.0.to_uppercase();
        let a = amount.get();
        if self.is_zero_decimal() {
            format!("{a} {code}")
        } else {
            format!("{}.{:02} {code}", a / 100, a % 100)
        }
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Currency {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Currency::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl utoipa::PartialSchema for Currency {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some(
                "A lowercase three-letter ISO 4217 code of a currency Stripe supports.",
            ))
            .enum_values(Some(SUPPORTED.iter().copied()))
            .build()
            .into()
    }
}

impl utoipa::ToSchema for Currency {}

/// A non-negative amount of money in a currency's minor units (cents, or yen).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct Amount(i64);

impl Amount {
    pub const ZERO: Amount = Amount(0);
    /// The largest amount Stripe charges in one payment for most currencies: eight digits
    /// ("amount must be no more than 999,999.99 USD").
    pub const STRIPE_MAX: Amount = Amount(99_999_999);

    /// An amount from a request or a calculation; negative amounts are refused.
    pub fn new(minor_units: i64) -> Result<Self, MoneyError> {
        if minor_units < 0 {
            Err(MoneyError::Negative)
        } else {
            Ok(Self(minor_units))
        }
    }

    /// An amount that must also be one Stripe can charge.
    pub fn chargeable(minor_units: i64) -> Result<Self, MoneyError> {
        let a = Self::new(minor_units)?;
        if a > Self::STRIPE_MAX {
            Err(MoneyError::TooLarge)
        } else {
            Ok(a)
        }
    }

    /// Wraps a stored amount (the database's CHECK keeps it non-negative).
    pub const fn from_db(minor_units: i64) -> Self {
        Self(minor_units)
    }

    pub const fn get(self) -> i64 {
        self.0
    }

    pub fn is_zero(self) -> bool {
        self.0 == 0
    }

    pub fn checked_add(self, other: Amount) -> Option<Amount> {
        self.0.checked_add(other.0).map(Amount)
    }

    /// `None` when `other` is larger (amounts never go below zero).
    pub fn checked_sub(self, other: Amount) -> Option<Amount> {
        self.0.checked_sub(other.0).filter(|v| *v >= 0).map(Amount)
    }

    /// This amount `quantity` times; `None` on overflow or a negative quantity.
    pub fn checked_mul(self, quantity: i64) -> Option<Amount> {
        if quantity < 0 {
            return None;
        }
        self.0.checked_mul(quantity).map(Amount)
    }

    pub fn min(self, other: Amount) -> Amount {
        Amount(self.0.min(other.0))
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Amount {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = i64::deserialize(d)?;
        Amount::new(v).map_err(serde::de::Error::custom)
    }
}

impl utoipa::PartialSchema for Amount {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
            .minimum(Some(0))
            .description(Some(
                "An amount in the currency's minor units (cents; yen for zero-decimal currencies).",
            ))
            .build()
            .into()
    }
}

impl utoipa::ToSchema for Amount {}

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
            && local.len() <= 64
            && s.len() <= 254
            && domain.contains('.')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
            && !domain.contains("..")
            && !domain.contains('@')
            && s.is_ascii()
            && !s.chars().any(|c| c.is_whitespace() || c.is_control());
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(MoneyError::Email)
        }
    }

    /// Wraps a stored address without checking it.
    pub fn from_db(s: String) -> Self {
        Self(s)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl utoipa::PartialSchema for Email {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Email)))
            .max_length(Some(254))
            .build()
            .into()
    }
}

impl utoipa::ToSchema for Email {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn currencies_are_lowercased_and_only_stripes_pass() {
        assert_eq!(Currency::parse("USD").unwrap().as_str(), "usd");
        for bad in ["us", "u$d", "xyz", "eek", ""] {
            assert!(Currency::parse(bad).is_err(), "{bad}");
        }
        let usd = Currency::parse("usd").unwrap();
        assert_eq!(usd.display(Amount::new(1250).unwrap()), "12.50 USD");
        assert_eq!(
            Currency::parse("jpy")
                .unwrap()
                .display(Amount::new(500).unwrap()),
            "500 JPY"
        );
    }

    #[test]
    fn amounts_never_go_negative_or_wrap() {
        assert!(Amount::new(-1).is_err());
        assert!(Amount::chargeable(100_000_000).is_err());
        assert!(Amount::chargeable(99_999_999).is_ok());
        let a = Amount::new(5).unwrap();
        assert_eq!(a.checked_sub(Amount::new(6).unwrap()), None);
        assert_eq!(Amount::new(i64::MAX).unwrap().checked_add(a), None);
        assert_eq!(a.checked_mul(-1), None);
        assert_eq!(a.checked_mul(3), Some(Amount::new(15).unwrap()));
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
            "a@b..com",
            "a\0@b.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad}");
        }
    }
}

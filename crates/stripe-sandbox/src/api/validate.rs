//! Stripe's value rules that the OpenAPI schema does not carry: email addresses, amounts,
//! currencies, addresses. Each function returns Stripe's error for a value it refuses.

use serde_json::{Value, json};

use crate::error::{ApiError, ApiResult};

/// Whether `email` is an address Stripe accepts. Stripe refuses, with "Invalid email
/// address: <value>" (code `email_invalid`), addresses with surrounding spaces, without an
/// `@`, with a domain that has no dot (`otameshi@com`, `name@gmail`) or starts with one
/// (`x@.maie.com`), and with non-ASCII look-alikes of `@` (errors quoted in
/// fjordllc/bootcamp#4134, #3927, #6408, #7638, exercism/website#7721, masslight/ottehr#7319).
pub fn is_valid_email(email: &str) -> bool {
    let Some((local, domain)) = email.split_once('@') else {
        return false;
    };
    let local_ok = !local.is_empty()
        && local
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"@()<>[]\\,;:\"".contains(&b));
    let labels: Vec<&str> = domain.split('.').collect();
    let domain_ok = labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
        && labels
            .last()
            .is_some_and(|tld| tld.len() >= 2 && tld.bytes().all(|b| b.is_ascii_alphabetic()));
    local_ok && domain_ok
}

/// Refuses an invalid email in `param` as Stripe does.
pub fn check_email(p: &Value, param: &str) -> ApiResult<()> {
    match p[param].as_str() {
        Some(email) if !email.is_empty() && !is_valid_email(email) => Err(ApiError::param(
            param,
            format!("Invalid email address: {email}"),
        )
        .with_code("email_invalid")),
        _ => Ok(()),
    }
}

/// "The amount value supports up to eight digits (e.g., a value of 99999999 for a USD charge
/// of $999,999.99)." (docs.stripe.com/currencies, Minimum and maximum charge amounts)
pub const MAX_AMOUNT: i64 = 99_999_999;

/// Refuses an amount in minor units above Stripe's eight digits.
pub fn check_amount(amount: i64, param: &str) -> ApiResult<()> {
    if amount > MAX_AMOUNT {
        return Err(ApiError::param(
            param,
            format!(
                "This value must be less than or equal to {MAX_AMOUNT} (it currently is '{amount}')."
            ),
        ));
    }
    Ok(())
}

/// The presentment currencies Stripe supports (docs.stripe.com/currencies).
pub const CURRENCIES: &[&str] = &[
    "usd", "aed", "afn", "all", "amd", "ang", "aoa", "ars", "aud", "awg", "azn", "bam", "bbd",
    "bdt", "bgn", "bif", "bmd", "bnd", "bob", "brl", "bsd", "bwp", "byn", "bzd", "cad", "cdf",
    "chf", "clp", "cny", "cop", "crc", "cve", "czk", "djf", "dkk", "dop", "dzd", "egp", "etb",
    "eur", "fjd", "fkp", "gbp", "gel", "gip", "gmd", "gnf", "gtq", "gyd", "hkd", "hnl", "htg",
    "huf", "idr", "ils", "inr", "isk", "jmd", "jpy", "kes", "kgs", "khr", "kmf", "krw", "kyd",
    "kzt", "lak", "lbp", "lkr", "lrd", "lsl", "mad", "mdl", "mga", "mkd", "mmk", "mnt", "mop",
    "mur", "mvr", "mwk", "mxn", "myr", "mzn", "nad", "ngn", "nio", "nok", "npr", "nzd", "pab",
    "pen", "pgk", "php", "pkr", "pln", "pyg", "qar", "ron", "rsd", "rub", "rwf", "sar", "sbd",
    "scr", "sek", "sgd", "shp", "sle", "sos", "srd", "std", "szl", "thb", "tjs", "top", "try",
    "ttd", "twd", "tzs", "uah", "ugx", "uyu", "uzs", "vnd", "vuv", "wst", "xaf", "xcd", "xof",
    "xpf", "yer", "zar", "zmw",
];

/// Refuses a currency Stripe does not support, with Stripe's "Invalid currency" message.
pub fn check_currency(currency: &str, param: &str) -> ApiResult<()> {
    if CURRENCIES.contains(&currency) {
        return Ok(());
    }
    Err(ApiError::param(
        param,
        format!(
            "Invalid currency: {currency}. Stripe currently supports these currencies: {}",
            CURRENCIES.join(", ")
        ),
    ))
}

/// An address as Stripe renders it: all six keys, absent ones `null`.
pub fn address(given: &Value) -> Value {
    let field = |k: &str| match &given[k] {
        Value::String(s) if !s.is_empty() => json!(s),
        _ => Value::Null,
    };
    json!({
        "city": field("city"),
        "country": field("country"),
        "line1": field("line1"),
        "line2": field("line2"),
        "postal_code": field("postal_code"),
        "state": field("state"),
    })
}

/// Whether an address locates a customer for Stripe Tax: "Collect and set both the country
/// and the postal_code fields on your customer objects. Use two-letter country codes (ISO
/// 3166-1 alpha-2)." (docs.stripe.com/tax/customer-locations)
pub fn is_tax_location(address: &Value) -> bool {
    let country_ok = address["country"]
        .as_str()
        .is_some_and(|c| c.len() == 2 && c.bytes().all(|b| b.is_ascii_uppercase()));
    let postal_ok = address["postal_code"]
        .as_str()
        .is_some_and(|p| !p.trim().is_empty());
    country_ok && postal_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_stripe_refused_are_refused_and_ordinary_ones_pass() {
        for bad in [
            "otameshi@com",
            " k.shimizu139@gmail.com",
            "odatakeryu",
            "paasonauyuya＠iCloud.com",
            "mehmetakdemir9212@gmail",
            "someone@.maie.com",
            "two@@example.com",
            "space in@example.com",
        ] {
            assert!(!is_valid_email(bad), "{bad} should be refused");
        }
        for good in [
            "a.names@domainabc.ca",
            "jenny+test@example.co.uk",
            "x@sub-domain.example.com",
        ] {
            assert!(is_valid_email(good), "{good} should pass");
        }
    }

    #[test]
    fn amounts_have_at_most_eight_digits() {
        assert!(check_amount(99_999_999, "unit_amount").is_ok());
        let e = check_amount(100_000_000, "unit_amount").unwrap_err();
        assert_eq!(e.param.as_deref(), Some("unit_amount"));
    }

    #[test]
    fn a_tax_location_needs_a_two_letter_country_and_a_postal_code() {
        assert!(is_tax_location(
            &json!({ "country": "US", "postal_code": "94103" })
        ));
        assert!(!is_tax_location(&json!({ "country": "US" })));
        assert!(!is_tax_location(
            &json!({ "country": "United States", "postal_code": "94103" })
        ));
        assert!(!is_tax_location(&Value::Null));
    }
}

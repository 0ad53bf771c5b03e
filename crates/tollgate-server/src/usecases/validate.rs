//! Checks of values from requests that more than one use case makes: text, URLs, lookup
//! keys, metadata, times. Each names the parameter it refuses.

use tollgate_domain::Timestamp;

use crate::error::{Code, Error, Result};

/// Whether a string holds characters no stored text should (NUL and other controls but
/// tab and newlines). PostgreSQL cannot store NUL at all.
pub fn has_control(s: &str) -> bool {
    s.chars()
        .any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
}

/// Text of 1 to `max` characters, trimmed, without control characters.
pub fn text(param: &str, value: &str, max: usize) -> Result<String> {
    let v = value.trim();
    if v.is_empty() {
        return Err(Error::param(param, format!("{param} must not be empty.")));
    }
    if v.chars().count() > max {
        return Err(Error::param(
            param,
            format!("{param} is at most {max} characters."),
        ));
    }
    if has_control(v) {
        return Err(Error::param(
            param,
            format!("{param} must not contain control characters."),
        ));
    }
    Ok(v.to_owned())
}

/// Optional text: `None` stays `None`; a value is checked as [`text`].
pub fn opt_text(param: &str, value: Option<&str>, max: usize) -> Result<Option<String>> {
    value.map(|v| text(param, v, max)).transpose()
}

/// An identifier-like value: 1 to `max` visible ASCII characters.
pub fn token(param: &str, value: &str, max: usize) -> Result<()> {
    if (1..=max).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(())
    } else {
        Err(Error::param(
            param,
            format!("{param} is 1 to {max} visible ASCII characters."),
        ))
    }
}

/// The longest lookup key a tenant may use: Stripe takes 200 characters, and Tollgate
/// puts the tenant's id in front of the key in Stripe (keys are unique per account).
pub const MAX_LOOKUP_KEY: usize = 160;

/// A lookup key: 1 to 160 characters without control characters.
pub fn lookup_key(param: &str, value: &str) -> Result<()> {
    if (1..=MAX_LOOKUP_KEY).contains(&value.chars().count())
        && !has_control(value)
        && !value.trim().is_empty()
    {
        Ok(())
    } else {
        Err(Error::param(
            param,
            format!("A lookup key is 1 to {MAX_LOOKUP_KEY} characters without control characters."),
        ))
    }
}

/// An absolute http(s) URL with a host, at most 2048 characters (Stripe's limit for
/// Checkout's URLs). `{PLACEHOLDERS}` are filled with a sample first, for templates.
pub fn url(param: &str, value: &str) -> Result<()> {
    let probe = value
        .replace("{CHECKOUT_SESSION_ID}", "cs_test")
        .replace("{ORDER_ID}", "ord_test")
        .replace("{CUSTOMER_ID}", "cust_test");
    match url::Url::parse(&probe) {
        Ok(u)
            if matches!(u.scheme(), "http" | "https")
                && u.host().is_some()
                && value.len() <= 2048
                && !has_control(value) =>
        {
            Ok(())
        }
        _ => Err(Error::invalid(
            param,
            Code::InvalidUrl,
            format!("{param} must be an absolute http(s) URL of at most 2048 characters."),
        )),
    }
}

/// A moment that must not have passed yet (a minute's slack for clocks apart).
pub fn future(param: &str, at: Timestamp) -> Result<Timestamp> {
    if !at.is_plausible() {
        return Err(Error::invalid(
            param,
            Code::InvalidTime,
            format!("{param} is not a plausible time (Unix seconds)."),
        ));
    }
    if at < Timestamp::now().minus(std::time::Duration::from_secs(60)) {
        return Err(Error::invalid(
            param,
            Code::InvalidTime,
            format!("{param} must be in the future (Unix seconds)."),
        ));
    }
    Ok(at)
}

/// Metadata: at most 50 keys of up to 40 characters, each a string of up to 500
/// characters (Stripe's limits), without control characters.
pub fn metadata(param: &str, m: &serde_json::Map<String, serde_json::Value>) -> Result<()> {
    let bad = || {
        Error::param(
            param,
            "metadata holds up to 50 string values, keys of 1 to 40 and values up to 500 characters.",
        )
    };
    if m.len() > 50 {
        return Err(bad());
    }
    for (k, v) in m {
        let Some(v) = v.as_str() else {
            return Err(bad());
        };
        if k.is_empty()
            || k.chars().count() > 40
            || v.chars().count() > 500
            || has_control(k)
            || has_control(v)
            || k.contains(['[', ']'])
        {
            return Err(bad());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_trimmed_bounded_and_free_of_control_characters() {
        assert_eq!(text("title", "  Course ", 10).unwrap(), "Course");
        assert!(text("title", "   ", 10).is_err());
        assert!(text("title", "a\0b", 10).is_err());
        assert!(text("title", &"x".repeat(11), 10).is_err());
        assert_eq!(
            text("title", "x", 10).map_err(|e| e.param),
            Ok("x".to_owned())
        );
        let e = text("title", "", 10).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("title"));
    }

    #[test]
    fn urls_must_be_absolute_http() {
        assert!(url("u", "https://shop.test/thanks?s={CHECKOUT_SESSION_ID}").is_ok());
        assert!(url("u", "ftp://shop.test").is_err());
        assert!(url("u", "/relative").is_err());
        assert!(url("u", &format!("https://a.test/{}", "x".repeat(2100))).is_err());
    }

    #[test]
    fn past_times_are_refused() {
        assert!(future("t", Timestamp::now().plus_days(1)).is_ok());
        assert!(future("t", Timestamp::from_secs(1_000_000_000)).is_err());
        assert!(future("t", Timestamp::from_secs(i64::MAX)).is_err());
    }
}

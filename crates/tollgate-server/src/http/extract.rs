//! Extractors whose rejections answer in Tollgate's error format and name the parameter
//! at fault: a JSON body, a query string (strict: an unknown parameter is refused, so a
//! typo never widens a list), and path ids.
//!
//! The body and the query are deserialized through `serde_path_to_error`, so a wrong type
//! deep in a body answers with its path (`items[2].quantity`) as `param`.

use std::borrow::Cow;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;

use super::MAX_BODY;
use crate::error::{Code, Error};
use crate::usecases::validate::has_control;

/// A JSON body. An empty body reads as `{}`.
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                too_large(MAX_BODY)
            } else {
                Error::new(Code::InvalidJson, "The body could not be read.")
            }
        })?;
        parse_json(&bytes).map(Json)
    }
}

pub fn too_large(limit: usize) -> Error {
    Error::new(
        Code::BodyTooLarge,
        format!("The body is larger than {limit} bytes."),
    )
}

/// Parses a JSON body into `T`, naming the parameter at fault.
pub fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        bytes
    };
    // Strings with control characters (NUL above all, which PostgreSQL cannot store)
    // are refused wherever they are, naming where.
    if let Some(path) = control_character_path(bytes) {
        return Err(Error::param(
            &path,
            format!("{path} must not contain control characters."),
        ));
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    match serde_path_to_error::deserialize(de) {
        Ok(v) => Ok(v),
        Err(e) => {
            let path = e.path().to_string();
            let inner = e.into_inner();
            if inner.is_syntax() || inner.is_eof() || inner.is_io() {
                return Err(Error::new(
                    Code::InvalidJson,
                    format!("The body is not valid JSON: {inner}"),
                ));
            }
            Err(data_error(&path, &inner.to_string()))
        }
    }
}

/// A deserialization failure of well-formed input, as a parameter error.
fn data_error(path: &str, message: &str) -> Error {
    // serde's own wording: "missing field `x`", "unknown field `x`, expected ...".
    let field = |prefix: &str| {
        message
            .strip_prefix(prefix)
            .and_then(|rest| rest.split('`').next())
            .map(str::to_owned)
    };
    let join = |field: &str| {
        if path.is_empty() || path == "." {
            field.to_owned()
        } else {
            format!("{path}.{field}")
        }
    };
    let message = message.split(" at line ").next().unwrap_or(message);
    if let Some(f) = field("missing field `") {
        let p = join(&f);
        return Error::missing(&p, format!("{p} is required."));
    }
    if let Some(f) = field("unknown field `") {
        // The path of an unknown field already ends with it.
        let p = if path == f || path.ends_with(&format!(".{f}")) {
            path.to_owned()
        } else {
            join(&f)
        };
        return Error::invalid(
            &p,
            Code::ParameterUnknown,
            format!("This request takes no parameter {p}."),
        );
    }
    let p = if path.is_empty() || path == "." {
        "body"
    } else {
        path
    };
    Error::param(p, format!("{p}: {message}"))
}

/// The path of the first string (key or value) holding a control character, if any.
fn control_character_path(bytes: &[u8]) -> Option<String> {
    // Cheap test first: a control character in a JSON string is written escaped, as
    // `\u00XX` (or `\u007f`); raw ones make the JSON invalid and fail below anyway.
    let text = std::str::from_utf8(bytes).ok()?;
    if !text.contains("\\u00") {
        return None;
    }
    let value: serde_json::Value = serde_json::from_str(text).ok()?;
    fn walk(v: &serde_json::Value, path: &str) -> Option<String> {
        match v {
            serde_json::Value::String(s) if has_control(s) => Some(path.to_owned()),
            serde_json::Value::Array(items) => items
                .iter()
                .enumerate()
                .find_map(|(i, item)| walk(item, &format!("{path}[{i}]"))),
            serde_json::Value::Object(map) => map.iter().find_map(|(k, item)| {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                if has_control(k) {
                    Some(p)
                } else {
                    walk(item, &p)
                }
            }),
            _ => None,
        }
    }
    walk(&value, "").map(|p| if p.is_empty() { "body".into() } else { p })
}

/// A query string, deserialized strictly (the target type denies unknown fields).
pub struct Query<T>(pub T);

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parse_query(parts.uri.query().unwrap_or_default()).map(Query)
    }
}

/// Parses a query string into `T`, naming the parameter at fault.
pub fn parse_query<T: serde::de::DeserializeOwned>(query: &str) -> Result<T, Error> {
    let pairs = || form_urlencoded::parse(query.as_bytes());
    // Most queries are printable ASCII with nothing encoded: they decode to themselves and
    // can hold no control character, so their pairs are checked as they stand, for
    // repeated names only. Any other is decoded and checked whole.
    if is_plain(query) {
        let raw = raw_pairs(query).map(|(k, v)| (Cow::Borrowed(k), Cow::Borrowed(v)));
        check_pairs(raw, false)?;
    } else {
        check_pairs(pairs(), true)?;
    }
    // Read plainly; only a query that does not fit is read again to name the parameter
    // at fault (tracking the path costs on every read, and a mistake is rare).
    T::deserialize(serde_urlencoded::Deserializer::new(pairs())).or_else(|_| {
        serde_path_to_error::deserialize(serde_urlencoded::Deserializer::new(pairs())).map_err(
            |e| {
                let path = e.path().to_string();
                data_error(&path, &e.into_inner().to_string())
            },
        )
    })
}

/// Printable ASCII with nothing encoded: a query that decodes to itself and can hold no
/// control character.
pub(crate) fn is_plain(query: &str) -> bool {
    query
        .bytes()
        .all(|b| b.is_ascii_graphic() && b != b'%' && b != b'+')
}

/// A query's `name=value` pairs as they stand (nothing decoded), empty ones skipped, as
/// `form_urlencoded` splits them.
pub(crate) fn raw_pairs(query: &str) -> impl Iterator<Item = (&str, &str)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
}

/// Refuses a parameter given twice or, when it may hold one, a control character: the
/// first fault met, pair by pair.
fn check_pairs<'a>(
    pairs: impl Iterator<Item = (Cow<'a, str>, Cow<'a, str>)>,
    may_hold_controls: bool,
) -> Result<(), Error> {
    let mut seen = Vec::with_capacity(4);
    for (k, v) in pairs {
        if may_hold_controls && (has_control(&k) || has_control(&v)) {
            return Err(Error::param(
                &k,
                format!("{k} must not contain control characters."),
            ));
        }
        if seen.contains(&k) {
            return Err(Error::param(&k, format!("{k} is given more than once.")));
        }
        seen.push(k);
    }
    Ok(())
}

/// One path segment, percent-decoded; a segment that is not UTF-8 is refused in our
/// format (axum's own rejection would answer in plain text).
pub struct PathParam(pub String);

impl<S: Send + Sync> FromRequestParts<S> for PathParam {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<String>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(s)) if !has_control(&s) => Ok(PathParam(s)),
            _ => Err(Error::param("id", "The id in the path is not readable.")),
        }
    }
}

/// Two path segments, percent-decoded (a nested resource's parent and own id).
pub struct PathParams(pub String, pub String);

impl<S: Send + Sync> FromRequestParts<S> for PathParams {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<(String, String)>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path((a, b))) if !has_control(&a) && !has_control(&b) => {
                Ok(PathParams(a, b))
            }
            _ => Err(Error::param("id", "An id in the path is not readable.")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Item {
        product: String,
        quantity: Option<i64>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        title: String,
        #[serde(default)]
        items: Vec<Item>,
    }

    #[test]
    fn a_wrong_value_deep_in_a_body_names_its_path() {
        let e = parse_json::<Body>(br#"{"title":"x","items":[{"product":"p","quantity":"two"}]}"#)
            .unwrap_err();
        assert_eq!(e.code, Code::ParameterInvalid);
        assert_eq!(e.param.as_deref(), Some("items[0].quantity"));
        let e = parse_json::<Body>(br#"{"items":[]}"#).unwrap_err();
        assert_eq!(
            (e.code, e.param.as_deref()),
            (Code::ParameterMissing, Some("title"))
        );
        let e = parse_json::<Body>(br#"{"title":"x","colour":1}"#).unwrap_err();
        assert_eq!(
            (e.code, e.param.as_deref()),
            (Code::ParameterUnknown, Some("colour"))
        );
        let e = parse_json::<Body>(br#"{"title":"a\u0000b"}"#).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("title"));
        let e = parse_json::<Body>(b"{nope").unwrap_err();
        assert_eq!(e.code, Code::InvalidJson);
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Q {
        customer: Option<String>,
        limit: Option<i64>,
    }

    #[test]
    fn an_unknown_or_repeated_query_parameter_is_refused() {
        let e = parse_query::<Q>("customer_id=cust_1").unwrap_err();
        assert_eq!(
            (e.code, e.param.as_deref()),
            (Code::ParameterUnknown, Some("customer_id"))
        );
        for (query, param) in [
            ("limit=ten", "limit"),
            ("customer=a&customer=b", "customer"),
            // The same name written two ways is still one parameter given twice.
            ("cust%6Fmer=a&customer=b", "customer"),
            ("customer&customer=b", "customer"),
            ("customer=a%00b", "customer"),
            // Pairs are checked in turn: the first fault found is the one named.
            ("limit=1&limit=2&customer=%00", "limit"),
            // A control character written as it is (U+0085 is two bytes, both above
            // ASCII), or as a `+` beside an encoded one.
            ("customer=a\u{85}b", "customer"),
            ("limit=3&customer=a+%07", "customer"),
        ] {
            let e = parse_query::<Q>(query).unwrap_err();
            assert_eq!(e.param.as_deref(), Some(param), "{query}");
        }
        assert!(parse_query::<Q>("customer=cust_1&limit=3").is_ok());
        assert!(parse_query::<Q>("customer=caf\u{e9}+cr%C3%A8me").is_ok());
    }
}

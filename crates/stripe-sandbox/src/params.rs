//! Request parameters: parsing Stripe's bracketed form encoding and checking it against the
//! vendored subset of Stripe's OpenAPI spec.
//!
//! Stripe reads `application/x-www-form-urlencoded` bodies and query strings with bracket
//! notation (`metadata[plan]=pro`, `expand[]=customer`, `line_items[0][quantity]=2`) and answers
//! unknown or mistyped parameters with an `invalid_request_error`. [`parse_form`] turns the
//! encoded pairs into a JSON tree whose leaves are strings; [`find`] looks up the
//! [`Operation`] for a request; [`Operation::check`] validates the tree against the operation's
//! schema and returns it with leaves coerced to the schema's types, so handlers read typed JSON.
//!
//! The schemas come from `openapi/subset.json`, written by `scripts/derive_openapi_subset.py`
//! from Stripe's public spec; the error wordings follow what Stripe's API answers.

use std::sync::LazyLock;

use serde_json::{Map, Number, Value};

/// A request-parameter error, rendered by the caller as Stripe's invalid_request_error.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct ParamError {
    /// The human-readable message, worded as Stripe words it.
    pub message: String,
    /// The parameter at fault in bracket notation (`line_items[0][price_data][unit_amount]`).
    pub param: Option<String>,
}

impl ParamError {
    fn new(message: impl Into<String>, param: &str) -> Self {
        Self {
            message: message.into(),
            param: (!param.is_empty()).then(|| param.to_owned()),
        }
    }

    fn unknown(param: &str) -> Self {
        Self::new(format!("Received unknown parameter: {param}"), param)
    }

    fn missing(param: &str) -> Self {
        Self::new(format!("Missing required param: {param}."), param)
    }

    fn empty_string(param: &str) -> Self {
        Self::new(
            format!(
                "You passed an empty string for '{param}'. We assume empty values are an attempt \
                 to unset a parameter; however '{param}' cannot be unset. You should remove \
                 '{param}' from your request or supply a non-empty value."
            ),
            param,
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Form parsing
// ---------------------------------------------------------------------------------------------

/// One bracketed key segment: `[name]` (or the leading name) versus `[]`.
enum Segment {
    Key(String),
    Append,
}

/// The tree under construction. Maps keep insertion order and may still hold numeric keys,
/// which become arrays once the whole input is read.
enum Node {
    Leaf(String),
    Map(Vec<(String, Node)>),
    List(Vec<Node>),
}

impl Node {
    fn kind(&self) -> &'static str {
        match self {
            Node::Leaf(_) => "String",
            Node::Map(_) => "Hash",
            Node::List(_) => "Array",
        }
    }

    /// A fresh node holding `value` at the end of `rest`.
    fn build(rest: &[Segment], value: String) -> Node {
        match rest.split_first() {
            None => Node::Leaf(value),
            Some((Segment::Key(key), tail)) => {
                Node::Map(vec![(key.clone(), Node::build(tail, value))])
            }
            Some((Segment::Append, tail)) => Node::List(vec![Node::build(tail, value)]),
        }
    }

    /// Whether a value already sits at `rest` below this node.
    fn has_path(&self, rest: &[Segment]) -> bool {
        match (rest.split_first(), self) {
            (None, _) => true,
            (Some((Segment::Key(key), tail)), Node::Map(entries)) => entries
                .iter()
                .any(|(name, child)| name == key && child.has_path(tail)),
            _ => false,
        }
    }

    /// Adds `value` at `rest` below this existing node, which sits at `path`.
    fn insert(&mut self, rest: &[Segment], value: String, path: &str) -> Result<(), ParamError> {
        match rest.split_first() {
            None => match self {
                Node::Leaf(old) => {
                    *old = value;
                    Ok(())
                }
                other => Err(conflict("String", other, path)),
            },
            Some((Segment::Key(key), tail)) => {
                let Node::Map(entries) = self else {
                    return Err(conflict("Hash", self, path));
                };
                let child_path = child_path(path, key);
                match entries.iter_mut().find(|(name, _)| name == key) {
                    Some((_, child)) => child.insert(tail, value, &child_path),
                    None => {
                        entries.push((key.clone(), Node::build(tail, value)));
                        Ok(())
                    }
                }
            }
            Some((Segment::Append, tail)) => {
                let Node::List(items) = self else {
                    return Err(conflict("Array", self, path));
                };
                // As Rack does: `a[][x]=1&a[][y]=2` fills one hash, `a[][x]=1&a[][x]=2` two.
                let merge_into_last = matches!(tail.first(), Some(Segment::Key(_)))
                    && matches!(items.last(), Some(last @ Node::Map(_)) if !last.has_path(tail));
                let last_path = format!("{path}[{}]", items.len().saturating_sub(1));
                match items.last_mut() {
                    Some(last) if merge_into_last => last.insert(tail, value, &last_path),
                    _ => {
                        items.push(Node::build(tail, value));
                        Ok(())
                    }
                }
            }
        }
    }

    fn into_value(self) -> Value {
        match self {
            Node::Leaf(text) => Value::String(text),
            Node::List(items) => Value::Array(items.into_iter().map(Node::into_value).collect()),
            Node::Map(entries) => {
                if let Some(order) = dense_indexes(entries.iter().map(|(key, _)| key.as_str())) {
                    let mut slots: Vec<Option<Node>> =
                        entries.into_iter().map(|(_, node)| Some(node)).collect();
                    let items = order
                        .into_iter()
                        .filter_map(|position| slots.get_mut(position).and_then(Option::take))
                        .map(Node::into_value)
                        .collect();
                    Value::Array(items)
                } else {
                    Value::Object(
                        entries
                            .into_iter()
                            .map(|(key, node)| (key, node.into_value()))
                            .collect(),
                    )
                }
            }
        }
    }
}

fn conflict(expected: &str, found: &Node, path: &str) -> ParamError {
    ParamError::new(
        format!(
            "expected {expected} (got {}) for param `{path}'",
            found.kind()
        ),
        path,
    )
}

/// `name` for a top-level key, `parent[name]` below it.
fn child_path(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}[{key}]")
    }
}

/// A canonical array index: `0`, `1`, `12`, but not `01` or `+1`.
fn index_of(key: &str) -> Option<usize> {
    let index: usize = key.parse().ok()?;
    (index.to_string() == key).then_some(index)
}

/// If the keys are exactly the indexes `0..n` in some order, the positions of `0`, `1`, ...
fn dense_indexes<'a>(keys: impl Iterator<Item = &'a str>) -> Option<Vec<usize>> {
    let indexes: Vec<usize> = keys.map(index_of).collect::<Option<_>>()?;
    if indexes.is_empty() {
        return None;
    }
    let mut order = vec![usize::MAX; indexes.len()];
    for (position, index) in indexes.into_iter().enumerate() {
        let slot = order.get_mut(index)?;
        if *slot != usize::MAX {
            return None;
        }
        *slot = position;
    }
    Some(order)
}

/// Splits `line_items[0][price]` into `line_items`, `0`, `price`; `expand[]` into `expand` and an
/// append. A key whose brackets do not close is kept whole, as a literal name.
fn split_key(key: &str) -> Vec<Segment> {
    let Some(open) = key.find('[').filter(|&open| open > 0) else {
        return vec![Segment::Key(key.to_owned())];
    };
    let mut segments = vec![Segment::Key(key[..open].to_owned())];
    let mut rest = &key[open..];
    while !rest.is_empty() {
        let Some(close) = rest.strip_prefix('[').and_then(|inner| inner.find(']')) else {
            return vec![Segment::Key(key.to_owned())];
        };
        let name = &rest[1..=close];
        segments.push(if name.is_empty() {
            Segment::Append
        } else {
            Segment::Key(name.to_owned())
        });
        rest = &rest[close + 2..];
    }
    segments
}

/// Decodes `%XX` escapes and `+` as a space. Malformed escapes are kept as written, and bytes
/// that do not form UTF-8 become U+FFFD.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while let Some(&byte) = bytes.get(index) {
        match byte {
            b'+' => {
                out.push(b' ');
                index += 1;
            }
            b'%' => {
                let high = bytes.get(index + 1).and_then(|&digit| hex_value(digit));
                let low = bytes.get(index + 2).and_then(|&digit| hex_value(digit));
                if let (Some(high), Some(low)) = (high, low) {
                    out.push(high * 16 + low);
                    index += 3;
                } else {
                    out.push(b'%');
                    index += 1;
                }
            }
            _ => {
                out.push(byte);
                index += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_value(digit: u8) -> Option<u8> {
    char::from(digit)
        .to_digit(16)
        .and_then(|value| u8::try_from(value).ok())
}

/// Parses an application/x-www-form-urlencoded body or a query string using Stripe's bracket
/// notation into a JSON tree whose leaves are strings: `a=1`, `metadata[k]=v`, `expand[]=x`
/// (append), `expand[0]=x`, `line_items[0][price_data][unit_amount]=500`,
/// `line_items[1][quantity]=2`. Numeric indexes build arrays (sorted by index, so `[1]` before
/// `[0]` still lands right); `[]` appends. Percent-decoding and `+` as space. Conflicting shapes
/// (`a=1&a[b]=2`) are a ParamError.
///
/// Indexes that are not exactly `0..n` (`items[3]=x` alone) stay an object keyed by index, so a
/// `metadata[7]` key survives; [`Operation::check`] turns such an object into an array where the
/// schema wants one. A repeated plain key keeps its last value; a key without `=` is an empty
/// string; empty pairs are skipped.
pub fn parse_form(input: &str) -> Result<Value, ParamError> {
    let mut root = Node::Map(Vec::new());
    for pair in input.split('&').filter(|pair| !pair.is_empty()) {
        let (raw_key, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
        let key = percent_decode(raw_key);
        if key.is_empty() {
            continue;
        }
        root.insert(&split_key(&key), percent_decode(raw_value), "")?;
    }
    Ok(match root {
        // The top level is always an object, even for `0=a`.
        Node::Map(entries) => Value::Object(
            entries
                .into_iter()
                .map(|(key, node)| (key, node.into_value()))
                .collect(),
        ),
        other => other.into_value(),
    })
}

// ---------------------------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------------------------

/// Stripe's documented metadata limits, which the spec does not carry.
const METADATA_KEY_MAX: usize = 40;
const METADATA_VALUE_MAX: usize = 500;

/// Renders a value inside an error message: strings as they are, the rest as JSON.
fn render(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// Shortens a long value the way Stripe's string-length errors show it:
/// `abcdefghij...qrstuvwxyz`.
fn abbreviate(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    if chars.len() <= 20 {
        return text.to_owned();
    }
    let head: String = chars.iter().take(10).collect();
    let tail: String = chars.iter().skip(chars.len() - 10).collect();
    format!("{head}...{tail}")
}

/// `a`, `a or b`, `a, b, or c`.
fn one_of(values: &[String]) -> String {
    match values {
        [] => String::new(),
        [only] => only.clone(),
        [first, second] => format!("{first} or {second}"),
        [init @ .., last] => format!("{}, or {last}", init.join(", ")),
    }
}

/// The last key of a bracketed path: `metadata` for `line_items[0][metadata]`.
fn last_key(path: &str) -> &str {
    match path
        .strip_suffix(']')
        .and_then(|inner| inner.rfind('[').map(|open| &inner[open + 1..]))
    {
        Some(key) => key,
        None => path,
    }
}

/// `12`, `-1.5`, `0.25`, `.5`, `3.`: what Stripe's decimal parameters accept (no exponents).
fn is_decimal(text: &str) -> bool {
    let unsigned = text.strip_prefix('-').unwrap_or(text);
    let (whole, fraction) = unsigned.split_once('.').unwrap_or((unsigned, ""));
    let all_digits = |part: &str| part.bytes().all(|byte| byte.is_ascii_digit());
    all_digits(whole) && all_digits(fraction) && !(whole.is_empty() && fraction.is_empty())
}

/// `12`, `-3`: what Stripe's integer parameters accept (no sign `+`, no fraction, no exponent).
fn is_integer(text: &str) -> bool {
    let digits = text.strip_prefix('-').unwrap_or(text);
    !digits.is_empty() && digits.bytes().all(|byte| byte.is_ascii_digit())
}

/// The broad shape a schema accepts, used to pick which failed `anyOf` branch to report.
#[derive(PartialEq)]
enum Shape {
    Scalar,
    Object,
    Array,
}

fn schema_type(schema: &Value) -> Option<&str> {
    if let Some(kind) = schema.get("type").and_then(Value::as_str) {
        return Some(kind);
    }
    if schema.get("properties").is_some() || schema.get("additionalProperties").is_some() {
        Some("object")
    } else if schema.get("items").is_some() {
        Some("array")
    } else if schema.get("enum").is_some() {
        Some("string")
    } else {
        None
    }
}

fn schema_shape(schema: &Value) -> Shape {
    match schema_type(schema) {
        Some("object") => Shape::Object,
        Some("array") => Shape::Array,
        _ => Shape::Scalar,
    }
}

fn value_shape(value: &Value) -> Shape {
    match value {
        Value::Object(_) => Shape::Object,
        Value::Array(_) => Shape::Array,
        _ => Shape::Scalar,
    }
}

fn enum_values(schema: &Value) -> Option<Vec<String>> {
    schema
        .get("enum")
        .and_then(Value::as_array)
        .map(|values| values.iter().map(render).collect())
}

/// Stripe's way of letting a field be emptied: a branch `{"type": "string", "enum": [""]}`.
fn is_empty_branch(schema: &Value) -> bool {
    enum_values(schema).is_some_and(|values| values.iter().all(String::is_empty))
}

fn has_real_enum(schema: &Value) -> bool {
    enum_values(schema).is_some_and(|values| values.iter().any(|value| !value.is_empty()))
}

/// Validates `value` (which sits at `path`) against `schema`, returning it coerced.
fn validate(schema: &Value, value: Value, path: &str) -> Result<Value, ParamError> {
    let value = match value {
        Value::Null => Value::String(String::new()),
        other => other,
    };
    if let Some(branches) = schema.get("anyOf").and_then(Value::as_array) {
        return validate_any(branches, value, path);
    }
    match schema_type(schema) {
        Some("object") => validate_object(schema, value, path),
        Some("array") => validate_array(schema, value, path),
        Some("string") => validate_string(schema, value, path),
        Some("integer") => validate_integer(value, path),
        Some("number") => validate_number(value, path),
        Some("boolean") => validate_boolean(value, path),
        _ => Ok(value),
    }
}

/// Tries each branch in order; when none fits, reports the error of the branch closest to
/// what was sent (an enum branch for a scalar, as Stripe reports `must be one of now or ...`).
fn validate_any(branches: &[Value], value: Value, path: &str) -> Result<Value, ParamError> {
    let mut errors = Vec::with_capacity(branches.len());
    for branch in branches {
        match validate(branch, value.clone(), path) {
            Ok(coerced) => return Ok(coerced),
            Err(error) => errors.push((branch, error)),
        }
    }
    let shape = value_shape(&value);
    let candidates: Vec<&(&Value, ParamError)> = errors
        .iter()
        .filter(|(branch, _)| !is_empty_branch(branch))
        .collect();
    let same_shape: Vec<&&(&Value, ParamError)> = candidates
        .iter()
        .filter(|(branch, _)| schema_shape(branch) == shape)
        .collect();
    let chosen = same_shape
        .iter()
        .find(|(branch, _)| shape == Shape::Scalar && has_real_enum(branch))
        .or_else(|| same_shape.first())
        .map(|entry| &entry.1)
        .or_else(|| candidates.first().map(|entry| &entry.1))
        .or_else(|| errors.first().map(|entry| &entry.1));
    Err(chosen
        .cloned()
        .unwrap_or_else(|| ParamError::new("Invalid value", path)))
}

fn validate_object(schema: &Value, value: Value, path: &str) -> Result<Value, ParamError> {
    let entries = match value {
        Value::Object(entries) => entries,
        Value::Array(items) => items
            .into_iter()
            .enumerate()
            .map(|(index, item)| (index.to_string(), item))
            .collect(),
        Value::String(text) if text.is_empty() => return Err(ParamError::empty_string(path)),
        _ => return Err(ParamError::new("Invalid hash", path)),
    };
    let empty = Map::new();
    let properties = schema
        .get("properties")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let additional = schema
        .get("additionalProperties")
        .filter(|additional| additional.is_object());
    if additional.is_none()
        && let Some(key) = entries.keys().find(|key| !properties.contains_key(*key))
    {
        return Err(ParamError::unknown(&child_path(path, key)));
    }
    let is_metadata = additional.is_some() && last_key(path) == "metadata";
    let mut out = Map::with_capacity(entries.len());
    for (key, item) in entries {
        let item_path = child_path(path, &key);
        let coerced = if let Some(property) = properties.get(&key) {
            validate(property, item, &item_path)?
        } else if let Some(additional) = additional {
            if is_metadata {
                check_metadata_entry(&key, &item, path)?;
            }
            // Map values may always be emptied: `metadata[key]=` deletes the key.
            if item.as_str() == Some("") {
                item
            } else {
                validate(additional, item, &item_path)?
            }
        } else {
            return Err(ParamError::unknown(&item_path));
        };
        out.insert(key, coerced);
    }
    if let Some(required) = schema.get("required").and_then(Value::as_array) {
        for name in required.iter().filter_map(Value::as_str) {
            if !out.contains_key(name) {
                return Err(ParamError::missing(&child_path(path, name)));
            }
        }
    }
    Ok(Value::Object(out))
}

fn check_metadata_entry(key: &str, item: &Value, path: &str) -> Result<(), ParamError> {
    if key.chars().count() > METADATA_KEY_MAX {
        return Err(ParamError::new(
            format!("Invalid key: {key} must be a string under {METADATA_KEY_MAX} characters"),
            path,
        ));
    }
    let fits = item
        .as_str()
        .is_some_and(|text| text.chars().count() <= METADATA_VALUE_MAX);
    if !fits {
        return Err(ParamError::new(
            format!(
                "Invalid val: {} must be a string under {METADATA_VALUE_MAX} characters",
                render(item)
            ),
            path,
        ));
    }
    Ok(())
}

fn validate_array(schema: &Value, value: Value, path: &str) -> Result<Value, ParamError> {
    let items = match value {
        Value::Array(items) => items,
        // Sparse indexes (`line_items[2]` alone) arrive as an object keyed by index.
        Value::Object(entries) => {
            let mut indexed = Vec::with_capacity(entries.len());
            for (key, item) in entries {
                let Some(index) = index_of(&key) else {
                    return Err(ParamError::new("Invalid array", path));
                };
                indexed.push((index, item));
            }
            indexed.sort_by_key(|(index, _)| *index);
            indexed.into_iter().map(|(_, item)| item).collect()
        }
        Value::String(text) if text.is_empty() => return Err(ParamError::empty_string(path)),
        _ => return Err(ParamError::new("Invalid array", path)),
    };
    let Some(item_schema) = schema.get("items") else {
        return Ok(Value::Array(items));
    };
    items
        .into_iter()
        .enumerate()
        .map(|(index, item)| validate(item_schema, item, &format!("{path}[{index}]")))
        .collect::<Result<Vec<_>, _>>()
        .map(Value::Array)
}

fn validate_string(schema: &Value, value: Value, path: &str) -> Result<Value, ParamError> {
    let text = match value {
        Value::String(text) => text,
        Value::Number(number) => number.to_string(),
        Value::Bool(flag) => flag.to_string(),
        other => return Err(ParamError::new(format!("Invalid string: {other}"), path)),
    };
    if let Some(allowed) = enum_values(schema) {
        if !allowed.contains(&text) {
            if text.is_empty() {
                return Err(ParamError::empty_string(path));
            }
            let listed: Vec<String> = allowed
                .into_iter()
                .filter(|value| !value.is_empty())
                .collect();
            return Err(ParamError::new(
                format!("Invalid {path}: must be one of {}", one_of(&listed)),
                path,
            ));
        }
    } else if text.is_empty() {
        return Err(ParamError::empty_string(path));
    }
    if let Some(max) = schema.get("maxLength").and_then(Value::as_u64) {
        let length = u64::try_from(text.chars().count()).unwrap_or(u64::MAX);
        if length > max {
            return Err(ParamError::new(
                format!(
                    "Invalid string: {}; must be at most {max} characters",
                    abbreviate(&text)
                ),
                path,
            ));
        }
    }
    if schema.get("format").and_then(Value::as_str) == Some("decimal") && !is_decimal(&text) {
        return Err(ParamError::new(format!("Invalid decimal: {text}"), path));
    }
    Ok(Value::String(text))
}

fn validate_integer(value: Value, path: &str) -> Result<Value, ParamError> {
    let parsed = match &value {
        Value::Number(number) if number.is_i64() || number.is_u64() => return Ok(value),
        Value::String(text) if is_integer(text) => text.parse::<i64>().ok(),
        _ => None,
    };
    match parsed {
        Some(integer) => Ok(Value::Number(integer.into())),
        None => Err(ParamError::new(
            format!("Invalid integer: {}", render(&value)),
            path,
        )),
    }
}

fn validate_number(value: Value, path: &str) -> Result<Value, ParamError> {
    let parsed = match &value {
        Value::Number(_) => return Ok(value),
        Value::String(text) if is_decimal(text) => {
            text.parse::<f64>().ok().and_then(Number::from_f64)
        }
        _ => None,
    };
    match parsed {
        Some(number) => Ok(Value::Number(number)),
        None => Err(ParamError::new(
            format!("Invalid decimal: {}", render(&value)),
            path,
        )),
    }
}

fn validate_boolean(value: Value, path: &str) -> Result<Value, ParamError> {
    match &value {
        Value::Bool(_) => Ok(value),
        Value::String(text) if text == "true" => Ok(Value::Bool(true)),
        Value::String(text) if text == "false" => Ok(Value::Bool(false)),
        other => Err(ParamError::new(
            format!("Invalid boolean: {}", render(other)),
            path,
        )),
    }
}

// ---------------------------------------------------------------------------------------------
// Operations
// ---------------------------------------------------------------------------------------------

/// The vendored request-parameter schemas, derived by `scripts/derive_openapi_subset.py`.
const SUBSET: &str = include_str!("../openapi/subset.json");

/// One Stripe API operation: its method, its path template and the schema of its parameters.
#[derive(Debug)]
pub struct Operation {
    method: String,
    path: String,
    segments: Vec<PathSegment>,
    params: Value,
}

#[derive(Debug)]
enum PathSegment {
    Literal(String),
    Template,
}

impl Operation {
    /// The HTTP method, upper case (`GET`, `POST`, `DELETE`).
    pub fn method(&self) -> &str {
        &self.method
    }

    /// The path template as Stripe's spec writes it (`/v1/customers/{customer}`).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Validates a parsed tree against the schema and returns it with leaves coerced to the
    /// schema's types (integers, booleans, numbers), so handlers read typed JSON. Errors are
    /// Stripe's.
    ///
    /// Within each object, unknown keys are reported first, then invalid values in request
    /// order, then missing required keys. `Null` counts as an empty request. Values that are
    /// already typed (a JSON number for an integer, say) are accepted, so checking a checked tree
    /// again returns it unchanged.
    pub fn check(&self, params: Value) -> Result<Value, ParamError> {
        let params = match params {
            Value::Null => Value::Object(Map::new()),
            other => other,
        };
        validate(&self.params, params, "")
    }

    /// How well a concrete path matches (see [`score`]).
    fn score(&self, segments: &[&str]) -> Option<Vec<bool>> {
        score(&self.segments, segments)
    }
}

/// How well a concrete path matches a template: `None` if it does not, else one flag per
/// segment that is true where the template is literal, so literal segments win over
/// `{templated}` ones.
fn score(template: &[PathSegment], segments: &[&str]) -> Option<Vec<bool>> {
    if segments.len() != template.len() {
        return None;
    }
    template
        .iter()
        .zip(segments)
        .map(|(template, actual)| match template {
            PathSegment::Literal(literal) => (literal == actual).then_some(true),
            PathSegment::Template => (!actual.is_empty()).then_some(false),
        })
        .collect()
}

fn parse_template(path: &str) -> Vec<PathSegment> {
    path.split('/')
        .map(|segment| {
            if segment.starts_with('{') && segment.ends_with('}') {
                PathSegment::Template
            } else {
                PathSegment::Literal(segment.to_owned())
            }
        })
        .collect()
}

fn load_operations() -> Vec<Operation> {
    let Ok(subset) = serde_json::from_str::<Value>(SUBSET) else {
        return Vec::new();
    };
    let Some(operations) = subset.get("operations").and_then(Value::as_array) else {
        return Vec::new();
    };
    operations
        .iter()
        .filter_map(|operation| {
            let method = operation.get("method")?.as_str()?.to_ascii_uppercase();
            let path = operation.get("path")?.as_str()?.to_owned();
            let params = operation.get("params")?.clone();
            let segments = parse_template(&path);
            Some(Operation {
                method,
                path,
                segments,
                params,
            })
        })
        .collect()
}

/// The vendored operations: the subset file, embedded with `include_str!`, parsed once.
static OPERATIONS: LazyLock<Vec<Operation>> = LazyLock::new(load_operations);

/// Stripe's other routes, `(method, template)`: the ones the sandbox does not serve.
static UNSERVED: LazyLock<Vec<(String, Vec<PathSegment>)>> = LazyLock::new(|| {
    let Ok(subset) = serde_json::from_str::<Value>(SUBSET) else {
        return Vec::new();
    };
    subset
        .get("unserved")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .filter_map(|route| route.split_once(' '))
        .map(|(method, path)| (method.to_owned(), parse_template(path)))
        .collect()
});

/// Every vendored operation (for checks that the router and the subset agree).
#[cfg(test)]
pub(crate) fn operations() -> impl Iterator<Item = &'static Operation> {
    OPERATIONS.iter()
}

/// Finds the vendored operation for a method and a concrete path such as
/// `/v1/customers/cus_123`, preferring literal segments over `{templated}` ones (so
/// `/v1/checkout/sessions/cs_1/expire` and `/v1/billing/meter_events` resolve right).
///
/// The method is matched case-insensitively; anything from a `?` on is ignored.
///
/// A path that one of Stripe's routes the sandbox does not serve matches better (more literal
/// segments) finds nothing: `GET /v1/customers/search` is Stripe's customer search, not a
/// customer with the id `search`, so it is an unrecognized URL here rather than a missing
/// customer.
pub fn find(method: &str, path: &str) -> Option<&'static Operation> {
    let path = path.split_once('?').map_or(path, |(path, _)| path);
    let segments: Vec<&str> = path.split('/').collect();
    let (best, operation) = OPERATIONS
        .iter()
        .filter(|operation| operation.method.eq_ignore_ascii_case(method))
        .filter_map(|operation| operation.score(&segments).map(|score| (score, operation)))
        .max_by(|(left, _), (right, _)| left.cmp(right))?;
    let shadowed = UNSERVED
        .iter()
        .filter(|(other, _)| other.eq_ignore_ascii_case(method))
        .filter_map(|(_, template)| score(template, &segments))
        .any(|other| other > best);
    (!shadowed).then_some(operation)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use serde_json::json;

    use super::*;

    fn operation(method: &str, path: &str) -> &'static Operation {
        find(method, path).expect("the operation is in the subset")
    }

    fn check(method: &str, path: &str, form: &str) -> Result<Value, ParamError> {
        operation(method, path).check(parse_form(form).expect("the form parses"))
    }

    fn error(message: &str, param: &str) -> ParamError {
        ParamError {
            message: message.to_owned(),
            param: Some(param.to_owned()),
        }
    }

    // --- parse_form ------------------------------------------------------------------------

    #[test]
    fn parse_form_reads_flat_pairs_as_strings() {
        let parsed = parse_form("email=jane@example.com&limit=3").unwrap();
        assert_eq!(parsed, json!({"email": "jane@example.com", "limit": "3"}));
    }

    #[test]
    fn parse_form_reads_an_empty_input_as_an_empty_object() {
        assert_eq!(parse_form("").unwrap(), json!({}));
    }

    #[test]
    fn parse_form_nests_bracketed_keys_into_objects() {
        let parsed = parse_form("metadata[plan]=pro&metadata[seats]=3&name=Acme").unwrap();
        assert_eq!(
            parsed,
            json!({"metadata": {"plan": "pro", "seats": "3"}, "name": "Acme"})
        );
    }

    #[test]
    fn parse_form_appends_empty_brackets_to_an_array() {
        let parsed = parse_form("expand[]=customer&expand[]=line_items").unwrap();
        assert_eq!(parsed, json!({"expand": ["customer", "line_items"]}));
    }

    #[test]
    fn parse_form_builds_arrays_from_numeric_indexes() {
        let parsed = parse_form(
            "line_items[0][price_data][unit_amount]=500&line_items[0][quantity]=1\
             &line_items[1][price]=price_1&line_items[1][quantity]=2&expand[0]=customer",
        )
        .unwrap();
        assert_eq!(
            parsed,
            json!({
                "line_items": [
                    {"price_data": {"unit_amount": "500"}, "quantity": "1"},
                    {"price": "price_1", "quantity": "2"}
                ],
                "expand": ["customer"]
            })
        );
    }

    #[test]
    fn parse_form_places_out_of_order_indexes_by_index() {
        let parsed = parse_form("line_items[1][quantity]=2&line_items[0][quantity]=1").unwrap();
        assert_eq!(
            parsed,
            json!({"line_items": [{"quantity": "1"}, {"quantity": "2"}]})
        );
    }

    #[test]
    fn parse_form_keeps_sparse_indexes_as_an_object_keyed_by_index() {
        let parsed = parse_form("metadata[7]=x&items[2]=b&items[0]=a").unwrap();
        assert_eq!(
            parsed,
            json!({"metadata": {"7": "x"}, "items": {"2": "b", "0": "a"}})
        );
    }

    #[test]
    fn parse_form_keeps_non_canonical_indexes_as_keys() {
        let parsed = parse_form("metadata[01]=x").unwrap();
        assert_eq!(parsed, json!({"metadata": {"01": "x"}}));
    }

    #[test]
    fn parse_form_merges_appended_hashes_as_rack_does() {
        let one = parse_form("items[][price]=p1&items[][quantity]=2").unwrap();
        assert_eq!(one, json!({"items": [{"price": "p1", "quantity": "2"}]}));
        let two = parse_form("items[][price]=p1&items[][price]=p2").unwrap();
        assert_eq!(two, json!({"items": [{"price": "p1"}, {"price": "p2"}]}));
    }

    #[test]
    fn parse_form_decodes_percent_escapes_and_plus_as_space() {
        let parsed =
            parse_form("name=Jane+Doe&email=jane%40example.com&metadata%5Bnote%5D=caf%C3%A9%20ok")
                .unwrap();
        assert_eq!(
            parsed,
            json!({
                "name": "Jane Doe",
                "email": "jane@example.com",
                "metadata": {"note": "café ok"}
            })
        );
    }

    #[test]
    fn parse_form_keeps_malformed_percent_escapes_literally() {
        let parsed = parse_form("note=100%25&bad=%zz%4").unwrap();
        assert_eq!(parsed, json!({"note": "100%", "bad": "%zz%4"}));
    }

    #[test]
    fn parse_form_reads_a_key_without_a_value_as_an_empty_string() {
        let parsed = parse_form("description&name=").unwrap();
        assert_eq!(parsed, json!({"description": "", "name": ""}));
    }

    #[test]
    fn parse_form_skips_empty_pairs_and_empty_keys() {
        let parsed = parse_form("&&a=1&=orphan&").unwrap();
        assert_eq!(parsed, json!({"a": "1"}));
    }

    #[test]
    fn parse_form_keeps_the_last_value_of_a_repeated_key() {
        assert_eq!(parse_form("a=1&a=2").unwrap(), json!({"a": "2"}));
    }

    #[test]
    fn parse_form_keeps_a_key_with_unclosed_brackets_whole() {
        let parsed = parse_form("a[b=1&c[d]e=2").unwrap();
        assert_eq!(parsed, json!({"a[b": "1", "c[d]e": "2"}));
    }

    #[test]
    fn parse_form_rejects_a_value_then_a_hash_for_the_same_key() {
        assert_eq!(
            parse_form("a=1&a[b]=2"),
            Err(error("expected Hash (got String) for param `a'", "a"))
        );
    }

    #[test]
    fn parse_form_rejects_a_hash_then_a_value_for_the_same_key() {
        assert_eq!(
            parse_form("metadata[k]=v&metadata=x"),
            Err(error(
                "expected String (got Hash) for param `metadata'",
                "metadata"
            ))
        );
    }

    #[test]
    fn parse_form_rejects_a_hash_then_an_append_for_the_same_key() {
        assert_eq!(
            parse_form("line_items[0][price]=p&line_items[]=x"),
            Err(error(
                "expected Array (got Hash) for param `line_items'",
                "line_items"
            ))
        );
    }

    #[test]
    fn parse_form_names_the_nested_param_in_a_conflict() {
        assert_eq!(
            parse_form("line_items[0][price_data]=x&line_items[0][price_data][currency]=usd"),
            Err(error(
                "expected Hash (got String) for param `line_items[0][price_data]'",
                "line_items[0][price_data]"
            ))
        );
    }

    // --- find --------------------------------------------------------------------------------

    #[test]
    fn every_vendored_operation_is_found_by_a_concrete_path() {
        assert!(!OPERATIONS.is_empty());
        for op in OPERATIONS.iter() {
            let concrete: Vec<String> = op
                .path()
                .split('/')
                .map(|seg| {
                    if seg.starts_with('{') {
                        "obj_123".to_owned()
                    } else {
                        seg.to_owned()
                    }
                })
                .collect();
            let found = operation(op.method(), &concrete.join("/"));
            assert_eq!((found.method(), found.path()), (op.method(), op.path()));
        }
    }

    #[test]
    fn find_resolves_a_concrete_id_to_its_template() {
        let found = operation("GET", "/v1/customers/cus_123");
        assert_eq!(found.method(), "GET");
        assert_eq!(found.path(), "/v1/customers/{customer}");
    }

    #[test]
    fn find_prefers_literal_segments_over_templated_ones() {
        assert_eq!(
            operation("POST", "/v1/checkout/sessions/cs_1/expire").path(),
            "/v1/checkout/sessions/{session}/expire"
        );
        assert_eq!(
            operation("POST", "/v1/billing/meter_events").path(),
            "/v1/billing/meter_events"
        );
        assert_eq!(
            operation("GET", "/v1/billing/meters/mtr_1").path(),
            "/v1/billing/meters/{id}"
        );
        assert_eq!(
            operation("POST", "/v1/test_helpers/test_clocks/clock_1/advance").path(),
            "/v1/test_helpers/test_clocks/{test_clock}/advance"
        );
        assert_eq!(
            operation("GET", "/v1/customers/cus_1/payment_methods").path(),
            "/v1/customers/{customer}/payment_methods"
        );
    }

    #[test]
    fn find_matches_the_method_case_insensitively_and_ignores_a_query() {
        assert_eq!(
            operation("delete", "/v1/subscriptions/sub_1?invoice_now=true").path(),
            "/v1/subscriptions/{subscription_exposed_id}"
        );
    }

    #[test]
    fn find_returns_none_for_an_unserved_method_or_path() {
        assert!(find("DELETE", "/v1/prices/price_1").is_none());
        assert!(find("GET", "/v1/accounts").is_none());
        assert!(find("GET", "/v1/customers/").is_none());
        assert!(find("GET", "/v1/customers/cus_1/extra/deep").is_none());
    }

    #[test]
    fn find_leaves_a_stripe_route_the_sandbox_does_not_serve_unmatched_rather_than_taking_it_for_an_id()
     {
        assert!(find("GET", "/v1/customers/search").is_none());
        assert!(find("GET", "/v1/prices/search").is_none());
        assert!(find("GET", "/v1/invoices/search").is_none());
        // An id in the same place still finds its route.
        assert_eq!(
            find("GET", "/v1/customers/cus_search").map(Operation::path),
            Some("/v1/customers/{customer}")
        );
    }

    // --- check: POST /v1/checkout/sessions ---------------------------------------------------

    const SESSIONS: &str = "/v1/checkout/sessions";

    #[test]
    fn check_accepts_a_session_with_line_items_and_coerces_their_types() {
        let checked = check(
            "POST",
            SESSIONS,
            "mode=payment&success_url=https%3A%2F%2Fexample.com%2Fok\
             &line_items[0][price_data][currency]=usd\
             &line_items[0][price_data][unit_amount]=500\
             &line_items[0][price_data][product_data][name]=T-shirt\
             &line_items[0][quantity]=2\
             &line_items[1][price]=price_123&line_items[1][quantity]=1\
             &line_items[1][adjustable_quantity][enabled]=true\
             &allow_promotion_codes=false",
        )
        .unwrap();
        assert_eq!(
            checked,
            json!({
                "mode": "payment",
                "success_url": "https://example.com/ok",
                "line_items": [
                    {
                        "price_data": {
                            "currency": "usd",
                            "unit_amount": 500,
                            "product_data": {"name": "T-shirt"}
                        },
                        "quantity": 2
                    },
                    {"price": "price_123", "quantity": 1, "adjustable_quantity": {"enabled": true}}
                ],
                "allow_promotion_codes": false
            })
        );
    }

    #[test]
    fn check_puts_sparse_line_item_indexes_in_order() {
        let checked = check(
            "POST",
            SESSIONS,
            "line_items[3][price]=p3&line_items[1][price]=p1",
        )
        .unwrap();
        assert_eq!(
            checked,
            json!({"line_items": [{"price": "p1"}, {"price": "p3"}]})
        );
    }

    #[test]
    fn check_rejects_an_unknown_nested_param_by_its_full_name() {
        assert_eq!(
            check("POST", SESSIONS, "mode=payment&line_items[0][foo]=bar"),
            Err(error(
                "Received unknown parameter: line_items[0][foo]",
                "line_items[0][foo]"
            ))
        );
    }

    #[test]
    fn check_rejects_an_unknown_top_level_param() {
        assert_eq!(
            check("POST", SESSIONS, "mode=payment&succes_url=https://x"),
            Err(error(
                "Received unknown parameter: succes_url",
                "succes_url"
            ))
        );
    }

    #[test]
    fn check_rejects_a_bad_integer_with_its_bracketed_param() {
        assert_eq!(
            check(
                "POST",
                SESSIONS,
                "line_items[0][price_data][currency]=usd&line_items[0][price_data][unit_amount]=abc"
            ),
            Err(error(
                "Invalid integer: abc",
                "line_items[0][price_data][unit_amount]"
            ))
        );
        assert_eq!(
            check("POST", SESSIONS, "line_items[0][quantity]=1.5"),
            Err(error("Invalid integer: 1.5", "line_items[0][quantity]"))
        );
    }

    #[test]
    fn check_rejects_a_bad_enum_listing_the_choices() {
        assert_eq!(
            check("POST", SESSIONS, "mode=donation"),
            Err(error(
                "Invalid mode: must be one of payment, setup, or subscription",
                "mode"
            ))
        );
    }

    #[test]
    fn check_names_a_nested_enum_by_its_full_param() {
        assert_eq!(
            check(
                "POST",
                SESSIONS,
                "line_items[0][price_data][currency]=usd\
                 &line_items[0][price_data][recurring][interval]=fortnight"
            ),
            Err(error(
                "Invalid line_items[0][price_data][recurring][interval]: must be one of day, \
                 month, week, or year",
                "line_items[0][price_data][recurring][interval]"
            ))
        );
    }

    #[test]
    fn check_rejects_a_missing_required_nested_param() {
        assert_eq!(
            check(
                "POST",
                SESSIONS,
                "line_items[0][price_data][unit_amount]=500"
            ),
            Err(error(
                "Missing required param: line_items[0][price_data][currency].",
                "line_items[0][price_data][currency]"
            ))
        );
    }

    #[test]
    fn check_rejects_a_bad_boolean_but_accepts_true_and_false() {
        assert_eq!(
            check("POST", SESSIONS, "allow_promotion_codes=True"),
            Err(error("Invalid boolean: True", "allow_promotion_codes"))
        );
        assert_eq!(
            check("POST", SESSIONS, "allow_promotion_codes=true").unwrap(),
            json!({"allow_promotion_codes": true})
        );
    }

    #[test]
    fn check_rejects_a_string_where_a_hash_is_expected() {
        assert_eq!(
            check("POST", SESSIONS, "line_items[0][price_data]=usd"),
            Err(error("Invalid hash", "line_items[0][price_data]"))
        );
    }

    #[test]
    fn check_rejects_a_scalar_or_a_named_hash_where_an_array_is_expected() {
        assert_eq!(
            check("POST", SESSIONS, "line_items=price_1"),
            Err(error("Invalid array", "line_items"))
        );
        assert_eq!(
            check("POST", SESSIONS, "line_items[price]=price_1"),
            Err(error("Invalid array", "line_items"))
        );
    }

    #[test]
    fn check_accepts_any_metadata_key_with_string_values() {
        let checked = check(
            "POST",
            SESSIONS,
            "metadata[order_id]=6735&metadata[0]=zero&line_items[0][metadata][note]=gift",
        )
        .unwrap();
        assert_eq!(
            checked,
            json!({
                "metadata": {"order_id": "6735", "0": "zero"},
                "line_items": [{"metadata": {"note": "gift"}}]
            })
        );
    }

    #[test]
    fn check_keeps_an_emptied_metadata_value() {
        assert_eq!(
            check("POST", "/v1/customers/cus_1", "metadata[plan]=").unwrap(),
            json!({"metadata": {"plan": ""}})
        );
    }

    #[test]
    fn check_rejects_a_nested_hash_as_a_metadata_value() {
        assert_eq!(
            check("POST", SESSIONS, "metadata[a][b]=c"),
            Err(error(
                "Invalid val: {\"b\":\"c\"} must be a string under 500 characters",
                "metadata"
            ))
        );
    }

    #[test]
    fn check_enforces_stripe_metadata_key_and_value_limits() {
        let key = "k".repeat(41);
        assert_eq!(
            check("POST", SESSIONS, &format!("metadata[{key}]=v")),
            Err(error(
                &format!("Invalid key: {key} must be a string under 40 characters"),
                "metadata"
            ))
        );
        let value = "v".repeat(501);
        assert_eq!(
            check("POST", SESSIONS, &format!("metadata[k]={value}")),
            Err(error(
                &format!("Invalid val: {value} must be a string under 500 characters"),
                "metadata"
            ))
        );
        let fits = format!("metadata[{}]={}", "k".repeat(40), "v".repeat(500));
        assert!(check("POST", SESSIONS, &fits).is_ok());
    }

    #[test]
    fn check_reads_expand_as_an_array_of_strings() {
        assert_eq!(
            check("POST", SESSIONS, "expand[]=customer&expand[]=line_items").unwrap(),
            json!({"expand": ["customer", "line_items"]})
        );
        assert_eq!(
            check("GET", "/v1/customers/cus_1", "expand[0]=default_source").unwrap(),
            json!({"expand": ["default_source"]})
        );
    }

    #[test]
    fn check_rejects_expand_given_as_a_single_string() {
        assert_eq!(
            check("GET", "/v1/subscriptions/sub_1", "expand=latest_invoice"),
            Err(error("Invalid array", "expand"))
        );
    }

    // --- check: other operations -------------------------------------------------------------

    #[test]
    fn check_reads_a_created_range_on_events_as_integers() {
        assert_eq!(
            check(
                "GET",
                "/v1/events",
                "created[gte]=1700000000&created[lt]=1800000000&type=invoice.paid&limit=5"
            )
            .unwrap(),
            json!({
                "created": {"gte": 1_700_000_000, "lt": 1_800_000_000},
                "type": "invoice.paid",
                "limit": 5
            })
        );
    }

    #[test]
    fn check_reads_a_bare_created_on_events_as_an_integer() {
        assert_eq!(
            check("GET", "/v1/events", "created=1700000000").unwrap(),
            json!({"created": 1_700_000_000})
        );
        assert_eq!(
            check("GET", "/v1/events", "created=yesterday"),
            Err(error("Invalid integer: yesterday", "created"))
        );
    }

    #[test]
    fn check_rejects_an_unknown_key_inside_a_created_range() {
        assert_eq!(
            check("GET", "/v1/events", "created[since]=1"),
            Err(error(
                "Received unknown parameter: created[since]",
                "created[since]"
            ))
        );
    }

    #[test]
    fn check_reads_customer_list_filters() {
        assert_eq!(
            check("GET", "/v1/customers", "email=jane%40example.com&limit=10").unwrap(),
            json!({"email": "jane@example.com", "limit": 10})
        );
        assert_eq!(
            check("GET", "/v1/customers", "limit=ten"),
            Err(error("Invalid integer: ten", "limit"))
        );
        assert_eq!(
            check("GET", "/v1/customers", "emial=jane%40example.com"),
            Err(error("Received unknown parameter: emial", "emial"))
        );
    }

    #[test]
    fn check_rejects_a_missing_required_top_level_param() {
        assert_eq!(
            check("POST", "/v1/prices", "unit_amount=500&product=prod_1"),
            Err(error("Missing required param: currency.", "currency"))
        );
    }

    #[test]
    fn check_rejects_an_empty_string_for_an_integer() {
        assert_eq!(
            check("POST", "/v1/prices", "currency=usd&unit_amount="),
            Err(error("Invalid integer: ", "unit_amount"))
        );
    }

    #[test]
    fn check_rejects_an_empty_string_for_a_field_that_cannot_be_unset() {
        let param = "name";
        assert_eq!(
            check("POST", "/v1/products", "name="),
            Err(error(
                &format!(
                    "You passed an empty string for '{param}'. We assume empty values are an \
                     attempt to unset a parameter; however '{param}' cannot be unset. You should \
                     remove '{param}' from your request or supply a non-empty value."
                ),
                param
            ))
        );
    }

    #[test]
    fn check_keeps_an_empty_string_where_the_spec_allows_unsetting() {
        assert_eq!(
            check(
                "POST",
                "/v1/subscriptions/sub_1",
                "cancel_at=&cancellation_details[comment]=&cancellation_details[feedback]="
            )
            .unwrap(),
            json!({
                "cancel_at": "",
                "cancellation_details": {"comment": "", "feedback": ""}
            })
        );
    }

    #[test]
    fn check_tries_each_any_of_branch() {
        assert_eq!(
            check("POST", "/v1/subscriptions/sub_1", "trial_end=now").unwrap(),
            json!({"trial_end": "now"})
        );
        assert_eq!(
            check("POST", "/v1/subscriptions/sub_1", "trial_end=1700000000").unwrap(),
            json!({"trial_end": 1_700_000_000})
        );
    }

    #[test]
    fn check_reports_the_enum_branch_when_no_any_of_branch_fits_a_scalar() {
        assert_eq!(
            check("POST", "/v1/subscriptions/sub_1", "trial_end=later"),
            Err(error("Invalid trial_end: must be one of now", "trial_end"))
        );
        assert_eq!(
            check("POST", "/v1/subscriptions/sub_1", "cancel_at=soon"),
            Err(error(
                "Invalid cancel_at: must be one of max_billed_until, max_period_end, or \
                 min_period_end",
                "cancel_at"
            ))
        );
    }

    #[test]
    fn check_reads_delete_params_sent_as_a_query() {
        assert_eq!(
            check(
                "DELETE",
                "/v1/subscriptions/sub_1",
                "invoice_now=true&prorate=false"
            )
            .unwrap(),
            json!({"invoice_now": true, "prorate": false})
        );
        assert_eq!(
            check("DELETE", "/v1/customers/cus_1", "force=true"),
            Err(error("Received unknown parameter: force", "force"))
        );
    }

    #[test]
    fn check_coerces_a_number_field_and_rejects_a_bad_decimal() {
        assert_eq!(
            check("POST", "/v1/coupons", "percent_off=12.5&duration=once").unwrap(),
            json!({"percent_off": 12.5, "duration": "once"})
        );
        assert_eq!(
            check("POST", "/v1/coupons", "percent_off=half"),
            Err(error("Invalid decimal: half", "percent_off"))
        );
    }

    #[test]
    fn check_keeps_decimal_strings_as_strings_and_rejects_bad_ones() {
        assert_eq!(
            check(
                "POST",
                "/v1/prices",
                "currency=usd&unit_amount_decimal=12.345"
            )
            .unwrap(),
            json!({"currency": "usd", "unit_amount_decimal": "12.345"})
        );
        assert_eq!(
            check("POST", "/v1/prices", "currency=usd&unit_amount_decimal=1e3"),
            Err(error("Invalid decimal: 1e3", "unit_amount_decimal"))
        );
    }

    #[test]
    fn check_rejects_a_string_longer_than_its_max_length() {
        assert_eq!(
            check(
                "POST",
                "/v1/products",
                "name=Shirt&statement_descriptor=ABCDEFGHIJKLMNOPQRSTUVWXYZ"
            ),
            Err(error(
                "Invalid string: ABCDEFGHIJ...QRSTUVWXYZ; must be at most 22 characters",
                "statement_descriptor"
            ))
        );
    }

    #[test]
    fn check_counts_characters_not_bytes_for_max_length() {
        let name = "é".repeat(22);
        assert!(
            check(
                "POST",
                "/v1/products",
                &format!("name=x&statement_descriptor={name}")
            )
            .is_ok()
        );
    }

    #[test]
    fn check_reads_null_as_an_empty_request() {
        assert_eq!(
            operation("GET", "/v1/customers")
                .check(Value::Null)
                .unwrap(),
            json!({})
        );
        assert_eq!(
            operation("POST", "/v1/prices").check(Value::Null),
            Err(error("Missing required param: currency.", "currency"))
        );
    }

    #[test]
    fn check_returns_a_checked_tree_unchanged_when_checked_again() {
        let checked = check(
            "POST",
            SESSIONS,
            "mode=subscription&line_items[0][price]=p&line_items[0][quantity]=3\
             &subscription_data[trial_period_days]=7&metadata[a]=b",
        )
        .unwrap();
        assert_eq!(
            operation("POST", SESSIONS).check(checked.clone()).unwrap(),
            checked
        );
    }

    #[test]
    fn param_error_displays_its_message() {
        let shown = error("Invalid integer: abc", "amount").to_string();
        assert_eq!(shown, "Invalid integer: abc");
    }

    #[test]
    fn helpers_list_choices_and_abbreviate_as_stripe_does() {
        let words = |list: &[&str]| {
            list.iter()
                .map(|word| (*word).to_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(one_of(&words(&["now"])), "now");
        assert_eq!(one_of(&words(&["now", "unchanged"])), "now or unchanged");
        assert_eq!(one_of(&words(&["a", "b", "c"])), "a, b, or c");
        assert_eq!(abbreviate(&"n".repeat(256)), "nnnnnnnnnn...nnnnnnnnnn");
        assert_eq!(abbreviate("short"), "short");
    }
}

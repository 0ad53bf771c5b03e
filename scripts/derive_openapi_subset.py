#!/usr/bin/env python3
"""Derive the request-parameter subset of Stripe's OpenAPI spec that the sandbox vendors.

The sandbox (crates/stripe-sandbox) rejects unknown or mistyped request parameters the way
Stripe does. It checks them against `crates/stripe-sandbox/openapi/subset.json`, which this
script writes from Stripe's full public spec (spec3.json, several megabytes) so that the
repository never needs the full spec at build, run or test time.

For each operation in OPERATIONS the subset keeps the request parameters only:

* GET: the `in: query` parameters, gathered into one synthetic object schema whose
  `properties` are the parameters (deepObject ones such as `created[gte]` keep their object
  schema) and whose `required` lists the required ones;
* POST: the `application/x-www-form-urlencoded` request-body schema;
* DELETE: the query parameters merged with the form request-body properties, because Stripe's
  spec declares DELETE parameters (for example `invoice_now` on cancelling a subscription) in
  a request body that clients usually send as a query string.

Every `$ref` is resolved inline, and every schema is trimmed to the keys that matter for
validation: type, properties, items, anyOf, enum, additionalProperties, required, maxLength,
format (`oneOf` is kept as `anyOf`). The output is compact JSON with sorted keys, one
operation per line:

    {"api_version": "...", "operations": [{"method": "POST", "path": "/v1/...", "params": {...}}]}

Operations missing from the spec are reported on stderr and skipped.

Besides the operations, `unserved` lists every other `METHOD /path` template of the spec, so
that the sandbox can tell a Stripe route it does not serve (`GET /v1/customers/search`) from
an id in a route it does (`GET /v1/customers/{customer}`) and answer the former as Stripe
answers an unknown URL. And `objects` gives, for each object the sandbox renders, its
required properties with the JSON kinds each may take and whether it may be null, plus the
names of all its properties, so a test can hold the sandbox's objects to Stripe's schema.

Usage (Python 3.11, standard library only), from anywhere:

    python3 scripts/derive_openapi_subset.py [SPEC3_JSON [OUTPUT_JSON]]

SPEC3_JSON defaults to ../shared/stripe-openapi/spec3.json relative to the repository root,
OUTPUT_JSON to crates/stripe-sandbox/openapi/subset.json.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SPEC = REPO_ROOT.parent / "shared" / "stripe-openapi" / "spec3.json"
DEFAULT_OUTPUT = REPO_ROOT / "crates" / "stripe-sandbox" / "openapi" / "subset.json"

FORM = "application/x-www-form-urlencoded"

# The schema keys that validation uses; everything else (descriptions, titles, vendor
# extensions) is dropped.
KEPT_KEYS = (
    "type",
    "properties",
    "items",
    "anyOf",
    "enum",
    "additionalProperties",
    "required",
    "maxLength",
    "format",
)

# (method, path template) for every operation the sandbox serves.
OPERATIONS: list[tuple[str, str]] = [
    ("GET", "/v1/customers"),
    ("POST", "/v1/customers"),
    ("GET", "/v1/customers/{customer}"),
    ("POST", "/v1/customers/{customer}"),
    ("DELETE", "/v1/customers/{customer}"),
    ("GET", "/v1/products"),
    ("POST", "/v1/products"),
    ("GET", "/v1/products/{id}"),
    ("POST", "/v1/products/{id}"),
    ("DELETE", "/v1/products/{id}"),
    ("GET", "/v1/prices"),
    ("POST", "/v1/prices"),
    ("GET", "/v1/prices/{price}"),
    ("POST", "/v1/prices/{price}"),
    ("GET", "/v1/checkout/sessions"),
    ("POST", "/v1/checkout/sessions"),
    ("GET", "/v1/checkout/sessions/{session}"),
    ("POST", "/v1/checkout/sessions/{session}"),
    ("GET", "/v1/checkout/sessions/{session}/line_items"),
    ("POST", "/v1/checkout/sessions/{session}/expire"),
    ("POST", "/v1/billing_portal/sessions"),
    ("GET", "/v1/billing_portal/configurations"),
    ("POST", "/v1/billing_portal/configurations"),
    ("GET", "/v1/billing_portal/configurations/{configuration}"),
    ("POST", "/v1/billing_portal/configurations/{configuration}"),
    ("GET", "/v1/subscriptions"),
    ("GET", "/v1/subscriptions/{subscription_exposed_id}"),
    ("POST", "/v1/subscriptions/{subscription_exposed_id}"),
    ("DELETE", "/v1/subscriptions/{subscription_exposed_id}"),
    ("POST", "/v1/subscriptions/{subscription}/resume"),
    ("GET", "/v1/invoices"),
    ("GET", "/v1/invoices/{invoice}"),
    ("POST", "/v1/invoices/{invoice}/pay"),
    ("GET", "/v1/payment_intents"),
    ("GET", "/v1/payment_intents/{intent}"),
    ("GET", "/v1/charges"),
    ("GET", "/v1/charges/{charge}"),
    ("GET", "/v1/refunds"),
    ("POST", "/v1/refunds"),
    ("GET", "/v1/refunds/{refund}"),
    ("GET", "/v1/disputes"),
    ("GET", "/v1/disputes/{dispute}"),
    ("POST", "/v1/disputes/{dispute}/close"),
    ("GET", "/v1/coupons"),
    ("POST", "/v1/coupons"),
    ("GET", "/v1/coupons/{coupon}"),
    ("DELETE", "/v1/coupons/{coupon}"),
    ("GET", "/v1/promotion_codes"),
    ("POST", "/v1/promotion_codes"),
    ("GET", "/v1/promotion_codes/{promotion_code}"),
    ("POST", "/v1/promotion_codes/{promotion_code}"),
    ("GET", "/v1/billing/meters"),
    ("POST", "/v1/billing/meters"),
    ("GET", "/v1/billing/meters/{id}"),
    ("GET", "/v1/billing/meters/{id}/event_summaries"),
    ("POST", "/v1/billing/meter_events"),
    ("GET", "/v1/events"),
    ("GET", "/v1/events/{id}"),
    ("GET", "/v1/webhook_endpoints"),
    ("POST", "/v1/webhook_endpoints"),
    ("GET", "/v1/webhook_endpoints/{webhook_endpoint}"),
    ("POST", "/v1/webhook_endpoints/{webhook_endpoint}"),
    ("DELETE", "/v1/webhook_endpoints/{webhook_endpoint}"),
    ("GET", "/v1/test_helpers/test_clocks"),
    ("POST", "/v1/test_helpers/test_clocks"),
    ("GET", "/v1/test_helpers/test_clocks/{test_clock}"),
    ("DELETE", "/v1/test_helpers/test_clocks/{test_clock}"),
    ("POST", "/v1/test_helpers/test_clocks/{test_clock}/advance"),
    ("GET", "/v1/payment_methods/{payment_method}"),
    ("GET", "/v1/customers/{customer}/payment_methods"),
]


# The objects the sandbox renders, by their schema name in the spec's components.
OBJECTS: list[str] = [
    "customer",
    "product",
    "price",
    "checkout.session",
    "payment_intent",
    "charge",
    "refund",
    "dispute",
    "invoice",
    "subscription",
    "subscription_item",
    "coupon",
    "promotion_code",
    "event",
    "test_helpers.test_clock",
    "billing_portal.session",
    "billing_portal.configuration",
    "billing.meter",
    "webhook_endpoint",
    "payment_method",
    # Nested shapes worth holding to the spec: a charge's card details are not the card of
    # its payment method.
    "payment_method_details_card",
]


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


class Resolver:
    """Resolves local `$ref`s and trims schemas to the validation keys."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec

    def lookup(self, ref: str) -> Any:
        if not ref.startswith("#/"):
            raise ValueError(f"only local $refs are supported, got {ref}")
        node: Any = self.spec
        for part in ref[2:].split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
        return node

    def trim(self, schema: Any, seen: tuple[str, ...] = ()) -> Any:
        if isinstance(schema, bool):
            return schema
        if not isinstance(schema, dict):
            raise ValueError(f"unexpected schema node: {schema!r}")
        if "$ref" in schema:
            ref = schema["$ref"]
            if ref in seen:
                raise ValueError(f"recursive $ref in request parameters: {' -> '.join(seen + (ref,))}")
            return self.trim(self.lookup(ref), seen + (ref,))
        if "allOf" in schema:
            warn(f"allOf is not supported and was dropped from {sorted(schema)}")
        out: dict[str, Any] = {}
        for key in KEPT_KEYS:
            if key not in schema:
                continue
            value = schema[key]
            if key == "properties":
                out[key] = {name: self.trim(sub, seen) for name, sub in value.items()}
            elif key in ("items", "additionalProperties"):
                out[key] = self.trim(value, seen)
            elif key == "anyOf":
                out[key] = [self.trim(sub, seen) for sub in value]
            else:
                out[key] = value
        if "oneOf" in schema:
            out["anyOf"] = out.get("anyOf", []) + [self.trim(sub, seen) for sub in schema["oneOf"]]
        return out


def query_schema(resolver: Resolver, operation: dict[str, Any]) -> dict[str, Any]:
    properties: dict[str, Any] = {}
    required: list[str] = []
    for parameter in operation.get("parameters", []):
        if "$ref" in parameter:
            parameter = resolver.lookup(parameter["$ref"])
        if parameter.get("in") != "query":
            continue
        name = parameter["name"]
        properties[name] = resolver.trim(parameter.get("schema", {}))
        if parameter.get("required"):
            required.append(name)
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    return schema


def form_schema(resolver: Resolver, operation: dict[str, Any]) -> dict[str, Any] | None:
    body = operation.get("requestBody")
    if body is None:
        return None
    if "$ref" in body:
        body = resolver.lookup(body["$ref"])
    content = body.get("content", {})
    if FORM not in content:
        return None
    schema = resolver.trim(content[FORM].get("schema", {}))
    schema.setdefault("type", "object")
    schema.setdefault("properties", {})
    return schema


def params_for(resolver: Resolver, method: str, operation: dict[str, Any]) -> dict[str, Any]:
    query = query_schema(resolver, operation)
    if method == "GET":
        return query
    form = form_schema(resolver, operation)
    if method == "POST":
        if query["properties"]:
            warn(f"POST operation {operation.get('operationId')} has query parameters; they were ignored")
        if form is None:
            warn(f"POST operation {operation.get('operationId')} has no form body; using an empty schema")
            return {"type": "object", "properties": {}}
        return form
    # DELETE: Stripe's clients send these as a query string, the spec declares them as a body.
    if form is not None:
        for name, sub in form["properties"].items():
            query["properties"].setdefault(name, sub)
        for name in form.get("required", []):
            query.setdefault("required", []).append(name)
    return query


def value_kinds(spec: dict[str, Any], schema: dict[str, Any]) -> tuple[list[str], bool]:
    """The JSON kinds a property may take (string, integer, number, boolean, object, array)
    and whether it may be null, looking through `$ref` and `anyOf`/`oneOf` (an expandable
    field is a string id or an object)."""
    if "$ref" in schema:
        target = Resolver(spec).lookup(schema["$ref"])
        kinds, _ = value_kinds(spec, target)
        return kinds, bool(schema.get("nullable"))
    kinds: list[str] = []
    nullable = bool(schema.get("nullable"))
    for branch in schema.get("anyOf", []) + schema.get("oneOf", []):
        sub, sub_null = value_kinds(spec, branch)
        kinds += [k for k in sub if k not in kinds]
        nullable = nullable or sub_null
    if "type" in schema:
        kinds.append(schema["type"])
    elif not kinds:
        kinds.append("object")
    return kinds, nullable


def object_shapes(spec: dict[str, Any]) -> dict[str, Any]:
    """For each rendered object: its required properties, each with the kinds it may take
    and whether it may be null."""
    schemas = spec.get("components", {}).get("schemas", {})
    shapes: dict[str, Any] = {}
    for name in OBJECTS:
        schema = schemas.get(name)
        if schema is None:
            warn(f"object {name} is not in the spec; skipped")
            continue
        required = {}
        for prop in schema.get("required", []):
            kinds, nullable = value_kinds(spec, schema.get("properties", {}).get(prop, {}))
            required[prop] = {"kinds": kinds, "nullable": nullable}
        shapes[name] = {"required": required, "properties": sorted(schema.get("properties", {}))}
    return shapes


def derive(spec: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    resolver = Resolver(spec)
    operations = []
    skipped = []
    for method, path in OPERATIONS:
        operation = spec.get("paths", {}).get(path, {}).get(method.lower())
        if operation is None:
            warn(f"{method} {path} is not in the spec; skipped")
            skipped.append(f"{method} {path}")
            continue
        operations.append({"method": method, "path": path, "params": params_for(resolver, method, operation)})
    served = {(method, path) for method, path in OPERATIONS}
    unserved = sorted(
        f"{method.upper()} {path}"
        for path, item in spec.get("paths", {}).items()
        for method in item
        if method in ("get", "post", "delete") and (method.upper(), path) not in served
    )
    subset = {
        "api_version": spec.get("info", {}).get("version", ""),
        "operations": operations,
        "unserved": unserved,
        "objects": object_shapes(spec),
    }
    return subset, skipped


def render(subset: dict[str, Any]) -> str:
    """Compact JSON with sorted keys, one operation per line so that diffs stay readable."""

    def compact(value: Any) -> str:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)

    lines = ",\n".join(compact(operation) for operation in subset["operations"])
    unserved = compact(subset["unserved"])
    objects = ",\n".join(f"{compact(name)}:{compact(shape)}" for name, shape in subset["objects"].items())
    text = (
        f'{{"api_version":{compact(subset["api_version"])},"operations":[\n{lines}\n],\n'
        f'"unserved":{unserved},\n"objects":{{\n{objects}\n}}}}\n'
    )
    if json.loads(text) != subset:
        raise AssertionError("rendered subset does not round-trip")
    return text


def main(argv: list[str]) -> int:
    spec_path = Path(argv[1]) if len(argv) > 1 else DEFAULT_SPEC
    output_path = Path(argv[2]) if len(argv) > 2 else DEFAULT_OUTPUT
    with spec_path.open(encoding="utf-8") as handle:
        spec = json.load(handle)
    subset, skipped = derive(spec)
    text = render(subset)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    output_path.write_text(text, encoding="utf-8")
    print(
        f"wrote {output_path} ({len(text.encode('utf-8'))} bytes, {len(subset['operations'])} operations, "
        f"{len(skipped)} skipped, api_version {subset['api_version']})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

//! The OpenAPI 3.1 document of the admin API (SPEC §11), generated from the code.
//!
//! Every `/api/v1` handler carries `#[utoipa::path]` and is registered with utoipa-axum's
//! `routes!`, which puts the route into the axum router and the operation into the document
//! in one call: the two cannot disagree. [`finish`] then adds what every operation shares
//! (its role in words and as `x-fwdist-role`, the bearer security requirement, the error
//! answers of the token check and of the query-parameter rule) and the two routes of
//! `health.rs`, described by hand. The document is the one source the request rules read too
//! (see `rules.rs`): a query parameter is known exactly when the document declares it.

use std::borrow::Cow;

use axum::Extension;
use axum::body::Bytes;
use axum::http::{Method, header};
use axum::response::{IntoResponse, Response};
use utoipa::openapi::extensions::ExtensionsBuilder;
use utoipa::openapi::path::{Operation, OperationBuilder, ParameterIn, PathItem};
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::{AnyOfBuilder, ArrayItems, ObjectBuilder, Schema, SchemaType, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{
    ComponentsBuilder, ContentBuilder, HttpMethod, InfoBuilder, LicenseBuilder, OpenApi, OpenApiBuilder, Ref,
    RefOr,
};
use utoipa::{PartialSchema, ToSchema};

use super::error::{ApiError, ErrorBody};
use crate::domain::{MemberState, Outcome, ReportOutcome, Role};

/// Where the admin API lives; `/healthz` and `/metrics` are outside it.
pub const PREFIX: &str = "/api/v1";
/// The operation extension naming the role a caller needs (SPEC §6).
pub const ROLE_EXTENSION: &str = "x-fwdist-role";
/// The name of the bearer-token security scheme.
pub const BEARER: &str = "bearer";
/// `x-fwdist-role` of an operation that any valid token may call (`/whoami`).
pub const ANY_ROLE: &str = "any";
/// `x-fwdist-role` of an operation that needs no token.
pub const NO_ROLE: &str = "none";

/// The document with nothing in it yet but what describes the whole API.
pub fn base() -> OpenApi {
    let info = InfoBuilder::new()
        .title("fwdist admin API")
        .version(env!("CARGO_PKG_VERSION"))
        .description(Some(
            "The admin API of fwdist, the firmware-distribution server: releases, devices, \
             rollouts, install reports, download records, the network rules an IQ needs, \
             diagnostics, tokens and the audit log. Every operation under /api/v1 needs \
             `Authorization: Bearer <token>` of the role its description names (and \
             `x-fwdist-role` holds), except this document itself. Errors are \
             `{\"error\": \"...\"}`; every time is RFC 3339 UTC; a query parameter an \
             operation does not declare is refused with 400.",
        ))
        .license(Some(
            LicenseBuilder::new()
                .name("Apache-2.0")
                .identifier(Some("Apache-2.0"))
                .build(),
        ))
        .build();
    OpenApiBuilder::new().info(info).build()
}

/// Adds what every operation shares and the routes of `health.rs`; see the module doc.
pub fn finish(mut doc: OpenApi) -> OpenApi {
    for (path, method) in [("/healthz", healthz()), ("/metrics", metrics())] {
        doc.paths
            .paths
            .insert(path.to_owned(), PathItem::new(HttpMethod::Get, method));
    }
    for (path, item) in &mut doc.paths.paths {
        let tag = tag_of(path);
        let under_api = path.starts_with(PREFIX);
        for (_, op) in operations_mut(item) {
            op.tags = Some(vec![tag.clone()]);
            let role = role_of(op).unwrap_or_default();
            let needs_token = role != NO_ROLE;
            let who = match role.as_str() {
                NO_ROLE => "No token needed.".to_owned(),
                ANY_ROLE => "Role: any valid bearer token, whatever its role.".to_owned(),
                r => match Role::parse(r) {
                    Ok(needed) => format!(
                        "Role: `{r}` (a bearer token of role {}).",
                        words(&holders(needed))
                    ),
                    Err(_) => format!("Role: `{r}`."),
                },
            };
            op.description = Some(match op.description.take() {
                Some(d) if !d.is_empty() => format!("{d}\n\n{who}"),
                _ => who,
            });
            if needs_token {
                op.security = Some(vec![SecurityRequirement::new(BEARER, Vec::<String>::new())]);
                shared(op, "401", "Unauthorized");
                shared(op, "500", "Internal");
                if role != ANY_ROLE {
                    shared(op, "403", "Forbidden");
                }
            }
            if under_api {
                shared(op, "400", "BadRequest");
                admit_empty_values(op);
            }
        }
    }
    let components = doc.components.get_or_insert_with(Default::default);
    reference_list_items(&mut components.schemas);
    let shared_parts = ComponentsBuilder::new()
        .schema(ErrorBody::name(), ErrorBody::schema())
        .security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A token made by `fwdist token create`; its role (viewer, publisher, \
                         admin, reporter) decides what it may call.",
                    ))
                    .build(),
            ),
        )
        .response(
            "BadRequest",
            error_response(
                "A query parameter the operation does not declare (named in the error), a bad \
             parameter value, or a body that is not what the operation takes.",
            ),
        )
        .response(
            "Unauthorized",
            error_response("No bearer token, or not a valid one."),
        )
        .response("Forbidden", error_response("The token's role may not do this."))
        .response(
            "Internal",
            error_response("A server fault (its details are logged, not returned)."),
        )
        .build();
    components.schemas.extend(shared_parts.schemas);
    components.responses.extend(shared_parts.responses);
    components.security_schemes.extend(shared_parts.security_schemes);
    doc
}

/// Query parameters for which an empty value (`?state=`) is the same as leaving the parameter
/// out (docs/api.md, "Query parameters"): the list filters, the page cursor and the fleet's
/// `stale_days`. The handlers read them through [`super::filter`] or treat `""` as absent;
/// `limit`, `format` and `chain` refuse an empty value with 400. `tests/it/openapi.rs` sends
/// every query parameter of the document empty and checks the answer against this.
pub const EMPTY_MEANS_ABSENT: &[&str] = &[
    "model",
    "label",
    "enabled",
    "device",
    "version",
    "outcome",
    "state",
    "action",
    "after",
    "stale_days",
];

/// Makes the document admit the empty value of each [`EMPTY_MEANS_ABSENT`] parameter whose
/// schema would refuse it (an enum, a boolean, an integer): `anyOf: [schema, {"enum": [""]}]`.
/// Without it the document promised a 400 for `?state=`, which the API answers like no filter.
fn admit_empty_values(op: &mut Operation) {
    for param in op.parameters.iter_mut().flatten() {
        if param.parameter_in != ParameterIn::Query || !EMPTY_MEANS_ABSENT.contains(&param.name.as_str()) {
            continue;
        }
        let Some(schema) = param.schema.take() else {
            continue;
        };
        if admits_empty_string(&schema) {
            param.schema = Some(schema);
            continue;
        }
        let empty = ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some([""]))
            .description(Some("Empty: the same as leaving the parameter out."));
        param.schema = Some(RefOr::T(Schema::AnyOf(
            AnyOfBuilder::new().item(schema).item(empty).build(),
        )));
        let note = "An empty value is the same as leaving it out.";
        param.description = Some(match param.description.take() {
            Some(d) if !d.is_empty() => format!("{d} {note}"),
            _ => note.to_owned(),
        });
    }
}

/// A plain string schema (no enum, pattern, format or minimum length) takes `""` already.
fn admits_empty_string(schema: &RefOr<Schema>) -> bool {
    let RefOr::T(Schema::Object(o)) = schema else {
        return false;
    };
    o.schema_type == SchemaType::Type(Type::String)
        && o.enum_values.is_none()
        && o.pattern.is_none()
        && o.format.is_none()
        && o.min_length.is_none_or(|l| l == 0)
}

/// The roles whose tokens may do what needs `needed`.
pub fn holders(needed: Role) -> Vec<&'static str> {
    [Role::Viewer, Role::Publisher, Role::Admin, Role::Reporter]
        .into_iter()
        .filter(|r| r.allows(needed))
        .map(Role::as_str)
        .collect()
}

/// `a`, `a or b`, `a, b or c`.
fn words(items: &[&str]) -> String {
    match items {
        [] => String::new(),
        [one] => (*one).to_owned(),
        [rest @ .., last] => format!("{} or {last}", rest.join(", ")),
    }
}

/// utoipa inlines the item schema into each `Listing_X`; point it at the `X` component
/// instead, so a list and a single answer share one schema.
fn reference_list_items(schemas: &mut std::collections::BTreeMap<String, RefOr<Schema>>) {
    let names: Vec<String> = schemas.keys().cloned().collect();
    for (name, schema) in schemas.iter_mut() {
        let Some(item) = name.strip_prefix("Listing_") else {
            continue;
        };
        if !names.iter().any(|n| n == item) {
            continue;
        }
        if let RefOr::T(Schema::Object(list)) = schema
            && let Some(RefOr::T(Schema::Array(items))) = list.properties.get_mut("items")
        {
            items.items = ArrayItems::RefOrSchema(Box::new(RefOr::Ref(Ref::from_schema_name(item))));
        }
    }
}

/// `x-fwdist-role` of an operation.
pub fn role_of(op: &Operation) -> Option<String> {
    op.extensions
        .as_ref()?
        .get(ROLE_EXTENSION)?
        .as_str()
        .map(str::to_owned)
}

/// The operations of a path item, with their methods.
pub fn operations(item: &PathItem) -> impl Iterator<Item = (Method, &Operation)> {
    [
        (Method::GET, &item.get),
        (Method::PUT, &item.put),
        (Method::POST, &item.post),
        (Method::DELETE, &item.delete),
        (Method::PATCH, &item.patch),
        (Method::HEAD, &item.head),
        (Method::OPTIONS, &item.options),
        (Method::TRACE, &item.trace),
    ]
    .into_iter()
    .filter_map(|(m, op)| op.as_ref().map(|op| (m, op)))
}

fn operations_mut(item: &mut PathItem) -> impl Iterator<Item = (Method, &mut Operation)> {
    [
        (Method::GET, &mut item.get),
        (Method::PUT, &mut item.put),
        (Method::POST, &mut item.post),
        (Method::DELETE, &mut item.delete),
        (Method::PATCH, &mut item.patch),
        (Method::HEAD, &mut item.head),
        (Method::OPTIONS, &mut item.options),
        (Method::TRACE, &mut item.trace),
    ]
    .into_iter()
    .filter_map(|(m, op)| op.as_mut().map(|op| (m, op)))
}

/// `/api/v1/devices/{id}/pin` → `devices`; `/healthz` → `health`.
fn tag_of(path: &str) -> String {
    match path.strip_prefix(PREFIX) {
        Some(rest) => rest
            .trim_start_matches('/')
            .split(['/', '.'])
            .next()
            .unwrap_or_default()
            .to_owned(),
        None => "health".to_owned(),
    }
}

/// A shared answer, unless the operation describes that status itself.
fn shared(op: &mut Operation, status: &str, name: &str) {
    op.responses
        .responses
        .entry(status.to_owned())
        .or_insert_with(|| RefOr::Ref(Ref::from_response_name(name)));
}

fn error_response(description: &str) -> utoipa::openapi::Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(RefOr::Ref(Ref::from_schema_name(ErrorBody::name()))))
                .build(),
        )
        .build()
}

fn role_extension(role: &str) -> utoipa::openapi::extensions::Extensions {
    ExtensionsBuilder::new()
        .add(ROLE_EXTENSION, serde_json::Value::from(role))
        .build()
}

/// `GET /healthz`, answered by `health.rs`.
fn healthz() -> Operation {
    let ok = ObjectBuilder::new()
        .property(
            "status",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(["ok"])),
        )
        .required("status");
    OperationBuilder::new()
        .operation_id(Some("healthz"))
        .summary(Some("Whether FTPS and the database answer"))
        .description(Some(
            "200 when the FTPS control port greets and the database answers; 503 naming the \
             one that does not.",
        ))
        .response(
            "200",
            ResponseBuilder::new()
                .description("Both answer.")
                .content("application/json", ContentBuilder::new().schema(Some(ok)).build())
                .build(),
        )
        .response(
            "503",
            error_response("FTPS or the database does not answer (the error says which)."),
        )
        .extensions(Some(role_extension(NO_ROLE)))
        .build()
}

/// `GET /metrics`, answered by `health.rs`.
fn metrics() -> Operation {
    OperationBuilder::new()
        .operation_id(Some("metrics"))
        .summary(Some("Prometheus metrics"))
        .description(Some(
            "libunftp's FTP metrics and fwdist's own (SPEC §11), in the Prometheus text format.",
        ))
        .response(
            "200",
            ResponseBuilder::new()
                .description("The Prometheus text exposition format.")
                .content(
                    "text/plain",
                    ContentBuilder::new()
                        .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
                        .build(),
                )
                .build(),
        )
        .response("500", error_response("The metrics could not be encoded."))
        .extensions(Some(role_extension(NO_ROLE)))
        .build()
}

/// The finished document as served, serialized once.
#[derive(Clone, Debug)]
pub struct Served(pub Bytes);

impl Served {
    /// # Errors
    /// Never for utoipa's types in practice; a failure is a server fault.
    pub fn new(doc: &OpenApi) -> Result<Self, serde_json::Error> {
        Ok(Served(Bytes::from(serde_json::to_vec_pretty(doc)?)))
    }
}

/// This OpenAPI document
///
/// Every operation of the admin API with its parameters, bodies, answers and role.
#[utoipa::path(
    get,
    path = "/openapi.json",
    responses(
        (status = 200, description = "The OpenAPI 3.1 document.", content_type = "application/json",
         body = Object),
        (status = 500, description = "The document could not be built (a server fault).", body = ErrorBody),
    ),
    extensions(("x-fwdist-role" = json!("none"))),
)]
pub async fn openapi_document(Extension(doc): Extension<Served>) -> Response {
    if doc.0.is_empty() {
        return ApiError::Internal("the OpenAPI document could not be serialized".into()).into_response();
    }
    ([(header::CONTENT_TYPE, "application/json")], doc.0).into_response()
}

// Schemas of the domain's string enums, which the views serialize directly. Each lists its
// values through an exhaustive `match`, so a new variant cannot compile without its schema.

fn string_enum(description: &str, values: &[&str]) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(description))
        .enum_values(Some(values.iter().copied()))
        .into()
}

impl PartialSchema for Outcome {
    fn schema() -> RefOr<Schema> {
        let all = [Outcome::Complete, Outcome::Aborted];
        for o in all {
            match o {
                Outcome::Complete | Outcome::Aborted => {}
            }
        }
        string_enum(
            "How a download ended: `complete` only when the IQ acknowledged every byte of the part.",
            &all.map(Outcome::as_str),
        )
    }
}
impl ToSchema for Outcome {}

impl PartialSchema for ReportOutcome {
    fn schema() -> RefOr<Schema> {
        let all = [ReportOutcome::Installed, ReportOutcome::Failed];
        for o in all {
            match o {
                ReportOutcome::Installed | ReportOutcome::Failed => {}
            }
        }
        string_enum("What an install report says.", &all.map(ReportOutcome::as_str))
    }
}
impl ToSchema for ReportOutcome {}

impl PartialSchema for MemberState {
    fn schema() -> RefOr<Schema> {
        for s in MemberState::ALL {
            match s {
                MemberState::Pending
                | MemberState::Downloading
                | MemberState::Downloaded
                | MemberState::Installed
                | MemberState::Failed => {}
            }
        }
        string_enum(
            "A selected device's state in a rollout: pending (no image byte fetched), \
             downloading, downloaded (a complete image download), installed or failed (its \
             latest report for the version).",
            &MemberState::ALL.map(MemberState::as_str),
        )
    }
}
impl ToSchema for MemberState {}

/// The schema of a role name (views hold it as `Role::as_str`).
pub struct RoleName;

impl PartialSchema for RoleName {
    fn schema() -> RefOr<Schema> {
        string_enum(
            "An admin API role: viewer reads; publisher also uploads releases; admin does \
             everything; reporter only posts install reports.",
            &Role::NAMES,
        )
    }
}
impl ToSchema for RoleName {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("Role")
    }
}

/// A model name as requests give it (`Model::parse`).
pub struct ModelName;

impl PartialSchema for ModelName {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some("A device model: `[a-z0-9][a-z0-9-]{0,31}`."))
            .pattern(Some("^[a-z0-9][a-z0-9-]{0,31}$"))
            .examples(["iq2"])
            .into()
    }
}
impl ToSchema for ModelName {}

/// A release version as requests give it (`Version::parse`: a semantic version of at most 64
/// bytes; the pattern is semver.org's, with ASCII digits).
pub struct VersionName;

impl PartialSchema for VersionName {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some(
                "A semantic version (`2.4.1`, `2.4.1-rc.1`, `2.4.1+build.5`), at most 64 bytes.",
            ))
            .pattern(Some(
                "^(0|[1-9][0-9]*)\\.(0|[1-9][0-9]*)\\.(0|[1-9][0-9]*)\
                 (?:-(?:0|[1-9][0-9]*|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*)(?:\\.(?:0|[1-9][0-9]*|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*))*)?\
                 (?:\\+[0-9a-zA-Z-]+(?:\\.[0-9a-zA-Z-]+)*)?$",
            ))
            .max_length(Some(64))
            .examples(["1.0.0"])
            .into()
    }
}
impl ToSchema for VersionName {}

/// A device id as requests give it (`DeviceId::parse`): any of the three MAC forms.
pub struct MacAddress;

impl PartialSchema for MacAddress {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some(
                "A device id, its MAC address in any form: `aa:bb:cc:dd:ee:ff`, \
                 `aa-bb-cc-dd-ee-ff` or `aabbccddeeff`, any letter case.",
            ))
            .pattern(Some(
                "^(?:[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){5}|[0-9A-Fa-f]{2}(?:-[0-9A-Fa-f]{2}){5}|[0-9A-Fa-f]{12})$",
            ))
            .examples(["aa:bb:cc:dd:ee:ff"])
            .into()
    }
}
impl ToSchema for MacAddress {}

/// The schema of a device id in an answer: always the canonical MAC form.
pub struct DeviceIdSchema;

impl PartialSchema for DeviceIdSchema {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some(
                "A device id, its MAC address, in the canonical form (lowercase with colons).",
            ))
            .pattern(Some("^[0-9a-f]{2}(:[0-9a-f]{2}){5}$"))
            .examples(["aa:bb:cc:dd:ee:ff"])
            .into()
    }
}
impl ToSchema for DeviceIdSchema {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("DeviceId")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values<T: PartialSchema>() -> Vec<String> {
        let json = serde_json::to_value(T::schema()).unwrap_or_default();
        json["enum"]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
            .unwrap_or_default()
    }

    #[test]
    fn each_enum_schema_lists_what_serde_writes() {
        fn check<T: PartialSchema + serde::de::DeserializeOwned + serde::Serialize>() {
            let listed = values::<T>();
            assert!(!listed.is_empty());
            for v in listed {
                let parsed: T = serde_json::from_value(serde_json::Value::from(v.clone()))
                    .unwrap_or_else(|e| panic!("{v}: {e}"));
                assert_eq!(
                    serde_json::to_value(parsed).ok(),
                    Some(serde_json::Value::from(v))
                );
            }
        }
        check::<Outcome>();
        check::<ReportOutcome>();
        check::<MemberState>();
        assert_eq!(values::<RoleName>(), Role::NAMES);
    }

    #[test]
    fn roles_read_as_words() {
        assert_eq!(words(&holders(Role::Viewer)), "viewer, publisher or admin");
        assert_eq!(words(&holders(Role::Reporter)), "admin or reporter");
        assert_eq!(words(&holders(Role::Admin)), "admin");
    }

    #[test]
    fn tags_are_the_first_path_segment() {
        assert_eq!(tag_of("/api/v1/devices/{id}/pin"), "devices");
        assert_eq!(tag_of("/api/v1/openapi.json"), "openapi");
        assert_eq!(tag_of("/metrics"), "health");
    }
}

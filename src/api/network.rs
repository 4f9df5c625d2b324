//! `/network-requirements`: the exact outbound rules an IQ's network needs, as JSON (default)
//! or, with `?format=text|nftables|iptables` (and `?chain=`), as text/plain.

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::auth::{Authorized, Viewer};
use super::error::{ApiError, ApiQuery};
use crate::network::{Chain, Format, NetworkRequirements, PassiveKind, PortRange, Rule};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::default().routes(routes!(network_requirements))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct Params {
    /// `json` (the default), or the rules as text: `text`, `nftables` or `iptables`.
    #[param(value_type = Option<FormatName>, inline)]
    format: Option<String>,
    /// With `nftables` or `iptables`: the chain the rules go into (1-32 ASCII letters,
    /// digits, `_` or `-`, starting with a letter; default `forward`).
    #[param(pattern = r"^[A-Za-z][A-Za-z0-9_-]{0,31}$")]
    chain: Option<String>,
}

/// The schema of a `format` name.
struct FormatName;

impl utoipa::PartialSchema for FormatName {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .enum_values(Some(Format::NAMES))
            .into()
    }
}
impl ToSchema for FormatName {
    fn name() -> std::borrow::Cow<'static, str> {
        std::borrow::Cow::Borrowed("NetworkFormat")
    }
}

/// The exact outbound rules an IQ's network must allow.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = NetworkRequirements)]
struct RequirementsView {
    /// Every rule is outbound from the IQ.
    direction: &'static str,
    /// It needs no inbound rule at all.
    inbound: &'static str,
    rules: Vec<RuleView>,
    tls_versions: [&'static str; 2],
    /// `ftps.public_host`: the IPv4 address or DNS name IQs connect to.
    host: String,
    /// True when `host` is a DNS name: the site's DNS must resolve it.
    host_is_dns_name: bool,
    /// The control port as IQs see it.
    control_port: u16,
    passive_mode: PassiveModeView,
    /// The ports passive data connections go to: the range, or with `passive_mode` `same`
    /// the control port (first = last = `control_port`).
    passive_ports: PortRangeView,
    /// IQs served at once from one client (NAT) address; the next gets 421. 0 = no limit.
    max_sessions_per_ip: u32,
    /// How long the server waits for the IQ's data connection after a PASV/EPSV reply.
    data_connect_timeout_secs: u64,
    /// Whether `fwdist doctor` can log in with the built-in probe account.
    probe_enabled: bool,
    /// The command that checks a site from the IQ's network.
    check: String,
    notes: Vec<String>,
}

/// One outbound rule.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = NetworkRule)]
struct RuleView {
    /// `ftps-control` (with `passive_mode` `same`, also the passive data connections) or
    /// `ftps-passive-data`.
    purpose: &'static str,
    protocol: &'static str,
    /// The address IQs connect to.
    host: String,
    first_port: u16,
    last_port: u16,
}

/// Where passive data connections go (`ftps.passive_ports`): `range`, ports of their own
/// (a second rule, `ftps-passive-data`); or `same`, the control port (one rule,
/// `ftps-control`, carries control and data).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
#[schema(as = PassiveMode)]
enum PassiveModeView {
    Range,
    Same,
}

/// An inclusive port range.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = PortRange)]
struct PortRangeView {
    first: u16,
    last: u16,
}

impl RequirementsView {
    fn new(n: &NetworkRequirements) -> Self {
        // Destructured whole: a new field cannot be left out of the answer.
        let NetworkRequirements {
            direction,
            inbound,
            rules,
            tls_versions,
            host,
            host_is_dns_name,
            control_port,
            passive_mode,
            passive_ports,
            max_sessions_per_ip,
            data_connect_timeout_secs,
            probe_enabled,
            check,
            notes,
        } = n;
        let PortRange { first, last } = *passive_ports;
        RequirementsView {
            direction,
            inbound,
            rules: rules
                .iter()
                .map(|r| {
                    let Rule {
                        purpose,
                        protocol,
                        host,
                        first_port,
                        last_port,
                    } = r;
                    RuleView {
                        purpose,
                        protocol,
                        host: host.clone(),
                        first_port: *first_port,
                        last_port: *last_port,
                    }
                })
                .collect(),
            tls_versions: *tls_versions,
            host: host.clone(),
            host_is_dns_name: *host_is_dns_name,
            control_port: *control_port,
            passive_mode: match passive_mode {
                PassiveKind::Range => PassiveModeView::Range,
                PassiveKind::Same => PassiveModeView::Same,
            },
            passive_ports: PortRangeView { first, last },
            max_sessions_per_ip: *max_sessions_per_ip,
            data_connect_timeout_secs: *data_connect_timeout_secs,
            probe_enabled: *probe_enabled,
            check: check.clone(),
            notes: notes.clone(),
        }
    }
}

/// The ports, ranges and protocols an IQ's network must allow
///
/// As JSON, or as text ready for a firewall with `format`.
#[utoipa::path(
    get,
    path = "/network-requirements",
    params(Params),
    responses(
        (status = 200, description = "The rules: JSON by default, text/plain with `format`.",
         content(
            (RequirementsView = "application/json"),
            (String = "text/plain"),
         )),
    ),
    extensions(("x-fwdist-role" = json!("viewer"))),
)]
async fn network_requirements(
    _: Authorized<Viewer>,
    State(st): State<AppState>,
    ApiQuery(p): ApiQuery<Params>,
) -> Result<Response, ApiError> {
    let format = match p.format.as_deref() {
        None => Format::Json,
        Some(f) => Format::parse(f).map_err(|e| ApiError::BadRequest(e.to_string()))?,
    };
    let chain = p
        .chain
        .as_deref()
        .map(Chain::parse)
        .transpose()
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    if format == Format::Json {
        return Ok(Json(RequirementsView::new(&st.network)).into_response());
    }
    let body = st
        .network
        .render(format, chain.as_ref())
        .map_err(|e| ApiError::Internal(Box::new(e)))?;
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response())
}

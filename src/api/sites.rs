//! `GET /sites`: the customer sites whose firewall or NAT is in the way (issue 13). Each
//! client address with FTPS failures since start (`crate::diagnostics`), newest first, with
//! what failed, the `network-requirements` rule that fixes it and the `fwdist doctor`
//! command to run there. The support desk's page; no database read.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::auth::{Authorized, Viewer};
use super::diagnostics::CountsView;
use super::error::{ApiError, ApiQuery};
use crate::diagnostics::{Counts, Row};
use crate::network::{NetworkRequirements, PassiveKind};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::default().routes(routes!(list_sites))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct SitesQuery {
    /// Sites answered, 1-1000 (default 100).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    limit: Option<String>,
}

/// Client addresses with FTPS failures, newest first.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Sites)]
struct SitesView {
    /// Addresses with failures (the counters keep at most 10,000).
    total: usize,
    items: Vec<SiteView>,
}

/// One client address (a site's NAT address, usually) and what failed from it.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Site)]
struct SiteView {
    client_ip: String,
    #[serde(flatten)]
    counts: CountsView,
    /// Each kind of failure seen, with the rule that fixes it.
    problems: Vec<Problem>,
    /// Run this on the site's network to check it step by step.
    doctor: String,
}

/// One kind of failure and its fix.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[schema(as = SiteProblem)]
pub struct Problem {
    /// `passive_offer_unused`, `data_tls_failure`, `data_connection_unbound` or
    /// `session_refused`.
    #[schema(value_type = String)]
    kind: &'static str,
    count: u64,
    /// What happened, in words.
    what: String,
    /// The network-requirements rule or note that fixes it.
    fix: String,
}

/// `1 passive offer`, `3 passive offers`.
fn counted(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

fn endpoint(nr: &NetworkRequirements) -> String {
    let p = nr.passive_ports;
    match nr.passive_mode {
        PassiveKind::Same => format!(
            "tcp  {}:{}  FTPS control and passive data (one port)",
            nr.host, nr.control_port
        ),
        PassiveKind::Range => format!("tcp  {}:{}-{}  FTPS passive data", nr.host, p.first, p.last),
    }
}

/// The problems behind `c`, each with its fix from `nr`.
pub fn problems(c: &Counts, nr: &NetworkRequirements) -> Vec<Problem> {
    let mut out = Vec::new();
    if c.passive_offers_unused > 0 {
        let port = c
            .last_unused_port
            .map_or_else(String::new, |p| format!(" (last: port {p})"));
        out.push(Problem {
            kind: "passive_offer_unused",
            count: c.passive_offers_unused,
            what: format!(
                "{} got no data connection within {} s{port}",
                counted(c.passive_offers_unused, "passive offer"),
                nr.data_connect_timeout_secs
            ),
            fix: format!("allow outbound {} from the IQs (every port of it)", endpoint(nr)),
        });
    }
    if c.data_tls_failures > 0 {
        out.push(Problem {
            kind: "data_tls_failure",
            count: c.data_tls_failures,
            what: format!(
                "{} data connections failed their TLS handshake",
                c.data_tls_failures
            ),
            fix: format!(
                "TLS 1.2 or 1.3 on every data connection: no TLS inspection, proxy or FTP helper \
                 (ALG) on {}",
                endpoint(nr)
            ),
        });
    }
    if c.data_connections_unbound > 0 {
        out.push(Problem {
            kind: "data_connection_unbound",
            count: c.data_connections_unbound,
            what: format!(
                "{} did not resume the control connection's TLS session",
                counted(c.data_connections_unbound, "data connection")
            ),
            fix: "each data connection must resume the control connection's TLS session from the \
                  same address: the NAT must map an IQ's control and data connections to one \
                  public address, and the client must reuse its TLS session"
                .to_owned(),
        });
    }
    if c.sessions_refused > 0 {
        out.push(Problem {
            kind: "session_refused",
            count: c.sessions_refused,
            what: format!(
                "{} sessions refused with 421 (too many from this address)",
                c.sessions_refused
            ),
            fix: format!(
                "at most {} IQs behind one NAT address are served at once; more get 421 and \
                 retry: spread them over more public addresses, or raise ftps.max_sessions_per_ip",
                nr.max_sessions_per_ip
            ),
        });
    }
    out
}

/// Sites with FTPS failures, newest first
///
/// Each client address with unused passive offers (with the last port), data-channel TLS
/// failures, data connections that did not resume their session, or `421` refusals since
/// the server started; each failure with the network-requirements rule that fixes it, and
/// the `fwdist doctor` command to run on the site's network.
#[utoipa::path(
    get,
    path = "/sites",
    params(SitesQuery),
    responses((status = 200, description = "The sites.", body = SitesView)),
    extensions(("x-fwdist-role" = json!("viewer"))),
)]
async fn list_sites(
    _: Authorized<Viewer>,
    State(st): State<AppState>,
    ApiQuery(q): ApiQuery<SitesQuery>,
) -> Result<Json<SitesView>, ApiError> {
    let page = super::PageQuery {
        limit: q.limit,
        after: None,
    }
    .page()?;
    let rows = st.diagnostics.snapshot().client_ips;
    let total = rows.len();
    let items = rows
        .into_iter()
        .take(page.limit as usize)
        .map(|Row { key, counts }| SiteView {
            client_ip: key.to_string(),
            problems: problems(&counts, &st.network),
            counts: CountsView::new(counts),
            doctor: st.network.check.clone(),
        })
        .collect();
    Ok(Json(SitesView { total, items }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::PassiveMode;
    use crate::network::Site;

    fn nr(passive: PassiveMode) -> NetworkRequirements {
        NetworkRequirements::new(&Site {
            host: "203.0.113.7".into(),
            host_is_dns_name: false,
            control_port: 2121,
            passive,
            max_sessions_per_ip: 16,
            data_connect_timeout_secs: 5,
            probe_enabled: true,
        })
    }

    #[test]
    fn each_failure_names_its_rule() {
        let c = Counts {
            passive_offers_unused: 3,
            last_unused_port: Some(50002),
            sessions_refused: 2,
            ..Counts::default()
        };
        let p = problems(&c, &nr(PassiveMode::Range(50000..=50003)));
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].kind, "passive_offer_unused");
        assert_eq!(
            p[0].what,
            "3 passive offers got no data connection within 5 s (last: port 50002)"
        );
        assert_eq!(
            p[0].fix,
            "allow outbound tcp  203.0.113.7:50000-50003  FTPS passive data from the IQs (every port of it)"
        );
        assert!(
            p[1].fix.starts_with("at most 16 IQs behind one NAT address"),
            "{}",
            p[1].fix
        );
        let one = problems(&c, &nr(PassiveMode::Same));
        assert!(
            one[0]
                .fix
                .contains("203.0.113.7:2121  FTPS control and passive data"),
            "{}",
            one[0].fix
        );
        assert!(problems(&Counts::default(), &nr(PassiveMode::Same)).is_empty());
    }
}

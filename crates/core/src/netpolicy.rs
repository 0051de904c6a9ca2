//! Which network addresses a tenant may make Svalbard connect to.
//!
//! A tenant names hosts (a planet's server today, other outbound addresses later) and shared
//! workers that hold the platform's secrets connect to them. By default the addresses that reach
//! the platform itself are refused: loopback, link-local, the cloud metadata services, the
//! unspecified address, Unix sockets and the control database's own server. The platform's
//! `targets.allow` re-admits some of them, `targets.deny` refuses more; deny wins. The control
//! database itself is refused whatever the lists say.
//!
//! An allowed *name* only lifts the rules about names (a metadata service's name): the addresses
//! it resolves to still pass the address rules unless an allowed *network* covers them, since
//! whoever controls the name's DNS chooses those addresses. A tenant's own lists replace the
//! platform's `allow` for that tenant, while the platform's `deny` keeps applying on top of the
//! tenant's: the platform's deny protects the platform, whatever a tenant was granted.
//!
//! [`decide`] is the whole decision and is pure: names are resolved by [`resolve`] first, and the
//! caller connects to exactly the addresses that were decided on.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One entry of an allow or deny list: a network, or a host name (`db.example.com`, or
/// `*.example.com` for every name below it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Net(IpNet),
    Name(String),
    /// `*.suffix`: every name ending in `.suffix`.
    Below(String),
}

impl Entry {
    /// Parses `10.0.0.0/8`, `::1`, `db.internal` or `*.internal`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if let Ok(net) = s.parse::<IpNet>() {
            return Ok(Self::Net(net.trunc()));
        }
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(Self::Net(IpNet::from(ip)));
        }
        let (below, name) = match s.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        let valid = !name.is_empty()
            && name.len() <= 253
            && name.split('.').all(|label| {
                !label.is_empty()
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            });
        if !valid {
            return Err(format!("`{s}` is neither a network (CIDR or address) nor a host name"));
        }
        let name = name.to_ascii_lowercase();
        Ok(if below { Self::Below(name) } else { Self::Name(name) })
    }

    fn matches_name(&self, host: &str) -> bool {
        match self {
            Self::Net(_) => false,
            Self::Name(n) => n == host,
            Self::Below(suffix) => host.len() > suffix.len() + 1 && host.ends_with(&format!(".{suffix}")),
        }
    }

    fn matches_addr(&self, ip: IpAddr) -> bool {
        matches!(self, Self::Net(net) if net.contains(&ip))
    }
}

impl std::fmt::Display for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Net(n) if n.prefix_len() == n.max_prefix_len() => write!(f, "{}", n.addr()),
            Self::Net(n) => write!(f, "{n}"),
            Self::Name(n) => f.write_str(n),
            Self::Below(n) => write!(f, "*.{n}"),
        }
    }
}

/// Allow and deny lists as written in the configuration or stored on a tenant.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyLists {
    /// Networks (CIDR or single addresses) re-admitted although a default rule refuses them, and
    /// host names (`*.example.com` for a whole domain) re-admitted although a metadata service's
    /// name rule refuses them; a name's resolved addresses still need an allowed network.
    #[serde(default)]
    pub allow: Vec<String>,
    /// Networks and host names refused in addition to the defaults; deny wins over allow.
    #[serde(default)]
    pub deny: Vec<String>,
}

impl PolicyLists {
    /// Every entry that does not parse, with its field (`allow[2]`) and why.
    pub fn errors(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (list, entries) in [("allow", &self.allow), ("deny", &self.deny)] {
            for (i, e) in entries.iter().enumerate() {
                if let Err(msg) = Entry::parse(e) {
                    out.push((format!("{list}[{i}]"), msg));
                }
            }
        }
        out
    }
}

/// Parsed lists with the name of the setting they come from, for refusal messages.
#[derive(Debug, Clone)]
pub struct Policy {
    pub allow: Vec<Entry>,
    /// Each refused entry with the setting it comes from: a tenant's policy is checked against
    /// the platform's deny list too, and a refusal names the list that refused.
    pub deny: Vec<(Entry, &'static str)>,
    /// Where `allow` comes from: `targets` or `the tenant's targetPolicy`.
    pub source: &'static str,
}

impl Policy {
    pub fn parse(lists: &PolicyLists, source: &'static str) -> Result<Self, String> {
        let parse_all = |v: &[String], list: &str| {
            v.iter()
                .map(|e| Entry::parse(e).map_err(|m| format!("{source}.{list}: {m}")))
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(Self {
            allow: parse_all(&lists.allow, "allow")?,
            deny: parse_all(&lists.deny, "deny")?
                .into_iter()
                .map(|e| (e, source))
                .collect(),
            source,
        })
    }
}

/// The control database: its server's addresses and port, and its name on that server.
#[derive(Debug, Clone, Default)]
pub struct ControlDb {
    pub addrs: Vec<IpAddr>,
    pub port: u16,
    pub database: String,
    /// Set to the control host's name when it did not resolve: its addresses are unknown, so
    /// every address is treated as possibly the control database on its port.
    pub unresolved: Option<String>,
}

impl ControlDb {
    fn is_server(&self, ip: IpAddr, port: u16) -> bool {
        port == self.port && self.addrs.iter().any(|a| canonical(*a) == ip)
    }
}

/// Why a target was refused; the message names the host and the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refusal(pub String);

/// Host names of cloud metadata services, refused like their addresses.
const METADATA_NAMES: &[&str] = &[
    "metadata.google.internal",
    "metadata.goog",
    "metadata",
    "instance-data",
    "instance-data.ec2.internal",
    "metadata.azure.com",
    "metadata.tencentyun.com",
];

/// Metadata addresses outside the link-local range.
const METADATA_ADDRS: &[IpAddr] = &[
    IpAddr::V6(Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254)),
    IpAddr::V4(Ipv4Addr::new(100, 100, 100, 200)),
];

/// `::ffff:127.0.0.1` is 127.0.0.1, and so is `64:ff9b::127.0.0.1` where a NAT64 gateway
/// translates it: rules see the address the connection really reaches.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) if v6.segments()[..6] == [0x64, 0xff9b, 0, 0, 0, 0] => {
            let o = v6.octets();
            IpAddr::V4(Ipv4Addr::new(o[12], o[13], o[14], o[15]))
        }
        other => other,
    }
}

/// The default rule that refuses `ip`, as "… addresses are not allowed".
fn default_rule(ip: IpAddr) -> Option<&'static str> {
    if METADATA_ADDRS.contains(&ip) || ip == IpAddr::V4(Ipv4Addr::new(169, 254, 169, 254)) {
        return Some("cloud metadata addresses are not allowed");
    }
    match ip {
        IpAddr::V4(v4) => {
            if v4.is_loopback() {
                Some("loopback addresses are not allowed")
            } else if v4.is_link_local() {
                Some("link-local addresses are not allowed")
            } else if v4.octets()[0] == 0 {
                Some("unspecified addresses are not allowed")
            } else if v4.is_broadcast() || v4.is_multicast() {
                Some("broadcast and multicast addresses are not allowed")
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            if v6.is_loopback() {
                Some("loopback addresses are not allowed")
            } else if v6.is_unspecified() {
                Some("unspecified addresses are not allowed")
            } else if v6.is_unicast_link_local() {
                Some("link-local addresses are not allowed")
            } else if v6.is_multicast() {
                Some("broadcast and multicast addresses are not allowed")
            } else {
                None
            }
        }
    }
}

fn bare(host: &str) -> &str {
    host.trim_start_matches('[').trim_end_matches(']')
}

/// The rules about the name itself, decided before it is resolved: a socket path, a denied name,
/// a metadata service's name. An allow entry naming the host lifts only the metadata name rule;
/// its addresses are decided on their own.
pub fn check_name(policy: &Policy, host: &str) -> Result<(), Refusal> {
    let refuse = |why: String| Err(Refusal(format!("host {host} is refused: {why}")));
    if host.starts_with('/') || host.starts_with('@') {
        return refuse("Unix socket paths are not allowed; name a host and port".into());
    }
    let name = bare(host).to_ascii_lowercase();
    if name.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    if let Some((e, source)) = policy.deny.iter().find(|(e, _)| e.matches_name(&name)) {
        return refuse(format!("{e} is listed in {source}.deny"));
    }
    let allowed = policy.allow.iter().any(|e| e.matches_name(&name));
    if !allowed && METADATA_NAMES.contains(&name.trim_end_matches('.')) {
        return refuse(format!(
            "cloud metadata addresses are not allowed ({}.allow)",
            policy.source
        ));
    }
    Ok(())
}

/// Decides whether `host:port` (which resolved to `addrs`) may be connected to, for a connection
/// to `database` (if the protocol has one). Every address must pass.
pub fn decide(
    policy: &Policy,
    control: &ControlDb,
    host: &str,
    port: u16,
    database: Option<&str>,
    addrs: &[IpAddr],
) -> Result<(), Refusal> {
    check_name(policy, host)?;
    let refuse = |why: String| Err(Refusal(format!("host {host} is refused: {why}")));
    let is_literal = bare(host).parse::<IpAddr>().is_ok();
    if addrs.is_empty() {
        return refuse("it resolves to no address".into());
    }
    for &raw in addrs {
        let ip = canonical(raw);
        // Through a name, say what it resolved to; a literal speaks for itself.
        let via = if is_literal {
            String::new()
        } else {
            format!("it resolves to {ip}, and ")
        };
        if control.is_server(ip, port) && database.is_some_and(|d| d == control.database) {
            return refuse(format!("{via}that is Svalbard's own control database"));
        }
        // Unknown addresses cannot be told apart from the control database's: refuse its port
        // everywhere until its host resolves again, rather than protect nothing.
        if let Some(control_host) = control.unresolved.as_deref().filter(|_| port == control.port) {
            return refuse(format!(
                "port {port} is the control database's, and its host {control_host} does not resolve now"
            ));
        }
        if let Some((e, source)) = policy.deny.iter().find(|(e, _)| e.matches_addr(ip)) {
            return refuse(format!("{via}{e} is listed in {source}.deny"));
        }
        // Only a network re-admits an address: an allowed name's DNS could point anywhere.
        if policy.allow.iter().any(|e| e.matches_addr(ip)) {
            continue;
        }
        if let Some(rule) = default_rule(ip) {
            return refuse(format!("{via}{rule} ({}.allow)", policy.source));
        }
        if control.is_server(ip, port) {
            return refuse(format!(
                "{via}the control database's server is not allowed ({}.allow)",
                policy.source
            ));
        }
    }
    Ok(())
}

/// Resolves `host` once: a literal address is itself, a name every address DNS gives for it.
pub async fn resolve(host: &str, port: u16) -> Result<Vec<IpAddr>, Refusal> {
    if host.starts_with('/') || host.starts_with('@') {
        return Ok(Vec::new());
    }
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(vec![ip]);
    }
    let lookup = tokio::time::timeout(std::time::Duration::from_secs(5), tokio::net::lookup_host((bare, port))).await;
    match lookup {
        Ok(Ok(addrs)) => {
            let mut out: Vec<IpAddr> = addrs.map(|a: SocketAddr| a.ip()).collect();
            out.dedup();
            Ok(out)
        }
        Ok(Err(_)) | Err(_) => Err(Refusal(format!("host {host} is refused: the name does not resolve"))),
    }
}

/// The platform's policy with the control database it guards, ready to check targets.
#[derive(Debug, Clone)]
pub struct Guard {
    platform: Policy,
    control_host: String,
    control_port: u16,
    control_database: String,
}

impl Guard {
    /// From `targets` and the control database's URL.
    pub fn new(lists: &PolicyLists, database_url: Option<&str>) -> anyhow::Result<Self> {
        let platform = Policy::parse(lists, "targets").map_err(|e| anyhow::anyhow!(e))?;
        let (control_host, control_port, control_database) = match database_url {
            Some(url) => {
                let opts: sqlx::postgres::PgConnectOptions = url.parse()?;
                let db = opts.get_database().unwrap_or_else(|| opts.get_username()).to_owned();
                (opts.get_host().to_owned(), opts.get_port(), db)
            }
            None => (String::new(), 0, String::new()),
        };
        Ok(Self {
            platform,
            control_host,
            control_port,
            control_database,
        })
    }

    /// The control database's addresses, resolved now. A socket directory means this machine.
    async fn control(&self) -> ControlDb {
        let mut unresolved = None;
        let addrs = if self.control_host.is_empty() {
            Vec::new()
        } else if self.control_host.starts_with('/') || self.control_host.starts_with('@') {
            vec![IpAddr::V4(Ipv4Addr::LOCALHOST), IpAddr::V6(Ipv6Addr::LOCALHOST)]
        } else {
            match resolve(&self.control_host, self.control_port).await {
                Ok(addrs) if !addrs.is_empty() => addrs,
                _ => {
                    tracing::warn!(host = %self.control_host, "the control database's host does not resolve; its port is refused on every host");
                    unresolved = Some(self.control_host.clone());
                    Vec::new()
                }
            }
        };
        let mut addrs = addrs;
        // A server on a loopback address or a wildcard listener answers on every local address.
        if addrs.iter().any(|a| a.is_loopback() || a.is_unspecified()) {
            addrs.extend([IpAddr::V4(Ipv4Addr::LOCALHOST), IpAddr::V6(Ipv6Addr::LOCALHOST)]);
        }
        ControlDb {
            addrs,
            port: self.control_port,
            database: self.control_database.clone(),
            unresolved,
        }
    }

    /// The policy in force for a tenant: its own `allow` replaces the platform's, its own `deny`
    /// adds to the platform's, which a tenant's policy can never lift.
    pub fn policy_for(&self, tenant: Option<&PolicyLists>) -> Result<Policy, Refusal> {
        match tenant {
            None => Ok(self.platform.clone()),
            Some(lists) => {
                let mut own = Policy::parse(lists, "the tenant's targetPolicy").map_err(Refusal)?;
                let mut deny = self.platform.deny.clone();
                deny.append(&mut own.deny);
                own.deny = deny;
                Ok(own)
            }
        }
    }

    /// Resolves `host` and decides; on success the addresses to connect to (all of them passed).
    pub async fn check(
        &self,
        tenant: Option<&PolicyLists>,
        host: &str,
        port: u16,
        database: Option<&str>,
    ) -> Result<Vec<IpAddr>, Refusal> {
        self.check_databases(tenant, host, port, &[database]).await
    }

    /// Like [`Guard::check`] for a job that connects to several databases of one server: one
    /// lookup, and every database is decided on the addresses the connections will use.
    pub async fn check_databases(
        &self,
        tenant: Option<&PolicyLists>,
        host: &str,
        port: u16,
        databases: &[Option<&str>],
    ) -> Result<Vec<IpAddr>, Refusal> {
        let policy = self.policy_for(tenant)?;
        // Refusals that need no lookup come first: a denied name need not resolve to be refused.
        check_name(&policy, host)?;
        let addrs = resolve(host, port).await?;
        let control = self.control().await;
        for database in databases {
            decide(&policy, &control, host, port, *database, &addrs)?;
        }
        Ok(addrs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn policy(allow: &[&str], deny: &[&str]) -> Policy {
        Policy::parse(
            &PolicyLists {
                allow: allow.iter().map(|s| (*s).to_owned()).collect(),
                deny: deny.iter().map(|s| (*s).to_owned()).collect(),
            },
            "targets",
        )
        .unwrap()
    }

    fn control() -> ControlDb {
        ControlDb {
            addrs: vec![ip("10.0.0.5")],
            port: 5432,
            database: "svalbard".into(),
            unresolved: None,
        }
    }

    type Case = (
        Policy,
        &'static str,
        u16,
        Option<&'static str>,
        Vec<&'static str>,
        Option<&'static str>,
    );

    fn cases() -> Vec<Case> {
        let none = || policy(&[], &[]);
        let loopback = || policy(&["127.0.0.0/8", "::1"], &[]);
        let refused = |s: &'static str| Some(s);
        vec![
            (none(), "db.example.com", 5432, Some("app"), vec!["203.0.113.7"], None),
            (
                none(),
                "127.0.0.1",
                5432,
                Some("app"),
                vec!["127.0.0.1"],
                refused("host 127.0.0.1 is refused: loopback addresses are not allowed (targets.allow)"),
            ),
            (
                none(),
                "::1",
                5432,
                Some("app"),
                vec!["::1"],
                refused("host ::1 is refused: loopback addresses are not allowed (targets.allow)"),
            ),
            (
                none(),
                "64:ff9b::a9fe:a9fe",
                80,
                None,
                vec!["64:ff9b::a9fe:a9fe"],
                refused("host 64:ff9b::a9fe:a9fe is refused: cloud metadata addresses are not allowed (targets.allow)"),
            ),
            (
                none(),
                "::ffff:127.0.0.1",
                5432,
                Some("app"),
                vec!["::ffff:127.0.0.1"],
                refused("host ::ffff:127.0.0.1 is refused: loopback addresses are not allowed (targets.allow)"),
            ),
            (
                none(),
                "localhost",
                5432,
                Some("app"),
                vec!["127.0.0.1"],
                refused(
                    "host localhost is refused: it resolves to 127.0.0.1, and loopback addresses are not allowed (targets.allow)",
                ),
            ),
            (
                none(),
                "169.254.169.254",
                80,
                None,
                vec!["169.254.169.254"],
                refused("host 169.254.169.254 is refused: cloud metadata addresses are not allowed (targets.allow)"),
            ),
            (
                none(),
                "169.254.1.1",
                5432,
                None,
                vec!["169.254.1.1"],
                refused("host 169.254.1.1 is refused: link-local addresses are not allowed (targets.allow)"),
            ),
            (
                none(),
                "fe80::1",
                5432,
                None,
                vec!["fe80::1"],
                refused("host fe80::1 is refused: link-local addresses are not allowed (targets.allow)"),
            ),
            (
                none(),
                "fd00:ec2::254",
                80,
                None,
                vec!["fd00:ec2::254"],
                refused("host fd00:ec2::254 is refused: cloud metadata addresses are not allowed (targets.allow)"),
            ),
            (
                none(),
                "metadata.google.internal",
                80,
                None,
                vec!["203.0.113.9"],
                refused(
                    "host metadata.google.internal is refused: cloud metadata addresses are not allowed (targets.allow)",
                ),
            ),
            (
                none(),
                "0.0.0.0",
                5432,
                None,
                vec!["0.0.0.0"],
                refused("host 0.0.0.0 is refused: unspecified addresses are not allowed (targets.allow)"),
            ),
            (
                none(),
                "::",
                5432,
                None,
                vec!["::"],
                refused("host :: is refused: unspecified addresses are not allowed (targets.allow)"),
            ),
            (
                none(),
                "/var/run/postgresql",
                5432,
                None,
                vec![],
                refused("host /var/run/postgresql is refused: Unix socket paths are not allowed; name a host and port"),
            ),
            (
                loopback(),
                "@abstract",
                5432,
                None,
                vec![],
                refused("host @abstract is refused: Unix socket paths are not allowed; name a host and port"),
            ),
            // The control database's server: refused by default, allowed explicitly, but never
            // the control database itself.
            (
                none(),
                "10.0.0.5",
                5432,
                Some("other"),
                vec!["10.0.0.5"],
                refused("host 10.0.0.5 is refused: the control database's server is not allowed (targets.allow)"),
            ),
            (none(), "10.0.0.5", 5433, Some("other"), vec!["10.0.0.5"], None),
            (
                policy(&["10.0.0.5"], &[]),
                "10.0.0.5",
                5432,
                Some("other"),
                vec!["10.0.0.5"],
                None,
            ),
            (
                policy(&["10.0.0.0/8"], &[]),
                "10.0.0.5",
                5432,
                Some("svalbard"),
                vec!["10.0.0.5"],
                refused("host 10.0.0.5 is refused: that is Svalbard's own control database"),
            ),
            (
                policy(&["ctl.internal"], &[]),
                "ctl.internal",
                5432,
                Some("svalbard"),
                vec!["10.0.0.5"],
                refused(
                    "host ctl.internal is refused: it resolves to 10.0.0.5, and that is Svalbard's own control database",
                ),
            ),
            // Allow re-admits a default, deny wins over allow.
            (loopback(), "127.0.0.1", 5432, Some("app"), vec!["127.0.0.1"], None),
            (
                loopback(),
                "localhost",
                5432,
                Some("app"),
                vec!["127.0.0.1", "::1"],
                None,
            ),
            (
                policy(&["127.0.0.0/8"], &[]),
                "localhost",
                5432,
                Some("app"),
                vec!["127.0.0.1", "::1"],
                refused(
                    "host localhost is refused: it resolves to ::1, and loopback addresses are not allowed (targets.allow)",
                ),
            ),
            (
                policy(&["127.0.0.0/8"], &["127.0.0.2"]),
                "127.0.0.2",
                5432,
                None,
                vec!["127.0.0.2"],
                refused("host 127.0.0.2 is refused: 127.0.0.2 is listed in targets.deny"),
            ),
            (
                policy(&[], &["10.0.0.0/8"]),
                "db.internal",
                5432,
                None,
                vec!["203.0.113.1", "10.1.2.3"],
                refused(
                    "host db.internal is refused: it resolves to 10.1.2.3, and 10.0.0.0/8 is listed in targets.deny",
                ),
            ),
            (
                policy(&[], &["*.corp.example"]),
                "billing.corp.example",
                5432,
                None,
                vec!["203.0.113.1"],
                refused("host billing.corp.example is refused: *.corp.example is listed in targets.deny"),
            ),
            (
                policy(&[], &["*.corp.example"]),
                "corp.example",
                5432,
                None,
                vec!["203.0.113.1"],
                None,
            ),
            // An allowed name lifts the name rules only: whoever runs its DNS picks the
            // addresses, which still face the address rules unless a network re-admits them.
            (
                policy(&["db.local"], &[]),
                "DB.local",
                5432,
                None,
                vec!["127.0.0.1"],
                refused(
                    "host DB.local is refused: it resolves to 127.0.0.1, and loopback addresses are not allowed (targets.allow)",
                ),
            ),
            (
                policy(&["db.local", "127.0.0.0/8"], &[]),
                "DB.local",
                5432,
                None,
                vec!["127.0.0.1"],
                None,
            ),
            (
                policy(&["*.acme.com"], &[]),
                "x.acme.com",
                80,
                None,
                vec!["169.254.169.254"],
                refused(
                    "host x.acme.com is refused: it resolves to 169.254.169.254, and cloud metadata addresses are not allowed (targets.allow)",
                ),
            ),
            (
                policy(&["*.acme.com"], &[]),
                "x.acme.com",
                5432,
                Some("other"),
                vec!["10.0.0.5"],
                refused(
                    "host x.acme.com is refused: it resolves to 10.0.0.5, and the control database's server is not allowed (targets.allow)",
                ),
            ),
            (
                policy(&["*.acme.com"], &[]),
                "x.acme.com",
                5432,
                Some("svalbard"),
                vec!["10.0.0.5"],
                refused(
                    "host x.acme.com is refused: it resolves to 10.0.0.5, and that is Svalbard's own control database",
                ),
            ),
            (
                policy(&["*.acme.com"], &[]),
                "x.acme.com",
                5432,
                Some("app"),
                vec!["203.0.113.4", "::1"],
                refused(
                    "host x.acme.com is refused: it resolves to ::1, and loopback addresses are not allowed (targets.allow)",
                ),
            ),
            (
                policy(&["*.acme.com"], &[]),
                "x.acme.com",
                5432,
                Some("app"),
                vec!["203.0.113.4"],
                None,
            ),
            (
                policy(&["metadata"], &[]),
                "metadata",
                80,
                None,
                vec!["203.0.113.1"],
                None,
            ),
            (
                policy(&["metadata"], &[]),
                "metadata",
                80,
                None,
                vec!["169.254.169.254"],
                refused(
                    "host metadata is refused: it resolves to 169.254.169.254, and cloud metadata addresses are not allowed (targets.allow)",
                ),
            ),
            (
                none(),
                "nowhere.example",
                5432,
                None,
                vec![],
                refused("host nowhere.example is refused: it resolves to no address"),
            ),
        ]
    }

    #[test]
    fn decisions() {
        for (p, host, port, db, addrs, expected) in cases() {
            let addrs: Vec<IpAddr> = addrs.into_iter().map(ip).collect();
            let got = decide(&p, &control(), host, port, db, &addrs).err().map(|r| r.0);
            assert_eq!(got.as_deref(), expected, "{host}:{port} {db:?} {addrs:?}");
        }
    }

    fn lists(allow: &[&str], deny: &[&str]) -> PolicyLists {
        PolicyLists {
            allow: allow.iter().map(|s| (*s).to_owned()).collect(),
            deny: deny.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    /// A tenant's own lists replace the platform's allow, but the platform's deny stays in force.
    #[test]
    fn a_tenants_policy_keeps_the_platforms_deny() {
        let guard = Guard::new(&lists(&["127.0.0.0/8"], &["10.0.0.0/16", "*.platform.internal"]), None).unwrap();
        let tenant_deny = "the tenant's targetPolicy";
        type TenantCase = (Option<PolicyLists>, &'static str, Vec<&'static str>, Option<String>);
        let cases: Vec<TenantCase> =
            vec![
            (
                Some(lists(&["10.0.0.0/8"], &[])),
                "10.0.1.1",
                vec!["10.0.1.1"],
                Some("host 10.0.1.1 is refused: 10.0.0.0/16 is listed in targets.deny".into()),
            ),
            (
                Some(lists(&["0.0.0.0/0", "db.platform.internal"], &[])),
                "db.platform.internal",
                vec!["203.0.113.1"],
                Some("host db.platform.internal is refused: *.platform.internal is listed in targets.deny".into()),
            ),
            (
                Some(lists(&["10.0.0.0/8"], &[])),
                "app.acme.com",
                vec!["10.1.0.1", "10.0.9.9"],
                Some(
                    "host app.acme.com is refused: it resolves to 10.0.9.9, and 10.0.0.0/16 is listed in targets.deny"
                        .into(),
                ),
            ),
            // What the tenant's allow names outside the platform's deny is re-admitted.
            (Some(lists(&["10.0.0.0/8"], &[])), "10.1.0.1", vec!["10.1.0.1"], None),
            // The tenant's deny adds to the platform's.
            (
                Some(lists(&[], &["198.51.100.0/24"])),
                "198.51.100.1",
                vec!["198.51.100.1"],
                Some(format!("host 198.51.100.1 is refused: 198.51.100.0/24 is listed in {tenant_deny}.deny")),
            ),
            // The platform's allow does not carry over to a tenant with its own lists.
            (
                Some(lists(&[], &[])),
                "127.0.0.1",
                vec!["127.0.0.1"],
                Some(format!(
                    "host 127.0.0.1 is refused: loopback addresses are not allowed ({tenant_deny}.allow)"
                )),
            ),
            (None, "127.0.0.1", vec!["127.0.0.1"], None),
            (
                None,
                "10.0.0.1",
                vec!["10.0.0.1"],
                Some("host 10.0.0.1 is refused: 10.0.0.0/16 is listed in targets.deny".into()),
            ),
        ];
        for (tenant, host, addrs, expected) in cases {
            let p = guard.policy_for(tenant.as_ref()).unwrap();
            let addrs: Vec<IpAddr> = addrs.into_iter().map(ip).collect();
            let got = decide(&p, &ControlDb::default(), host, 5432, Some("app"), &addrs)
                .err()
                .map(|r| r.0);
            assert_eq!(got, expected, "{host} under {tenant:?}");
        }
    }

    /// While the control host does not resolve, nothing on its port can be told apart from it.
    #[test]
    fn an_unresolved_control_host_refuses_its_port_everywhere() {
        let control = ControlDb {
            port: 5432,
            database: "svalbard".into(),
            unresolved: Some("ctl.invalid".into()),
            ..ControlDb::default()
        };
        let open = policy(&["0.0.0.0/0", "::/0"], &[]);
        let refusal = "port 5432 is the control database's, and its host ctl.invalid does not resolve now";
        for (host, db) in [
            ("203.0.113.1", Some("svalbard")),
            ("203.0.113.1", Some("app")),
            ("127.0.0.1", None),
        ] {
            let got = decide(&open, &control, host, 5432, db, &[ip(host)]).unwrap_err().0;
            assert_eq!(got, format!("host {host} is refused: {refusal}"));
        }
        assert!(
            decide(
                &open,
                &control,
                "203.0.113.1",
                5433,
                Some("svalbard"),
                &[ip("203.0.113.1")]
            )
            .is_ok()
        );
    }

    #[tokio::test]
    async fn a_control_host_that_does_not_resolve_fails_closed() {
        let guard = Guard::new(
            &lists(&["0.0.0.0/0", "::/0"], &[]),
            Some("postgres://svalbard@ctl.invalid:5432/control"),
        )
        .unwrap();
        let refused = guard.check(None, "127.0.0.1", 5432, Some("control")).await.unwrap_err();
        assert_eq!(
            refused.0,
            "host 127.0.0.1 is refused: port 5432 is the control database's, and its host ctl.invalid does not resolve now"
        );
        assert!(guard.check(None, "127.0.0.1", 5433, Some("control")).await.is_ok());
    }

    #[test]
    fn entries_parse() {
        assert_eq!(
            Entry::parse("10.1.2.3/8").unwrap(),
            Entry::Net("10.0.0.0/8".parse().unwrap())
        );
        assert_eq!(Entry::parse("::1").unwrap(), Entry::Net("::1/128".parse().unwrap()));
        assert_eq!(
            Entry::parse("*.Example.com").unwrap(),
            Entry::Below("example.com".into())
        );
        assert!(Entry::parse("exa mple").is_err());
        assert!(Entry::parse("").is_err());
        assert!(Entry::parse("10.0.0.0/33").is_err());
    }

    #[tokio::test]
    async fn the_control_database_is_found_from_its_url() {
        let guard = Guard::new(
            &PolicyLists {
                allow: vec!["127.0.0.0/8".into(), "::1".into()],
                deny: vec![],
            },
            Some("postgres://svalbard@localhost:5432/control"),
        )
        .unwrap();
        let refused = guard.check(None, "127.0.0.1", 5432, Some("control")).await.unwrap_err();
        assert_eq!(
            refused.0,
            "host 127.0.0.1 is refused: that is Svalbard's own control database"
        );
        assert!(guard.check(None, "127.0.0.1", 5432, Some("app")).await.is_ok());
    }
}

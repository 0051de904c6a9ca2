//! Drop-in profiles: the documented shapes of the four APIs Svalbard is modelled on, each a thin
//! adapter over the same repositories, job queue and storage as the native routes. Each profile
//! is mounted under a prefix of its own and appears in the OpenAPI document under its own tag:
//!
//! - `guidewire`: `/api/v1/tenants/{tenantId}/starsystems/{projectId}/…` (a star system is a project);
//! - `connectware`: `/profiles/connectware/tenants/{tenantId}/projects/{projectId}/planets/{planetId}`
//!   + `/api/maintenance/db…`, one planet per base URL;
//! - `dbaas`: `/profiles/dbaas/tenants/{tenantId}` + `/api/databases/{db}/backups…`, where `{db}`
//!   is a planet id of the tenant;
//! - `camunda`: `/profiles/camunda/tenants/{tenantId}/projects/{projectId}/planets/{planetId}`
//!   + `/actuator/backupHistory…`, one planet per base URL.

pub mod camunda;
pub mod connectware;
pub mod dbaas;
pub mod guidewire;

/// The prefix of the per-planet profiles below their own root (`/profiles/<name>`).
pub const PLANET_BASE: &str = "/tenants/{tenantId}/projects/{projectId}/planets/{planetId}";

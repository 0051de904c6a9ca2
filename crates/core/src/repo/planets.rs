use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use sqlx::PgPool;

use super::fk_to_not_found;
use crate::crypto::{KeyRing, Sealed};
use crate::domain::{ConnectionView, Engine, Name, Planet, PlanetClass, SslMode};
use crate::error::{Error, Result, is_unique_violation};
use crate::ids::{PlanetId, ProjectId, TenantId};
use crate::page::{Page, PageRequest};

/// A validated new planet.
pub struct NewPlanet {
    pub name: Name,
    pub engine: Engine,
    pub planet_class: PlanetClass,
    pub labels: BTreeMap<String, String>,
    pub connection: Connection,
}

/// Connection settings with the password in clear, as the worker needs them.
#[derive(Debug, Clone)]
pub struct Connection {
    pub host: String,
    pub port: u16,
    pub database: String,
    pub user: String,
    pub sslmode: SslMode,
    pub password: Option<SecretString>,
    /// The address the worker connects to: `host` resolved once and checked against the target
    /// policy, so a name cannot resolve to another address between the check and the connect.
    /// `None` until checked; `host` still names the server for TLS verification.
    pub hostaddr: Option<std::net::IpAddr>,
}

/// A validated partial update; `None` leaves a field as it is. Changing the host, port, user or
/// database without giving a password removes the stored one: a password is meant for one
/// server and account, and must not follow the planet to a server that may read it in clear.
#[derive(Default)]
pub struct PlanetPatch {
    pub name: Option<Name>,
    pub planet_class: Option<PlanetClass>,
    pub labels: Option<BTreeMap<String, String>>,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub database: Option<String>,
    pub user: Option<String>,
    pub sslmode: Option<SslMode>,
    /// `Some(None)` removes the password.
    pub password: Option<Option<SecretString>>,
}

#[derive(sqlx::FromRow)]
struct Row {
    id: PlanetId,
    tenant_id: TenantId,
    project_id: ProjectId,
    name: String,
    engine: String,
    planet_class: String,
    labels: sqlx::types::Json<BTreeMap<String, String>>,
    host: String,
    port: i32,
    database_name: String,
    db_user: String,
    sslmode: String,
    password_sealed: Option<Vec<u8>>,
    password_key_id: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

macro_rules! planet_columns {
    () => {
        "id, tenant_id, project_id, name, engine, planet_class, labels, host, port, database_name, \
                       db_user, sslmode, password_sealed, password_key_id, created_at, updated_at"
    };
}

fn corrupt(what: &str) -> Error {
    Error::Other(anyhow::anyhow!("stored planet has an invalid {what}"))
}

impl Row {
    fn into_planet(self) -> Result<Planet> {
        Ok(Planet {
            id: self.id,
            tenant_id: self.tenant_id,
            project_id: self.project_id,
            name: self.name,
            engine: self.engine.parse().map_err(|_| corrupt("engine"))?,
            planet_class: self.planet_class.parse().map_err(|_| corrupt("class"))?,
            labels: self.labels.0,
            connection: ConnectionView {
                host: self.host,
                port: u16::try_from(self.port).map_err(|_| corrupt("port"))?,
                database: self.database_name,
                user: self.db_user,
                sslmode: self.sslmode.parse().map_err(|_| corrupt("sslmode"))?,
                password_set: self.password_sealed.is_some(),
            },
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

fn seal(
    keys: &KeyRing,
    planet: PlanetId,
    password: Option<&SecretString>,
) -> Result<(Option<Vec<u8>>, Option<String>)> {
    match password {
        None => Ok((None, None)),
        Some(p) => {
            let sealed = keys.seal(p.expose_secret().as_bytes(), planet.0.as_bytes())?;
            Ok((Some(sealed.bytes), Some(sealed.key_id)))
        }
    }
}

fn name_conflict(e: sqlx::Error, name: &str) -> Error {
    if is_unique_violation(&e, "planets_project_id_name_key") {
        Error::Conflict(format!("a planet named `{name}` already exists in this project"))
    } else {
        fk_to_not_found(e, "project")
    }
}

pub async fn create(
    pool: &PgPool,
    keys: &KeyRing,
    tenant: TenantId,
    project: ProjectId,
    new: NewPlanet,
    audit: &super::audit::Entry,
) -> Result<Planet> {
    let id = PlanetId::new();
    let mut tx = pool.begin().await?;
    let (sealed, key_id) = seal(keys, id, new.connection.password.as_ref())?;
    // The project must belong to the tenant: the sub-select yields no row otherwise.
    let row = sqlx::query_as::<_, Row>(concat!(
        "INSERT INTO planets (id, tenant_id, project_id, name, engine, planet_class, labels, host, port,
                              database_name, db_user, sslmode, password_sealed, password_key_id)
         SELECT $1, p.tenant_id, p.id, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14
         FROM projects p WHERE p.tenant_id = $2 AND p.id = $3
         RETURNING ",
        planet_columns!(),
        ""
    ))
    .bind(id)
    .bind(tenant)
    .bind(project)
    .bind(new.name.as_str())
    .bind(new.engine.as_str())
    .bind(new.planet_class.as_str())
    .bind(sqlx::types::Json(&new.labels))
    .bind(&new.connection.host)
    .bind(i32::from(new.connection.port))
    .bind(&new.connection.database)
    .bind(&new.connection.user)
    .bind(new.connection.sslmode.as_str())
    .bind(sealed)
    .bind(key_id)
    .fetch_optional(&mut *tx)
    .await
    .map_err(|e| name_conflict(e, new.name.as_str()))?
    .ok_or(Error::NotFound("project"))?;
    audit.write(&mut tx, Some(id.0)).await?;
    tx.commit().await?;
    row.into_planet()
}

pub async fn list(pool: &PgPool, tenant: TenantId, project: ProjectId, page: PageRequest) -> Result<Page<Planet>> {
    // Distinguish "no such project" from "no planets".
    super::projects::get(pool, tenant, project).await?;
    let rows = sqlx::query_as::<_, Row>(concat!(
        "SELECT ",
        planet_columns!(),
        " FROM planets WHERE tenant_id = $1 AND project_id = $2 AND ($3::uuid IS NULL OR id < $3)
         ORDER BY id DESC LIMIT $4"
    ))
    .bind(tenant)
    .bind(project)
    .bind(page.before)
    .bind(page.fetch())
    .fetch_all(pool)
    .await?;
    let planets = rows.into_iter().map(Row::into_planet).collect::<Result<Vec<_>>>()?;
    Ok(Page::from_rows(planets, page, |p| p.id.0))
}

async fn row(pool: &PgPool, tenant: TenantId, project: ProjectId, planet: PlanetId) -> Result<Row> {
    sqlx::query_as::<_, Row>(concat!(
        "SELECT ",
        planet_columns!(),
        " FROM planets WHERE tenant_id = $1 AND project_id = $2 AND id = $3"
    ))
    .bind(tenant)
    .bind(project)
    .bind(planet)
    .fetch_optional(pool)
    .await?
    .ok_or(Error::NotFound("planet"))
}

pub async fn get(pool: &PgPool, tenant: TenantId, project: ProjectId, planet: PlanetId) -> Result<Planet> {
    row(pool, tenant, project, planet).await?.into_planet()
}

/// A planet of the tenant by its id alone (planet ids are unique across projects).
pub async fn find(pool: &PgPool, tenant: TenantId, planet: PlanetId) -> Result<Planet> {
    sqlx::query_as::<_, Row>(concat!(
        "SELECT ",
        planet_columns!(),
        " FROM planets WHERE tenant_id = $1 AND id = $2"
    ))
    .bind(tenant)
    .bind(planet)
    .fetch_optional(pool)
    .await?
    .ok_or(Error::NotFound("planet"))?
    .into_planet()
}

/// The planet and its connection with the password opened, for the worker.
pub async fn get_with_connection(
    pool: &PgPool,
    keys: &KeyRing,
    tenant: TenantId,
    project: ProjectId,
    planet: PlanetId,
) -> Result<(Planet, Connection)> {
    let r = row(pool, tenant, project, planet).await?;
    let password = match (&r.password_sealed, &r.password_key_id) {
        (Some(bytes), Some(key_id)) => {
            let clear = keys.open(
                &Sealed {
                    key_id: key_id.clone(),
                    bytes: bytes.clone(),
                },
                r.id.0.as_bytes(),
            )?;
            Some(SecretString::from(
                String::from_utf8(clear).map_err(|_| corrupt("password"))?,
            ))
        }
        _ => None,
    };
    let planet = r.into_planet()?;
    let c = &planet.connection;
    let connection = Connection {
        host: c.host.clone(),
        port: c.port,
        database: c.database.clone(),
        user: c.user.clone(),
        sslmode: c.sslmode,
        password,
        hostaddr: None,
    };
    Ok((planet, connection))
}

pub async fn update(
    pool: &PgPool,
    keys: &KeyRing,
    tenant: TenantId,
    project: ProjectId,
    planet: PlanetId,
    patch: PlanetPatch,
    audit: &super::audit::Entry,
) -> Result<Planet> {
    let (password_given, (sealed, key_id)) = match &patch.password {
        None => (false, (None, None)),
        Some(p) => (true, seal(keys, planet, p.as_ref())?),
    };
    let name = patch.name.as_ref().map(Name::as_str);
    let mut tx = pool.begin().await?;
    let row = sqlx::query_as::<_, Row>(concat!(
        "UPDATE planets SET
            name = COALESCE($4, name),
            planet_class = COALESCE($5, planet_class),
            labels = COALESCE($6, labels),
            host = COALESCE($7::text, host),
            port = COALESCE($8::integer, port),
            database_name = COALESCE($9::text, database_name),
            db_user = COALESCE($10::text, db_user),
            sslmode = COALESCE($11, sslmode),
            password_sealed = CASE WHEN $12 THEN $13
                                   WHEN $7::text <> host OR $8::integer <> port OR $9::text <> database_name
                                        OR $10::text <> db_user THEN NULL
                                   ELSE password_sealed END,
            password_key_id = CASE WHEN $12 THEN $14
                                   WHEN $7::text <> host OR $8::integer <> port OR $9::text <> database_name
                                        OR $10::text <> db_user THEN NULL
                                   ELSE password_key_id END,
            updated_at = now()
         WHERE tenant_id = $1 AND project_id = $2 AND id = $3
         RETURNING ",
        planet_columns!(),
        ""
    ))
    .bind(tenant)
    .bind(project)
    .bind(planet)
    .bind(name)
    .bind(patch.planet_class.map(PlanetClass::as_str))
    .bind(patch.labels.as_ref().map(sqlx::types::Json))
    .bind(patch.host.as_deref())
    .bind(patch.port.map(i32::from))
    .bind(patch.database.as_deref())
    .bind(patch.user.as_deref())
    .bind(patch.sslmode.map(SslMode::as_str))
    .bind(password_given)
    .bind(sealed)
    .bind(key_id)
    .fetch_optional(&mut *tx)
    .await
    .map_err(|e| name_conflict(e, name.unwrap_or_default()))?
    .ok_or(Error::NotFound("planet"))?;
    audit.write(&mut tx, Some(planet.0)).await?;
    tx.commit().await?;
    row.into_planet()
}

/// Deletes a planet, refusing while any of its backups is stored.
pub async fn delete(
    pool: &PgPool,
    tenant: TenantId,
    project: ProjectId,
    planet: PlanetId,
    audit: &super::audit::Entry,
) -> Result<()> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT id FROM planets WHERE tenant_id = $1 AND project_id = $2 AND id = $3 FOR UPDATE")
        .bind(tenant)
        .bind(project)
        .bind(planet)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(Error::NotFound("planet"))?;
    let stored: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM backups WHERE tenant_id = $1 AND planet_id = $2 AND status <> 'deleted'",
    )
    .bind(tenant)
    .bind(planet)
    .fetch_one(&mut *tx)
    .await?;
    if stored > 0 {
        return Err(Error::Conflict(format!(
            "the planet still has {stored} backup(s); delete them first so no archive is orphaned"
        )));
    }
    sqlx::query("DELETE FROM planets WHERE tenant_id = $1 AND id = $2")
        .bind(tenant)
        .bind(planet)
        .execute(&mut *tx)
        .await?;
    audit.write(&mut tx, Some(planet.0)).await?;
    tx.commit().await?;
    Ok(())
}

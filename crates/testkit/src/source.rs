//! Databases to back up: real PostgreSQL databases with known contents.
#![allow(clippy::missing_panics_doc)]

use sqlx::{Connection, PgConnection};

use crate::server_url;

async fn admin() -> anyhow::Result<PgConnection> {
    Ok(PgConnection::connect(&format!("{}/postgres", server_url())).await?)
}

pub async fn connect(db: &str) -> anyhow::Result<PgConnection> {
    Ok(PgConnection::connect(&format!("{}/{db}", server_url())).await?)
}

/// A new database named after `hint`, filled by `setup` (SQL statements separated by `;`).
pub async fn create(hint: &str, setup: &str) -> anyhow::Result<String> {
    let name = format!(
        "svalbard_t_src_{hint}_{}",
        &uuid::Uuid::now_v7().simple().to_string()[20..]
    );
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin().await?)
        .await?;
    let mut conn = connect(&name).await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(setup.to_owned()))
        .execute(&mut conn)
        .await?;
    Ok(name)
}

/// A few tables of different shapes, `rows` rows in the big one.
#[must_use]
pub fn sample_schema(rows: u32) -> String {
    format!(
        "CREATE TABLE customers (id bigint PRIMARY KEY, name text NOT NULL, email text, created timestamptz NOT NULL);
         INSERT INTO customers SELECT g, 'customer ' || g, 'c' || g || '@example.org', timestamptz '2024-01-01' + g * interval '1 minute'
           FROM generate_series(1, {rows}) g;
         CREATE TABLE orders (id serial PRIMARY KEY, customer bigint REFERENCES customers, total numeric(12,2), note jsonb, blob bytea);
         INSERT INTO orders (customer, total, note, blob)
           SELECT 1 + g % {rows}, (g * 1.37)::numeric(12,2), jsonb_build_object('n', g, 'tag', md5(g::text)), decode(md5(g::text), 'hex')
           FROM generate_series(1, {rows} / 2 + 1) g;
         CREATE VIEW big_orders AS SELECT * FROM orders WHERE total > 100;
         CREATE FUNCTION order_count() RETURNS bigint LANGUAGE sql AS 'SELECT count(*) FROM orders';"
    )
}

/// Row count and content hash of every table in `public`, ordered by table name.
pub async fn fingerprint(db: &str) -> anyhow::Result<Vec<(String, i64, String)>> {
    let mut conn = connect(db).await?;
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables
         WHERE table_schema = 'public' AND table_type = 'BASE TABLE' ORDER BY 1",
    )
    .fetch_all(&mut conn)
    .await?;
    let mut out = Vec::new();
    for t in tables {
        let (count, hash): (i64, Option<String>) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT count(*), md5(string_agg(x::text, '|' ORDER BY x::text)) FROM {t} x"
        )))
        .fetch_one(&mut conn)
        .await?;
        out.push((t, count, hash.unwrap_or_default()));
    }
    Ok(out)
}

pub async fn drop(db: &str) -> anyhow::Result<()> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {db} WITH (FORCE)"
    )))
    .execute(&mut admin().await?)
    .await?;
    Ok(())
}

/// A database large enough that dumping it takes seconds, built once per server and shared
/// (read-only) by the tests that need a backup to be caught while running.
pub async fn large() -> anyhow::Result<String> {
    const NAME: &str = "svalbard_src_large_v1";
    let mut conn = admin().await?;
    sqlx::query("SELECT pg_advisory_lock(724312)")
        .execute(&mut conn)
        .await?;
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(NAME)
        .fetch_one(&mut conn)
        .await?;
    let result = if exists {
        Ok(())
    } else {
        async {
            let building = format!("{NAME}_building");
            sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {building}")))
                .execute(&mut conn)
                .await?;
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {building}")))
                .execute(&mut conn)
                .await?;
            let mut db = connect(&building).await?;
            // Random text compresses like real data rather than like a run of zeros.
            sqlx::raw_sql(
                "CREATE TABLE events AS
                   SELECT g AS id, md5(random()::text) || md5(random()::text) AS a,
                          md5(g::text) AS b, now() - g * interval '1 second' AS at
                   FROM generate_series(1, 3000000) g",
            )
            .execute(&mut db)
            .await?;
            db.close().await?;
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "ALTER DATABASE {building} RENAME TO {NAME}"
            )))
            .execute(&mut conn)
            .await?;
            anyhow::Ok(())
        }
        .await
    };
    sqlx::query("SELECT pg_advisory_unlock(724312)")
        .execute(&mut conn)
        .await?;
    result.map(|()| NAME.to_owned())
}

/// Ensures role `svalbard_pw` exists with `password`; the test scripts make the server demand
/// a password of this role even where other connections are trusted.
pub async fn password_role(password: &str) -> anyhow::Result<&'static str> {
    let mut conn = admin().await?;
    sqlx::query("SELECT pg_advisory_lock(724313)")
        .execute(&mut conn)
        .await?;
    let result = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DO $$ BEGIN
           IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'svalbard_pw') THEN
             CREATE ROLE svalbard_pw LOGIN;
           END IF;
         END $$;
         ALTER ROLE svalbard_pw PASSWORD '{}'",
        password.replace('\'', "''")
    )))
    .execute(&mut conn)
    .await;
    sqlx::query("SELECT pg_advisory_unlock(724313)")
        .execute(&mut conn)
        .await?;
    result?;
    Ok("svalbard_pw")
}

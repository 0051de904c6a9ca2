//! What the job queue writes on a job's subject (a backup or a restore) when the job ends
//! without the subject recording an outcome itself: one piece of SQL for both tables.

use std::future::Future;

use sqlx::PgConnection;
use uuid::Uuid;

use crate::error::Result;
use crate::jobs::{Cause, SubjectEnd};
use crate::repo::webhooks::{BackupEvent, RestoreEvent};
use crate::webhook::EventType;

/// The row a subject's end returns, and the event it sends.
pub(crate) trait SubjectEvent: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin {
    fn id(&self) -> Uuid;
    fn notify<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        event: EventType,
    ) -> impl Future<Output = Result<u64>> + Send + 'a;
}

impl SubjectEvent for BackupEvent {
    fn id(&self) -> Uuid {
        self.id
    }
    fn notify<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        event: EventType,
    ) -> impl Future<Output = Result<u64>> + Send + 'a {
        BackupEvent::notify(self, conn, event)
    }
}

impl SubjectEvent for RestoreEvent {
    fn id(&self) -> Uuid {
        self.id
    }
    fn notify<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        event: EventType,
    ) -> impl Future<Output = Result<u64>> + Send + 'a {
        RestoreEvent::notify(self, conn, event)
    }
}

/// A table of job subjects and the words of its states.
pub(crate) struct Subject {
    /// `backups` or `restores`.
    pub table: &'static str,
    /// `backup` or `restore`, for the log.
    pub noun: &'static str,
    /// What a `RETURNING` gives for the subject's event.
    pub event_columns: &'static str,
    pub running: &'static str,
    pub in_flight: Vec<&'static str>,
    /// Where a subject whose job failed for good goes.
    pub given_up: fn(Cause) -> &'static str,
    /// Where an in-flight subject without a live job goes.
    pub orphaned: &'static str,
    /// The kind of the subject's job.
    pub job_kind: &'static str,
    /// The event of a subject that failed.
    pub failed: EventType,
}

/// The subject's side of its job's end, inside the queue's fenced transaction: a retry leaves
/// it running with the error shown; giving up ends it as `given_up` says. A subject no longer in
/// flight (a backup being deleted) is left alone.
pub(crate) async fn job_ended<E: SubjectEvent>(
    conn: &mut PgConnection,
    s: &Subject,
    id: Uuid,
    end: SubjectEnd<'_>,
) -> Result<()> {
    match end {
        SubjectEnd::Retrying { error } => {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE {} SET error_message = $2, phase = 'waiting to retry' WHERE id = $1 AND status = $3",
                s.table
            )))
            .bind(id)
            .bind(error)
            .bind(s.running)
            .execute(&mut *conn)
            .await?;
        }
        SubjectEnd::Failed { error, cause } => {
            let ended = sqlx::query_as::<_, E>(sqlx::AssertSqlSafe(format!(
                "UPDATE {} SET status = $2, error_message = $3, phase = NULL, completed_at = now()
                 WHERE id = $1 AND status = ANY($4) RETURNING {}",
                s.table, s.event_columns
            )))
            .bind(id)
            .bind((s.given_up)(cause))
            .bind(error)
            .bind(&s.in_flight)
            .fetch_optional(&mut *conn)
            .await?;
            if let Some(ended) = ended {
                ended.notify(conn, s.failed).await?;
            }
        }
    }
    Ok(())
}

/// Ends in-flight subjects that have no live job (as `orphaned`), with the last error of their
/// job if there was one.
pub(crate) async fn repair_orphaned<E: SubjectEvent>(
    conn: &mut PgConnection,
    s: &Subject,
    live_jobs: &[&str],
) -> Result<u64> {
    let repaired = sqlx::query_as::<_, E>(sqlx::AssertSqlSafe(format!(
        "UPDATE {} x SET status = $2, phase = NULL, completed_at = now(),
                error_message = 'its job ended without recording an outcome'
                                || COALESCE(': ' || (SELECT j.last_error FROM jobs j WHERE j.subject_id = x.id
                                                     ORDER BY j.updated_at DESC LIMIT 1), '')
         WHERE x.status = ANY($1)
           AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.subject_id = x.id AND j.kind = $3 AND j.state = ANY($4))
         RETURNING {}",
        s.table, s.event_columns
    )))
    .bind(&s.in_flight)
    .bind(s.orphaned)
    .bind(s.job_kind)
    .bind(live_jobs)
    .fetch_all(&mut *conn)
    .await?;
    for ended in &repaired {
        tracing::warn!(subject = s.noun, id = %ended.id(), "ended a {} left in flight without a job", s.noun);
        ended.notify(conn, s.failed).await?;
    }
    Ok(repaired.len() as u64)
}

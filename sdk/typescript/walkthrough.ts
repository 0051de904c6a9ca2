// The README's walk-through, driven through a TypeScript client: types generated from
// openapi/openapi.json by openapi-typescript, calls made with openapi-fetch. `tsc` checks every
// call against the document before it runs.
//
// Needs SVALBARD_URL, SVALBARD_PLATFORM_TOKEN, SVALBARD_BIN and SVALBARD_SOURCE_DATABASE, as
// scripts/contract.sh sets them.
import { execFileSync } from "node:child_process";
import { mkdtempSync, writeFileSync, statSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { randomUUID } from "node:crypto";
import createClient from "openapi-fetch";
import type { components, paths } from "./generated/schema.js";

type Backup = components["schemas"]["Backup"];
type Restore = components["schemas"]["Restore"];
type Problem = components["schemas"]["Problem"];

function env(name: string): string {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
}

const steps: string[] = [];
function step(name: string): void {
  steps.push(name);
  console.log(`  ok  ${name}`);
}

function check(cond: unknown, what: string): asserts cond {
  if (!cond) throw new Error(`check failed: ${what}`);
}

/** The body of an answer that must have succeeded with `status`. */
function ok<T>(r: { data?: T; error?: unknown; response: Response }, status: number): T {
  check(r.response.status === status && r.data !== undefined, `expected ${status}, got ${r.response.status}: ${JSON.stringify(r.error)}`);
  return r.data;
}

/** The problem of an answer that must have failed with `status`. */
function problem(r: { error?: Problem; response: Response }, status: number): Problem {
  check(r.response.status === status && r.error !== undefined, `expected ${status}, got ${r.response.status}`);
  check(r.response.headers.get("content-type")?.startsWith("application/problem+json"), "problem content type");
  check(r.error.status === status, "problem status");
  return r.error;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function main(): Promise<void> {
  const baseUrl = env("SVALBARD_URL");
  const source = env("SVALBARD_SOURCE_DATABASE");
  const api = createClient<paths>({ baseUrl, headers: { Authorization: `Bearer ${env("SVALBARD_PLATFORM_TOKEN")}` } });
  const suffix = randomUUID().slice(0, 8);

  const tenant = ok(await api.POST("/api/v1/tenants", { body: { name: `ts-${suffix}` } }), 201);
  step(`tenant ${tenant.name}`);
  const tenantId = tenant.id;
  const project = ok(
    await api.POST("/api/v1/tenants/{tenantId}/projects", {
      params: { path: { tenantId }, header: { "Idempotency-Key": `ts-${suffix}` } },
      body: { name: "shop" },
    }),
    201,
  );
  step(`project ${project.name}`);
  const projectId = project.id;
  const planet = ok(
    await api.POST("/api/v1/tenants/{tenantId}/projects/{projectId}/planets", {
      params: { path: { tenantId, projectId } },
      body: {
        name: "orders",
        engine: "postgresql",
        planetClass: "test",
        connection: { host: "127.0.0.1", port: 5432, database: source, user: "postgres", sslmode: "disable" },
      },
    }),
    201,
  );
  check(planet.engine === "postgresql" && planet.connection.sslmode === "disable", "planet as sent");
  step(`planet ${planet.name} (${planet.engine})`);
  const planetId = planet.id;

  let backup: Backup = ok(
    await api.POST("/api/v1/tenants/{tenantId}/projects/{projectId}/planets/{planetId}/backups", {
      params: { path: { tenantId, projectId, planetId } },
      body: { retentionPeriodInDays: 10, metadata: { name: "typescript walk-through" } },
    }),
    201,
  );
  step(`backup ${backup.id} ${backup.status}`);
  const backupPath = { tenantId, projectId, backupId: backup.id };
  for (const deadline = Date.now() + 120_000; backup.status === "scheduled" || backup.status === "running"; ) {
    check(Date.now() < deadline, "the backup finishes in time");
    await sleep(300);
    backup = ok(await api.GET("/api/v1/tenants/{tenantId}/projects/{projectId}/backups/{backupId}", { params: { path: backupPath } }), 200);
  }
  check(backup.status === "succeeded", `backup ${backup.status}: ${backup.errorMessage}`);
  step(`backup succeeded: ${backup.sizeBytes} bytes, ${backup.checksum}`);

  check(backup.encryption === "age", `encryption ${backup.encryption}`);
  const link = ok(await api.GET("/api/v1/tenants/{tenantId}/projects/{projectId}/backups/{backupId}/archive", { params: { path: backupPath } }), 200);
  const keys = ok(await api.GET("/api/v1/tenants/{tenantId}/keys/export", { params: { path: { tenantId } } }), 200);
  const download = await fetch(link.downloadUrl);
  check(download.status === 200, `download answered ${download.status}`);
  const dir = mkdtempSync(join(tmpdir(), "svalbard-ts-"));
  try {
    const file = join(dir, "backup.svb.zst.age");
    writeFileSync(file, Buffer.from(await download.arrayBuffer()));
    check(statSync(file).size === backup.sizeBytes, "downloaded size");
    const key = join(dir, "tenant.key");
    writeFileSync(key, keys.identityFile);
    const plain = join(dir, "backup.svb.zst");
    execFileSync("age", ["-d", "-i", key, "-o", plain, file], { stdio: "inherit" });
    execFileSync("zstd", ["-q", "-t", plain], { stdio: "inherit" });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  step("archive downloaded through the pre-signed URL; age -d with the exported key, then zstd -t, pass");

  const target = `${source}_ts_${suffix}`;
  let restore: Restore = ok(
    await api.POST("/api/v1/tenants/{tenantId}/projects/{projectId}/backups/{backupId}/restores", {
      params: { path: backupPath },
      body: { targetDatabase: target },
    }),
    202,
  );
  for (const deadline = Date.now() + 120_000; restore.status === "scheduled" || restore.status === "running"; ) {
    check(Date.now() < deadline, "the restore finishes in time");
    await sleep(300);
    restore = ok(
      await api.GET("/api/v1/tenants/{tenantId}/projects/{projectId}/restores/{restoreId}", {
        params: { path: { tenantId, projectId, restoreId: restore.id } },
      }),
      200,
    );
  }
  check(restore.status === "succeeded", `restore ${restore.status}: ${restore.errorMessage}`);
  check(restore.verification && restore.verification.tables >= 1, "restore verified");
  step(`restored into ${target}: ${restore.verification.tables} tables, ${restore.verification.rows} rows`);

  const planetPath = { tenantId, projectId, planetId };
  const schedule = ok(
    await api.PUT("/api/v1/tenants/{tenantId}/projects/{projectId}/planets/{planetId}/schedule", {
      params: { path: planetPath },
      body: { cron: "30 2 * * *", timezone: "Europe/Berlin", retention: { keepDaily: 7, keepWeekly: 4 } },
    }),
    201,
  );
  step(`schedule ${schedule.cron} ${schedule.timezone}, next run ${schedule.nextRunAt}`);
  const preview = ok(
    await api.GET("/api/v1/tenants/{tenantId}/projects/{projectId}/planets/{planetId}/retention/preview", { params: { path: planetPath } }),
    200,
  );
  check(preview.keep.some((v) => v.backupId === backup.id), "the preview keeps the backup");
  step(`retention preview: keeps ${preview.keep.length}, deletes ${preview.delete.length}`);
  const pinned = ok(
    await api.PATCH("/api/v1/tenants/{tenantId}/projects/{projectId}/backups/{backupId}", { params: { path: backupPath }, body: { pinned: true } }),
    200,
  );
  check(pinned.pinned, "pinned");
  step("backup pinned");
  const deleted = ok(await api.DELETE("/api/v1/tenants/{tenantId}/projects/{projectId}/backups/{backupId}", { params: { path: backupPath } }), 202);
  check(deleted.status === "deleting" || deleted.status === "deleted", `deleted is ${deleted.status}`);
  step(`backup ${deleted.status}`);

  const bad = problem(await api.POST("/api/v1/tenants/{tenantId}/projects", { params: { path: { tenantId } }, body: { name: "Not Valid" } }), 400);
  check(bad.errors?.some((e) => e.field === "name"), "the problem names the field");
  step(`bad body: ${bad.title} naming \`name\``);
  const missing = problem(
    await api.GET("/api/v1/tenants/{tenantId}/projects/{projectId}/backups/{backupId}", { params: { path: { tenantId, projectId, backupId: randomUUID() } } }),
    404,
  );
  step(`missing id: ${missing.title}`);
  const token = execFileSync(env("SVALBARD_BIN"), ["token", "--tenant", tenantId, "--role", "viewer", "--ttl", "10m"], { encoding: "utf8" }).trim();
  const viewer = createClient<paths>({ baseUrl, headers: { Authorization: `Bearer ${token}` } });
  const weak = problem(
    await viewer.POST("/api/v1/tenants/{tenantId}/projects/{projectId}/planets/{planetId}/backups", { params: { path: planetPath }, body: {} }),
    403,
  );
  step(`wrong role: ${weak.title}`);
  console.log(`typescript walk-through: all ${steps.length} steps ok`);
}

main().catch((e: unknown) => {
  console.error(`typescript walk-through: failed after ${steps.length} steps`);
  console.error(e);
  process.exit(1);
});

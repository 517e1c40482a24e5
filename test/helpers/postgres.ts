/**
 * A throwaway PostgreSQL cluster for tests: Debian's server binaries, `initdb` into a temporary
 * directory (as the `postgres` account when we run as root: the server refuses root), trust
 * authentication, a free port on 127.0.0.1, and optionally `ssl=on` with a certificate the test made.
 * Also the psql runner the Postgres tests share.
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import {
  appendFileSync,
  chmodSync,
  chownSync,
  copyFileSync,
  existsSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
} from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";

function commandWorks(command: string, args: string[]): boolean {
  return spawnSync(command, args, { stdio: "ignore" }).status === 0;
}

export const psqlAvailable = commandWorks("psql", ["--version"]);

/** Environment without PG* variables, so only the connection string decides. */
export function cleanEnv(): NodeJS.ProcessEnv {
  return Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith("PG")));
}

export interface PsqlRun {
  code: number | null;
  stdout: string;
  stderr: string;
  /** Wall clock from spawn to exit. */
  ms: number;
}

/**
 * Runs `psql CONNINFO -X ARGS...` (no ~/.psqlrc) with a clean environment (plus `options.env`).
 * `onSpawn` gets the child, e.g. to interrupt it; it is killed after `timeoutMs` so a hanging
 * connection fails the test instead.
 */
export function runPsql(
  conninfo: string,
  args: string[],
  onSpawn?: (child: ChildProcess) => void,
  options: { timeoutMs?: number; env?: NodeJS.ProcessEnv } = {},
): Promise<PsqlRun> {
  const timeoutMs = options.timeoutMs ?? 30_000;
  return new Promise((resolve) => {
    const started = performance.now();
    const child = spawn("psql", [conninfo, "-X", ...args], {
      env: { ...cleanEnv(), ...options.env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout?.on("data", (chunk: Buffer) => {
      stdout += chunk.toString("utf8");
    });
    child.stderr?.on("data", (chunk: Buffer) => {
      stderr += chunk.toString("utf8");
    });
    const timer = setTimeout(() => {
      stderr += `\n[test: psql killed after ${timeoutMs} ms]`;
      child.kill("SIGKILL");
    }, timeoutMs);
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr, ms: performance.now() - started });
    });
    onSpawn?.(child);
  });
}

/** A PostgreSQL server binary directory: "" when on PATH, else Debian's newest versioned directory. */
function findPostgresBin(): string | undefined {
  if (commandWorks("postgres", ["--version"]) && commandWorks("initdb", ["--version"])) return "";
  const root = "/usr/lib/postgresql";
  if (!existsSync(root)) return undefined;
  const versions = readdirSync(root)
    .filter(
      (v) =>
        existsSync(path.join(root, v, "bin", "postgres")) && existsSync(path.join(root, v, "bin", "initdb")),
    )
    .sort((a, b) => Number(b) - Number(a));
  return versions[0] === undefined ? undefined : path.join(root, versions[0], "bin");
}

/** The server refuses to run as root: then run it as the `postgres` account, if there is one. */
function serverAccount(): { uid: number; gid: number } | undefined | null {
  if (process.getuid?.() !== 0) return undefined;
  const uid = spawnSync("id", ["-u", "postgres"], { encoding: "utf8" });
  const gid = spawnSync("id", ["-g", "postgres"], { encoding: "utf8" });
  if (uid.status !== 0 || gid.status !== 0) return null;
  return { uid: Number(uid.stdout.trim()), gid: Number(gid.stdout.trim()) };
}

const postgresBin = findPostgresBin();
const account = serverAccount();

/** Why no server can be started here, or false when one can. */
export const postgresSkip: string | false =
  postgresBin === undefined
    ? "no PostgreSQL server binary"
    : account === null
      ? "running as root without a postgres account"
      : false;

/** `pg_ctl`, `pgbench`, … from the same installation as the server. */
export function postgresCommand(name: string): string {
  return postgresBin ? path.join(postgresBin, name) : name;
}

/** The server's major version (`postgres --version`), e.g. 15. */
export function postgresMajor(): number {
  const out = spawnSync(postgresCommand("postgres"), ["--version"], { encoding: "utf8" }).stdout ?? "";
  return Number(/(\d+)(?:\.\d+)?/.exec(out)?.[1] ?? Number.NaN);
}

export interface PostgresOptions {
  /** `ssl=on` with this certificate (chain) and key; without it the server has `ssl=off`. */
  ssl?: { certFile: string; keyFile: string };
  /** Extra `postgresql.conf` settings, e.g. `{ cluster_name: "alpha" }` (values are quoted for you). */
  settings?: Record<string, string>;
}

export interface PostgresServer {
  port: number;
  dir: string;
  /** psql straight to the server (plaintext, user postgres), e.g. `psql(["-c", "create database x"])`. */
  psql(args: string[], database?: string): Promise<PsqlRun>;
  /** Runs one statement directly and returns the unaligned, tuples-only output (throws on failure). */
  query(sql: string, database?: string): Promise<string>;
  /** The server log so far (for failure messages). */
  log(): string;
  stop(): void;
}

async function freePort(): Promise<number> {
  const probe = net.createServer();
  await new Promise<void>((resolve) => probe.listen(0, "127.0.0.1", resolve));
  const { port } = probe.address() as net.AddressInfo;
  await new Promise<void>((resolve) => probe.close(() => resolve()));
  return port;
}

function quoteSetting(value: string): string {
  return `'${value.replaceAll("'", "''")}'`;
}

/** Starts a cluster; throws with initdb's or pg_ctl's output when it cannot. */
export async function startPostgres(options: PostgresOptions = {}): Promise<PostgresServer> {
  if (postgresSkip !== false) throw new Error(`cannot run PostgreSQL: ${postgresSkip}`);
  const asServer = () => (account ? { uid: account.uid, gid: account.gid } : {});
  const dir = mkdtempSync(path.join(tmpdir(), "tlsroute-pg-"));
  if (account) chownSync(dir, account.uid, account.gid);
  const data = path.join(dir, "data");
  const logFile = path.join(dir, "log");
  const stop = () => {
    spawnSync(postgresCommand("pg_ctl"), ["-D", data, "-m", "immediate", "-w", "stop"], {
      ...asServer(),
      stdio: "ignore",
      env: cleanEnv(),
    });
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    const port = await freePort();
    const init = spawnSync(
      postgresCommand("initdb"),
      ["-D", data, "-A", "trust", "-U", "postgres", "--no-sync"],
      { ...asServer(), encoding: "utf8", env: cleanEnv() },
    );
    if (init.status !== 0) throw new Error(`initdb failed:\n${init.stderr}`);

    const settings: Record<string, string> = {
      port: String(port),
      listen_addresses: "127.0.0.1",
      unix_socket_directories: dir,
      fsync: "off",
      ...options.settings,
    };
    if (options.ssl) {
      // The server wants its key owned by itself and unreadable to others.
      const certFile = path.join(dir, "server.crt");
      const keyFile = path.join(dir, "server.key");
      copyFileSync(options.ssl.certFile, certFile);
      copyFileSync(options.ssl.keyFile, keyFile);
      chmodSync(keyFile, 0o600);
      if (account) {
        chownSync(certFile, account.uid, account.gid);
        chownSync(keyFile, account.uid, account.gid);
      }
      Object.assign(settings, { ssl: "on", ssl_cert_file: certFile, ssl_key_file: keyFile });
    } else settings.ssl = "off";
    appendFileSync(
      path.join(data, "postgresql.conf"),
      `\n${Object.entries(settings)
        .map(([name, value]) => `${name} = ${quoteSetting(value)}`)
        .join("\n")}\n`,
    );

    const start = spawnSync(postgresCommand("pg_ctl"), ["-D", data, "-l", logFile, "-w", "start"], {
      ...asServer(),
      encoding: "utf8",
      env: cleanEnv(),
    });
    if (start.status !== 0) {
      const log = existsSync(logFile) ? readFileSync(logFile, "utf8") : "";
      throw new Error(`pg_ctl start failed:\n${start.stderr}${start.stdout}\n${log}`);
    }

    const direct = (database: string) =>
      `host=127.0.0.1 port=${port} user=postgres dbname=${database} sslmode=disable gssencmode=disable`;
    const psql = (args: string[], database = "postgres") => runPsql(direct(database), args);
    return {
      port,
      dir,
      psql,
      async query(sql, database = "postgres") {
        const run = await psql(["-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql], database);
        if (run.code !== 0) throw new Error(`psql -c ${JSON.stringify(sql)} failed:\n${run.stderr}`);
        return run.stdout.trim();
      },
      log: () => (existsSync(logFile) ? readFileSync(logFile, "utf8") : ""),
      stop,
    };
  } catch (err) {
    stop();
    throw err;
  }
}

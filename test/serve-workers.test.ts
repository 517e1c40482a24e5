/**
 * `tlsroute serve --workers N`: the built CLI as a subprocess with JSON logs, one primary and N worker
 * processes on the same entry points (port 0 through --entrypoint). What a user checks: every worker
 * answers (whoami@internal names the worker), there is one log with whole lines and one `listening`
 * line per entry point, a reload reaches every worker (and a broken file reaches none), a worker that
 * fails a reload the others apply is replaced by one on the new configuration, a worker that dies is
 * started again, and SIGTERM drains connections in every worker, `stopped` being the last line.
 *
 * Run `npm run build` first: the tests run dist/ through bin/tlsroute.mjs. `TLSROUTE_RUNTIME=bun|deno`
 * runs serve on Bun or Deno instead (Deno with the serve permissions plus --allow-run, which starting
 * the workers needs).
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { X509Certificate } from "node:crypto";
import { existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import net from "node:net";
import path from "node:path";
import { describe, it, type TestContext } from "node:test";
import tls from "node:tls";
import { freePort, pebbleInstalled, startPebble } from "./helpers/pebble.ts";
import { type IssuedCert, makePki } from "./helpers/pki.ts";
import { DENO_FLAGS, runOn, runtimeUnderTest } from "./helpers/runtime.ts";
import { scratchDirs, waitUntil } from "./helpers/scratch.ts";
import { expectRefused, type LogLine, type ServeProcess, startServe } from "./helpers/serve.ts";

const HOST = "127.0.0.1";
const CASE = { timeout: 90_000 };
const RUNTIME = runtimeUnderTest();
const DENO_SERVE_FLAGS = [...DENO_FLAGS.serve, "--allow-run"];

const scratch = scratchDirs("tlsroute-serve-workers");
const tempDir = scratch.dir;

/** Entry points `names` on port 0, every router of them answered by whoami@internal. */
function whoamiConfig(routerName: string, names: string[] = ["app"]) {
  return {
    entryPoints: Object.fromEntries(names.map((n) => [n, { address: "127.0.0.1:0" }])),
    tcp: {
      routers: { [routerName]: { entryPoints: names, rule: "HostSNI(`*`)", service: "whoami" } },
      services: { whoami: { loadBalancer: { servers: [{ address: "whoami@internal" }] } } },
    },
  };
}

interface Whoami {
  router: string;
  entryPoint: string;
  client: string;
  worker: number | null;
  pid: number;
}

/** One plain TCP connection answered by whoami: its JSON line. */
function ask(port: number): Promise<Whoami> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: HOST, port });
    let text = "";
    socket.setEncoding("utf8");
    socket.on("data", (chunk: string) => {
      text += chunk;
    });
    socket.on("error", reject);
    socket.on("close", () => {
      try {
        resolve(JSON.parse(text) as Whoami);
      } catch {
        reject(new Error(`not a whoami line: ${JSON.stringify(text)}`));
      }
    });
  });
}

/**
 * Connects in parallel batches until every worker in `workers` has answered (the kernel, not us,
 * picks the worker of each connection); returns every answer.
 */
function askUntilAllAnswer(port: number, workers: number[], maxConnections = 600): Promise<Whoami[]> {
  return untilAllAnswer(() => ask(port), workers, maxConnections);
}

/** askUntilAllAnswer for any kind of connection, and at least `minConnections` of them. */
async function untilAllAnswer<T extends { worker: number | null }>(
  connect: () => Promise<T>,
  workers: number[],
  maxConnections: number,
  minConnections = 0,
): Promise<T[]> {
  const answers: T[] = [];
  while (answers.length < maxConnections) {
    answers.push(...(await Promise.all(Array.from({ length: 20 }, connect))));
    const seen = new Set(answers.map((a) => a.worker));
    if (answers.length >= minConnections && workers.every((w) => seen.has(w))) return answers;
  }
  const seen = [...new Set(answers.map((a) => a.worker))].join(", ");
  throw new Error(`after ${answers.length} connections only workers ${seen} answered`);
}

interface Run {
  serve: ServeProcess;
  file: string;
  port(entryPoint?: string): number;
  /** Index into serve.lines, to look at what came after it. */
  mark(): number;
  waitAfter(mark: number, match: (line: LogLine) => boolean, timeoutMs?: number): Promise<LogLine>;
}

async function serve(
  t: TestContext,
  label: string,
  config: object,
  options: {
    workers?: number;
    extra?: string[];
    /** Entry points given port 0 on the command line (default: app). */
    entryPoints?: string[];
    /** Listening lines to wait for (default: one per entry point above). */
    listening?: number;
  } = {},
): Promise<Run> {
  const dir = tempDir(label);
  const file = path.join(dir, "tlsroute.json");
  writeFileSync(file, JSON.stringify(config));
  const names = options.entryPoints ?? ["app"];
  const proc = await startServe(
    [
      "-c",
      file,
      "--workers",
      String(options.workers ?? 2),
      ...names.flatMap((n) => ["--entrypoint", `${n}=127.0.0.1:0`]),
      ...(options.extra ?? []),
    ],
    {
      expectEntryPoints: options.listening ?? names.length,
      startTimeoutMs: 30_000,
      runtime: RUNTIME,
      denoFlags: DENO_SERVE_FLAGS,
    },
  );
  t.after(() => proc.stop("SIGKILL"));
  return {
    serve: proc,
    file,
    port: (entryPoint = "app") => proc.ports.get(entryPoint)!,
    mark: () => proc.lines.length,
    waitAfter: (mark, match, timeoutMs = 20_000) =>
      proc.waitFor((line) => proc.lines.indexOf(line) >= mark && match(line), timeoutMs),
  };
}

/**
 * Once serve's output has ended: `stopped` is its last line, after every access line (those of the
 * connections the workers drained included), because the primary writes it only once the workers'
 * output has ended, not merely once they have exited.
 */
async function assertStoppedIsLast(proc: ServeProcess): Promise<LogLine> {
  await waitUntil("serve's output has ended", () => proc.child.stdout.readableEnded);
  const tail = proc.lines.slice(-12).map((l) => JSON.stringify(l));
  const last = proc.lines.length - 1;
  const stopped = proc.lines[last];
  assert.equal(stopped?.msg, "stopped", `"stopped" is not the last line; last output:\n${tail.join("\n")}`);
  for (const line of proc.accessLines())
    assert.ok(proc.lines.indexOf(line) < last, `access line after "stopped": ${JSON.stringify(line)}`);
  return stopped;
}

/**
 * Leaves process `pid` no descriptor to open, from outside, with prlimit(1): its RLIMIT_NOFILE becomes
 * the lowest descriptor number it has free. The kernel gives a new descriptor the lowest free number
 * and refuses any number at or above the limit (EMFILE), so the process's next open() fails, whatever
 * the runtime, while the descriptors it holds (listening socket, IPC channel, output pipes) keep
 * working. The process must be idle meanwhile (no connection opening or closing). Returns the limit.
 */
function starveDescriptors(pid: number): number {
  const open = new Set(readdirSync(`/proc/${pid}/fd`).map(Number));
  let lowestFree = 0;
  while (open.has(lowestFree)) lowestFree++;
  try {
    execFileSync("prlimit", ["--pid", String(pid), `--nofile=${lowestFree}:${lowestFree}`]);
  } catch (err) {
    throw new Error(`prlimit (util-linux) is needed to make one worker fail: ${String(err)}`);
  }
  // Had it closed a descriptor meanwhile, an open could still get that number: check it did not.
  const after = new Set(readdirSync(`/proc/${pid}/fd`).map(Number));
  for (let fd = 0; fd < lowestFree; fd++) assert.ok(after.has(fd), `descriptor ${fd} of ${pid} was closed`);
  const limits = readFileSync(`/proc/${pid}/limits`, "utf8");
  assert.match(limits, new RegExp(`Max open files\\s+${lowestFree}\\s+${lowestFree}\\s`), limits);
  return lowestFree;
}

describe("serve --workers", () => {
  it(
    "two workers on two port-0 entry points: both answer, one listening line each, one log",
    CASE,
    async (t) => {
      const run = await serve(t, "both", whoamiConfig("hello", ["app", "admin"]), {
        entryPoints: ["app", "admin"],
      });
      const listening = run.serve.lines.filter((l) => l.msg === "listening");
      assert.deepEqual(listening.map((l) => l.entryPoint).sort(), ["admin", "app"]);
      assert.notEqual(run.port("app"), run.port("admin"));
      const started = await run.serve.waitFor((l) => l.msg === "workers started");
      const pids = started.pids as number[];
      assert.equal(pids.length, 2);

      for (const entryPoint of ["app", "admin"]) {
        const answers = await askUntilAllAnswer(run.port(entryPoint), [1, 2]);
        for (const answer of answers) {
          assert.equal(answer.router, "hello");
          assert.equal(answer.entryPoint, entryPoint);
          assert.equal(answer.pid, pids[answer.worker! - 1], "each worker number is one process");
        }
        // Every connection has its access line, from the worker that served it.
        await waitUntil("every access line is in", () =>
          answers.every((a) =>
            run.serve.accessLines().some((l) => l.client === a.client && l.entryPoint === entryPoint),
          ),
        );
        for (const answer of answers) {
          const line = run.serve
            .accessLines()
            .find((l) => l.client === answer.client && l.entryPoint === entryPoint)!;
          assert.equal(line.worker, answer.worker);
          assert.equal(line.reason, "closed");
        }
      }
      // Whole lines only: nothing on stdout failed to parse as a JSON line.
      assert.deepEqual(run.serve.other, []);
    },
  );

  it("a fixed port: every worker binds it (on Bun, its own sockets with SO_REUSEPORT)", CASE, async (t) => {
    const port = await freePort();
    const config = whoamiConfig("fixed");
    config.entryPoints.app = { address: `127.0.0.1:${port}` };
    const run = await serve(t, "fixed-port", config, { entryPoints: [], listening: 1 });
    const listening = run.serve.lines.find((l) => l.msg === "listening");
    assert.equal(listening?.address, `127.0.0.1:${port}`);
    assert.equal(listening?.sockets, RUNTIME === "bun" ? "bun" : undefined);
    const answers = await askUntilAllAnswer(port, [1, 2]);
    assert.ok(answers.every((a) => a.router === "fixed"));
  });

  it("SIGHUP reloads every worker; a broken file is refused by all of them", CASE, async (t) => {
    const run = await serve(t, "reload", whoamiConfig("first"));
    await askUntilAllAnswer(run.port(), [1, 2]);
    let mark = run.mark();
    writeFileSync(run.file, JSON.stringify(whoamiConfig("second")));
    run.serve.child.kill("SIGHUP");
    const reloaded = await run.waitAfter(mark, (l) => l.msg === "configuration reloaded");
    assert.equal(reloaded.workers, 2);
    const after = await askUntilAllAnswer(run.port(), [1, 2]);
    assert.ok(
      after.every((a) => a.router === "second"),
      "every worker runs the new configuration",
    );

    mark = run.mark();
    // A router naming a service that does not exist: validate's error, so no worker may take it.
    const broken = whoamiConfig("broken");
    broken.tcp.routers.broken!.service = "missing";
    writeFileSync(run.file, JSON.stringify(broken));
    run.serve.child.kill("SIGHUP");
    await run.waitAfter(
      mark,
      (l) => l.msg === "the new configuration has errors; keeping the running configuration",
    );
    const still = await askUntilAllAnswer(run.port(), [1, 2]);
    assert.ok(
      still.every((a) => a.router === "second"),
      "every worker kept the running configuration",
    );
    // The primary checked the file once: each finding is logged once, not once per worker.
    const findings = run.serve.lines.slice(mark).filter((l) => l.level === "error" && l.code !== undefined);
    assert.ok(findings.length > 0);
    assert.ok(findings.every((l) => l.worker === undefined));
    assert.equal(new Set(findings.map((l) => `${l.code} ${l.msg}`)).size, findings.length);
  });

  it("--watch reloads every worker", CASE, async (t) => {
    const run = await serve(t, "watch", whoamiConfig("first"), { extra: ["--watch"] });
    const mark = run.mark();
    writeFileSync(run.file, JSON.stringify(whoamiConfig("watched")));
    await run.waitAfter(mark, (l) => l.msg === "configuration reloaded");
    const after = await askUntilAllAnswer(run.port(), [1, 2]);
    assert.ok(after.every((a) => a.router === "watched"));
  });

  it("a worker that dies is started again, and the log says so", CASE, async (t) => {
    const run = await serve(t, "crash", whoamiConfig("steady"));
    const before = await askUntilAllAnswer(run.port(), [1, 2]);
    const victim = before.find((a) => a.worker === 2)!;
    const mark = run.mark();
    process.kill(victim.pid, "SIGKILL");
    const died = await run.waitAfter(mark, (l) => l.msg === "worker exited unexpectedly; starting a new one");
    assert.equal(died.worker, 2);
    assert.equal(died.pid, victim.pid);
    assert.equal(died.signal, "SIGKILL");
    const again = await run.waitAfter(mark, (l) => l.msg === "worker started again");
    assert.equal(again.worker, 2);
    assert.notEqual(again.pid, victim.pid);
    // No second listening line: the entry point kept its address.
    assert.ok(!run.serve.lines.slice(mark).some((l) => l.msg === "listening"));
    const answers = await askUntilAllAnswer(run.port(), [1, 2]);
    const worker2 = answers.filter((a) => a.worker === 2);
    assert.ok(
      worker2.every((a) => a.pid === again.pid),
      "worker 2 is the new process",
    );
  });

  it("SIGTERM: every worker stops accepting, open connections finish, exit 0", CASE, async (t) => {
    const backend = net.createServer((socket) => socket.on("data", (chunk) => socket.write(chunk)));
    await new Promise<void>((resolve) => backend.listen(0, HOST, resolve));
    t.after(() => backend.close());
    const backendAddress = `${HOST}:${(backend.address() as net.AddressInfo).port}`;
    const run = await serve(t, "drain", {
      entryPoints: { app: { address: "127.0.0.1:0", transport: { lifeCycle: { graceTimeOut: "20s" } } } },
      tcp: {
        routers: { echo: { rule: "HostSNI(`*`)", service: "echo" } },
        services: { echo: { loadBalancer: { servers: [{ address: backendAddress }] } } },
      },
    });
    // Two connections held open, so that with luck both workers hold one (the count is what matters).
    const open = await Promise.all([0, 1].map(() => connectEcho(run.port())));
    for (const c of open) assert.equal(await c.say("before"), "before");

    const exited = new Promise<number | null>((resolve) => run.serve.child.once("exit", resolve));
    run.serve.child.kill("SIGTERM");
    const shutting = await run.serve.waitFor((l) => l.msg === "shutting down");
    assert.equal(shutting.openConnections, 2);
    assert.equal(shutting.workers, 2);
    await expectRefused(run.port());
    for (const c of open) assert.equal(await c.say("during"), "during");
    assert.equal(run.serve.child.exitCode, null, "waits for the open connections");
    for (const c of open) c.socket.end();
    const code = await exited;
    const tail = [...run.serve.lines.slice(-12).map((l) => JSON.stringify(l)), ...run.serve.other.slice(-8)];
    assert.equal(code, 0, `exit code ${code}; last output:\n${tail.join("\n")}`);
    // Both drained connections have their access line, and "stopped" comes after them.
    const stopped = await assertStoppedIsLast(run.serve);
    assert.equal(stopped.forcedConnections, 0, `last output:\n${tail.join("\n")}`);
    assert.equal(run.serve.accessLines().length, 2);
  });

  it("bad --workers values and a busy address are usage errors (exit 2)", CASE, async (t) => {
    const dir = tempDir("usage");
    const file = path.join(dir, "tlsroute.json");
    writeFileSync(file, JSON.stringify(whoamiConfig("x")));
    for (const value of ["0", "two", "1.5"]) {
      const result = await runOn(RUNTIME, ["serve", "-c", file, "--workers", value], {
        denoFlags: DENO_SERVE_FLAGS,
      });
      assert.equal(result.code, 2, result.stderr);
      assert.match(result.stderr, /--workers must be a number from 1 to 256 or "auto"/);
    }
    const busy = net.createServer();
    await new Promise<void>((resolve) => busy.listen(0, HOST, resolve));
    t.after(() => busy.close());
    const port = (busy.address() as net.AddressInfo).port;
    const result = await runOn(
      RUNTIME,
      [
        "serve",
        "-c",
        file,
        "--workers",
        "2",
        "--entrypoint",
        `app=127.0.0.1:${port}`,
        "--log-format",
        "json",
      ],
      { denoFlags: DENO_SERVE_FLAGS },
    );
    assert.equal(result.code, 2, result.stdout + result.stderr);
    const errors = result.stdout
      .split("\n")
      .filter((l) => l.startsWith("{"))
      .map((l) => JSON.parse(l) as LogLine)
      .filter((l) => l.level === "error");
    assert.equal(errors.length, 1, "the failure is reported once, not once per worker");
    assert.match(errors[0]!.msg, /cannot listen on .*the address is already in use/);
  });
});

/**
 * One worker fails a reload that the others apply. The configuration stays valid (the primary checks
 * it first); worker 2 alone cannot read it, because prlimit leaves it no descriptor to open (each
 * worker reads the configuration and certificate files itself on a reload: serve-worker.ts,
 * ctx.open()). Linux only, for /proc and prlimit; it works the same on Node, Bun and Deno, since the
 * limit is the kernel's, not the runtime's.
 */
describe("serve --workers: one worker fails a reload", {
  skip: process.platform !== "linux" && "needs Linux (/proc and prlimit) to make one worker fail",
}, () => {
  it("that worker is replaced by one running the new configuration; serve keeps running", CASE, async (t) => {
    // TLS termination with certificate files; each configuration has its own certificate, so a
    // client can tell which one served it, beside the router whoami names.
    const name = "app.tlsroute.test";
    const pki = makePki(tempDir("reload-one-fails-pki"));
    const ca = pki.ca("workers-ca");
    const certs = {
      first: pki.leaf({ ca, cn: name, dns: [name] }),
      second: pki.leaf({ ca, cn: name, dns: [name] }),
    };
    const config = (router: "first" | "second") => ({
      entryPoints: { app: { address: "127.0.0.1:0" } },
      tcp: {
        routers: {
          [router]: { entryPoints: ["app"], rule: `HostSNI(\`${name}\`)`, service: "whoami", tls: {} },
        },
        services: { whoami: { loadBalancer: { servers: [{ address: "whoami@internal" }] } } },
      },
      tls: { certificates: [{ certFile: certs[router].chainFile, keyFile: certs[router].keyFile }] },
    });
    const fingerprint = (cert: IssuedCert) => new X509Certificate(cert.certPem).fingerprint256;

    const run = await serve(t, "reload-one-fails", config("first"));
    const started = await run.serve.waitFor((l) => l.msg === "workers started");
    const [pid1, pid2] = started.pids as number[];
    // No connection has been made yet: worker 2 is idle, so its descriptors stay as counted.
    starveDescriptors(pid2!);

    const mark = run.mark();
    writeFileSync(run.file, JSON.stringify(config("second")));
    run.serve.child.kill("SIGHUP");
    const failed = await run.waitAfter(
      mark,
      (l) => l.msg === "a worker could not apply the new configuration; restarting it",
    );
    assert.equal(failed.level, "error");
    assert.equal(failed.worker, 2);
    assert.match(String(failed.error), /EMFILE/);
    const reloaded = await run.waitAfter(mark, (l) => l.msg === "configuration reloaded");
    assert.equal(reloaded.routers, 1);
    const replaced = await run.waitAfter(
      mark,
      (l) => l.msg === "worker stopped after a failed reload; starting a new one",
    );
    assert.equal(replaced.level, "info");
    assert.equal(replaced.worker, 2);
    assert.equal(replaced.pid, pid2);
    // Longer than one start: on Deno a start that hangs is retried after 10 s (serve-primary.ts,
    // START_AGAIN_TIMEOUT_MS), and the test must not fail for that.
    const again = await run.waitAfter(mark, (l) => l.msg === "worker started again", 60_000);
    assert.equal(again.worker, 2);
    assert.notEqual(again.pid, pid2);
    // The line about its exit comes once the primary has reaped it: the process is gone.
    assert.equal(existsSync(`/proc/${pid2}`), false, `old worker ${pid2} still exists`);

    // Worker 1 applied the reload in place (same process); worker 2 is the new process; every
    // connection, on either, gets the new certificate and router, and has its access line.
    const answers = await untilAllAnswer(() => askTls(run.port(), name, ca.certPem), [1, 2], 600, 40);
    for (const answer of answers) {
      assert.equal(answer.authorized, true, answer.error);
      assert.equal(
        answer.fingerprint256,
        fingerprint(certs.second),
        `worker ${answer.worker}: old certificate`,
      );
      assert.equal(
        answer.whoami.router,
        "second",
        `worker ${answer.worker} still runs the old configuration`,
      );
      assert.equal(answer.whoami.pid, answer.worker === 1 ? pid1 : again.pid);
    }
    await waitUntil("every access line is in", () =>
      answers.every((a) => run.serve.accessLines().some((l) => l.client === a.whoami.client)),
    );

    // Only worker 2 failed, once. The only other warnings or errors allowed are a hung start on Deno
    // being retried (see above) and that worker's exit.
    const trouble = run.serve.lines
      .slice(mark)
      .filter((l) => (l.level === "warn" || l.level === "error") && l !== failed);
    const hung = new Set(
      trouble.filter((l) => l.msg === "a worker started again did not listen in time; starting another"),
    );
    const hungPids = new Set([...hung].map((l) => l.pid));
    for (const line of trouble) {
      const retried =
        hung.has(line) ||
        (line.msg === "worker exited unexpectedly; starting a new one" && hungPids.has(line.pid));
      assert.ok(retried && RUNTIME === "deno", `unexpected line: ${JSON.stringify(line)}`);
    }

    assert.equal(run.serve.child.exitCode, null, "serve keeps running");
    const code = await run.serve.stop("SIGTERM");
    assert.equal(code, 0);
    const stopped = await assertStoppedIsLast(run.serve);
    assert.equal(stopped.forcedConnections, 0);
  });
});

describe("serve --workers on Deno", { skip: RUNTIME !== "deno" && "runs with TLSROUTE_RUNTIME=deno" }, () => {
  it("without --allow-run: exit 2, and the flag to add", CASE, async () => {
    const dir = tempDir("deno-run");
    const file = path.join(dir, "tlsroute.json");
    writeFileSync(file, JSON.stringify(whoamiConfig("x")));
    const result = await runOn(RUNTIME, ["serve", "-c", file, "--workers", "2"], {
      denoFlags: DENO_FLAGS.serve,
    });
    assert.equal(result.code, 2, result.stdout + result.stderr);
    assert.match(result.stdout, /--workers needs Deno's permission to start processes/);
    assert.match(result.stdout, /--allow-run/);
  });
});

describe("serve --workers with an ACME resolver", {
  skip: !pebbleInstalled()
    ? "pebble is not installed (Debian package pebble)"
    : RUNTIME === "deno"
      ? "Deno cannot serve TLS-ALPN-01 challenge certificates"
      : false,
}, () => {
  it(
    "the primary orders once; every worker answers the CA's challenge and serves the certificate",
    CASE,
    async (t) => {
      const dir = tempDir("acme");
      const port = await freePort();
      const pebble = await startPebble(path.join(dir, "pebble"), port);
      t.after(() => pebble.stop());
      const root = await pebble.issuingRoot();
      const run = await serve(
        t,
        "acme-serve",
        {
          entryPoints: { websecure: { address: `127.0.0.1:${port}` } },
          certificatesResolvers: {
            pebble: {
              acme: {
                email: "ops@example.com",
                storage: path.join(dir, "acme.json"),
                caServer: pebble.directory,
                caCertificates: [pebble.apiCa.certFile],
                tlsChallenge: {},
              },
            },
          },
          tcp: {
            routers: {
              app: {
                rule: "HostSNI(`app.tlsroute.test`)",
                service: "whoami",
                tls: { certResolver: "pebble" },
              },
            },
            services: { whoami: { loadBalancer: { servers: [{ address: "whoami@internal" }] } } },
          },
        },
        { entryPoints: [], listening: 1 },
      );
      await run.serve.waitFor((l) => l.msg === "certificate obtained", 60_000);
      // Resolver lines come from the primary only: one order, not one per worker.
      const orders = run.serve.lines.filter((l) => l.msg === "certificate obtained");
      assert.equal(orders.length, 1);
      assert.equal(orders[0]!.worker, undefined);
      // Wherever the CA's validation connections landed, they found the challenge certificate.
      const challenges = run.serve.accessLines().filter((l) => l.reason === "acme_challenge");
      assert.ok(challenges.length >= 1);

      const seen = new Set<number>();
      for (let i = 0; i < 200 && seen.size < 2; i++) {
        const answer = await askTls(port, "app.tlsroute.test", root);
        assert.equal(answer.authorized, true, answer.error);
        assert.match(answer.issuer, /Pebble/i);
        seen.add(answer.worker);
      }
      assert.deepEqual([...seen].sort(), [1, 2], "both workers serve the new certificate");
    },
  );
});

/** A TLS connection to a whoami router: whether the served certificate verified, its issuer, the worker. */
function askTls(
  port: number,
  servername: string,
  ca: string,
): Promise<{
  authorized: boolean;
  error: string;
  issuer: string;
  fingerprint256: string;
  worker: number;
  whoami: Whoami;
}> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: HOST, port, servername, ca, rejectUnauthorized: false });
    let text = "";
    let issuer = "";
    let fingerprint256 = "";
    let authorized = false;
    let error = "";
    socket.once("secureConnect", () => {
      authorized = socket.authorized;
      error = String(socket.authorizationError ?? "");
      const peer = socket.getPeerCertificate();
      issuer = JSON.stringify(peer.issuer ?? {});
      fingerprint256 = peer.fingerprint256 ?? "";
    });
    socket.setEncoding("utf8");
    socket.on("data", (chunk: string) => {
      text += chunk;
    });
    socket.on("error", () => {});
    socket.on("close", () => {
      try {
        const whoami = JSON.parse(text) as Whoami;
        resolve({ authorized, error, issuer, fingerprint256, worker: whoami.worker ?? 0, whoami });
      } catch {
        reject(new Error(`no whoami line over TLS: ${JSON.stringify(text)} (${error})`));
      }
    });
  });
}

async function connectEcho(port: number) {
  const socket = net.connect({ host: HOST, port });
  await new Promise((resolve, reject) => {
    socket.once("connect", resolve);
    socket.once("error", reject);
  });
  socket.setEncoding("utf8");
  return {
    socket,
    say(text: string): Promise<string> {
      return new Promise((resolve) => {
        socket.once("data", (chunk: string) => resolve(chunk));
        socket.write(text);
      });
    },
  };
}

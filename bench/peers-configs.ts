/**
 * Configurations for the side-by-side benchmark (bench/peers.ts): HAProxy, nginx's stream module,
 * sniproxy and tlsroute set up to do the same thing, after reference/peers.md §6.3.
 *
 * Every proxy gets two listeners on loopback:
 *   pass  SNI passthrough: `a.bench.test` → the sink (bulk transfer, idle connections),
 *         `b.bench.test` → a TLS echo server (latency, split ClientHello), anything else refused;
 *   term  TLS termination with the ECDSA P-256 certificate, TLS 1.2+, no session tickets and no
 *         session cache: `a.bench.test` → a plain echo server, anything else refused.
 * Each one writes an access line per connection (HAProxy and tlsroute to stdout, read by the script;
 * nginx and sniproxy to a file), so none is measured with less work than it does in production.
 *
 * The 10,000-router configurations for the check-time comparison are here too.
 */
import { mkdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import { stringify as toYaml } from "yaml";

export const SNI_SINK = "a.bench.test";
export const SNI_TLS_ECHO = "b.bench.test";
export const SNI_UNKNOWN = "c.bench.test";

export interface Listen {
  pass: number;
  term: number;
}

export interface Backends {
  sink: number;
  echo: number;
  tlsEcho: number;
}

export interface CertFiles {
  cert: string;
  key: string;
  /** Certificate then key in one file, as HAProxy's `crt` wants it. */
  pem: string;
}

/** A port nothing listens on: where nginx sends names it has no route for (connection refused). */
const NOWHERE = "127.0.0.1:9";

export function haproxyConfig(listen: Listen, backends: Backends, cert: CertFiles): string {
  return `global
    maxconn 9000
    nbthread 1
    # No session cache and no tickets: every terminated connection is a full handshake.
    tune.ssl.cachesize 0
    log stdout format raw local0

defaults
    mode tcp
    log global
    option tcplog
    timeout connect 5s
    timeout client 60s
    timeout server 60s

frontend fe_pass
    bind 127.0.0.1:${listen.pass}
    tcp-request inspect-delay 5s
    tcp-request content accept if { req.ssl_hello_type 1 }
    use_backend be_sink if { req.ssl_sni -i ${SNI_SINK} }
    use_backend be_tls_echo if { req.ssl_sni -i ${SNI_TLS_ECHO} }
    default_backend be_reject

frontend fe_term
    bind 127.0.0.1:${listen.term} ssl crt ${cert.pem} ssl-min-ver TLSv1.2 no-tls-tickets
    use_backend be_echo if { ssl_fc_sni -i ${SNI_SINK} }
    default_backend be_reject

backend be_sink
    server s1 127.0.0.1:${backends.sink}
backend be_tls_echo
    server s1 127.0.0.1:${backends.tlsEcho}
backend be_echo
    server s1 127.0.0.1:${backends.echo}
backend be_reject
    tcp-request content reject
`;
}

/** One worker process under a master, as nginx runs in production; `daemon off` keeps it our child. */
export function nginxConfig(listen: Listen, backends: Backends, cert: CertFiles, dir: string): string {
  return `load_module /usr/lib/nginx/modules/ngx_stream_module.so;
daemon off;
worker_processes 1;
worker_rlimit_nofile 20000;
pid ${path.join(dir, "nginx.pid")};
error_log ${path.join(dir, "nginx-error.log")} warn;
events { worker_connections 16000; }
stream {
    log_format sni '$remote_addr sni=$ssl_preread_server_name up=$upstream_addr status=$status '
                   'bytes=$bytes_sent/$bytes_received t=$session_time';
    access_log ${path.join(dir, "nginx-access.log")} sni;
    # Each direction closes on its own (the sink answers after the client's FIN), as the others do.
    proxy_half_close on;
    proxy_timeout 60s;

    map $ssl_preread_server_name $pass_upstream {
        hostnames;
        ${SNI_SINK} 127.0.0.1:${backends.sink};
        ${SNI_TLS_ECHO} 127.0.0.1:${backends.tlsEcho};
        default ${NOWHERE};
    }
    map $ssl_server_name $term_upstream {
        hostnames;
        ${SNI_SINK} 127.0.0.1:${backends.echo};
        default ${NOWHERE};
    }
${nginxServers(`127.0.0.1:${listen.pass} backlog=4096`, `127.0.0.1:${listen.term} ssl backlog=4096`, cert)}}
`;
}

/** sniproxy only passes through: one listener. */
export function sniproxyConfig(pass: number, backends: Backends, dir: string): string {
  const literal = (name: string) => name.replaceAll(".", "\\.");
  return `pidfile ${path.join(dir, "sniproxy.pid")}
error_log {
    filename ${path.join(dir, "sniproxy-error.log")}
    priority notice
}
listener 127.0.0.1:${pass} {
    protocol tls
    table bench
    access_log {
        filename ${path.join(dir, "sniproxy-access.log")}
    }
}
table bench {
    ^${literal(SNI_SINK)}$ 127.0.0.1:${backends.sink}
    ^${literal(SNI_TLS_ECHO)}$ 127.0.0.1:${backends.tlsEcho}
}
`;
}

/** tlsroute (Traefik's TCP configuration); the entry points' addresses come from `--entrypoint`. */
export function tlsrouteConfig(backends: Backends, cert: CertFiles): Record<string, unknown> {
  const files = { certFile: cert.cert, keyFile: cert.key };
  const entryPoint = { address: "127.0.0.1:0", transport: { respondingTimeouts: { readTimeout: "60s" } } };
  const server = (port: number) => ({ loadBalancer: { servers: [{ address: `127.0.0.1:${port}` }] } });
  return {
    entryPoints: { pass: entryPoint, term: entryPoint },
    tcp: {
      routers: {
        "pass-sink": {
          entryPoints: ["pass"],
          rule: `HostSNI(\`${SNI_SINK}\`)`,
          service: "sink",
          tls: { passthrough: true },
        },
        "pass-tls-echo": {
          entryPoints: ["pass"],
          rule: `HostSNI(\`${SNI_TLS_ECHO}\`)`,
          service: "tls-echo",
          tls: { passthrough: true },
        },
        "term-echo": { entryPoints: ["term"], rule: `HostSNI(\`${SNI_SINK}\`)`, service: "echo", tls: {} },
      },
      services: {
        sink: server(backends.sink),
        "tls-echo": server(backends.tlsEcho),
        echo: server(backends.echo),
      },
    },
    tls: {
      certificates: [files],
      options: { default: { minVersion: "VersionTLS12", disableSessionTickets: true } },
      stores: { default: { defaultCertificate: files } },
    },
  };
}

/**
 * nginx's two stream servers, the same in the benchmark and in the 10,000-router check: passthrough by
 * `ssl_preread` to $pass_upstream, and termination (TLS 1.2+, no tickets, no session cache) to
 * $term_upstream. The arguments are what follows `listen`.
 */
function nginxServers(passListen: string, termListen: string, cert: CertFiles): string {
  return `    server {
        listen ${passListen};
        ssl_preread on;
        proxy_pass $pass_upstream;
    }
    server {
        listen ${termListen};
        ssl_certificate ${cert.cert};
        ssl_certificate_key ${cert.key};
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_tickets off;
        ssl_session_cache off;
        proxy_pass $term_upstream;
    }
`;
}

// ------------------------------------------------------------------------- 10,000 routers

export const CHECK_ROUTERS = 10_000;
/** The first 9,000 names pass through, the last 1,000 terminate. */
const CHECK_PASSTHROUGH = 9_000;
const CHECK_BACKENDS = 100;

const routeName = (i: number) => `r${i}.bench.example`;
const backendOf = (i: number) => i % CHECK_BACKENDS;
const serverPort = (k: number, n: number) => 20_000 + 2 * k + n;

export interface CheckConfigs {
  haproxyInline: string;
  haproxyMap: string;
  nginx: string;
  /** A directory holding one YAML file, what `tlsroute validate DIR` reads. */
  tlsrouteDir: string;
}

/**
 * The same 10,000 routes for each tool: 9,000 names passed through and 1,000 terminated with one
 * certificate, spread over 100 backends of two servers. HAProxy twice: one ACL line per route (the
 * one-to-one form of a router list) and a map file (its scale-out form); nginx with `map hostnames`.
 */
export function writeCheckConfigs(dir: string, cert: CertFiles): CheckConfigs {
  const names = Array.from({ length: CHECK_ROUTERS }, (_, i) => i);
  const pass = names.filter((i) => i < CHECK_PASSTHROUGH);
  const term = names.filter((i) => i >= CHECK_PASSTHROUGH);
  const backendIds = Array.from({ length: CHECK_BACKENDS }, (_, k) => k);

  const haproxyHead = `global
    maxconn 9000
    nbthread 1
defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s
`;
  const haproxyBackends = backendIds
    .map(
      (k) =>
        `backend be_${k}\n    server s0 127.0.0.1:${serverPort(k, 0)}\n    server s1 127.0.0.1:${serverPort(k, 1)}\n`,
    )
    .join("");
  const haproxyInline = path.join(dir, "haproxy-10k-inline.cfg");
  writeFileSync(
    haproxyInline,
    `${haproxyHead}
frontend fe_pass
    bind 127.0.0.1:18443
    tcp-request inspect-delay 5s
    tcp-request content accept if { req.ssl_hello_type 1 }
${pass.map((i) => `    use_backend be_${backendOf(i)} if { req.ssl_sni -i ${routeName(i)} }\n`).join("")}
frontend fe_term
    bind 127.0.0.1:18453 ssl crt ${cert.pem} ssl-min-ver TLSv1.2 no-tls-tickets
${term.map((i) => `    use_backend be_${backendOf(i)} if { ssl_fc_sni -i ${routeName(i)} }\n`).join("")}
${haproxyBackends}`,
  );
  const passMap = path.join(dir, "pass.map");
  const termMap = path.join(dir, "term.map");
  writeFileSync(passMap, pass.map((i) => `${routeName(i)} be_${backendOf(i)}\n`).join(""));
  writeFileSync(termMap, term.map((i) => `${routeName(i)} be_${backendOf(i)}\n`).join(""));
  const haproxyMap = path.join(dir, "haproxy-10k-map.cfg");
  writeFileSync(
    haproxyMap,
    `${haproxyHead}
frontend fe_pass
    bind 127.0.0.1:18443
    tcp-request inspect-delay 5s
    tcp-request content accept if { req.ssl_hello_type 1 }
    use_backend %[req.ssl_sni,lower,map(${passMap},be_reject)]

frontend fe_term
    bind 127.0.0.1:18453 ssl crt ${cert.pem} ssl-min-ver TLSv1.2 no-tls-tickets
    use_backend %[ssl_fc_sni,lower,map(${termMap},be_reject)]

${haproxyBackends}backend be_reject
    tcp-request content reject
`,
  );

  const nginx = path.join(dir, "nginx-10k.conf");
  writeFileSync(
    nginx,
    `load_module /usr/lib/nginx/modules/ngx_stream_module.so;
worker_processes 1;
pid ${path.join(dir, "nginx-10k.pid")};
error_log ${path.join(dir, "nginx-10k-error.log")} warn;
events { worker_connections 1024; }
stream {
    map_hash_max_size 65536;
    map_hash_bucket_size 128;
${backendIds.map((k) => `    upstream pool_${k} { server 127.0.0.1:${serverPort(k, 0)}; server 127.0.0.1:${serverPort(k, 1)}; }\n`).join("")}
    map $ssl_preread_server_name $pass_upstream {
        hostnames;
${pass.map((i) => `        ${routeName(i)} pool_${backendOf(i)};\n`).join("")}        default ${NOWHERE};
    }
    map $ssl_server_name $term_upstream {
        hostnames;
${term.map((i) => `        ${routeName(i)} pool_${backendOf(i)};\n`).join("")}        default ${NOWHERE};
    }
${nginxServers("127.0.0.1:18443", "127.0.0.1:18453 ssl", cert)}}
`,
  );

  const tlsrouteDir = path.join(dir, "tlsroute-10k");
  const files = { certFile: cert.cert, keyFile: cert.key };
  const routers: Record<string, unknown> = {};
  for (const i of names) {
    routers[`r${i}`] = {
      entryPoints: [i < CHECK_PASSTHROUGH ? "pass" : "term"],
      rule: `HostSNI(\`${routeName(i)}\`)`,
      service: `be${backendOf(i)}`,
      tls: i < CHECK_PASSTHROUGH ? { passthrough: true } : {},
    };
  }
  const services: Record<string, unknown> = {};
  for (const k of backendIds)
    services[`be${k}`] = {
      loadBalancer: {
        servers: [{ address: `127.0.0.1:${serverPort(k, 0)}` }, { address: `127.0.0.1:${serverPort(k, 1)}` }],
      },
    };
  const config = {
    entryPoints: { pass: { address: "127.0.0.1:18443" }, term: { address: "127.0.0.1:18453" } },
    tcp: { routers, services },
    tls: {
      certificates: [files],
      options: { default: { minVersion: "VersionTLS12", disableSessionTickets: true } },
    },
  };
  return { haproxyInline, haproxyMap, nginx, tlsrouteDir: writeYamlDir(tlsrouteDir, config) };
}

function writeYamlDir(dir: string, config: Record<string, unknown>): string {
  mkdirSync(dir, { recursive: true });
  writeFileSync(path.join(dir, "tlsroute.yaml"), toYaml(config));
  return dir;
}

#!/usr/bin/env node
// Launcher: Bun and Deno run the TypeScript source directly; Node runs the bundle built by `npm run build`.
const runtimeRunsTypeScript = typeof globalThis.Bun !== "undefined" || typeof globalThis.Deno !== "undefined";
if (runtimeRunsTypeScript) {
  await import("../src/cli/main.ts");
} else {
  try {
    await import("../dist/cli.mjs");
  } catch (err) {
    if (err && err.code === "ERR_MODULE_NOT_FOUND" && String(err.message).includes("dist/cli.mjs")) {
      console.error(
        "tlsroute: the compiled CLI (dist/cli.mjs) is missing. Run `npm run build` in the package directory.",
      );
      process.exit(2);
    }
    throw err;
  }
}

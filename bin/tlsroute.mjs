#!/usr/bin/env node
// Launcher. Node runs the bundle built by `npm run build` (Node 20 cannot run TypeScript). Bun and Deno
// run the TypeScript source directly, except Deno inside an installed package (`deno run npm:tlsroute`):
// Deno refuses to strip types under node_modules, so it runs the same bundle Node does.
const isDeno = typeof globalThis.Deno !== "undefined";
const runtimeRunsTypeScript = typeof globalThis.Bun !== "undefined" || isDeno;

if (isDeno && !denoMayReadEnvironment()) {
  console.error(
    "error: tlsroute needs environment access on Deno: its terminal libraries read TERM, CI and NO_COLOR.\n" +
      "  hint: add --allow-env, e.g. `deno run --allow-read --allow-env npm:tlsroute validate`" +
      " (the README's Runtimes section lists the flags each command needs).",
  );
  Deno.exit(2);
}

if (runtimeRunsTypeScript) {
  try {
    await import("../src/cli/main.ts");
  } catch (err) {
    // Deno reports it with code ERR_MODULE_NOT_FOUND and the real code in the message.
    if (!String(err?.message).includes("ERR_UNSUPPORTED_NODE_MODULES_TYPE_STRIPPING")) throw err;
    await runBundle();
  }
} else {
  await runBundle();
}

async function runBundle() {
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

/**
 * citty and consola read TERM (and CI, NO_COLOR) while they load, before any of our code could catch
 * Deno's refusal; without --allow-env the user would get a stack trace instead of the flag to add.
 */
function denoMayReadEnvironment() {
  try {
    return Deno.permissions.querySync({ name: "env", variable: "TERM" }).state === "granted";
  } catch {
    return true;
  }
}

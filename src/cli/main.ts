/** Entry point of the `tlsroute` binary. */
import { run } from "./app.ts";

process.exitCode = await run(process.argv.slice(2));

/**
 * Entry point for turning configuration text into a located tree, whatever the format.
 * Callers get either a tree or a ConfigSyntaxError with a position: never another kind of error,
 * so the CLI can always print "file:line:column: message" instead of a stack trace.
 */
import { stripBom } from "./line-index.ts";
import { ConfigSyntaxError, type LNode } from "./located.ts";
import { parseJson } from "./parse-json.ts";
import { parseToml } from "./parse-toml.ts";
import { parseYaml } from "./parse-yaml.ts";

export type ConfigFormat = "yaml" | "toml" | "json";

const EXTENSIONS: Record<string, ConfigFormat> = {
  ".yml": "yaml",
  ".yaml": "yaml",
  ".toml": "toml",
  ".json": "json",
};

/** The format a file name implies by its extension (case-insensitive), or null if none. */
export function formatFromPath(path: string): ConfigFormat | null {
  const match = /\.[^./\\]+$/.exec(path);
  if (!match) return null;
  return EXTENSIONS[match[0].toLowerCase()] ?? null;
}

/**
 * Parses configuration text. The top level is always a mapping (an empty YAML/TOML file gives an
 * empty one). Positions are 1-based lines and columns counted in UTF-16 code units, after a
 * leading byte order mark has been dropped.
 */
export function parseConfigText(text: string, file: string, format: ConfigFormat): LNode {
  const source = stripBom(text);
  try {
    switch (format) {
      case "yaml":
        return parseYaml(source, file);
      case "toml":
        return parseToml(source, file);
      case "json":
        return parseJson(source, file);
    }
  } catch (error) {
    if (error instanceof ConfigSyntaxError) throw error;
    // The libraries below us may still throw on inputs we did not foresee (or overflow the stack on
    // absurd nesting); the contract is a ConfigSyntaxError regardless.
    const detail =
      error instanceof RangeError && /call stack/i.test(error.message)
        ? "the file is nested too deeply"
        : error instanceof Error
          ? error.message.split("\n")[0]
          : String(error);
    throw new ConfigSyntaxError(`cannot parse ${format.toUpperCase()}: ${detail}`, {
      file,
      line: 1,
      column: 1,
    });
  }
  throw new ConfigSyntaxError(`unknown configuration format ${JSON.stringify(format)}`, {
    file,
    line: 1,
    column: 1,
  });
}

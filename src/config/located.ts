/**
 * A configuration document as a tree of located nodes. Every parser (YAML, TOML, JSON) produces this
 * shape so that the rest of tlsroute can point diagnostics at the exact file, line and column of any
 * key or value, whatever format the user wrote.
 */

/** A 1-based position in a source file. */
export interface SourcePos {
  file: string;
  line: number;
  column: number;
}

export type Scalar = string | number | boolean | null;

export interface ScalarNode {
  kind: "scalar";
  value: Scalar;
  /** Position of the value itself. */
  pos: SourcePos;
}

export interface SeqNode {
  kind: "seq";
  items: LNode[];
  pos: SourcePos;
}

export interface MapEntry {
  /** Position of the key. */
  keyPos: SourcePos;
  value: LNode;
}

export interface MapNode {
  kind: "map";
  /** Keys in source order. */
  entries: Map<string, MapEntry>;
  pos: SourcePos;
}

export type LNode = ScalarNode | SeqNode | MapNode;

/** A syntax error in a configuration file: the file cannot be turned into a tree at all. */
export class ConfigSyntaxError extends Error {
  constructor(
    message: string,
    readonly pos: SourcePos,
    readonly hint?: string,
  ) {
    super(message);
    this.name = "ConfigSyntaxError";
  }
}

/** Converts a located tree to plain JavaScript values (positions dropped). */
export function toPlain(node: LNode): unknown {
  switch (node.kind) {
    case "scalar":
      return node.value;
    case "seq":
      return node.items.map(toPlain);
    case "map": {
      // Defined, not assigned: a key named "__proto__" must stay an ordinary key.
      const out: Record<string, unknown> = {};
      for (const [key, entry] of node.entries) {
        Object.defineProperty(out, key, {
          value: toPlain(entry.value),
          enumerable: true,
          writable: true,
          configurable: true,
        });
      }
      return out;
    }
  }
}

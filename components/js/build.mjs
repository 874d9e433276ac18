// Turn one JavaScript module into a WebAssembly component with componentize-js's Node API.
//
// Run by components/build.py (not by hand, though it works):
//
//   node build.mjs --tool-dir <dir with node_modules/> --source <app.js> --wit <wit dir>
//                  --world <world> --out <file.wasm> [--disable stdio,random,clocks,http,fetch-event]
//
// <tool-dir> is where `npm install` installed this folder's package.json + package-lock.json
// (components/build.py keeps it under .cache/node/). Prints one JSON line on success.

import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { pathToFileURL } from "node:url";

const { values: args } = parseArgs({
  options: {
    "tool-dir": { type: "string" },
    source: { type: "string" },
    wit: { type: "string" },
    world: { type: "string" },
    out: { type: "string" },
    disable: { type: "string", default: "" },
  },
  strict: true,
});
for (const name of ["tool-dir", "source", "wit", "world", "out"]) {
  if (!args[name]) {
    console.error(`build.mjs: --${name} is required`);
    process.exit(2);
  }
}

const entry = join(
  args["tool-dir"],
  "node_modules",
  "@bytecodealliance",
  "componentize-js",
  "src",
  "componentize.js",
);
const { componentize, version } = await import(pathToFileURL(entry).href);

const started = performance.now();
const { component } = await componentize({
  sourcePath: args.source,
  witPath: args.wit,
  worldName: args.world,
  disableFeatures: args.disable ? args.disable.split(",") : [],
});
await writeFile(args.out, component);
console.log(
  JSON.stringify({
    componentizeJs: version,
    bytes: component.length,
    seconds: Number(((performance.now() - started) / 1000).toFixed(2)),
  }),
);

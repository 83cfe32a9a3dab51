// Drives the simulator with one version of the JavaScript SDK: node sdk.mjs PACKAGE PORT
// PACKAGE is "@lmstudio/sdk" (1.5.0) or "lmstudio-sdk-2" (2.0.0, an npm alias). Each step prints one
// JSON line {step, ...}; any exception exits non-zero. Models: see tests/test_simulator_js.py.
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

const jsDir = process.env.LMSTUDIO_PROXY_JS_DIR || path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(path.join(path.resolve(jsDir), "package.json"));
const [pkg, port] = process.argv.slice(2);
if (!pkg || !port) {
  console.error("usage: node sdk.mjs PACKAGE PORT");
  process.exit(2);
}
const { LMStudioClient, tool } = require(pkg);
const { z } = require("zod");
const report = (step, data) => console.log(JSON.stringify({ step, ...data }));

const client = new LMStudioClient({ baseUrl: `ws://127.0.0.1:${port}` });

// model() and respond()
const model = await client.llm.model("sim-tools");
const answer = await model.respond("Hello [tokens=5]");
report("respond", { identifier: model.identifier, stopReason: answer.stats.stopReason, content: answer.content });

// cancel(), mid-stream
const slow = model.respond("Go on [tokens=500]", { maxTokens: 400 });
let fragments = 0;
for await (const fragment of slow) {
  if (++fragments === 2) slow.cancel();
}
report("cancel", { stopReason: (await slow.result()).stats.stopReason });

// an AbortController, aborted at once
const controller = new AbortController();
const aborted = model.respond("Go on [tokens=500]", { signal: controller.signal });
controller.abort();
report("abort", { stopReason: (await aborted.result()).stats.stopReason });

// act() with a tool, multi-round
const calls = [];
const add = tool({
  name: "add",
  description: "Add two numbers",
  parameters: { a: z.number(), b: z.number() },
  implementation: ({ a, b }) => {
    calls.push([a, b]);
    return a + b;
  },
});
const messages = [];
const act = await model.act("What is the sum of 123 and 3210?", [add], {
  onMessage: (message) => messages.push(message.getText()),
});
report("act", { rounds: act.rounds, calls, last: messages[messages.length - 1] });

// structured output from a JSON schema
const schema = {
  type: "object",
  properties: { city: { type: "string" }, population: { type: "integer" } },
  required: ["city", "population"],
};
const structured = await model.respond("Name a city of 3000000 people", { structured: { type: "json", jsonSchema: schema } });
report("structured", { parsed: JSON.parse(structured.content) });

// an image for a vision model (and the refusal of a model without vision)
const png = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 0]).toString("base64");
const image = await client.files.prepareImageBase64("dot.png", png);
const eyes = await client.llm.model("sim-eyes");
const seen = await eyes.respond({ role: "user", content: "What is this?", images: [image] });
let refused = "";
try {
  await model.respond({ role: "user", content: "What is this?", images: [image] });
} catch (error) {
  refused = String(error.message);
}
report("image", { type: image.type, identifier: image.identifier, content: seen.content, refused });

// listLoaded, then a load with progress under a custom identifier
const loaded = await client.llm.listLoaded();
report("listLoaded", { identifiers: loaded.map((m) => m.identifier) });
const progress = [];
const instance = await client.llm.load("sim-large", { identifier: "js-large", onProgress: (p) => progress.push(p) });
report("load", { identifier: instance.identifier, progress });
await instance.unload();
process.exit(0);

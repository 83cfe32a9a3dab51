// Seed 000's two cancellation snippets, run against the simulator: node cancel.mjs PORT [MODEL]
// Prints one JSON line per snippet and exits non-zero unless both end with stopReason "userStopped".
// The SDK is resolved from $LMSTUDIO_PROXY_JS_DIR/node_modules (else from beside this file), so CI
// can npm-install into a throwaway folder.
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

const jsDir = process.env.LMSTUDIO_PROXY_JS_DIR || path.dirname(fileURLToPath(import.meta.url));
const { LMStudioClient } = createRequire(path.join(path.resolve(jsDir), "package.json"))("@lmstudio/sdk");

const [port, modelKey = "simulated-llm"] = process.argv.slice(2);
if (!port) {
  console.error("usage: node cancel.mjs PORT [MODEL]");
  process.exit(2);
}

const client = new LMStudioClient({ baseUrl: `ws://127.0.0.1:${port}` });
const model = await client.llm.model(modelKey);

// 1. Call .cancel() on the prediction (on a timer, as in the docs; shorter to keep tests fast).
const prediction = model.respond("What is the meaning of life? [tokens=500]", { maxTokens: 50 });
setTimeout(() => prediction.cancel(), 300);
const first = await prediction.result();
console.log(JSON.stringify({ snippet: "cancel", stopReason: first.stats.stopReason, content: first.content }));

// 2. Use an AbortController, aborted immediately.
const controller = new AbortController();
const aborted = model.respond("What is the meaning of life? [tokens=500]", {
  maxTokens: 50,
  signal: controller.signal,
});
controller.abort();
const second = await aborted.result();
console.log(JSON.stringify({ snippet: "abort", stopReason: second.stats.stopReason, content: second.content }));

const ok = first.stats.stopReason === "userStopped" && second.stats.stopReason === "userStopped";
process.exit(ok ? 0 : 1);

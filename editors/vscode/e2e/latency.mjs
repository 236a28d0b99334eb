// Opens FILE in code-server and types LINE key by key; after each key, [milliseconds until ghost
// text is on screen (null after TIMEOUT_MS), whether it was there at once]. Prints one JSON line:
// {latencies} or {error}.
// Usage: node e2e/latency.mjs URL FILE LINE TIMEOUT_MS
import { launch, openAtEnd } from "./workbench.mjs";

const [url, file, line, timeoutArg] = process.argv.slice(2);
const timeout = Number(timeoutArg);
const browser = await launch();
const page = await browser.newPage();
try {
  await openAtEnd(page, url, file, Math.max(timeout, 600000)); // the model loads first
  const latencies = [];
  for (const ch of line) {
    const start = performance.now();
    await page.keyboard.type(ch);
    const kept = await page.$(".ghost-text-decoration, .ghost-text") !== null;
    const shown = await page.waitForSelector(".ghost-text-decoration, .ghost-text", { visible: true, timeout })
      .then(() => true, () => false);
    latencies.push([shown ? performance.now() - start : null, kept]);
  }
  console.log(JSON.stringify({ latencies }));
} catch (error) {
  console.log(JSON.stringify({ error: String(error) }));
  process.exitCode = 1;
} finally {
  await browser.close();
}

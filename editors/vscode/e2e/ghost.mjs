// Opens FILE in code-server, types TEXT at its end, waits for ghost text, takes SCREENSHOT,
// presses Tab and saves. Prints one JSON line: {ghost} or {error}.
// Usage: node e2e/ghost.mjs URL FILE TEXT SCREENSHOT TIMEOUT_MS
import { ghostText, launch, openAtEnd, save } from "./workbench.mjs";

const [url, file, text, screenshot, timeoutArg] = process.argv.slice(2);
const timeout = Number(timeoutArg);
const browser = await launch();
const page = await browser.newPage();
try {
  await openAtEnd(page, url, file, timeout);
  await page.keyboard.type(text, { delay: 60 });
  await page.waitForSelector(".ghost-text-decoration, .ghost-text", { visible: true, timeout });
  const ghost = await ghostText(page);
  await page.screenshot({ path: screenshot });
  await page.keyboard.press("Tab");
  await page.waitForFunction(() => !document.querySelector(".ghost-text-decoration"), { timeout: 10000 });
  await save(page);
  await new Promise((resolve) => setTimeout(resolve, 1000));
  console.log(JSON.stringify({ ghost }));
} catch (error) {
  await page.screenshot({ path: screenshot }).catch(() => undefined);
  console.log(JSON.stringify({ error: String(error) }));
  process.exitCode = 1;
} finally {
  await browser.close();
}

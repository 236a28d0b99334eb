// Drives code-server in headless chromium: opens FILE, types TEXT at its end, waits for ghost
// text, takes SCREENSHOT, presses Tab and saves. Prints one JSON line: {ghost, lines, status}.
// Usage: node e2e/ghost.mjs URL FILE TEXT SCREENSHOT TIMEOUT_MS
import puppeteer from "puppeteer-core";

const [url, file, text, screenshot, timeoutArg] = process.argv.slice(2);
const timeout = Number(timeoutArg);
const statusOf = () => [...document.querySelectorAll(".statusbar-item")]
  .map((e) => e.getAttribute("aria-label") || e.textContent || "").find((t) => t.includes("Qwen")) || "";

const browser = await puppeteer.launch({
  executablePath: "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
  defaultViewport: { width: 1000, height: 600 },
});
const page = await browser.newPage();
try {
  await page.goto(url, { waitUntil: "domcontentloaded", timeout });
  await page.waitForSelector(".monaco-workbench .part.editor", { timeout });
  await page.keyboard.down("Control");
  await page.keyboard.press("KeyP");
  await page.keyboard.up("Control");
  await page.waitForSelector(".quick-input-widget input", { visible: true, timeout });
  await page.keyboard.type(file);
  await page.waitForSelector(".quick-input-list .monaco-list-row", { visible: true, timeout });
  await page.keyboard.press("Enter");
  await page.waitForSelector(".monaco-editor .view-lines", { visible: true, timeout });
  // The server is up once the status bar item says it is ready.
  await page.waitForFunction(() => [...document.querySelectorAll(".statusbar-item")]
    .some((e) => (e.textContent || "").includes("Qwen") && e.querySelector(".codicon-check")), { timeout });
  await page.click(".monaco-editor .view-lines");
  await page.keyboard.down("Control");
  await page.keyboard.press("End");
  await page.keyboard.up("Control");
  await page.keyboard.type(text, { delay: 60 });
  await page.waitForSelector(".ghost-text-decoration, .ghost-text", { visible: true, timeout });
  const ghost = await page.evaluate(() => {
    const first = [...document.querySelectorAll(".ghost-text-decoration")].map((e) => e.textContent).join("");
    const more = [...document.querySelectorAll(".ghost-text .view-line")].map((e) => e.textContent);
    return [first, ...more].map((t) => (t || "").replace(/\u00a0/g, " "));
  });
  await page.screenshot({ path: screenshot });
  await page.keyboard.press("Tab");
  await page.waitForFunction(() => !document.querySelector(".ghost-text-decoration"), { timeout: 10000 });
  await page.keyboard.down("Control");
  await page.keyboard.press("KeyS");
  await page.keyboard.up("Control");
  await new Promise((resolve) => setTimeout(resolve, 1000));
  console.log(JSON.stringify({ ghost, status: await page.evaluate(statusOf) }));
} catch (error) {
  await page.screenshot({ path: screenshot }).catch(() => undefined);
  console.log(JSON.stringify({ error: String(error), status: await page.evaluate(statusOf).catch(() => "") }));
  process.exitCode = 1;
} finally {
  await browser.close();
}
